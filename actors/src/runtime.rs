//! Wiring: builds the data plane from the three RON files and runs it.
//!
//! ```text
//!  LoadGenerator ─┐ (one per tenant)
//!                 ▼ submit (bounded, admission by capacity)
//!           TenantQueue × T ──── wakes one idle worker ────► AcceleratorWorker × W
//!                                                               │  when free: one step of
//!                         EdfDispatcher (shared, no thread) ◄───┤  the dispatcher → next job
//!                            │ doorbell to other idle workers ──┘
//!                            │ expired                          │ completion
//!                            └──────────────► Telemetry ◄───────┘
//! ```
//!
//! [`Runtime::start`] loads every worker's models on the worker's own
//! pinned thread and returns only when all are ready (or with the first load
//! error), so no request ever waits on a model load. [`Runtime::shutdown`]
//! closes the queues, lets the workers drain every admitted request, joins
//! all threads and returns the [`RunReport`].

use crate::accelerator_worker::{AcceleratorWorker, BusyCounters, WorkerLinks};
use crate::backend::{load_model, LoadedModel};
use crate::clock::RunClock;
use crate::control_plane::{ControlPlan, ControlPlane};
use crate::dataplane::power_cell::PowerCell;
use crate::edf_dispatcher::{EdfDispatcher, SharedDispatcher, WorkerSlot};
use crate::energy_meter::TimelineRow;
use crate::load_generator::LoadGenerator;
use crate::rt::{self, RtNotes};
use crate::telemetry::Telemetry;
use crate::tenant_queue::{tenant_queue, TenantQueue};
use ecomap::arrival::ArrivalGenerator;
use ecomap::config::policy::Policy;
use ecomap::config::rt::{RtConfig, ThreadSpec};
use ecomap::config::workload::Workload;
use ecomap::quality::QualityController;
use ecomap::report::{QualityReport, RunReport};
use ecomap::request::TenantId;
use ecomap::time::Timestamp;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Capacity of the telemetry channel: enough for bursts of completions
/// while the sink is descheduled; senders block (never drop) beyond it.
const TELEMETRY_CAPACITY: usize = 1 << 16;

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid for this machine or workload.
    #[error("{0}")]
    Config(#[from] ecomap::config::ConfigError),
    /// A worker could not load a tenant's model.
    #[error("worker '{worker}' could not load the model of tenant '{tenant}': {reason}")]
    ModelLoad {
        /// Worker name.
        worker: String,
        /// Tenant name.
        tenant: String,
        /// The backend's explanation.
        reason: String,
    },
    /// A worker's models do not fit the rt-config's memory budget.
    #[error(
        "worker '{worker}' needs {needed_mb:.1} MB for the parameters of every model variant it \
         serves, over the rt-config's memory_budget_mb of {budget_mb:.1}; raise the budget, give \
         the tenants fewer variants, or spread them over more workers"
    )]
    MemoryBudget {
        /// Worker name.
        worker: String,
        /// Megabytes needed.
        needed_mb: f64,
        /// The budget.
        budget_mb: f64,
    },
    /// The control plane's inputs are unusable (carbon trace, platform, token).
    #[error("{0}")]
    Control(String),
    /// A thread could not be created.
    #[error("could not start thread '{thread}': {source}")]
    Spawn {
        /// Thread name.
        thread: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running data plane.
pub struct Runtime {
    clock: RunClock,
    workload: Workload,
    policy_name: String,
    load_generator_spec: ThreadSpec,
    queues: Vec<TenantQueue>,
    dispatcher: SharedDispatcher,
    workers: Vec<JoinHandle<()>>,
    telemetry: JoinHandle<(
        Vec<ecomap::accounting::TenantAccount>,
        Vec<ecomap::report::WorkerAccount>,
    )>,
    notes: RtNotes,
    load_started: Option<Timestamp>,
    busy: Arc<BusyCounters>,
    control_plan: Option<ControlPlan>,
    control: Option<ControlPlane>,
    power: PowerCell,
}

fn spawn<T: Send + 'static>(
    name: &str,
    spec: ThreadSpec,
    notes: &RtNotes,
    body: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, StartError> {
    let notes = notes.clone();
    let thread = name.to_string();
    std::thread::Builder::new()
        .name(name.chars().take(15).collect())
        .spawn(move || {
            rt::apply(&thread, &spec, &notes);
            body()
        })
        .map_err(|source| StartError::Spawn {
            thread: name.to_string(),
            source,
        })
}

impl Runtime {
    /// Build every actor, load every model, and start serving.
    pub fn start(
        workload: &Workload,
        rt_config: &RtConfig,
        policy: &Policy,
    ) -> Result<Runtime, StartError> {
        let names: Vec<&str> = workload.tenants.iter().map(|t| t.name.as_str()).collect();
        rt_config.validate(
            std::path::Path::new("<rt-config>"),
            rt::available_cores(),
            &names,
        )?;
        // Everything that can fail on bad input, before any thread starts.
        let mut control_plan =
            ControlPlan::prepare(policy, rt_config).map_err(StartError::Control)?;
        let planning =
            crate::controlplane::planning::RuntimePlanning::prepare(policy, workload, rt_config)
                .map_err(StartError::Control)?;
        let plan_cell = planning
            .as_ref()
            .map(|_| crate::dataplane::plan_cell::PlanCell::new(workload.tenants.len()));
        match (&mut control_plan, planning, &plan_cell) {
            (Some(cp), Some(p), Some(cell)) => cp.planning = Some((p, cell.clone())),
            (None, Some(_), _) => {
                return Err(StartError::Control(
                    "the policy plans power modes, but the rt-config has no `platform` to \
                     cap; add one, e.g. `platform: Emulated(device: \"devices/xavier.ron\")`"
                        .into(),
                ))
            }
            _ => {}
        }
        let notes = RtNotes::default();
        if rt_config.lock_memory {
            rt::lock_memory(&notes);
        }
        #[cfg(feature = "tch")]
        crate::backend::torch::set_intra_op_threads(rt_config.intra_op_threads);

        let clock = RunClock::start();
        let tenant_names: Vec<String> = workload.tenants.iter().map(|t| t.name.clone()).collect();
        let worker_names: Vec<String> = rt_config.workers.iter().map(|w| w.name.clone()).collect();

        let (telemetry_tx, telemetry_rx) = crossbeam_channel::bounded(TELEMETRY_CAPACITY);
        let sink = Telemetry::new(&tenant_names, &worker_names, telemetry_rx);
        let telemetry = spawn("telemetry", rt_config.telemetry, &notes, move || sink.run())?;

        let mut queues = Vec::new();
        let mut receivers = Vec::new();
        for (i, t) in workload.tenants.iter().enumerate() {
            let (q, r) = tenant_queue(TenantId(i as u16), t, clock);
            queues.push(q);
            receivers.push(r);
        }
        let busy = BusyCounters::new(rt_config.workers.len(), workload.tenants.len());
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(rt_config.workers.len());
        let serves: Vec<Vec<bool>> = (0..rt_config.workers.len())
            .map(|wi| {
                tenant_names
                    .iter()
                    .map(|t| rt_config.worker_serves(wi, t))
                    .collect()
            })
            .collect();
        let mut slots = Vec::new();
        let mut doorbells = Vec::new();
        for s in &serves {
            let (tx, rx) = crossbeam_channel::bounded(1);
            slots.push(WorkerSlot::new(tx, s.clone()));
            doorbells.push(rx);
        }
        let worker_requests: Vec<Vec<_>> = serves
            .iter()
            .map(|s| {
                receivers
                    .iter()
                    .zip(s)
                    .filter(|(_, &served)| served)
                    .map(|(r, _)| r.rx.clone())
                    .collect()
            })
            .collect();
        let power = PowerCell::new();
        let mut edf = EdfDispatcher::new(
            policy.queue_order,
            receivers,
            slots,
            telemetry_tx.clone(),
            clock,
        )
        .with_power_updates(power.clone());
        if let Some(cell) = &plan_cell {
            edf = edf.with_plan_updates(cell.clone(), workload.tenants.len());
        }
        let dispatcher = SharedDispatcher::new(edf);
        let mut workers = Vec::new();
        for (((wi, ws), requests), doorbell) in rt_config
            .workers
            .iter()
            .enumerate()
            .zip(worker_requests)
            .zip(doorbells)
        {
            let serves = serves[wi].clone();
            let specs: Vec<Vec<ecomap::catalog::Variant>> =
                workload.tenants.iter().map(|t| t.variants()).collect();
            let budget_mb = rt_config.memory_budget_mb;
            let names = tenant_names.clone();
            let device = ws.device;
            let wname = ws.name.clone();
            let (tele, ready) = (telemetry_tx.clone(), ready_tx.clone());
            let links = WorkerLinks {
                dispatcher: dispatcher.clone(),
                requests,
                doorbell,
                telemetry: tele,
            };
            let spec = ThreadSpec {
                core: ws.core,
                sched: ws.sched,
            };
            let intra_op_threads = rt_config.intra_op_threads;
            let worker_busy = busy.clone();
            workers.push(spawn(
                &format!("worker-{}", ws.name),
                spec,
                &notes,
                move || {
                    // libtorch's intra-op thread count is an OpenMP setting
                    // of the calling thread: set it here, not only in main,
                    // or a worker pinned to one core could run several
                    // OpenMP threads on it.
                    #[cfg(feature = "tch")]
                    crate::backend::torch::set_intra_op_threads(intra_op_threads);
                    #[cfg(not(feature = "tch"))]
                    let _ = intra_op_threads;
                    // Load on this (pinned) thread so the model's memory is
                    // first touched where it will be used.
                    // Every variant a tenant may need is loaded now, and
                    // timed once warm: the quality controller's first estimates.
                    let mut models: Vec<Vec<Box<dyn LoadedModel>>> = Vec::new();
                    let mut warm = Vec::new();
                    let mut param_bytes = 0u64;
                    for (t, variants) in specs.iter().enumerate() {
                        let mut loaded = Vec::new();
                        if serves[t] {
                            for (v, variant) in variants.iter().enumerate() {
                                // A backend that panics while loading must fail
                                // start-up with an error, not leave it waiting.
                                let timed =
                                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                        load_model(&variant.model, device).and_then(|mut m| {
                                            m.run()?;
                                            let t0 = std::time::Instant::now();
                                            m.run()?;
                                            Ok((m, t0.elapsed()))
                                        })
                                    }))
                                    .unwrap_or_else(|_| {
                                        Err(crate::backend::BackendError::Panicked)
                                    });
                                match timed {
                                    Ok((m, took)) => {
                                        param_bytes += m.parameter_bytes();
                                        warm.push((t, v, took));
                                        loaded.push(m);
                                    }
                                    Err(e) => {
                                        let _ = ready.send(Err(StartError::ModelLoad {
                                            worker: wname.clone(),
                                            tenant: names[t].clone(),
                                            reason: if variants.len() > 1 {
                                                format!("variant {}: {e}", variant.name)
                                            } else {
                                                e.to_string()
                                            },
                                        }));
                                        return;
                                    }
                                }
                            }
                        }
                        models.push(loaded);
                    }
                    let needed_mb = param_bytes as f64 / 1e6;
                    if let Some(budget) = budget_mb.filter(|b| needed_mb > *b) {
                        let _ = ready.send(Err(StartError::MemoryBudget {
                            worker: wname.clone(),
                            needed_mb,
                            budget_mb: budget,
                        }));
                        return;
                    }
                    let _ = ready.send(Ok(warm));
                    AcceleratorWorker::new(wi, wname, models, links, clock, worker_busy).run();
                },
            )?);
        }
        drop(ready_tx);
        drop(telemetry_tx);

        // Wait for every worker's models. On an error, closing the queues
        // lets the workers that did load wind down.
        let mut first_error = None;
        let mut warm = Vec::new();
        for _ in 0..rt_config.workers.len() {
            match ready_rx.recv() {
                Ok(Ok(w)) => warm.extend(w),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => break,
            }
        }
        if let Some(e) = first_error {
            // Closed queues and a ring end the workers; telemetry follows
            // once the last sender (the dispatcher) is gone.
            drop(queues);
            dispatcher.lock().ring_all();
            for w in workers {
                let _ = w.join();
            }
            if let Some(d) = dispatcher.into_inner() {
                d.finish();
            }
            let _ = telemetry.join();
            return Err(e);
        }
        // A planning policy needs a controller to hold its variants, even
        // one that never swaps on its own.
        let quality_policy = match (&policy.quality, &plan_cell) {
            (Some(q), _) => Some(q.clone()),
            (None, Some(_)) => Some(ecomap::quality::QualityPolicy::disabled()),
            (None, None) => None,
        };
        let quality = quality_policy.map(|qp| {
            let counts: Vec<usize> = workload
                .tenants
                .iter()
                .map(|t| t.variants().len())
                .collect();
            let deadlines: Vec<Duration> = workload.tenants.iter().map(|t| t.deadline).collect();
            let mut c = QualityController::new(qp, &counts, &deadlines);
            for (t, v, took) in &warm {
                c.seed_estimate(*t, *v, *took);
            }
            c
        });
        {
            let mut d = dispatcher.lock();
            if let Some(q) = quality {
                d.set_quality(q);
            }
            d.set_shedding(workload.shed_mask(policy.shedding));
            for (t, v, took) in &warm {
                d.seed_service(*t, *v, *took);
            }
        }

        let runtime = Runtime {
            clock,
            workload: workload.clone(),
            policy_name: policy.name.clone(),
            load_generator_spec: rt_config.load_generator,
            queues,
            dispatcher,
            workers,
            telemetry,
            notes,
            load_started: None,
            busy,
            control_plan,
            control: None,
            power,
        };
        Ok(runtime)
    }

    /// The submitting handle of tenant `index` (workload order).
    pub fn queue(&self, index: usize) -> &TenantQueue {
        &self.queues[index]
    }

    /// The run's clock.
    pub fn clock(&self) -> RunClock {
        self.clock
    }

    /// Busy time per worker and per tenant so far, bumped by each worker
    /// the moment a forward pass ends (what the energy meter reads).
    pub fn busy_counters(&self) -> Arc<BusyCounters> {
        self.busy.clone()
    }

    /// Drive the workload's arrival processes for `duration` (optionally with
    /// every rate multiplied by `load_factor`), one generator thread per
    /// tenant, and return when all generators are done. Requests still queued
    /// are served during [`Runtime::shutdown`].
    pub fn run_load(&mut self, duration: Duration, load_factor: f64) -> Result<(), StartError> {
        self.run_load_interruptible(duration, load_factor, &AtomicBool::new(false))
            .map(|_| ())
    }

    /// [`Runtime::run_load`], ended early when `interrupt` becomes true
    /// (e.g. set by a SIGINT handler): the generators stop releasing within
    /// 50 ms and the call returns `Ok(true)`; queued requests are still
    /// served during [`Runtime::shutdown`].
    pub fn run_load_interruptible(
        &mut self,
        duration: Duration,
        load_factor: f64,
        interrupt: &AtomicBool,
    ) -> Result<bool, StartError> {
        let workload = if (load_factor - 1.0).abs() > f64::EPSILON {
            self.workload.scaled(load_factor).map_err(|m| {
                StartError::Config(ecomap::config::ConfigError::invalid(
                    std::path::Path::new("--load-factor"),
                    "load_factor",
                    m,
                ))
            })?
        } else {
            self.workload.clone()
        };
        if let Some(mut plan) = self.control_plan.take() {
            // The planner must size its plans for the load really offered.
            if let Some((planning, _)) = &mut plan.planning {
                for t in &mut planning.problem.tenants {
                    t.rate_hz *= load_factor;
                }
            }
            let queues = self.queues.iter().map(|q| q.counters().clone()).collect();
            self.control = Some(
                ControlPlane::start(
                    plan,
                    self.power.clone(),
                    self.busy.clone(),
                    queues,
                    self.clock,
                    Duration::from_secs(1),
                )
                .map_err(StartError::Control)?,
            );
            // Let the governor apply its first cap before the first release.
            std::thread::sleep(Duration::from_millis(100));
        }
        let start = self.clock.now() + Duration::from_millis(5);
        self.load_started.get_or_insert(start);
        let until = start + duration;
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for (i, t) in workload.tenants.iter().enumerate() {
            let seed = ecomap::arrival::tenant_seed(workload.seed, i);
            let gen = LoadGenerator::new(
                self.queues[i].clone(),
                ArrivalGenerator::new(t.arrival.clone(), seed, start),
                until,
                self.clock,
                stop.clone(),
            );
            match spawn(
                &format!("load-{}", t.name),
                self.load_generator_spec,
                &self.notes,
                move || gen.run(),
            ) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(e);
                }
            }
        }
        // Wait for the generators, watching for an interrupt.
        let mut interrupted = false;
        while !handles.iter().all(|h| h.is_finished()) {
            if !interrupted && interrupt.load(Ordering::Relaxed) {
                interrupted = true;
                stop.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for h in handles {
            let _ = h.join();
        }
        Ok(interrupted || interrupt.load(Ordering::Relaxed))
    }

    /// Stop accepting requests, drain all admitted work, join every thread
    /// and return the report.
    pub fn shutdown(self) -> RunReport {
        self.shutdown_with_timeline().0
    }

    /// [`Runtime::shutdown`], also returning the per-second timeline (empty
    /// without a control plane).
    pub fn shutdown_with_timeline(self) -> (RunReport, Vec<TimelineRow>) {
        let Runtime {
            clock,
            workload,
            policy_name,
            queues,
            dispatcher,
            workers,
            telemetry,
            notes,
            load_started,
            control,
            ..
        } = self;
        let counters: Vec<_> = queues.iter().map(|q| q.counters().clone()).collect();
        drop(queues);
        // Workers asleep on queues of other tenants learn of the close here.
        dispatcher.lock().ring_all();
        for w in workers {
            let _ = w.join();
        }
        // Every worker has ended, so this is the last handle.
        let stats = dispatcher
            .into_inner()
            .map(EdfDispatcher::finish)
            .unwrap_or_default();
        let (mut tenants, workers) = telemetry.join().unwrap_or_else(|_| {
            let names: Vec<String> = workload.tenants.iter().map(|t| t.name.clone()).collect();
            (
                names
                    .iter()
                    .map(ecomap::accounting::TenantAccount::new)
                    .collect(),
                Vec::new(),
            )
        });
        for (t, c) in tenants.iter_mut().zip(&counters) {
            t.counts.submitted = c.submitted.load(Ordering::Acquire);
            t.counts.rejected = c.rejected.load(Ordering::Acquire);
        }
        // The control plane outlives the drain so its energy is counted.
        let outcome = control.map(ControlPlane::stop);
        let end = clock.now();
        let variant_counts: Vec<usize> = workload
            .tenants
            .iter()
            .map(|t| t.variants().len())
            .collect();
        // Tenants with a model family (even of one variant) get the section.
        let has_families = workload.tenants.iter().any(|t| !t.resolved.is_empty());
        let quality = (has_families || !stats.swaps.is_empty()).then(|| {
            let start = load_started.unwrap_or(Timestamp::ZERO);
            QualityReport {
                variants: workload
                    .tenants
                    .iter()
                    .map(|t| t.variants().into_iter().map(|v| (v.name, v.top1)).collect())
                    .collect(),
                time_in_variant: QualityReport::time_in_variants(
                    &variant_counts,
                    &stats.swaps,
                    start,
                    end,
                ),
                swaps: stats.swaps,
            }
        });
        let (energy, timeline) = match outcome {
            Some(o) => (Some(o.report), o.timeline),
            None => (None, Vec::new()),
        };
        (
            RunReport {
                policy: policy_name,
                duration: end.saturating_since(load_started.unwrap_or(Timestamp::ZERO)),
                load_start: load_started.unwrap_or(Timestamp::ZERO),
                tenants,
                workers,
                rt_notes: notes.to_vec(),
                energy,
                quality,
            },
            timeline,
        )
    }
}
