//! The run's incident log: faults the runtime met and what it did about
//! them (a worker restarted, a control plane that died, lost telemetry),
//! for the run report.

use crate::clock::RunClock;
use ecomap::report::Incident;
use ecomap::time::Timestamp;
use std::sync::{Arc, Mutex};

/// Shared, append-only; cloning shares it. Written only on the rare path
/// of a failure, so a plain mutex serves.
#[derive(Debug, Clone)]
pub struct IncidentLog {
    entries: Arc<Mutex<Vec<(Timestamp, String, bool)>>>,
    clock: RunClock,
}

impl IncidentLog {
    /// An empty log on the run's clock.
    pub fn new(clock: RunClock) -> Self {
        IncidentLog {
            entries: Arc::default(),
            clock,
        }
    }

    /// Record `what` now; `degrades` if it compromises the run's results.
    pub fn record(&self, what: String, degrades: bool) {
        if degrades {
            tracing::error!("{what}");
        } else {
            tracing::warn!("{what}");
        }
        let now = self.clock.now();
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((now, what, degrades));
    }

    /// Every entry, stamped in seconds since `load_start`, in order.
    pub fn incidents(&self, load_start: Timestamp) -> Vec<Incident> {
        let mut v: Vec<Incident> = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(t, what, degrades)| Incident {
                at_s: t.since_epoch().as_secs_f64() - load_start.since_epoch().as_secs_f64(),
                what: what.clone(),
                degrades: *degrades,
            })
            .collect();
        v.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        v
    }
}

/// The message of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
