//! `EdfDispatcher`: moves admitted requests from the tenant queues to free
//! accelerator workers, earliest deadline first.
//!
//! It owns the core's [`DispatchQueue`] and a view of which workers are
//! idle. It sleeps in a `crossbeam_channel::Select` over every tenant queue
//! and the workers' "idle" channel, and on each wake-up:
//! 1. pulls every newly admitted request into the deadline heap;
//! 2. marks workers that reported idle;
//! 3. while a worker is idle: drops (as `expired`) requests whose deadline
//!    has passed, pops the earliest-deadline request some idle worker can
//!    serve, and hands it over on that worker's 1-slot job channel.
//!
//! It ends once every tenant queue is closed, the heap is empty and every
//! worker is idle — so a shutdown drains all admitted work.

use crate::clock::RunClock;
use crate::telemetry::TelemetryEvent;
use crate::tenant_queue::TenantQueueReceiver;
use crossbeam_channel::{Receiver, Select, Sender, TryRecvError};
use ecomap::dispatch::{DispatchQueue, QueueOrder};
use ecomap::request::Request;
use ecomap::time::Timestamp;
use std::sync::atomic::Ordering;

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

/// A worker's "done, and idle again" notice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkerDone {
    /// The worker, now idle.
    pub worker: usize,
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
    /// The worker's job channel (capacity 1; only written while it is idle).
    pub jobs: Sender<Job>,
    /// `serves[t]`: whether it holds tenant `t`'s model.
    pub serves: Vec<bool>,
    idle: bool,
}

impl WorkerSlot {
    /// A worker, idle, serving the tenants marked in `serves`.
    pub fn new(jobs: Sender<Job>, serves: Vec<bool>) -> Self {
        WorkerSlot {
            jobs,
            serves,
            idle: true,
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
    /// Wake-ups of the dispatcher loop.
    pub wakeups: u64,
    /// Largest number of requests queued at once.
    pub max_queued: usize,
    /// Model swaps decided, in order.
    pub swaps: Vec<ecomap::quality::Swap>,
}

/// The EDF dispatcher actor.
#[derive(Debug)]
pub struct EdfDispatcher {
    queue: DispatchQueue,
    tenants: Vec<TenantQueueReceiver>,
    workers: Vec<WorkerSlot>,
    idle_rx: Receiver<WorkerDone>,
    telemetry: Sender<TelemetryEvent>,
    clock: RunClock,
    stats: DispatcherStats,
    power_rx: Option<Receiver<PowerState>>,
    power: Option<PowerState>,
    quality: Option<ecomap::quality::QualityController>,
}

impl EdfDispatcher {
    /// A dispatcher over these tenant queues and workers. Workers announce
    /// they are idle again by sending their index on `idle_rx`.
    pub fn new(
        order: QueueOrder,
        tenants: Vec<TenantQueueReceiver>,
        workers: Vec<WorkerSlot>,
        idle_rx: Receiver<WorkerDone>,
        telemetry: Sender<TelemetryEvent>,
        clock: RunClock,
    ) -> Self {
        let capacity = tenants.iter().map(|t| t.rx.capacity().unwrap_or(0)).sum();
        EdfDispatcher {
            queue: DispatchQueue::with_capacity(order, capacity),
            tenants,
            workers,
            idle_rx,
            telemetry,
            clock,
            stats: DispatcherStats::default(),
            power_rx: None,
            power: None,
            quality: None,
        }
    }

    /// Pick each request's model variant with `controller`.
    pub fn with_quality(mut self, controller: ecomap::quality::QualityController) -> Self {
        self.quality = Some(controller);
        self
    }

    /// Listen for power-state updates from the governor on `rx`.
    pub fn with_power_updates(mut self, rx: Receiver<PowerState>) -> Self {
        self.power_rx = Some(rx);
        self
    }

    /// Run until every tenant queue is closed and all work is drained.
    pub fn run(mut self) -> DispatcherStats {
        let mut open: Vec<bool> = vec![true; self.tenants.len()];
        let mut open_count = self.tenants.len();
        // Borrow the receivers for the Select separately from `self`.
        let tenants = std::mem::take(&mut self.tenants);
        let mut sel = Select::new();
        let tenant_ops: Vec<usize> = tenants.iter().map(|t| sel.recv(&t.rx)).collect();
        let idle_rx = self.idle_rx.clone();
        sel.recv(&idle_rx);
        let power_rx = self.power_rx.take();
        let mut power_op = power_rx.as_ref().map(|rx| sel.recv(rx));
        loop {
            if open_count == 0 && self.queue.is_empty() && self.workers.iter().all(|w| w.idle) {
                break;
            }
            sel.ready();
            self.stats.wakeups += 1;
            for (i, t) in tenants.iter().enumerate() {
                if !open[i] {
                    continue;
                }
                loop {
                    match t.rx.try_recv() {
                        Ok(r) => self.queue.push(r),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            open[i] = false;
                            open_count -= 1;
                            sel.remove(tenant_ops[i]);
                            break;
                        }
                    }
                }
            }
            while let Ok(done) = idle_rx.try_recv() {
                self.workers[done.worker].idle = true;
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
            if let (Some(rx), Some(op)) = (&power_rx, power_op) {
                loop {
                    match rx.try_recv() {
                        Ok(p) => self.power = Some(p),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            // The control plane ended; keep the last state.
                            sel.remove(op);
                            power_op = None;
                            break;
                        }
                    }
                }
            }
            self.stats.max_queued = self.stats.max_queued.max(self.queue.len());
            self.dispatch(&tenants);
        }
        if let Some(q) = self.quality.take() {
            self.stats.swaps = q.swaps;
        }
        self.stats
    }

    fn dispatch(&mut self, tenants: &[TenantQueueReceiver]) {
        while !self.queue.is_empty() && self.workers.iter().any(|w| w.idle) {
            let now = self.clock.now();
            let telemetry = &self.telemetry;
            let stats = &mut self.stats;
            let quality = &mut self.quality;
            self.queue.drain_expired(now, |r| {
                if let Some(q) = quality.as_mut() {
                    q.record_miss(r.tenant.index());
                }
                tenants[r.tenant.index()]
                    .counters
                    .waiting
                    .fetch_sub(1, Ordering::AcqRel);
                stats.expired += 1;
                // Blocking send: telemetry never loses an outcome.
                let _ = telemetry.send(TelemetryEvent::Expired(r));
            });
            let workers = &self.workers;
            let Some(request) = self
                .queue
                .pop_eligible(|r| workers.iter().any(|w| w.idle && w.serves[r.tenant.index()]))
            else {
                break;
            };
            tenants[request.tenant.index()]
                .counters
                .waiting
                .fetch_sub(1, Ordering::AcqRel);
            let w = self
                .workers
                .iter()
                .position(|w| w.idle && w.serves[request.tenant.index()])
                .expect("pop_eligible found an idle worker serving this tenant");
            let throttle = self.power.map_or(1.0, |p| p.throttle);
            let now = self.clock.now();
            let t = request.tenant.index();
            let variant = match &mut self.quality {
                Some(q) => {
                    let v = q.choose(t, now, request.deadline, throttle);
                    tenants[t]
                        .counters
                        .active_variant
                        .store(v, Ordering::Relaxed);
                    v
                }
                None => 0,
            };
            let job = Job {
                request,
                dispatched: now,
                throttle,
                variant,
            };
            self.workers[w].idle = false;
            self.stats.dispatched += 1;
            if self.workers[w].jobs.send(job).is_err() {
                // The worker thread is gone (it panicked outside a forward
                // pass). Count the request as failed rather than lose it,
                // and never pick that worker again.
                self.workers[w].serves.iter_mut().for_each(|s| *s = false);
                let now = self.clock.now();
                let _ =
                    self.telemetry
                        .send(TelemetryEvent::Completed(ecomap::request::Completion {
                            request,
                            worker: w,
                            dispatched: job.dispatched,
                            eligible: job.dispatched,
                            started: now,
                            finished: now,
                            succeeded: false,
                            variant: u8::try_from(job.variant).unwrap_or(u8::MAX),
                        }));
            }
        }
    }
}
