//! `Telemetry`: the accounting sink of the data plane.
//!
//! Workers send a [`Completion`] per request they ran, and the dispatcher
//! (run by the workers) an expiry notice per request it dropped; telemetry
//! records them into the per-tenant HdrHistograms and counters (the core's
//! [`TenantAccount`]) off the critical path. Its channel is bounded; senders block rather than drop
//! an event, so no outcome is ever lost.

use crossbeam_channel::Receiver;
use ecomap::accounting::TenantAccount;
use ecomap::report::WorkerAccount;
use ecomap::request::{Completion, Request};

/// One event for the accounting sink.
#[derive(Debug, Clone, Copy)]
pub enum TelemetryEvent {
    /// A worker ran a request.
    Completed(Completion),
    /// The dispatcher dropped a request whose deadline passed before it started.
    Expired(Request),
    /// The dispatcher shed a request predicted to finish past its deadline.
    Shed(Request),
    /// No live worker could take the request (the workers holding its model
    /// died): counted as `failed`.
    Unserved(Request),
}

/// The accounting sink.
#[derive(Debug)]
pub struct Telemetry {
    tenants: Vec<TenantAccount>,
    workers: Vec<WorkerAccount>,
    rx: Receiver<TelemetryEvent>,
}

impl Telemetry {
    /// A sink for the named tenants and workers, fed by `rx`.
    pub fn new(
        tenant_names: &[String],
        worker_names: &[String],
        rx: Receiver<TelemetryEvent>,
    ) -> Self {
        Telemetry {
            tenants: tenant_names.iter().map(TenantAccount::new).collect(),
            workers: worker_names
                .iter()
                .map(|n| WorkerAccount {
                    name: n.clone(),
                    ..Default::default()
                })
                .collect(),
            rx,
        }
    }

    /// Record one event.
    pub fn record(&mut self, ev: TelemetryEvent) {
        match ev {
            TelemetryEvent::Completed(c) => {
                self.tenants[c.request.tenant.index()].record_completion(&c);
                let w = &mut self.workers[c.worker];
                w.served += 1;
                w.busy += c.service();
            }
            TelemetryEvent::Expired(r) => self.tenants[r.tenant.index()].record_expired(&r),
            TelemetryEvent::Shed(r) => self.tenants[r.tenant.index()].record_shed(&r),
            TelemetryEvent::Unserved(r) => self.tenants[r.tenant.index()].record_unserved(&r),
        }
    }

    /// Record events until every sender is gone; return the accounts.
    pub fn run(mut self) -> (Vec<TenantAccount>, Vec<WorkerAccount>) {
        while let Ok(ev) = self.rx.recv() {
            self.record(ev);
        }
        (self.tenants, self.workers)
    }
}
