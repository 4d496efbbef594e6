//! `EdfDispatcher`: hands admitted requests to free accelerator workers,
//! earliest deadline first.
//!
//! The dispatcher owns the core's [`DispatchQueue`] (the deadline heap), the
//! receiving ends of the tenant queues, its view of which workers are idle,
//! the power state and the quality controller. It is an actor without a
//! thread of its own: the worker that has just become free runs one
//! dispatch step ([`EdfDispatcher::next_job`]) under the dispatcher's lock,
//! and takes the job that step picks for it. So
//! - a request released while a worker is idle reaches that worker in one
//!   wake-up (the tenant queue's send wakes the worker, which dispatches to
//!   itself), not two (sender → dispatcher thread → worker);
//! - a request queued behind busy workers starts in no wake-up at all: the
//!   worker that finishes takes it in the same breath.
//!
//! Those two hops were most of the runtime's dispatch latency under load
//! (docs/results.md §1). One step:
//! 1. records the caller's finished job (for the quality controller) or
//!    queues the request the caller was woken with;
//! 2. pulls every newly admitted request into the deadline heap, and the
//!    latest power state;
//! 3. drops (as `expired`) every request whose deadline has passed;
//! 4. pops the earliest-deadline request the caller holds the model for,
//!    choosing its model variant;
//! 5. rings the doorbell of every other idle worker that now has work (or
//!    must notice that every queue closed), so nothing waits for a worker
//!    that is asleep.
//!
//! No thread ever waits long for the lock: steps are O(log n) and only
//! workers take it. Idle workers sleep in a `crossbeam_channel::Select` over
//! their tenants' queues and their doorbell (see `accelerator_worker`), so
//! crossbeam wakes exactly one of them per request.
//!
//! A worker is told to exit once every tenant queue is closed and the heap
//! holds nothing it can serve; [`EdfDispatcher::finish`] then counts anything
//! no worker could take (a worker died) as `failed`, never silently.
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
//! let (telemetry, _events) = bounded(16);
//! let mut dispatcher = EdfDispatcher::new(
//!     QueueOrder::EarliestDeadline,
//!     vec![receiver],
//!     vec![WorkerSlot::new(doorbell, vec![true])],
//!     telemetry,
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
use crate::telemetry::TelemetryEvent;
use crate::tenant_queue::TenantQueueReceiver;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use ecomap::dispatch::{DispatchQueue, QueueOrder};
use ecomap::request::Request;
use ecomap::time::Timestamp;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

/// A request handed to a worker.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    /// The request.
    pub request: Request,
    /// When the dispatcher handed it over.
    pub dispatched: Timestamp,
    /// Stretch the forward pass by this factor (≥ 1): the emulated
    /// platform's slowdown at the current cap; 1 on real devices.
    pub throttle: f64,
    /// Which variant of the tenant's family to run (0 = heaviest).
    pub variant: usize,
}

/// What a worker reports about the job it just finished.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkerDone {
    /// Tenant of the request it finished.
    pub tenant: usize,
    /// Variant that served it.
    pub variant: usize,
    /// Its service time (throttle included).
    pub service: std::time::Duration,
    /// The throttle it ran under.
    pub throttle: f64,
    /// Whether it finished after its deadline (or failed).
    pub missed: bool,
}

/// Why a worker runs a dispatch step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WorkerEvent {
    /// It starts serving, or its doorbell rang, or one of its queues closed.
    Woke,
    /// It finished a job and is free.
    Finished(WorkerDone),
    /// It was woken by (and took) this request from a tenant queue.
    Received(Request),
}

/// What the worker does after a dispatch step.
#[derive(Debug, Clone, Copy)]
pub enum Next {
    /// Run this job.
    Run(Job),
    /// Nothing for you: sleep until a queue or the doorbell wakes you.
    Wait,
    /// Every queue is closed and nothing is left for you: end.
    Exit,
}

/// What the power governor tells the data plane when the cap changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerState {
    /// The cap in force (watts).
    pub cap_w: f64,
    /// Expected forward-pass slowdown at this cap (for feasibility checks).
    pub slowdown: f64,
    /// Factor the workers must stretch each forward pass by (emulation only).
    pub throttle: f64,
}

/// The dispatcher's view of one worker.
#[derive(Debug)]
pub struct WorkerSlot {
    /// Wakes the worker when it sleeps and work arrives for it (1 slot; a
    /// full doorbell has already been rung).
    pub doorbell: Sender<()>,
    /// `serves[t]`: whether it holds tenant `t`'s model.
    pub serves: Vec<bool>,
    idle: bool,
    gone: bool,
}

impl WorkerSlot {
    /// A worker, not yet started, serving the tenants marked in `serves`.
    pub fn new(doorbell: Sender<()>, serves: Vec<bool>) -> Self {
        WorkerSlot {
            doorbell,
            serves,
            idle: false,
            gone: false,
        }
    }
}

/// Counts kept by the dispatcher.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DispatcherStats {
    /// Requests handed to workers.
    pub dispatched: u64,
    /// Requests dropped because their deadline passed before they started.
    pub expired: u64,
    /// Requests no worker could take (their workers died); counted `failed`.
    pub unserved: u64,
    /// Dispatch steps run.
    pub steps: u64,
    /// Doorbells rung (a worker woken by another's step).
    pub doorbells: u64,
    /// Largest number of requests queued at once.
    pub max_queued: usize,
    /// Model swaps decided, in order.
    pub swaps: Vec<ecomap::quality::Swap>,
}

/// The EDF dispatcher: state plus the step the workers run.
#[derive(Debug)]
pub struct EdfDispatcher {
    queue: DispatchQueue,
    /// `queued[t]`: tenant `t`'s requests in the heap.
    queued: Vec<usize>,
    tenants: Vec<TenantQueueReceiver>,
    open: Vec<bool>,
    open_count: usize,
    workers: Vec<WorkerSlot>,
    telemetry: Sender<TelemetryEvent>,
    clock: RunClock,
    stats: DispatcherStats,
    power_rx: Option<Receiver<PowerState>>,
    power: Option<PowerState>,
    quality: Option<ecomap::quality::QualityController>,
}

impl EdfDispatcher {
    /// A dispatcher over these tenant queues and workers, reporting
    /// expiries to `telemetry`.
    pub fn new(
        order: QueueOrder,
        tenants: Vec<TenantQueueReceiver>,
        workers: Vec<WorkerSlot>,
        telemetry: Sender<TelemetryEvent>,
        clock: RunClock,
    ) -> Self {
        let capacity = tenants.iter().map(|t| t.rx.capacity().unwrap_or(0)).sum();
        let n = tenants.len();
        EdfDispatcher {
            queue: DispatchQueue::with_capacity(order, capacity),
            queued: vec![0; n],
            tenants,
            open: vec![true; n],
            open_count: n,
            workers,
            telemetry,
            clock,
            stats: DispatcherStats::default(),
            power_rx: None,
            power: None,
            quality: None,
        }
    }

    /// Pick each request's model variant with `controller` from now on.
    pub fn set_quality(&mut self, controller: ecomap::quality::QualityController) {
        self.quality = Some(controller);
    }

    /// Take power-state updates from the governor on `rx`.
    pub fn with_power_updates(mut self, rx: Receiver<PowerState>) -> Self {
        self.power_rx = Some(rx);
        self
    }

    /// Counts so far.
    pub fn stats(&self) -> &DispatcherStats {
        &self.stats
    }

    /// One dispatch step on behalf of free worker `worker` (see the module
    /// documentation): returns its next job, or tells it to wait or exit.
    pub fn next_job(&mut self, worker: usize, event: WorkerEvent) -> Next {
        self.stats.steps += 1;
        match event {
            WorkerEvent::Woke => {}
            WorkerEvent::Finished(done) => {
                if let Some(q) = &mut self.quality {
                    q.record(
                        done.tenant,
                        done.variant,
                        done.service,
                        done.throttle,
                        done.missed,
                    );
                }
            }
            WorkerEvent::Received(r) => self.enqueue(r),
        }
        self.workers[worker].idle = true;
        self.pull_arrivals();
        self.pull_power();
        self.stats.max_queued = self.stats.max_queued.max(self.queue.len());
        let job = self.take_for(worker);
        if job.is_some() {
            self.workers[worker].idle = false;
        }
        self.ring_idle_workers(worker);
        match job {
            Some(job) => Next::Run(job),
            None if self.open_count == 0 && !self.has_work_for(worker) => {
                self.workers[worker].gone = true;
                self.workers[worker].idle = false;
                Next::Exit
            }
            None => Next::Wait,
        }
    }

    /// Worker `worker` is gone for good (its thread ended abnormally):
    /// never pick it again, and wake the others in case they must exit.
    pub fn worker_lost(&mut self, worker: usize) {
        self.workers[worker].gone = true;
        self.workers[worker].idle = false;
        self.workers[worker]
            .serves
            .iter_mut()
            .for_each(|s| *s = false);
        self.ring_all();
    }

    /// Ring every live worker's doorbell (e.g. after the queues closed, so
    /// sleeping workers notice).
    pub fn ring_all(&mut self) {
        for w in self.workers.iter().filter(|w| !w.gone) {
            let _ = w.doorbell.try_send(());
        }
    }

    /// End of the run, after every worker has exited: count whatever is
    /// still queued — requests no live worker could serve — as `failed`, and
    /// return the counts.
    pub fn finish(mut self) -> DispatcherStats {
        self.pull_arrivals();
        for r in self.queue.drain_all() {
            self.tenants[r.tenant.index()]
                .counters
                .waiting
                .fetch_sub(1, Ordering::AcqRel);
            self.stats.unserved += 1;
            // Blocking send: telemetry never loses an outcome.
            let _ = self.telemetry.send(TelemetryEvent::Unserved(r));
        }
        if let Some(q) = self.quality.take() {
            self.stats.swaps = q.swaps;
        }
        self.stats
    }

    fn enqueue(&mut self, r: Request) {
        self.queued[r.tenant.index()] += 1;
        self.queue.push(r);
    }

    fn pull_arrivals(&mut self) {
        for i in 0..self.tenants.len() {
            if !self.open[i] {
                continue;
            }
            loop {
                match self.tenants[i].rx.try_recv() {
                    Ok(r) => self.enqueue(r),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.open[i] = false;
                        self.open_count -= 1;
                        break;
                    }
                }
            }
        }
    }

    fn pull_power(&mut self) {
        let Some(rx) = &self.power_rx else { return };
        loop {
            match rx.try_recv() {
                Ok(p) => self.power = Some(p),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    // The control plane ended; keep the last state.
                    self.power_rx = None;
                    break;
                }
            }
        }
    }

    fn has_work_for(&self, worker: usize) -> bool {
        let serves = &self.workers[worker].serves;
        self.queued
            .iter()
            .zip(serves)
            .any(|(&n, &served)| served && n > 0)
    }

    fn ring_idle_workers(&mut self, caller: usize) {
        for i in 0..self.workers.len() {
            let w = &self.workers[i];
            if i == caller || !w.idle || w.gone {
                continue;
            }
            if self.open_count == 0 || self.has_work_for(i) {
                // Full means already rung and not yet heard: one is enough.
                if self.workers[i].doorbell.try_send(()).is_ok() {
                    self.stats.doorbells += 1;
                }
            }
        }
    }

    /// Drop expired requests, then pop the earliest-deadline request
    /// `worker` can serve and make it a job.
    fn take_for(&mut self, worker: usize) -> Option<Job> {
        let now = self.clock.now();
        let EdfDispatcher {
            queue,
            queued,
            tenants,
            telemetry,
            stats,
            quality,
            workers,
            ..
        } = self;
        queue.drain_expired(now, |r| {
            let t = r.tenant.index();
            if let Some(q) = quality.as_mut() {
                q.record_miss(t);
            }
            queued[t] -= 1;
            tenants[t].counters.waiting.fetch_sub(1, Ordering::AcqRel);
            stats.expired += 1;
            // Blocking send: telemetry never loses an outcome.
            let _ = telemetry.send(TelemetryEvent::Expired(r));
        });
        let serves = &workers[worker].serves;
        let request = queue.pop_eligible(|r| serves[r.tenant.index()])?;
        let t = request.tenant.index();
        queued[t] -= 1;
        tenants[t].counters.waiting.fetch_sub(1, Ordering::AcqRel);
        let throttle = self.power.map_or(1.0, |p| p.throttle);
        let variant = match &mut self.quality {
            Some(q) => {
                let v = q.choose(t, now, request.deadline, throttle);
                self.tenants[t]
                    .counters
                    .active_variant
                    .store(v, Ordering::Relaxed);
                v
            }
            None => 0,
        };
        self.stats.dispatched += 1;
        Some(Job {
            request,
            dispatched: now,
            throttle,
            variant,
        })
    }
}

/// The dispatcher shared by the workers that run its steps.
#[derive(Debug, Clone)]
pub struct SharedDispatcher(Arc<Mutex<EdfDispatcher>>);

impl SharedDispatcher {
    /// Share `dispatcher`.
    pub fn new(dispatcher: EdfDispatcher) -> Self {
        SharedDispatcher(Arc::new(Mutex::new(dispatcher)))
    }

    /// Lock it. A worker that panicked while holding the lock left the
    /// state consistent between steps (a step's only panics would be
    /// bugs), so a poisoned lock is used as is rather than halting serving.
    pub fn lock(&self) -> MutexGuard<'_, EdfDispatcher> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`EdfDispatcher::next_job`] under the lock.
    pub fn next_job(&self, worker: usize, event: WorkerEvent) -> Next {
        self.lock().next_job(worker, event)
    }

    /// Take the dispatcher back once every worker is done with it; `None`
    /// if a clone is still alive somewhere.
    pub fn into_inner(self) -> Option<EdfDispatcher> {
        Arc::into_inner(self.0).map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
    }
}
