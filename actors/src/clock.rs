//! The run's clock: turns `Instant`s into the core's [`Timestamp`]s.

use ecomap::time::Timestamp;
use std::time::{Duration, Instant};

/// Monotonic time since the run started. Copy it freely: every copy shares
/// the same epoch.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    epoch: Instant,
}

impl RunClock {
    /// A clock whose epoch is now.
    pub fn start() -> Self {
        RunClock {
            epoch: Instant::now(),
        }
    }

    /// Now, as a timestamp.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_duration(self.epoch.elapsed())
    }

    /// The `Instant` of a timestamp (to sleep until it).
    pub fn instant(&self, t: Timestamp) -> Instant {
        self.epoch + t.since_epoch()
    }

    /// Sleep until `t` (returns at once if `t` has passed).
    pub fn sleep_until(&self, t: Timestamp) {
        let target = self.instant(t);
        let now = Instant::now();
        if target > now {
            std::thread::sleep(target - now);
        }
    }

    /// Time since the epoch.
    pub fn elapsed(&self) -> Duration {
        self.epoch.elapsed()
    }
}
