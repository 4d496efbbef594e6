//! The control plane: actix actors off the data plane's threads.
//!
//! - [`carbon_monitor`]: the grid's carbon intensity from a trace, a live
//!   API ([`carbon_http`]) or a constant;
//! - [`power_governor`]: the core's cap rule applied to the platform, the
//!   power state published to the data plane;
//! - [`energy_meter`]: power readings into the energy and carbon ledger;
//! - [`control_plane`]: wiring and the actix system's thread.

pub mod carbon_http;
pub mod carbon_monitor;
pub mod control_plane;
pub mod energy_meter;
pub mod estimator_actor;
pub mod planning;
pub mod power_governor;
