//! # ecomap runtime
//!
//! The moving half of ecomap: actors on threads, channels between them, and
//! the inference backends. Decisions and bookkeeping are delegated to the
//! pure `ecomap` core crate, so the simulator and this runtime share them.
//!
//! The tree says what is where: [`dataplane`], [`controlplane`],
//! [`platform`] (power control and sensing), [`backend`] (inference),
//! [`simulate`] (the simulator's runs, tables and plots), [`runtime`] (wiring),
//! [`rt`] (real-time set-up), [`faults`] (fault injection) and [`incidents`]
//! (what failed during a run).
//!
//! Data plane (dedicated OS threads, pinned and SCHED_FIFO per the
//! rt-config, bounded crossbeam channels):
//! - [`load_generator`]: releases each tenant's requests (stands in for sensors);
//! - [`tenant_queue`]: per-tenant bounded admission;
//! - [`edf_dispatcher`]: earliest-deadline-first choice of each worker's next
//!   job, run by the worker that becomes free (no thread of its own);
//! - [`accelerator_worker`]: real inference through a [`backend`];
//! - [`telemetry`]: outcome counters and latency histograms.
//!
//! [`runtime`] wires them from the RON files; [`rt`] applies real-time
//! settings. See `docs/architecture.md`.
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]

pub mod backend;
pub mod cli_args;
pub mod clock;
pub mod controlplane;
pub mod dataplane;
#[cfg(feature = "tch")]
pub mod estimator;
pub mod faults;
pub mod incidents;
pub mod platform;
pub mod profile;
pub mod rt;
pub mod runtime;
pub mod server;
pub mod simulate;

// The actors under their short paths (`ecomap_actors::edf_dispatcher`, …).
pub use controlplane::{carbon_http, carbon_monitor, control_plane, energy_meter, power_governor};
pub use dataplane::{
    accelerator_worker, edf_dispatcher, load_generator, telemetry, tenant_queue, ticket,
};
