//! `Telemetry`: the latency sink of the data plane.
//!
//! Workers send a [`Completion`] per request they ran; telemetry records
//! them into the per-tenant HdrHistograms (the core's [`TenantAccount`])
//! off the critical path. Outcome *counts* are not telemetry's job: they
//! are kept exactly, in atomics, where each outcome is decided
//! ([`crate::tenant_queue::TenantCounters`]), so a slow or dead sink never
//! loses a count.
//!
//! Sending never blocks a worker: [`TelemetrySender::send`] drops the
//! sample (and counts the drop) when the channel is nearly full. Kept below
//! full on purpose: a crossbeam sender that wraps onto the slot a receiver
//! is still reading spins until the read ends, and the sink runs at a
//! lower priority than the workers — the same livelock as in
//! docs/architecture.md ("Priorities and the channels"), backwards.

use crate::faults::FaultInjector;
use crossbeam_channel::{Receiver, Sender};
use ecomap::accounting::TenantAccount;
use ecomap::report::WorkerAccount;
use ecomap::request::Completion;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One event for the latency sink.
#[derive(Debug, Clone, Copy)]
pub enum TelemetryEvent {
    /// A worker ran a request.
    Completed(Completion),
}

/// The sending side: never blocks, counts what it had to drop.
#[derive(Debug, Clone)]
pub struct TelemetrySender {
    tx: Sender<TelemetryEvent>,
    dropped: Arc<AtomicU64>,
    /// Free slots always left in the channel (see the module docs).
    headroom: usize,
}

impl TelemetrySender {
    /// Wrap `tx`, leaving `headroom` slots free: at least the number of
    /// threads that may send at once.
    pub fn new(tx: Sender<TelemetryEvent>, headroom: usize) -> Self {
        TelemetrySender {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            headroom,
        }
    }

    /// Send `event`, or drop and count it if the sink is behind or gone.
    pub fn send(&self, event: TelemetryEvent) {
        let capacity = self.tx.capacity().unwrap_or(usize::MAX);
        if self.tx.len().saturating_add(self.headroom) >= capacity
            || self.tx.try_send(event).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The drop counter, to read after every sender is gone.
    pub fn drop_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

/// The latency sink.
#[derive(Debug)]
pub struct Telemetry {
    tenants: Vec<TenantAccount>,
    workers: Vec<WorkerAccount>,
    rx: Receiver<TelemetryEvent>,
    faults: FaultInjector,
    metrics: Option<crate::server::metrics::LatencyMetrics>,
    pass_log: Option<crate::dataplane::pass_log::PassLog>,
}

impl Telemetry {
    /// A sink for the named tenants and workers, fed by `rx`.
    pub fn new(
        tenant_names: &[String],
        worker_names: &[String],
        rx: Receiver<TelemetryEvent>,
        faults: FaultInjector,
    ) -> Self {
        Telemetry {
            // One-second intervals of end-to-end latency, for `.hlog` files.
            tenants: tenant_names
                .iter()
                .map(|n| TenantAccount::new(n).with_intervals(std::time::Duration::from_secs(1)))
                .collect(),
            workers: worker_names
                .iter()
                .map(|n| WorkerAccount {
                    name: n.clone(),
                    ..Default::default()
                })
                .collect(),
            rx,
            faults,
            metrics: None,
            pass_log: None,
        }
    }

    /// Also write one row per pass to `log`.
    pub fn with_pass_log(mut self, log: crate::dataplane::pass_log::PassLog) -> Self {
        self.pass_log = Some(log);
        self
    }

    /// Also observe served requests into these Prometheus histograms.
    pub fn with_metrics(mut self, metrics: crate::server::metrics::LatencyMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Record one event.
    pub fn record(&mut self, ev: TelemetryEvent) {
        match ev {
            TelemetryEvent::Completed(c) => {
                self.tenants[c.request.tenant.index()].record_completion(&c);
                if let (Some(m), true) = (&self.metrics, c.succeeded) {
                    m.observe(&c);
                }
                if let Some(log) = &mut self.pass_log {
                    log.record(
                        &c,
                        &self.tenants[c.request.tenant.index()].name,
                        &self.workers[c.worker].name,
                    );
                }
                let w = &mut self.workers[c.worker];
                w.served += 1;
                w.busy += c.service();
            }
        }
    }

    /// Record events until every sender is gone; return the accounts.
    pub fn run(mut self) -> (Vec<TenantAccount>, Vec<WorkerAccount>) {
        while let Ok(ev) = self.rx.recv() {
            self.faults.telemetry_hook();
            self.record(ev);
        }
        for t in &mut self.tenants {
            if let Some(log) = &mut t.intervals {
                log.finish();
            }
        }
        if let Some(log) = self.pass_log.take() {
            match log.finish() {
                Ok(rows) => tracing::info!("pass log: {rows} row(s)"),
                Err(e) => tracing::error!("{e}"),
            }
        }
        (self.tenants, self.workers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_sink_costs_a_counted_sample_never_a_wait() {
        let (tx, rx) = crossbeam_channel::bounded(4);
        let s = TelemetrySender::new(tx, 1);
        let ev = |id| {
            let r = ecomap::request::Request::new(
                id,
                ecomap::request::TenantId(0),
                ecomap::time::Timestamp::ZERO,
                std::time::Duration::from_millis(1),
                0,
            );
            TelemetryEvent::Completed(Completion {
                request: r,
                worker: 0,
                dispatched: r.release,
                eligible: r.release,
                started: r.release,
                finished: r.release,
                succeeded: true,
                variant: 0,
            })
        };
        for id in 0..10 {
            s.send(ev(id)); // never blocks
        }
        assert_eq!(rx.len(), 3, "one slot of headroom kept free");
        assert_eq!(s.dropped(), 7);
        drop(rx);
        s.send(ev(10));
        assert_eq!(s.dropped(), 8, "a dead sink's samples are counted too");
    }
}
