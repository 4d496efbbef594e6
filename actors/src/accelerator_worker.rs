//! `AcceleratorWorker`: one execution unit running real inference.
//!
//! A worker owns the loaded models of the tenants it serves (loaded on its
//! own pinned thread, before serving starts), takes one [`Job`] at a time
//! from its 1-slot channel, runs the forward pass, tells the dispatcher it is
//! idle, and reports a [`Completion`] to telemetry. A backend error or a
//! panic inside a forward pass becomes a `failed` outcome; the worker lives on.

use crate::backend::LoadedModel;
use crate::clock::RunClock;
use crate::edf_dispatcher::{Job, WorkerDone};
use crate::telemetry::TelemetryEvent;
use crossbeam_channel::{Receiver, Sender};
use ecomap::request::Completion;
use ecomap::time::Timestamp;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Busy time counters the energy meter reads: per worker and per tenant,
/// in nanoseconds, including emulated throttling (a slower clock keeps a
/// unit busy for longer).
#[derive(Debug)]
pub struct BusyCounters {
    /// `workers[w]`: worker `w`'s busy nanoseconds.
    pub workers: Vec<AtomicU64>,
    /// `tenants[t]`: nanoseconds spent serving tenant `t`.
    pub tenants: Vec<AtomicU64>,
}

impl BusyCounters {
    /// Zeroed counters.
    pub fn new(workers: usize, tenants: usize) -> Arc<Self> {
        Arc::new(BusyCounters {
            workers: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            tenants: (0..tenants).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Snapshot: (per-worker, per-tenant) busy time so far.
    pub fn snapshot(&self) -> (Vec<Duration>, Vec<Duration>) {
        let read = |v: &[AtomicU64]| {
            v.iter()
                .map(|a| Duration::from_nanos(a.load(Ordering::Relaxed)))
                .collect()
        };
        (read(&self.workers), read(&self.tenants))
    }
}

/// A worker's channels.
#[derive(Debug)]
pub struct WorkerLinks {
    /// Jobs from the dispatcher (1 slot).
    pub jobs: Receiver<Job>,
    /// "Done, idle again" notices to the dispatcher.
    pub idle: Sender<WorkerDone>,
    /// Completions to telemetry.
    pub telemetry: Sender<TelemetryEvent>,
}

/// The worker actor.
pub struct AcceleratorWorker {
    index: usize,
    name: String,
    /// `models[t][v]`: variant `v` of tenant `t`'s model (empty if not served).
    models: Vec<Vec<Box<dyn LoadedModel>>>,
    jobs: Receiver<Job>,
    idle_tx: Sender<WorkerDone>,
    telemetry: Sender<TelemetryEvent>,
    clock: RunClock,
    busy: Arc<BusyCounters>,
    failures_logged: u32,
}

impl AcceleratorWorker {
    /// A worker with its models loaded, wired to the dispatcher and telemetry.
    pub fn new(
        index: usize,
        name: String,
        models: Vec<Vec<Box<dyn LoadedModel>>>,
        links: WorkerLinks,
        clock: RunClock,
        busy: Arc<BusyCounters>,
    ) -> Self {
        AcceleratorWorker {
            index,
            name,
            models,
            jobs: links.jobs,
            idle_tx: links.idle,
            telemetry: links.telemetry,
            clock,
            busy,
            failures_logged: 0,
        }
    }

    /// Serve jobs until the dispatcher closes the job channel.
    pub fn run(mut self) {
        let mut free_since = Timestamp::ZERO;
        while let Ok(job) = self.jobs.recv() {
            let started = self.clock.now();
            let succeeded = self.serve(&job);
            if job.throttle > 1.0 {
                // Emulated lower clock: stretch the pass by duty-cycling —
                // the unit stays busy (accounted below) but the core sleeps.
                let ran = self.clock.now().saturating_since(started);
                std::thread::sleep(ran.mul_f64(job.throttle - 1.0));
            }
            let finished = self.clock.now();
            let busy = finished.saturating_since(started).as_nanos() as u64;
            self.busy.workers[self.index].fetch_add(busy, Ordering::Relaxed);
            self.busy.tenants[job.request.tenant.index()].fetch_add(busy, Ordering::Relaxed);
            // Idle first: the dispatcher can hand over the next job while we
            // report this one.
            let _ = self.idle_tx.send(WorkerDone {
                worker: self.index,
                tenant: job.request.tenant.index(),
                variant: job.variant,
                service: finished.saturating_since(started),
                throttle: job.throttle,
                missed: !succeeded || finished > job.request.deadline,
            });
            let completion = Completion {
                request: job.request,
                worker: self.index,
                dispatched: job.dispatched,
                eligible: job.request.release.max(free_since),
                started,
                finished,
                succeeded,
                variant: u8::try_from(job.variant).unwrap_or(u8::MAX),
            };
            free_since = finished;
            let _ = self.telemetry.send(TelemetryEvent::Completed(completion));
        }
    }

    fn serve(&mut self, job: &Job) -> bool {
        let t = job.request.tenant.index();
        let Some(model) = self.models.get_mut(t).and_then(|m| m.get_mut(job.variant)) else {
            self.log_failure(format!(
                "worker '{}' got a request of tenant #{t} (variant {}) whose model it does not hold",
                self.name, job.variant
            ));
            return false;
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| model.run())) {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                self.log_failure(format!("worker '{}': {e}", self.name));
                false
            }
            Err(_) => {
                self.log_failure(format!(
                    "worker '{}': the backend panicked during a forward pass",
                    self.name
                ));
                false
            }
        }
    }

    fn log_failure(&mut self, message: String) {
        // Failures are counted per request; log only the first few so a
        // broken model does not flood the log.
        if self.failures_logged < 5 {
            tracing::warn!("{message} (request counted as failed)");
            self.failures_logged += 1;
        }
    }
}
