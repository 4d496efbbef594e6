//! `PowerCell`: the power state the governor publishes to the data plane,
//! in one atomic word instead of a channel.
//!
//! Why not a channel: the governor runs on an ordinary (SCHED_OTHER,
//! unpinned) actix thread and the dispatch step runs on SCHED_FIFO workers.
//! A worker that preempts the governor in the middle of a channel send on
//! the same core would spin in `try_recv` forever — the livelock
//! docs/architecture.md ("Priorities") describes. One atomic store and one
//! atomic load never wait for anyone. The cap and the throttle are packed
//! as two `f32`s into one `u64`, so a reader always sees a pair that was
//! published together; `f32` is ample for watts and slowdown factors.
//!
//! ```
//! use ecomap_sync::power_cell::{PowerCell, Published};
//!
//! let cell = PowerCell::new();
//! let reader = cell.clone();
//! assert_eq!(reader.latest(), None);
//! cell.publish(15.0, 1.6875);
//! assert_eq!(reader.latest(), Some(Published { cap_w: 15.0, throttle: 1.6875 }));
//! ```

use crate::sync::{Arc, AtomicU64, Ordering};

/// What the governor publishes: the cap in force and the factor workers
/// stretch each forward pass by (1 on real devices, the mode's slowdown
/// when emulated). Shared by cloning.
#[derive(Debug, Clone, Default)]
pub struct PowerCell(Arc<AtomicU64>);

/// A published power state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Published {
    /// The cap in force (watts).
    pub cap_w: f64,
    /// Factor to stretch each forward pass by (≥ 1).
    pub throttle: f64,
}

impl PowerCell {
    /// A cell with nothing published yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publish a cap and throttle (wait-free).
    pub fn publish(&self, cap_w: f64, throttle: f64) {
        debug_assert!(throttle >= 1.0, "a throttle only slows down");
        let word =
            (u64::from((cap_w as f32).to_bits()) << 32) | u64::from((throttle as f32).to_bits());
        debug_assert!(word != 0, "a published state is never the empty word");
        // Release: a reader that sees the word sees everything before it.
        self.0.store(word, Ordering::Release);
    }

    /// The latest published state, if any (wait-free).
    pub fn latest(&self) -> Option<Published> {
        let word = self.0.load(Ordering::Acquire);
        // Nothing published is all zeros: a throttle is never 0.
        (word != 0).then(|| Published {
            cap_w: f64::from(f32::from_bits((word >> 32) as u32)),
            throttle: f64::from(f32::from_bits(word as u32)),
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_published_pair_reads_back_together() {
        let cell = PowerCell::new();
        assert_eq!(cell.latest(), None);
        let reader = cell.clone();
        cell.publish(15.0, 1.6875);
        assert_eq!(
            reader.latest(),
            Some(Published {
                cap_w: 15.0,
                throttle: 1.6875
            })
        );
        cell.publish(40.0, 1.0);
        assert_eq!(reader.latest().map(|p| p.cap_w), Some(40.0));
    }
}
