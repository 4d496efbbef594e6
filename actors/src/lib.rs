//! # ecomap runtime
//!
//! The moving half of ecomap: actors on threads, channels between them, and
//! the inference backends. Decisions and bookkeeping are delegated to the
//! pure `ecomap` core crate, so the simulator and this runtime share them.
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

pub mod accelerator_worker;
pub mod backend;
pub mod carbon_http;
pub mod carbon_monitor;
pub mod clock;
pub mod control_plane;
pub mod edf_dispatcher;
pub mod energy_meter;
pub mod load_generator;
pub mod platform;
pub mod power_governor;
pub mod rt;
pub mod runtime;
pub mod simulate;
pub mod telemetry;
pub mod tenant_queue;
