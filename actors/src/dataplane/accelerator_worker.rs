//! `AcceleratorWorker`: one execution unit running real inference.
//!
//! A worker owns the loaded models of the tenants it serves (loaded on its
//! own pinned thread, before serving starts). Whenever it is free it runs a
//! step of the shared EDF dispatcher, which hands it the earliest-deadline
//! request it can serve; it runs that forward pass and reports a
//! [`Completion`] to telemetry. With nothing to do it sleeps on its
//! tenants' queues and its doorbell, so a release wakes it directly. A
//! backend error or a panic inside a forward pass becomes a `failed`
//! outcome; the worker lives on.

use crate::backend::LoadedModel;
use crate::clock::RunClock;
use crate::edf_dispatcher::{Job, Next, SharedDispatcher, WorkerDone, WorkerEvent};
use crate::telemetry::TelemetryEvent;
use crossbeam_channel::{Receiver, Select, Sender};
use ecomap::dispatch::StepEffects;
use ecomap::request::{Completion, Request};
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

/// A worker's links to the rest of the data plane.
#[derive(Debug)]
pub struct WorkerLinks {
    /// The dispatcher whose steps this worker runs when it is free.
    pub dispatcher: SharedDispatcher,
    /// The queues of the tenants it serves: it sleeps on them when idle, so
    /// a release wakes it directly.
    pub requests: Vec<Receiver<Request>>,
    /// Rung by another worker's step when work is queued for this one.
    pub doorbell: Receiver<()>,
    /// Completions to telemetry.
    pub telemetry: Sender<TelemetryEvent>,
}

/// The worker actor.
pub struct AcceleratorWorker {
    index: usize,
    name: String,
    /// `models[t][v]`: variant `v` of tenant `t`'s model (empty if not served).
    models: Vec<Vec<Box<dyn LoadedModel>>>,
    links: WorkerLinks,
    /// `open[i]`: whether `links.requests[i]` may still deliver requests.
    open: Vec<bool>,
    clock: RunClock,
    busy: Arc<BusyCounters>,
    failures_logged: u32,
}

/// Tells the dispatcher if the worker's thread unwinds outside a forward
/// pass (a bug), so the other workers neither wait for it at shutdown nor
/// leave its tenants' requests uncounted.
struct LostGuard {
    dispatcher: SharedDispatcher,
    worker: usize,
}

impl Drop for LostGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dispatcher.lock().worker_lost(self.worker);
        }
    }
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
        let open = vec![true; links.requests.len()];
        AcceleratorWorker {
            index,
            name,
            models,
            links,
            open,
            clock,
            busy,
            failures_logged: 0,
        }
    }

    /// Serve until the dispatcher says every queue is closed and drained.
    pub fn run(mut self) {
        let _guard = LostGuard {
            dispatcher: self.links.dispatcher.clone(),
            worker: self.index,
        };
        let mut event = WorkerEvent::Woke;
        let mut free_since = Timestamp::ZERO;
        // A completion is sent to telemetry after the next forward pass (or
        // before sleeping), not between two passes: waking the telemetry
        // thread costs microseconds the next request would wait for.
        let mut pending: Option<Completion> = None;
        // The step's effects (expiries, doorbells), reused so a step never
        // allocates once the buffers have grown.
        let mut fx = StepEffects::default();
        loop {
            match self.links.dispatcher.next_job(self.index, event, &mut fx) {
                Next::Run(job) => {
                    let started = self.clock.now();
                    let succeeded = self.serve(&job);
                    if job.throttle > 1.0 {
                        // Emulated lower clock: stretch the pass by
                        // duty-cycling — the unit stays busy (accounted
                        // below) but the core sleeps.
                        let ran = self.clock.now().saturating_since(started);
                        std::thread::sleep(ran.mul_f64(job.throttle - 1.0));
                    }
                    let finished = self.clock.now();
                    let busy = finished.saturating_since(started).as_nanos() as u64;
                    self.busy.workers[self.index].fetch_add(busy, Ordering::Relaxed);
                    self.busy.tenants[job.request.tenant.index()]
                        .fetch_add(busy, Ordering::Relaxed);
                    self.flush(&mut pending);
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
                    pending = Some(completion);
                    free_since = finished;
                    event = WorkerEvent::Finished(WorkerDone {
                        tenant: job.request.tenant.index(),
                        variant: job.variant,
                        service: completion.service(),
                        throttle: job.throttle,
                        missed: completion.outcome().is_miss(),
                    });
                }
                Next::Wait => {
                    self.flush(&mut pending);
                    event = self.sleep();
                }
                Next::Exit => {
                    self.flush(&mut pending);
                    break;
                }
            }
        }
    }

    fn flush(&self, pending: &mut Option<Completion>) {
        if let Some(c) = pending.take() {
            // Blocking send: telemetry never loses an outcome.
            let _ = self.links.telemetry.send(TelemetryEvent::Completed(c));
        }
    }

    /// Sleep until a request arrives on one of this worker's queues (taking
    /// it), a queue closes, or the doorbell rings. crossbeam wakes one
    /// sleeping receiver per message, so one release wakes one worker.
    fn sleep(&mut self) -> WorkerEvent {
        let mut sel = Select::new();
        let doorbell = sel.recv(&self.links.doorbell);
        let mut ops = Vec::with_capacity(self.links.requests.len());
        for (i, rx) in self.links.requests.iter().enumerate() {
            if self.open[i] {
                ops.push((sel.recv(rx), i));
            }
        }
        let oper = sel.select();
        let index = oper.index();
        if index == doorbell {
            // Disconnected cannot happen while this worker holds the
            // dispatcher (which holds the sender); either way: step.
            let _ = oper.recv(&self.links.doorbell);
            return WorkerEvent::Woke;
        }
        let Some(&(_, i)) = ops.iter().find(|(op, _)| *op == index) else {
            return WorkerEvent::Woke;
        };
        match oper.recv(&self.links.requests[i]) {
            Ok(request) => WorkerEvent::Received(request),
            Err(_) => {
                // Closed: stop listening to it; the step notices too.
                self.open[i] = false;
                WorkerEvent::Woke
            }
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
