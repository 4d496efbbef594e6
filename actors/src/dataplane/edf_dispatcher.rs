//! `EdfDispatcher`: hands admitted requests to free accelerator workers,
//! earliest deadline first.
//!
//! A thin adapter around the core's pure dispatch step
//! ([`ecomap::dispatch::DispatchCore`], which the simulator drives too): it
//! adds the receiving ends of the tenant queues, the run's clock, the power
//! state from the governor, the tenants' outcome counters (expiries and
//! sheds are counted here, where they are decided), and the doorbells that
//! carry the step's wake-ups to idle workers. It is an actor
//! without a thread of its own: the worker that has just become free runs
//! one dispatch step under the dispatcher's lock ([`SharedDispatcher::next_job`]),
//! takes the job that step picks for it, and — after dropping the lock —
//! delivers the step's effects. So
//! - a request released while a worker is idle reaches that worker in one
//!   wake-up (the tenant queue's send wakes the worker, which dispatches to
//!   itself), not two (sender → dispatcher thread → worker);
//! - a request queued behind busy workers starts in no wake-up at all: the
//!   worker that finishes takes it in the same breath.
//!
//! Those two hops were most of the runtime's dispatch latency under load
//! (docs/results.md §1). Under the lock the adapter pulls every newly
//! admitted request and the latest power state into the core and runs the
//! core's step (see `ecomap::dispatch::step` for what it decides); the
//! doorbells are rung after the lock is dropped, so no worker ever waits
//! for the lock behind a channel operation.
//!
//! No thread ever waits long for the lock: steps are O(log n), perform no
//! I/O, and only workers take it. Idle workers sleep in a `crossbeam_channel::Select` over
//! their tenants' queues and their doorbell (see `accelerator_worker`), so
//! crossbeam wakes exactly one of them per request.
//!
//! A worker is told to exit once every tenant queue is closed and the heap
//! holds nothing it can serve; [`EdfDispatcher::finish`] then counts anything
//! no worker could take (a worker died for good) as `failed`, never
//! silently. A worker that dies and is restarted leaves the run with
//! [`EdfDispatcher::worker_lost`] and comes back with
//! [`EdfDispatcher::worker_restored`]; meanwhile the core gives its tenants
//! to the other workers that hold their models.
//!
//! ```
//! use crossbeam_channel::bounded;
//! use ecomap::config::workload::Workload;
//! use ecomap::dispatch::QueueOrder;
//! use ecomap::request::TenantId;
//! use ecomap_actors::clock::RunClock;
//! use ecomap_actors::edf_dispatcher::{EdfDispatcher, Next, WorkerEvent, WorkerSlot};
//! use ecomap_actors::tenant_queue::tenant_queue;
//!
//! let workload: Workload = ecomap::config::parse_ron(
//!     r#"(tenants: [(name: "cam", model: Synthetic(service: "1ms"),
//!         arrival: Periodic(rate_hz: 30.0), deadline: "33ms", capacity: 4)])"#,
//!     std::path::Path::new("example"),
//!     "workload",
//! )
//! .unwrap();
//! let clock = RunClock::start();
//! let (queue, receiver) = tenant_queue(TenantId(0), &workload.tenants[0], clock);
//! let (doorbell, _ring) = bounded(1);
//! let mut dispatcher = EdfDispatcher::new(
//!     QueueOrder::EarliestDeadline,
//!     vec![receiver],
//!     vec![WorkerSlot::new(doorbell, vec![true])],
//!     clock,
//! );
//! let request = queue.submit().unwrap();
//! // Worker 0 is free: the step hands it the request.
//! match dispatcher.next_job(0, WorkerEvent::Woke) {
//!     Next::Run(job) => assert_eq!(job.request.id, request.id),
//!     other => panic!("expected a job, got {other:?}"),
//! }
//! ```

use crate::clock::RunClock;
use crate::dataplane::lost_units::LostUnits;
use crate::dataplane::plan_cell::PlanCell;
use crate::dataplane::power_cell::PowerCell;
use crate::dataplane::ticket::{Answer, Work};
use crate::tenant_queue::{Submission, TenantQueueReceiver};
use crossbeam_channel::{Sender, TryRecvError};
use ecomap::dispatch::{DispatchCore, QueueOrder, StepEffects};
use ecomap::request::{Outcome, Request};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub use ecomap::dispatch::{Job, JobDone as WorkerDone, Next, StepEvent as WorkerEvent};

/// The dispatcher's view of one worker: how to wake it, and which tenants
/// it serves.
#[derive(Debug)]
pub struct WorkerSlot {
    /// Wakes the worker when it sleeps and work arrives for it (1 slot; a
    /// full doorbell has already been rung).
    pub doorbell: Sender<()>,
    /// `serves[t]`: whether it holds tenant `t`'s model.
    pub serves: Vec<bool>,
}

impl WorkerSlot {
    /// A worker, not yet started, serving the tenants marked in `serves`.
    pub fn new(doorbell: Sender<()>, serves: Vec<bool>) -> Self {
        WorkerSlot { doorbell, serves }
    }
}

/// Counts kept by the dispatcher.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DispatcherStats {
    /// Requests handed to workers.
    pub dispatched: u64,
    /// Requests dropped because their deadline passed before they started.
    pub expired: u64,
    /// Requests shed: predicted to finish past their deadline.
    pub shed: u64,
    /// Requests no worker could take, counted `failed`: those of a
    /// tenant whose every worker went out for good (ended at once), and
    /// those still queued at the end with no live worker holding them.
    pub unserved: u64,
    /// Dispatch steps run.
    pub steps: u64,
    /// Doorbells rung (a worker woken by another's step).
    pub doorbells: u64,
    /// Largest number of requests queued at once.
    pub max_queued: usize,
    /// Model swaps decided, in order.
    pub swaps: Vec<ecomap::quality::Swap>,
    /// Admission slots still held when the end of the run gave up waiting
    /// for them (a submitter stalled between its take and its send: a
    /// bug). Each is a request counted `submitted` with no outcome.
    pub stalled_slots: u64,
}

impl DispatcherStats {
    fn from_core(s: ecomap::dispatch::DispatchStats, outbox: &Outbox, unserved: u64) -> Self {
        DispatcherStats {
            dispatched: s.dispatched,
            expired: s.expired,
            shed: s.shed,
            unserved: unserved + s.unservable,
            steps: s.steps,
            doorbells: outbox.rung.load(Ordering::Relaxed),
            max_queued: s.max_queued,
            swaps: s.swaps,
            stalled_slots: 0,
        }
    }
}

/// Where a step's wake-ups go: the workers' doorbells. Shared (cloned
/// senders) so they are rung without the dispatcher's lock.
#[derive(Debug, Clone)]
struct Outbox {
    doorbells: Arc<[Sender<()>]>,
    /// Doorbells rung so far (counted without the lock).
    rung: Arc<AtomicU64>,
}

impl Outbox {
    /// Ring the doorbells a step asked for (expiries and sheds were counted
    /// under the lock). A full doorbell has already been rung: one is enough.
    fn deliver(&self, fx: &StepEffects) {
        for &w in &fx.wake {
            if self.doorbells[w].try_send(()).is_ok() {
                self.rung.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What a step hands back besides its [`Next`]: the caller's input and
/// ticket for the job it gave the worker (if the request has one), and the
/// tickets of requests it expired or shed, to resolve once the lock is
/// dropped. Owned by the worker and reused, so a step does not allocate.
#[derive(Debug, Default)]
pub struct StepIo {
    /// The job's work, if its caller handed in an input.
    pub work: Option<Box<Work>>,
    /// Dropped requests whose callers wait for an answer.
    pub dropped: Vec<(Box<Work>, Request, Outcome)>,
}

impl StepIo {
    /// Resolve the dropped requests' tickets (never blocks).
    pub fn answer_dropped(&mut self) {
        for (work, request, outcome) in self.dropped.drain(..) {
            // The one way the step fails a request: its tenant's workers
            // are all out for good.
            let why = (outcome == Outcome::Failed).then(|| NO_WORKER_LEFT.to_string());
            work.resolve(Answer::unserved(request, outcome, why));
        }
    }
}

/// Why a request of a tenant whose every worker is out for good failed.
const NO_WORKER_LEFT: &str =
    "no worker holding its model is left (every one failed for good after its restarts)";

/// The EDF dispatcher: the core's step plus the channels around it.
#[derive(Debug)]
pub struct EdfDispatcher {
    core: DispatchCore,
    /// The inputs and tickets of queued requests whose callers wait for an
    /// answer, by (tenant, id): they travel beside the core's heap, which
    /// holds plain requests.
    works: HashMap<(u16, u64), Box<Work>>,
    tenants: Vec<TenantQueueReceiver>,
    open: Vec<bool>,
    outbox: Outbox,
    clock: RunClock,
    power: Option<PowerCell>,
    /// The plan cell and the last generation applied (a plan may only
    /// move a tenant among the workers that hold its models: the core
    /// knows which).
    plan: Option<(PlanCell, u64)>,
    /// The workers out, for a planner to plan around.
    lost_units: Option<Arc<LostUnits>>,
}

impl EdfDispatcher {
    /// A dispatcher over these tenant queues and workers.
    pub fn new(
        order: QueueOrder,
        tenants: Vec<TenantQueueReceiver>,
        workers: Vec<WorkerSlot>,
        clock: RunClock,
    ) -> Self {
        let n = tenants.len();
        let (doorbells, serves): (Vec<_>, Vec<_>) =
            workers.into_iter().map(|w| (w.doorbell, w.serves)).unzip();
        EdfDispatcher {
            core: DispatchCore::new(order, n, serves),
            works: HashMap::with_capacity(256),
            tenants,
            open: vec![true; n],
            outbox: Outbox {
                doorbells: doorbells.into(),
                rung: Arc::new(AtomicU64::new(0)),
            },
            clock,
            power: None,
            plan: None,
            lost_units: None,
        }
    }

    /// Publish which workers are out in `units`.
    pub fn with_lost_units(mut self, units: Arc<LostUnits>) -> Self {
        self.lost_units = Some(units);
        self
    }

    fn mark_lost(&self, worker: usize, lost: bool) {
        if let Some(units) = &self.lost_units {
            units.set(worker, lost);
        }
    }

    /// Pick each request's model variant with `controller` from now on.
    pub fn set_quality(&mut self, controller: ecomap::quality::QualityController) {
        self.core.set_quality(controller);
    }

    /// Shed the hopeless requests of the tenants marked in `mask`.
    pub fn set_shedding(&mut self, mask: Vec<bool>) {
        self.core.set_shedding(mask);
    }

    /// Seed the shedding estimate of tenant `t`'s variant `v` (a warm-up
    /// pass's time).
    pub fn seed_service(&mut self, t: usize, v: usize, full_speed: std::time::Duration) {
        self.core.seed_service(t, v, full_speed);
    }

    /// Set worker `w`'s cost of tenant `t`'s variants relative to the
    /// fastest kind of worker that holds it (see
    /// [`ecomap::dispatch::DispatchCore::set_relative_cost`]).
    pub fn set_relative_cost(&mut self, w: usize, t: usize, relative: Vec<f64>) {
        self.core.set_relative_cost(w, t, relative);
    }

    /// Apply the mapping planner's variants from `cell` at every step (the
    /// policy's quality controller then carries on from them).
    pub fn with_plan_updates(mut self, cell: PlanCell, tenants: usize) -> Self {
        debug_assert_eq!(tenants, self.tenants.len(), "one plan entry per tenant");
        self.plan = Some((cell, 0));
        self
    }

    /// Read the governor's power state from `cell` at every step.
    pub fn with_power_updates(mut self, cell: PowerCell) -> Self {
        self.power = Some(cell);
        self
    }

    /// Counts so far.
    pub fn stats(&self) -> DispatcherStats {
        DispatcherStats::from_core(self.core.stats().clone(), &self.outbox, 0)
    }

    /// One dispatch step on behalf of free worker `worker`, effects
    /// delivered at once (for callers that hold no lock and run requests
    /// without inputs, e.g. tests; a job's work, which such a caller cannot
    /// run, is answered `failed`).
    pub fn next_job(&mut self, worker: usize, event: WorkerEvent) -> Next {
        let mut fx = StepEffects::default();
        let mut io = StepIo::default();
        let next = self.step(worker, event, None, &mut fx, &mut io);
        self.outbox.deliver(&fx);
        io.answer_dropped();
        if let (Some(work), Next::Run(job)) = (io.work.take(), &next) {
            work.resolve(Answer::unserved(
                job.request,
                Outcome::Failed,
                Some("taken by a caller that runs no inputs".into()),
            ));
        }
        next
    }

    /// One dispatch step on behalf of free worker `worker`: pull new
    /// requests and the power state into the core, run its step, and
    /// account what it dispatched or expired. `received` is the work of the
    /// request the worker was woken with, if any. The effects are left in
    /// `fx` and `io` for the caller to deliver once the lock is dropped.
    fn step(
        &mut self,
        worker: usize,
        event: WorkerEvent,
        received: Option<Box<Work>>,
        fx: &mut StepEffects,
        io: &mut StepIo,
    ) -> Next {
        debug_assert!(io.work.is_none() && io.dropped.is_empty(), "io delivered");
        // The request a worker was woken with left its channel already:
        // queue it first, in release order before anything pulled now.
        let event = match event {
            WorkerEvent::Received(r) => {
                self.core.admit(r);
                if let Some(w) = received {
                    let earlier = self.works.insert((r.tenant.0, r.id), w);
                    debug_assert!(earlier.is_none(), "one caller's work per request id");
                }
                WorkerEvent::Woke
            }
            other => {
                debug_assert!(received.is_none(), "work comes with a received request");
                other
            }
        };
        self.pull_arrivals();
        self.pull_power();
        self.pull_plan();
        let next = self.core.step(worker, event, self.clock.now(), fx);
        self.count_dropped(fx, io);
        if let Next::Run(job) = &next {
            let r = job.request;
            io.work = self.works.remove(&(r.tenant.0, r.id));
            self.release_slot(&job.request);
            self.tenants[job.request.tenant.index()]
                .counters
                .active_variant
                .store(job.variant, Ordering::Relaxed);
        }
        next
    }

    /// Worker `worker` is gone (its thread panicked): never pick it again
    /// unless it is restored, give its tenants to the other workers that
    /// hold their models, and wake those in case they must take over or
    /// exit. Called from the failing worker's own thread: its doorbells are
    /// worker-to-worker sends the rt-config check covers.
    pub fn worker_lost(&mut self, worker: usize) {
        let mut fx = StepEffects::default();
        self.core.unit_lost(worker, &mut fx);
        self.mark_lost(worker, true);
        self.outbox.deliver(&fx);
    }

    /// Lost worker `worker` stays out for good (its restarts are spent, or
    /// a reload failed). A tenant no other worker holds can never be
    /// served again: its queue handles refuse new requests from now on
    /// (`SubmitError::NoWorker`, counted `rejected`), and what it had
    /// queued — pulled from its channel first — fails now, each caller
    /// told why, rather than wait for the run's end. (A request sent in
    /// the instant between a submitter reading the flag unset and this
    /// pull sits in the channel, which no live worker listens on, until
    /// any worker's next step or the run's end: it still ends `failed`,
    /// once.) The tickets are returned in `io` to be resolved once the
    /// lock is dropped.
    pub fn worker_retired(&mut self, worker: usize, io: &mut StepIo) {
        debug_assert!(io.dropped.is_empty(), "io delivered");
        let mut fx = StepEffects::default();
        self.core.unit_retired(worker, &mut fx);
        for t in 0..self.tenants.len() {
            if self.core.is_orphaned(t) {
                // The flag before the pull: a submitter that reads it unset
                // sends, and this pull, or a later step's, finds its
                // request. Only the orphaned tenants' channels: a request
                // of another tenant taken here would wait, unrung, for its
                // own worker's next step.
                self.tenants[t]
                    .counters
                    .no_worker
                    .store(true, Ordering::Release);
                self.pull_tenant(t);
            }
        }
        self.core.take_unservable(&mut fx);
        self.count_dropped(&fx, io);
    }

    /// Count the requests a step dropped — expired, shed, or unservable
    /// (`failed`) — give back their slots, and hand their callers' work to
    /// `io`, to be answered once the lock is dropped.
    fn count_dropped(&mut self, fx: &StepEffects, io: &mut StepIo) {
        for (list, outcome) in [
            (&fx.expired, Outcome::Expired),
            (&fx.shed, Outcome::Shed),
            (&fx.unservable, Outcome::Failed),
        ] {
            for r in list {
                self.release_slot(r);
                self.tenants[r.tenant.index()].counters.count(outcome);
                if let Some(w) = self.works.remove(&(r.tenant.0, r.id)) {
                    io.dropped.push((w, *r, outcome));
                }
            }
        }
    }

    /// Whether worker `worker` was lost and not restored.
    pub fn is_lost(&self, worker: usize) -> bool {
        self.core.is_lost(worker)
    }

    /// Lost worker `worker` is back with its models reloaded: it serves
    /// every tenant it holds again and runs a `Woke` step next.
    pub fn worker_restored(&mut self, worker: usize) {
        self.core.unit_restored(worker);
        self.mark_lost(worker, false);
    }

    /// Ring every live worker's doorbell. Doorbells are `try_send`s that
    /// never block, so ringing with the lock held holds up no one; ring
    /// only from a worker's thread (a lower-priority thread ringing a
    /// worker's doorbell could be preempted mid-send by it — the runtime's
    /// main thread wakes workers by closing their stop channel instead).
    pub fn ring_all(&mut self) {
        let mut fx = StepEffects::default();
        self.core.wake_all(&mut fx);
        self.outbox.deliver(&fx);
    }

    /// End of the run, after every worker has exited: count whatever is
    /// still queued — requests no live worker could serve — as `failed`, and
    /// return the counts.
    ///
    /// A caller may still hold a handle to a tenant no worker was left to
    /// serve, and be sending: its tenant's admission is closed first, and
    /// the channel drained until no admitted request is in flight, so a
    /// request sent during the shutdown is failed and counted here rather
    /// than dropped, uncounted, with the channel.
    pub fn finish(mut self) -> DispatcherStats {
        for t in self.tenants.iter() {
            t.counters.waiting.close();
        }
        self.pull_arrivals();
        let EdfDispatcher {
            core,
            tenants,
            outbox,
            mut works,
            ..
        } = self;
        let (left, s) = core.finish();
        let fail = |r: &Request, work: Option<Box<Work>>, reason: &str| {
            let counters = &tenants[r.tenant.index()].counters;
            counters.waiting.give_back();
            counters.count(Outcome::Failed);
            if let Some(w) = work {
                w.resolve(Answer::unserved(*r, Outcome::Failed, Some(reason.into())));
            }
        };
        for r in &left {
            let work = works.remove(&(r.tenant.0, r.id));
            fail(r, work, "no worker holding its model was left to serve it");
        }
        debug_assert!(works.is_empty(), "every queued request's work is resolved");
        let mut unserved = left.len() as u64;
        // Nothing between a take and its send can block, so this is a
        // bound a healthy submitter never comes near; past it a slot has
        // leaked (a bug), and the end goes on rather than hang.
        let patience = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut stalled_slots = 0;
        for t in tenants.iter() {
            // Slots still held belong to submitters that were admitted
            // before the close and have sent, or are about to send, or
            // that are counting a refusal.
            while t.counters.waiting.held() > 0 {
                match t.rx.try_recv() {
                    Ok(Submission { request, work }) => {
                        fail(
                            &request,
                            work,
                            "the runtime shut down before it could be served",
                        );
                        unserved += 1;
                    }
                    // The submitter is between its take and its send:
                    // sleep (not spin) so it runs even below our priority.
                    // Only while nothing is waiting: what was sent is
                    // always received first.
                    Err(TryRecvError::Empty) if std::time::Instant::now() > patience => {
                        stalled_slots += t.counters.waiting.held() as u64;
                        tracing::error!(
                            "{stalled_slots} admission slot(s) still held 5 s after the end: \
                             a submitter stalled between its take and its send (a bug); its \
                             request has no outcome"
                        );
                        break;
                    }
                    Err(TryRecvError::Empty) => {
                        std::thread::sleep(std::time::Duration::from_micros(50))
                    }
                    Err(TryRecvError::Disconnected) => {
                        debug_assert!(false, "a slot is held with no sender left");
                        break;
                    }
                }
            }
        }
        DispatcherStats {
            stalled_slots,
            ..DispatcherStats::from_core(s, &outbox, unserved)
        }
    }

    /// The request left the tenant's queue (dispatched or expired): its
    /// admission slot is free again.
    fn release_slot(&self, r: &Request) {
        self.tenants[r.tenant.index()].counters.waiting.give_back();
    }

    fn pull_arrivals(&mut self) {
        for i in 0..self.tenants.len() {
            self.pull_tenant(i);
        }
    }

    /// Take what tenant `i`'s channel holds into the core (see
    /// [`EdfDispatcher::pull_arrivals`]).
    fn pull_tenant(&mut self, i: usize) {
        if !self.open[i] {
            return;
        }
        loop {
            match self.tenants[i].rx.try_recv() {
                Ok(Submission { request, work }) => {
                    self.core.admit(request);
                    if let Some(w) = work {
                        let earlier = self.works.insert((request.tenant.0, request.id), w);
                        debug_assert!(earlier.is_none(), "one caller's work per request id");
                    }
                }
                Err(TryRecvError::Empty) => {
                    // At the end of the run (`Runtime::shutdown` closes
                    // the admission slots first) a caller may still hold
                    // a handle, so the channel never disconnects. Every
                    // request in the channel or on its way there holds a
                    // slot, as does every one in the core's queue, and
                    // no slot is taken after the close: once the slots
                    // held are no more than the core's queue, nothing
                    // more can arrive, and the tenant is closed as if
                    // disconnected. (A refusal being counted reads one
                    // high: that only puts the close off to a later
                    // step; a stopping worker steps again within 10 ms.)
                    let slots = &self.tenants[i].counters.waiting;
                    if slots.is_closed() {
                        let (held, queued) = (slots.held(), self.core.queued(i));
                        debug_assert!(held >= queued, "every queued request holds a slot");
                        if held <= queued {
                            self.open[i] = false;
                            self.core.close(i);
                        }
                    }
                    break;
                }
                Err(TryRecvError::Disconnected) => {
                    self.open[i] = false;
                    self.core.close(i);
                    break;
                }
            }
        }
    }

    fn pull_plan(&mut self) {
        let Some((cell, seen)) = &mut self.plan else {
            return;
        };
        if let Some((generation, plan)) = cell.newer_than(*seen) {
            *seen = generation;
            let now = self.clock.now();
            // Variants, and each tenant onto its planned worker where that
            // worker holds its models and is alive, between requests (the
            // core's rule, the simulator's too). The wake-ups are not
            // needed here: the step that follows wakes every idle worker
            // that now has work.
            let mut scratch = StepEffects::default();
            self.core
                .apply_plan(Some(&plan.variants), Some(&plan.units), now, &mut scratch);
        }
    }

    fn pull_power(&mut self) {
        if let Some(p) = self.power.as_ref().and_then(PowerCell::latest) {
            self.core.set_throttle_all(p.throttle.max(1.0));
        }
    }
}

/// The dispatcher shared by the workers that run its steps.
#[derive(Debug, Clone)]
pub struct SharedDispatcher {
    inner: Arc<Mutex<EdfDispatcher>>,
    outbox: Outbox,
}

impl SharedDispatcher {
    /// Share `dispatcher`.
    pub fn new(dispatcher: EdfDispatcher) -> Self {
        let outbox = dispatcher.outbox.clone();
        SharedDispatcher {
            inner: Arc::new(Mutex::new(dispatcher)),
            outbox,
        }
    }

    /// Lock it. A step panics only on a bug; one that panicked after
    /// taking a request off the heap leaves that request without an
    /// outcome (and its slot held), which the report's conservation check
    /// then shows. The rest of the state is whole between its updates, so
    /// a poisoned lock is used as is rather than halting serving.
    pub fn lock(&self) -> MutexGuard<'_, EdfDispatcher> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One dispatch step for `worker` (woken with `received`'s request, if
    /// the event says so): the step under the lock, then its effects
    /// delivered with the lock dropped. The job's work, if any, is left in
    /// `io.work`.
    pub fn next_job(
        &self,
        worker: usize,
        event: WorkerEvent,
        received: Option<Box<Work>>,
        fx: &mut StepEffects,
        io: &mut StepIo,
    ) -> Next {
        let next = self.lock().step(worker, event, received, fx, io);
        // The lock is dropped here, before any send: ringing a doorbell or
        // answering a ticket must never hold up the other workers' steps.
        self.outbox.deliver(fx);
        io.answer_dropped();
        next
    }

    /// Take the dispatcher back once every worker is done with it; `None`
    /// if a clone is still alive somewhere.
    pub fn into_inner(self) -> Option<EdfDispatcher> {
        let SharedDispatcher { inner, outbox } = self;
        drop(outbox);
        Arc::into_inner(inner).map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
    }
}
