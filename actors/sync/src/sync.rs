//! The one place the protocols take their atomics, fences and `Arc` from:
//! std's, or loom's under `--cfg loom` so the model checker sees every
//! atomic step (tokio's `loom` shim does the same). loom 0.7 models
//! acquire, release and SeqCst fences as well as the atomics.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::Arc;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
