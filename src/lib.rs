//! # ecomap core
//!
//! The pure half of ecomap, a runtime for carbon-aware, multi-tenant DNN
//! inference on edge devices. Everything in this crate is plain data and
//! deterministic logic: **no threads and no wall clock**. Time enters only as
//! [`time::Timestamp`] values handed in by the caller, so the real-time runtime
//! (crate `ecomap-actors`) and a simulator can drive exactly the same code.
//!
//! What lives here:
//! - [`request`]: requests, outcomes and completions — the data plane's vocabulary;
//! - [`dispatch`]: the EDF dispatch queue (O(log n) push/pop, expiry of
//!   requests that can no longer start before their deadline);
//! - [`accounting`]: per-tenant outcome counters and HdrHistogram latency
//!   histograms, the run report and `.hgrm` percentile files;
//! - [`arrival`]: periodic (with jitter) and Poisson arrival processes;
//! - [`config`]: the RON files (workload, policy, real-time config) with
//!   validation that says what is wrong, where, and how to fix it;
//! - [`model`]: which DNN a tenant runs;
//! - [`pass_log`]: one row per forward pass of a run, replayed into the simulator;
//! - [`device`]: the device model (units, power modes, service and power);
//! - [`sim`]: the discrete-event simulator and its planners;
//! - [`estimate`]: what a latency/power estimator is asked and answers, its
//!   input encoding, the profile dataset, and an analytic estimator;
//! - [`planner`]: the mapping planner (mode × variant × unit per tenant);
//! - [`tensor`]: callers' input and output tensors (datatype, shape, bytes).
//!
//! ```
//! use ecomap::dispatch::{DispatchQueue, QueueOrder};
//! use ecomap::request::{Request, TenantId};
//! use ecomap::time::Timestamp;
//! use std::time::Duration;
//!
//! let mut q = DispatchQueue::new(QueueOrder::EarliestDeadline);
//! let at = Timestamp::ZERO;
//! q.push(Request::new(1, TenantId(0), at, Duration::from_millis(100), 0));
//! q.push(Request::new(2, TenantId(1), at, Duration::from_millis(10), 0));
//! // The 10 ms deadline goes first.
//! let first = q.pop_eligible(|_| true).unwrap();
//! assert_eq!(first.id, 2);
//! ```
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod accounting;
pub mod arrival;
pub mod carbon;
pub mod catalog;
pub mod config;
pub mod device;
pub mod dispatch;
pub mod energy;
pub mod estimate;
pub mod governor;
pub mod hgrm;
pub mod model;
pub mod pass_log;
pub mod planner;
pub mod quality;
pub mod report;
pub mod request;
pub mod sim;
pub mod tensor;
pub mod time;
