//! `AcceleratorWorker`: one execution unit running real inference.
//!
//! A worker owns the loaded models of the tenants it serves (loaded on its
//! own pinned thread, before serving starts). Whenever it is free it runs a
//! step of the shared EDF dispatcher, which hands it the earliest-deadline
//! request it can serve; it runs that forward pass and reports a
//! [`Completion`] to telemetry. With nothing to do it sleeps on its
//! tenants' queues, its doorbell and the runtime's stop channel, so a
//! release wakes it directly.
//!
//! **Supervision.** A backend error becomes a `failed` outcome and the
//! worker carries on. A panic — in a forward pass (the model's state is
//! then suspect) or anywhere in the worker's loop — is caught by
//! [`AcceleratorWorker::supervise`]: the request it held is counted
//! `failed`, the dispatcher gives its tenants to the other workers that
//! hold their models, its models are reloaded on the same pinned thread,
//! and it rejoins the run. After [`MAX_RESTARTS`] restarts (or a reload
//! that fails) it stays out, and the run is reported degraded.

use crate::backend::LoadedModel;
use crate::clock::RunClock;
use crate::dataplane::ticket::{Answer, Timings, Work};
use crate::edf_dispatcher::{Next, SharedDispatcher, StepIo, WorkerDone, WorkerEvent};
use crate::faults::FaultInjector;
use crate::incidents::{panic_message, IncidentLog};
use crate::telemetry::{TelemetryEvent, TelemetrySender};
use crate::tenant_queue::{Submission, TenantCounters};
use crossbeam_channel::{Receiver, Select};
use ecomap::dispatch::{Job, StepEffects};
use ecomap::request::{Completion, Outcome, Request};
use ecomap::tensor::TensorData;
use ecomap::time::Timestamp;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a worker sleeps, once the run is ending, before it steps again
/// unasked: the end's last close may have no wake-up (see `sleep`).
const STOPPING_RECHECK: Duration = Duration::from_millis(10);

/// Restarts allowed per worker and run; past them a worker that keeps
/// panicking stays out rather than fail every request it takes.
pub const MAX_RESTARTS: u32 = 3;

/// Busy time counters the energy meter reads: per worker and per tenant,
/// in nanoseconds, including emulated throttling (a slower clock keeps a
/// unit busy for longer), and the pass each worker has in progress, so a
/// meter interval counts the part of a long pass that ran within it rather
/// than the whole pass in the interval it ends in.
#[derive(Debug)]
pub struct BusyCounters {
    /// `workers[w]`: worker `w`'s busy nanoseconds, of finished passes.
    pub workers: Vec<AtomicU64>,
    /// `tenants[t]`: nanoseconds spent serving tenant `t`, of finished passes.
    pub tenants: Vec<AtomicU64>,
    /// `throttled[w]`: of worker `w`'s busy nanoseconds, those it spent
    /// asleep emulating a lower clock (the report's `throttled`).
    pub throttled: Vec<AtomicU64>,
    /// Per worker: when its pass in progress started (run-clock
    /// nanoseconds + 1; 0 while idle), and whose request it serves.
    running: Vec<(AtomicU64, AtomicUsize)>,
}

impl BusyCounters {
    /// Zeroed counters.
    pub fn new(workers: usize, tenants: usize) -> Arc<Self> {
        Arc::new(BusyCounters {
            workers: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            tenants: (0..tenants).map(|_| AtomicU64::new(0)).collect(),
            throttled: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            running: (0..workers)
                .map(|_| (AtomicU64::new(0), AtomicUsize::new(0)))
                .collect(),
        })
    }

    /// Worker `w` started a pass for tenant `t` at `at`.
    pub fn pass_started(&self, w: usize, t: usize, at: Timestamp) {
        let (since, tenant) = &self.running[w];
        tenant.store(t, Ordering::Relaxed);
        since.store(at.as_nanos().saturating_add(1), Ordering::Release);
    }

    /// Worker `w` finished its pass for tenant `t`, busy `busy_ns` in all.
    pub fn pass_finished(&self, w: usize, t: usize, busy_ns: u64) {
        self.workers[w].fetch_add(busy_ns, Ordering::Release);
        self.tenants[t].fetch_add(busy_ns, Ordering::Release);
        self.running[w].0.store(0, Ordering::Release);
    }

    /// Worker `w` slept `slept` to emulate a lower clock (part of the busy
    /// time its pass will count when it finishes).
    pub fn pass_throttled(&self, w: usize, slept: Duration) {
        self.throttled[w].fetch_add(slept.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Worker `w`'s pass ended without finishing (a panic): its time so far
    /// is left uncounted, and it is idle.
    pub fn pass_abandoned(&self, w: usize) {
        self.running[w].0.store(0, Ordering::Release);
    }

    /// Busy time so far at `now`, (per worker, per tenant): finished passes
    /// and the running part of passes in progress. Read without locks, so
    /// a pass ending during the read may be counted in part twice or not
    /// at all for that moment; the meter keeps its baseline monotonic
    /// (never below an earlier read), so such a slip only shifts busy time
    /// between two neighbouring intervals, never adds or loses any.
    pub fn snapshot_at(&self, now: Timestamp) -> (Vec<Duration>, Vec<Duration>) {
        let mut workers: Vec<u64> = Vec::with_capacity(self.workers.len());
        let mut tenants: Vec<u64> = self
            .tenants
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .collect();
        for (w, (since, tenant)) in self.running.iter().enumerate() {
            let since = since.load(Ordering::Acquire);
            let mut busy = self.workers[w].load(Ordering::Acquire);
            if since != 0 {
                let running = now.as_nanos().saturating_sub(since - 1);
                busy += running;
                if let Some(t) = tenants.get_mut(tenant.load(Ordering::Relaxed)) {
                    *t += running;
                }
            }
            workers.push(busy);
        }
        let d = |v: Vec<u64>| v.into_iter().map(Duration::from_nanos).collect();
        (d(workers), d(tenants))
    }
}

/// A worker's links to the rest of the data plane.
#[derive(Debug)]
pub struct WorkerLinks {
    /// The dispatcher whose steps this worker runs when it is free.
    pub dispatcher: SharedDispatcher,
    /// The queues of the tenants it serves: it sleeps on them when idle, so
    /// a release wakes it directly.
    pub requests: Vec<Receiver<Submission>>,
    /// Rung by another worker's step when work is queued for this one.
    pub doorbell: Receiver<()>,
    /// Never carries a message: the runtime drops its sender at shutdown,
    /// and the disconnection wakes every sleeping worker. (Waking them with
    /// doorbells from the main thread would be a send from a lower-priority
    /// thread that a worker could preempt mid-write and spin on.)
    pub stop: Receiver<()>,
    /// Completions to telemetry (latency samples; never blocks).
    pub telemetry: TelemetrySender,
    /// `counters[t]`: tenant `t`'s exact outcome counts.
    pub counters: Arc<[Arc<TenantCounters>]>,
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
    /// Whether the stop channel has closed.
    stopping: bool,
    clock: RunClock,
    busy: Arc<BusyCounters>,
    faults: FaultInjector,
    failures_logged: u32,
    /// The request being served: counted `failed` if the worker panics
    /// while holding it.
    in_flight: Option<Request>,
    /// Its caller's input and ticket, if it has one.
    in_flight_work: Option<Box<Work>>,
    /// The work of the request this worker was woken with, for its next step.
    received: Option<Box<Work>>,
    /// What each step hands back besides its `Next` (reused).
    io: StepIo,
    /// The last completion, sent to telemetry after the next forward pass
    /// (or before sleeping), not between two passes: waking the telemetry
    /// thread costs microseconds the next request would wait for.
    pending: Option<Completion>,
    /// What the next dispatch step is told.
    event: WorkerEvent,
    /// When the worker last became free.
    free_since: Timestamp,
}

/// How [`AcceleratorWorker::run`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerExit {
    /// Every queue closed and drained: the dispatcher said exit.
    Drained,
    /// The worker panicked (message); what it held is counted.
    Crashed(String),
}

/// What one forward pass came to.
enum Pass {
    Succeeded,
    /// The backend returned an error (why).
    Failed(String),
    /// The backend panicked (why).
    Panicked(String),
}

/// Tells the dispatcher if the worker's thread unwinds outside the
/// supervised loop (a bug in the supervisor itself), so the other workers
/// neither wait for it at shutdown nor leave its tenants' requests
/// uncounted.
struct LostGuard {
    dispatcher: SharedDispatcher,
    worker: usize,
}

impl Drop for LostGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut d = self.dispatcher.lock();
            if !d.is_lost(self.worker) {
                d.worker_lost(self.worker);
            }
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
        faults: FaultInjector,
    ) -> Self {
        let open = vec![true; links.requests.len()];
        AcceleratorWorker {
            index,
            name,
            models,
            links,
            open,
            stopping: false,
            clock,
            busy,
            faults,
            failures_logged: 0,
            in_flight: None,
            in_flight_work: None,
            received: None,
            io: StepIo::default(),
            pending: None,
            event: WorkerEvent::Woke,
            free_since: Timestamp::ZERO,
        }
    }

    /// Serve until the run drains, restarting after a panic: the request
    /// held is counted `failed`, the worker leaves the dispatcher (its
    /// tenants go to the other workers holding their models), `reload`
    /// loads fresh models on this thread, and the worker rejoins. After
    /// [`MAX_RESTARTS`], or if a reload fails, it stays out and the run is
    /// reported degraded.
    pub fn supervise(
        mut self,
        mut reload: impl FnMut() -> Result<Vec<Vec<Box<dyn LoadedModel>>>, String>,
        incidents: &IncidentLog,
    ) {
        let _guard = LostGuard {
            dispatcher: self.links.dispatcher.clone(),
            worker: self.index,
        };
        let mut restarts = 0;
        loop {
            let why = match self.run() {
                WorkerExit::Drained => return,
                WorkerExit::Crashed(why) => why,
            };
            self.links.dispatcher.lock().worker_lost(self.index);
            restarts += 1;
            let name = self.name.clone();
            if restarts > MAX_RESTARTS {
                incidents.record(
                    format!(
                        "worker '{name}' panicked ({why}) after {MAX_RESTARTS} restarts; it stays \
                         out of the run: its tenants are served by the other workers that hold \
                         their models, or counted failed"
                    ),
                    true,
                );
                self.retire();
                return;
            }
            // Drop the suspect models before loading fresh ones.
            self.models = Vec::new();
            let t0 = std::time::Instant::now();
            let reloaded = std::panic::catch_unwind(AssertUnwindSafe(&mut reload))
                .unwrap_or_else(|p| Err(format!("the reload panicked: {}", panic_message(&*p))));
            match reloaded {
                Ok(models) => self.models = models,
                Err(e) => {
                    incidents.record(
                        format!(
                            "worker '{name}' panicked ({why}) and could not reload its models \
                             ({e}); it stays out of the run"
                        ),
                        true,
                    );
                    self.retire();
                    return;
                }
            }
            self.links.dispatcher.lock().worker_restored(self.index);
            incidents.record(
                format!(
                    "worker '{name}' panicked ({why}); the request it held was counted failed, \
                     its tenants went to the workers holding their models, and it restarted \
                     with its models reloaded in {:.2} s (restart {restarts} of {MAX_RESTARTS})",
                    t0.elapsed().as_secs_f64()
                ),
                false,
            );
            self.event = WorkerEvent::Woke;
            self.free_since = self.clock.now();
            self.failures_logged = 0;
            // Nothing of the crashed loop is carried over.
            self.io.answer_dropped();
            debug_assert!(self.io.work.is_none() && self.received.is_none());
        }
    }

    /// This worker stays out for good: tenants no other worker holds end
    /// their queued requests now (failed, each caller told why) and refuse
    /// new ones. The callers are answered after the lock is dropped.
    fn retire(&mut self) {
        // Whatever the crashed loop left to answer goes first.
        self.io.answer_dropped();
        self.links
            .dispatcher
            .lock()
            .worker_retired(self.index, &mut self.io);
        self.io.answer_dropped();
    }

    /// Serve until the dispatcher says every queue is closed and drained,
    /// or until a panic (caught: the request held is counted `failed`).
    pub fn run(&mut self) -> WorkerExit {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.serve_until_exit())) {
            Ok(exit) => exit,
            Err(payload) => {
                let why = panic_message(&*payload);
                // A pass cut short by the panic is busy no longer.
                self.busy.pass_abandoned(self.index);
                self.count_held_failed(&why);
                WorkerExit::Crashed(why)
            }
        }
    }

    /// After a panic: the request held (if any) ends `failed` (its caller
    /// hears why); the last completion still goes to telemetry. (A panic
    /// can only come from the forward pass or the fault hook, both after
    /// the step that queued any request the worker was woken with.)
    fn count_held_failed(&mut self, why: &str) {
        if let Some(r) = self.in_flight.take() {
            self.links.counters[r.tenant.index()].count(Outcome::Failed);
            if let Some(work) = self.in_flight_work.take() {
                work.resolve(Answer::unserved(
                    r,
                    Outcome::Failed,
                    Some(format!("the worker serving it panicked: {why}")),
                ));
            }
        }
        debug_assert!(self.in_flight_work.is_none(), "work only with a request");
        self.flush();
    }

    fn serve_until_exit(&mut self) -> WorkerExit {
        // The step's effects (expiries, doorbells), reused so a step never
        // allocates once the buffers have grown.
        let mut fx = StepEffects::default();
        loop {
            let event = std::mem::replace(&mut self.event, WorkerEvent::Woke);
            let received = self.received.take();
            match self
                .links
                .dispatcher
                .next_job(self.index, event, received, &mut fx, &mut self.io)
            {
                Next::Run(job) => {
                    self.in_flight = Some(job.request);
                    self.in_flight_work = self.io.work.take();
                    self.faults.worker_hook(self.index);
                    let started = self.clock.now();
                    self.busy
                        .pass_started(self.index, job.request.tenant.index(), started);
                    let (pass, outputs) = self.serve(&job);
                    if job.throttle > 1.0 {
                        // Emulated lower clock: stretch the pass by
                        // duty-cycling — the unit stays busy (accounted
                        // below) but the core sleeps.
                        let ran = self.clock.now();
                        std::thread::sleep(
                            ran.saturating_since(started).mul_f64(job.throttle - 1.0),
                        );
                        self.busy
                            .pass_throttled(self.index, self.clock.now().saturating_since(ran));
                    }
                    let finished = self.clock.now();
                    let busy = finished.saturating_since(started).as_nanos() as u64;
                    self.busy
                        .pass_finished(self.index, job.request.tenant.index(), busy);
                    self.flush();
                    let completion = Completion {
                        request: job.request,
                        worker: self.index,
                        dispatched: job.dispatched,
                        eligible: job.request.release.max(self.free_since),
                        started,
                        finished,
                        succeeded: matches!(pass, Pass::Succeeded),
                        variant: u8::try_from(job.variant).unwrap_or(u8::MAX),
                    };
                    // Counted exactly once, here, where the outcome is known.
                    let outcome = completion.outcome();
                    self.links.counters[job.request.tenant.index()].count(outcome);
                    self.in_flight = None;
                    if let Some(work) = self.in_flight_work.take() {
                        // The caller hears at once; telemetry can wait.
                        work.resolve(Answer {
                            request: job.request,
                            outcome,
                            outputs,
                            variant: Some(job.variant),
                            timings: completion.succeeded.then(|| Timings {
                                queueing: completion.queueing(),
                                service: completion.service(),
                                end_to_end: completion.end_to_end(),
                            }),
                            error: match &pass {
                                Pass::Succeeded => None,
                                Pass::Failed(why) | Pass::Panicked(why) => Some(why.clone()),
                            },
                        });
                    }
                    self.pending = Some(completion);
                    self.free_since = finished;
                    if let Pass::Panicked(why) = pass {
                        self.flush();
                        return WorkerExit::Crashed(why);
                    }
                    self.event = WorkerEvent::Finished(WorkerDone {
                        tenant: job.request.tenant.index(),
                        variant: job.variant,
                        service: completion.service(),
                        throttle: job.throttle,
                        unit_cost: job.unit_cost,
                        missed: completion.outcome().is_miss(),
                        served: completion.succeeded,
                    });
                }
                Next::Wait => {
                    self.flush();
                    self.event = self.sleep();
                }
                Next::Exit => {
                    self.flush();
                    return WorkerExit::Drained;
                }
            }
        }
    }

    fn flush(&mut self) {
        if let Some(c) = self.pending.take() {
            // Never blocks: a sink that is behind costs a counted sample.
            self.links.telemetry.send(TelemetryEvent::Completed(c));
        }
    }

    /// Sleep until a request arrives on one of this worker's queues (taking
    /// it), a queue closes, the doorbell rings or the runtime stops.
    /// crossbeam wakes one sleeping receiver per message, so one release
    /// wakes one worker.
    fn sleep(&mut self) -> WorkerEvent {
        let mut sel = Select::new();
        let doorbell = sel.recv(&self.links.doorbell);
        let stop = (!self.stopping).then(|| sel.recv(&self.links.stop));
        let mut ops = Vec::with_capacity(self.links.requests.len());
        for (i, rx) in self.links.requests.iter().enumerate() {
            if self.open[i] {
                ops.push((sel.recv(rx), i));
            }
        }
        // While the run ends, a tenant whose caller keeps a handle closes
        // only when a step finds nothing more can arrive (see
        // `EdfDispatcher::pull_arrivals`); nothing rings for that, so a
        // stopping worker steps again after a short wait.
        let oper = if self.stopping {
            match sel.select_timeout(STOPPING_RECHECK) {
                Ok(oper) => oper,
                Err(_) => return WorkerEvent::Woke,
            }
        } else {
            sel.select()
        };
        let index = oper.index();
        if index == doorbell {
            // Disconnected cannot happen while this worker holds the
            // dispatcher (which holds the sender); either way: step.
            let _ = oper.recv(&self.links.doorbell);
            return WorkerEvent::Woke;
        }
        if Some(index) == stop {
            // Only ever disconnected: stop listening to it, and step.
            let _ = oper.recv(&self.links.stop);
            self.stopping = true;
            return WorkerEvent::Woke;
        }
        let Some(&(_, i)) = ops.iter().find(|(op, _)| *op == index) else {
            return WorkerEvent::Woke;
        };
        match oper.recv(&self.links.requests[i]) {
            Ok(Submission { request, work }) => {
                self.received = work;
                WorkerEvent::Received(request)
            }
            Err(_) => {
                // Closed: stop listening to it; the step notices too.
                self.open[i] = false;
                WorkerEvent::Woke
            }
        }
    }

    /// Run `job`: on its caller's input when it has one (returning the
    /// model's outputs), else on the model's own input.
    fn serve(&mut self, job: &Job) -> (Pass, Vec<TensorData>) {
        let t = job.request.tenant.index();
        let Some(model) = self.models.get_mut(t).and_then(|m| m.get_mut(job.variant)) else {
            let why = format!(
                "worker '{}' got a request of tenant #{t} (variant {}) whose model it does not hold",
                self.name, job.variant
            );
            self.log_failure(why.clone());
            return (Pass::Failed(why), Vec::new());
        };
        let (faults, index) = (&self.faults, self.index);
        let input = self.in_flight_work.as_ref().map(|w| &w.input);
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
            faults.pass_hook(index);
            match input {
                Some(x) => model.infer(x),
                None => model.run().map(|()| Vec::new()),
            }
        }));
        match ran {
            Ok(Ok(outputs)) => (Pass::Succeeded, outputs),
            Ok(Err(e)) => {
                let why = format!("worker '{}': {e}", self.name);
                self.log_failure(why.clone());
                (Pass::Failed(why), Vec::new())
            }
            Err(payload) => (
                Pass::Panicked(format!(
                    "the backend panicked during a forward pass: {}",
                    panic_message(&*payload)
                )),
                Vec::new(),
            ),
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
