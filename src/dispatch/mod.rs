//! The data plane's decisions: which request runs next, where, as which
//! variant — and which requests are admitted at all.
//!
//! - [`queue`]: the EDF deadline heap (O(log n) push/pop, expiry);
//! - [`admission`]: the per-tenant admission rule;
//! - [`schedulability`]: the admission-time test of a whole workload;
//! - [`step`]: the dispatch step, a pure state machine driven by events with
//!   timestamps passed in. The runtime's `EdfDispatcher` (crate
//!   `ecomap-actors`) and the simulator ([`crate::sim`]) both call it, so
//!   the decisions exist once;
//! - [`unit_cost`]: how much slower one kind of unit runs a tenant's model
//!   than another, from timed passes (the step keeps its service estimates
//!   at the fastest unit's speed).

pub mod admission;
pub mod queue;
pub mod schedulability;
pub mod step;
pub mod unit_cost;

pub use queue::{DispatchQueue, QueueOrder};
pub use step::{DispatchCore, DispatchStats, Job, JobDone, Next, StepEffects, StepEvent};
