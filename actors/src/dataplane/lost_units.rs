//! Which workers are out of the run, for the mapping planner.
//!
//! The dispatcher marks a worker out when its thread panics and back in
//! when it is restored with its models reloaded; the governor, on the
//! control plane, plans around the workers out. Two atomics, no lock: the
//! governor reads how many changes there have been, then the mask. A change
//! landing between the two reads leaves it a newer mask under an older
//! count, so it simply rebuilds once more at its next reading; a worker
//! lost and restored between two readings still moves the count (a bare
//! mask would read the same before and after).
//!
//! ```
//! use ecomap_actors::dataplane::lost_units::LostUnits;
//! let lost = LostUnits::new();
//! lost.set(1, true);
//! lost.set(1, false);
//! assert_eq!((lost.changes(), lost.mask()), (2, 0));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Workers out of the run: a bit each (workers past 64 are not tracked;
/// the planner takes at most the estimator's 4), and a count of changes.
#[derive(Debug, Default)]
pub struct LostUnits {
    mask: AtomicU64,
    changes: AtomicU64,
}

impl LostUnits {
    /// No worker out.
    pub fn new() -> Arc<Self> {
        Arc::new(LostUnits::default())
    }

    /// Worker `worker` is out (`lost`) or back.
    pub fn set(&self, worker: usize, lost: bool) {
        let Some(bit) = 1u64.checked_shl(worker as u32) else {
            return;
        };
        if lost {
            self.mask.fetch_or(bit, Ordering::AcqRel);
        } else {
            self.mask.fetch_and(!bit, Ordering::AcqRel);
        }
        // After the mask: a reader that sees the new count sees the mask
        // it counts (or a newer one).
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// How many times a worker went out or came back so far.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Bit `w` set while worker `w` is out.
    pub fn mask(&self) -> u64 {
        self.mask.load(Ordering::Acquire)
    }

    /// Whether worker `w` is out.
    pub fn is_out(mask: u64, w: usize) -> bool {
        1u64.checked_shl(w as u32).is_some_and(|b| mask & b != 0)
    }
}
