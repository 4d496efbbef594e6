//! The one place the protocols take their atomics and `Arc` from: std's,
//! or loom's under `--cfg loom` so the model checker sees every atomic
//! step (tokio's `loom` shim does the same).
//!
//! loom models acquire fences only, so the protocols here use release
//! *stores* rather than release fences.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::Arc;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
