//! `LoadGenerator`: releases one tenant's requests on its arrival process.
//!
//! It stands in for a sensor (a camera's frame trigger, a lidar sweep): it
//! sleeps until each release time of the tenant's [`ArrivalGenerator`] and
//! submits to the tenant's queue. A rejection is already counted by the
//! queue, so the generator just goes on — like a camera that drops a frame.

use crate::clock::RunClock;
use crate::tenant_queue::TenantQueue;
use ecomap::arrival::ArrivalGenerator;
use ecomap::time::Timestamp;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Longest a generator sleeps without looking at its stop flag.
const STOP_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// The load generator actor for one tenant.
#[derive(Debug)]
pub struct LoadGenerator {
    queue: TenantQueue,
    arrivals: ArrivalGenerator,
    until: Timestamp,
    clock: RunClock,
    stop: Arc<AtomicBool>,
}

impl LoadGenerator {
    /// Release requests from `arrivals` into `queue` until `until` (run
    /// time) or until `stop` is set.
    pub fn new(
        queue: TenantQueue,
        arrivals: ArrivalGenerator,
        until: Timestamp,
        clock: RunClock,
        stop: Arc<AtomicBool>,
    ) -> Self {
        LoadGenerator {
            queue,
            arrivals,
            until,
            clock,
            stop,
        }
    }

    /// Run; returns how many requests were offered.
    pub fn run(mut self) -> u64 {
        let mut offered = 0;
        loop {
            let t = self.arrivals.next_release();
            if t >= self.until || self.stop.load(Ordering::Relaxed) {
                break;
            }
            // Long gaps are slept in slices so a stop (e.g. Ctrl-C) is
            // noticed within one slice; the last slice ends exactly at `t`.
            loop {
                let slice = self.clock.now() + STOP_CHECK;
                if slice >= t {
                    self.clock.sleep_until(t);
                    break;
                }
                self.clock.sleep_until(slice);
                if self.stop.load(Ordering::Relaxed) {
                    return offered;
                }
            }
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            // Rejections are counted by the queue; the sensor carries on.
            let _ = self.queue.submit();
            offered += 1;
        }
        offered
    }
}
