//! The data plane's lock-free protocols, one per module, each small enough
//! to be model-checked.
//!
//! The control plane (ordinary actix threads) and the data plane (pinned
//! SCHED_FIFO workers) share state through these instead of channels or
//! locks: a worker that preempts a governor in the middle of a channel send
//! or a critical section on the same core would wait for it forever
//! (docs/architecture.md, "Priorities"). Every operation here is wait-free
//! for readers.
//!
//! - [`plan_cell`]: the mapping planner's variant and worker per tenant, a
//!   sequence lock (one writer, any readers);
//! - [`power_cell`]: the governor's cap and throttle, one atomic word;
//! - [`admission`]: a tenant's bounded admission slots, taken by any
//!   number of submitters and given back by the dispatcher.
//!
//! Atomics and `Arc` come from the `sync` shim (`src/sync.rs`): std's normally, loom's
//! under `--cfg loom`, where `tests/loom.rs` explores every interleaving
//! (and the weak-memory outcomes loom models) of each protocol:
//! `RUSTFLAGS="--cfg loom -C debug-assertions" cargo test -p ecomap-sync
//! --release --target-dir target/loom --test loom` (the doctests run only
//! without loom: loom's types work only inside `loom::model`).

#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod admission;
pub mod plan_cell;
pub mod power_cell;
mod sync;
