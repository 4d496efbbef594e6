//! The data plane: requests from release to outcome, on dedicated pinned
//! (SCHED_FIFO per the rt-config) threads joined by bounded crossbeam
//! channels. The decisions are the core's (`ecomap::dispatch`); these
//! actors move requests and own the threads.
//!
//! - [`load_generator`]: releases each tenant's requests (stands in for sensors);
//! - [`tenant_queue`]: per-tenant bounded admission;
//! - [`edf_dispatcher`]: the core's dispatch step behind a lock, run by the
//!   worker that becomes free (no thread of its own);
//! - [`accelerator_worker`]: real inference through a [`crate::backend`];
//! - [`telemetry`]: outcome counters and latency histograms;
//! - [`pass_log`]: one row per forward pass, for the simulator to replay;
//! - [`plan_cell`], [`power_cell`], [`admission`]: the planner's mapping
//!   and the governor's power state, published without a channel or a
//!   lock, and a tenant's admission slots (the `ecomap-sync` crate,
//!   `actors/sync/`, where loom model-checks them);
//! - [`ticket`]: what a caller that hands in an input gets back.

pub mod accelerator_worker;
pub mod edf_dispatcher;
pub mod load_generator;
pub mod lost_units;
pub mod pass_log;
pub mod telemetry;
pub mod tenant_queue;
pub mod ticket;

pub use ecomap_sync::{admission, plan_cell, power_cell};
