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
use crate::faults::{FaultInjector, ScheduledFault};
use crate::incidents::IncidentLog;
use crate::load_generator::LoadGenerator;
use crate::platform::cpu_steal::CpuTimes;
use crate::rt::{self, RtNotes};
use crate::telemetry::{Telemetry, TelemetrySender};
use crate::tenant_queue::{tenant_queue, TenantCounters, TenantQueue};
use crossbeam_channel::Sender;
use ecomap::arrival::ArrivalGenerator;
use ecomap::config::policy::Policy;
use ecomap::config::rt::{RtConfig, ThreadSpec};
use ecomap::config::workload::Workload;
use ecomap::dispatch::schedulability::{self, TenantDemand};
use ecomap::dispatch::unit_cost::{relative_costs, TimedPass};
use ecomap::quality::QualityController;
use ecomap::report::{QualityReport, RunReport};
use ecomap::request::TenantId;
use ecomap::tensor::{DataType, TensorData, TensorSpec};
use ecomap::time::Timestamp;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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
    /// The workload cannot be feasible at the power mode in force, and the
    /// run was asked to be strict about it.
    #[error(
        "the workload cannot meet its deadlines at the power mode in force (refused under \
         --strict):\n  - {}",
        .0.join("\n  - ")
    )]
    Unschedulable(Vec<String>),
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
    /// The machine's CPU times when serving started (for the share the
    /// hypervisor stole meanwhile); `None` before, or without `/proc/stat`.
    cpu_at_load_start: Option<CpuTimes>,
    busy: Arc<BusyCounters>,
    control_plan: Option<ControlPlan>,
    control: Option<ControlPlane>,
    power: PowerCell,
    /// Dropped at shutdown: the disconnection wakes every sleeping worker.
    stop: Sender<()>,
    counters: Vec<Arc<TenantCounters>>,
    telemetry_dropped: Arc<AtomicU64>,
    faults: FaultInjector,
    scheduled_faults: Vec<ScheduledFault>,
    incidents: IncidentLog,
    /// Each model's warm pass, on each worker that loaded it.
    warm: Vec<TimedPass>,
    /// `serves[w][t]`: whether worker `w` holds tenant `t`'s models.
    serves: Vec<Vec<bool>>,
    worker_names: Vec<String>,
    strict: bool,
    /// The CPUs' wake-up latency request (`cpu_dma_latency_us`), held for
    /// the runtime's life.
    _wake_latency: Option<rt::WakeLatencyHold>,
    control_plane_spec: ThreadSpec,
    server_spec: ThreadSpec,
    /// `outputs[t]`: what tenant `t`'s model gives, probed at load (`None`
    /// for a model that takes any input: it echoes it).
    outputs: Vec<Option<Vec<TensorSpec>>>,
    latency: crate::server::metrics::LatencyMetrics,
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

/// One worker's loaded models.
struct LoadedModels {
    /// `models[t][v]`: tenant `t`'s variant `v` (empty if not served).
    models: Vec<Vec<Box<dyn LoadedModel>>>,
    /// `(tenant, variant, warm pass time)` of each model loaded.
    warm: Vec<(usize, usize, Duration)>,
    /// `(tenant, outputs)`: what each served tenant's heaviest variant gives
    /// for an input of its spec (run once at load).
    outputs: Vec<(usize, Vec<TensorSpec>)>,
    param_bytes: u64,
}

impl LoadedModels {
    fn parameter_mb(&self) -> f64 {
        self.param_bytes as f64 / 1e6
    }
}

/// Why a worker could not load a tenant's model.
struct LoadFailure {
    tenant: usize,
    reason: String,
}

/// Load every variant of every tenant worker `worker` serves, each timed
/// once warm (the quality controller's and the shedder's first
/// estimates). A backend that panics while loading becomes an error, so
/// start-up fails with a message instead of waiting forever.
fn load_worker_models(
    specs: &[Vec<ecomap::catalog::Variant>],
    serves: &[bool],
    device: ecomap::config::rt::DeviceSpec,
    faults: &FaultInjector,
    worker: usize,
) -> Result<LoadedModels, LoadFailure> {
    let mut loaded = LoadedModels {
        models: Vec::new(),
        warm: Vec::new(),
        outputs: Vec::new(),
        param_bytes: 0,
    };
    for (t, variants) in specs.iter().enumerate() {
        let mut of_tenant = Vec::new();
        if serves[t] {
            for (v, variant) in variants.iter().enumerate() {
                let timed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    faults.load_hook(worker);
                    load_model(&variant.model, device).and_then(|mut m| {
                        m.run()?;
                        let t0 = std::time::Instant::now();
                        m.run()?;
                        Ok((m, t0.elapsed()))
                    })
                }))
                .unwrap_or_else(|_| Err(crate::backend::BackendError::Panicked));
                match timed {
                    Ok((mut m, took)) => {
                        loaded.param_bytes += m.parameter_bytes();
                        loaded.warm.push((t, v, took));
                        // Every variant of a tenant must give what its
                        // heaviest declares: clients see one model. The
                        // trial pass runs under catch_unwind too (a
                        // libtorch panic fails start-up, never hangs it).
                        if let Some(spec) = variant.model.input_spec() {
                            let example = variant.model.example_shape();
                            let declared = variant.model.declared_outputs();
                            let probed =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    probe_outputs(m.as_mut(), &spec, example, declared)
                                }))
                                .unwrap_or(Err(crate::backend::BackendError::Panicked));
                            let fail = |reason: String| LoadFailure {
                                tenant: t,
                                reason: format!("variant {}: {reason}", variant.name),
                            };
                            match probed {
                                // The first variant probed (a Synthetic one
                                // has no input spec to probe with) sets what
                                // clients are told.
                                Ok(outs) if !loaded.outputs.iter().any(|(ft, _)| *ft == t) => {
                                    loaded.outputs.push((t, outs))
                                }
                                Ok(outs) => {
                                    let first = loaded.outputs.iter().find(|(ft, _)| *ft == t);
                                    let same = first.is_none_or(|(_, o0)| {
                                        o0.len() == outs.len()
                                            && o0
                                                .iter()
                                                .zip(&outs)
                                                .all(|(a, b)| a.datatype == b.datatype)
                                    });
                                    if !same {
                                        return Err(fail(format!(
                                            "returns {} output(s), not the {} its family's first \
                                             variant returns (variants must be interchangeable)",
                                            outs.len(),
                                            first.map_or(0, |(_, o)| o.len())
                                        )));
                                    }
                                }
                                Err(e) => {
                                    return Err(fail(format!(
                                        "a trial pass on a zero input of its spec {:?} failed: {e}",
                                        spec.shape
                                    )))
                                }
                            }
                        }
                        of_tenant.push(m);
                    }
                    Err(e) => {
                        return Err(LoadFailure {
                            tenant: t,
                            reason: if variants.len() > 1 {
                                format!("variant {}: {e}", variant.name)
                            } else {
                                e.to_string()
                            },
                        })
                    }
                }
            }
        }
        // Clients are told the outputs the tenant's first probed variant
        // gave: an answer of any variant with other outputs (another
        // number, another datatype) is a failed pass, counted where it
        // runs; so is a Synthetic stand-in's answer to a client's input,
        // which would be the input itself.
        if let Some((_, outs)) = loaded.outputs.iter().find(|(ft, _)| *ft == t) {
            let expected: Vec<_> = outs.iter().map(|o| o.datatype).collect();
            of_tenant = of_tenant
                .into_iter()
                .zip(variants)
                .map(|(m, variant)| -> Box<dyn LoadedModel> {
                    if variant.model.needs_libtorch() {
                        Box::new(crate::backend::CheckedOutputs::new(m, expected.clone()))
                    } else {
                        Box::new(crate::backend::StandIn::new(m))
                    }
                })
                .collect();
        }
        loaded.models.push(of_tenant);
    }
    Ok(loaded)
}

/// What `model` gives for a zero input of `spec` (any-size dimensions at
/// 224, a typical image side): one spec per output tensor, named `output`,
/// or `output_0`, `output_1`, … when there are several.
fn probe_outputs(
    model: &mut dyn LoadedModel,
    spec: &TensorSpec,
    example: Option<Vec<i64>>,
    declared: Option<&[TensorSpec]>,
) -> Result<Vec<TensorSpec>, crate::backend::BackendError> {
    let shape: Vec<i64> = example.unwrap_or_else(|| {
        spec.shape
            .iter()
            .map(|&d| if d < 0 { 224 } else { d })
            .collect()
    });
    let n = ecomap::tensor::element_count(&shape).unwrap_or(0);
    let zeros = TensorData::new(
        spec.datatype,
        shape,
        vec![0u8; n * spec.datatype.size()].into(),
    )
    .map_err(|e| crate::backend::BackendError::Run(e.to_string()))?;
    let outs = model.infer(&zeros)?;
    if let Some(declared) = declared {
        // What the catalog declares (dynamic sizes as -1), if the module
        // really returns that many tensors of those datatypes.
        let fits = declared.len() == outs.len()
            && declared.iter().zip(&outs).all(|(d, o)| {
                d.datatype == o.dtype
                    && d.shape.len() == o.shape.len()
                    && d.shape.iter().zip(&o.shape).all(|(&w, &g)| w < 0 || w == g)
            });
        if !fits {
            let got: Vec<String> = outs
                .iter()
                .map(|o| format!("{} {:?}", o.dtype, o.shape))
                .collect();
            let want: Vec<String> = declared
                .iter()
                .map(|d| format!("{} {} {:?}", d.name, d.datatype, d.shape))
                .collect();
            return Err(crate::backend::BackendError::Run(format!(
                "the module returned {got:?}, not the declared outputs {want:?}"
            )));
        }
        return Ok(declared.to_vec());
    }
    let single = outs.len() == 1;
    Ok(outs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let name = if single {
                "output".to_string()
            } else {
                format!("output_{i}")
            };
            TensorSpec::new(name, o.dtype, o.shape.clone())
        })
        .collect())
}

/// What [`Runtime::start_with`] adds to the files; the default adds nothing.
#[derive(Debug, Default)]
pub struct StartOptions {
    /// Fault injection (see [`crate::faults`]); arm `load-panic` faults on
    /// it before starting. `None`: an injector with nothing armed.
    pub faults: Option<FaultInjector>,
    /// Write one row per forward pass here (see
    /// [`crate::dataplane::pass_log`]).
    pub pass_log: Option<crate::dataplane::pass_log::PassLog>,
}

impl Runtime {
    /// Build every actor, load every model, and start serving.
    pub fn start(
        workload: &Workload,
        rt_config: &RtConfig,
        policy: &Policy,
    ) -> Result<Runtime, StartError> {
        Self::start_with(workload, rt_config, policy, StartOptions::default())
    }

    /// [`Runtime::start`] with a fault injector (see [`crate::faults`]);
    /// arm `load-panic` faults on it before calling.
    pub fn start_with_faults(
        workload: &Workload,
        rt_config: &RtConfig,
        policy: &Policy,
        faults: FaultInjector,
    ) -> Result<Runtime, StartError> {
        let options = StartOptions {
            faults: Some(faults),
            ..StartOptions::default()
        };
        Self::start_with(workload, rt_config, policy, options)
    }

    /// [`Runtime::start`] with everything [`StartOptions`] can add.
    pub fn start_with(
        workload: &Workload,
        rt_config: &RtConfig,
        policy: &Policy,
        options: StartOptions,
    ) -> Result<Runtime, StartError> {
        let StartOptions { faults, pass_log } = options;
        let faults = faults.unwrap_or_else(|| {
            let names: Vec<String> = rt_config.workers.iter().map(|w| w.name.clone()).collect();
            FaultInjector::new(&names)
        });
        let names: Vec<&str> = workload.tenants.iter().map(|t| t.name.as_str()).collect();
        rt_config.validate(
            std::path::Path::new("<rt-config>"),
            &rt::allowed_cores(),
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
        let lost_units = planning.as_ref().map(|p| p.lost_units.clone());
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
        let wake_latency = rt_config
            .cpu_dma_latency_us
            .and_then(|us| rt::hold_wake_latency(us, &notes));
        #[cfg(feature = "tch")]
        crate::backend::torch::set_intra_op_threads(rt_config.intra_op_threads);

        let clock = RunClock::start();
        let tenant_names: Vec<String> = workload.tenants.iter().map(|t| t.name.clone()).collect();
        let worker_names: Vec<String> = rt_config.workers.iter().map(|w| w.name.clone()).collect();

        let (telemetry_tx, telemetry_rx) = crossbeam_channel::bounded(rt_config.telemetry_capacity);
        // Headroom: every worker may be between its length check and its send.
        let telemetry_tx = TelemetrySender::new(telemetry_tx, rt_config.workers.len() + 1);
        let telemetry_dropped = telemetry_tx.drop_counter();
        let latency = crate::server::metrics::LatencyMetrics::new(&tenant_names);
        let mut sink = Telemetry::new(&tenant_names, &worker_names, telemetry_rx, faults.clone())
            .with_metrics(latency.clone());
        if let Some(log) = pass_log {
            sink = sink.with_pass_log(log);
        }
        let telemetry = spawn("telemetry", rt_config.telemetry, &notes, move || sink.run())?;
        let incidents = IncidentLog::new(clock);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);

        let mut queues = Vec::new();
        let mut receivers = Vec::new();
        for (i, t) in workload.tenants.iter().enumerate() {
            let (q, r) = tenant_queue(TenantId(i as u16), t, clock);
            queues.push(q);
            receivers.push(r);
        }
        let counters: Vec<Arc<TenantCounters>> =
            receivers.iter().map(|r| r.counters.clone()).collect();
        let shared_counters: Arc<[Arc<TenantCounters>]> = counters.clone().into();
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
        let mut edf = EdfDispatcher::new(policy.queue_order, receivers, slots, clock)
            .with_power_updates(power.clone());
        if let Some(cell) = &plan_cell {
            edf = edf.with_plan_updates(cell.clone(), workload.tenants.len());
        }
        if let Some(mask) = lost_units {
            edf = edf.with_lost_units(mask);
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
            let ready = ready_tx.clone();
            let links = WorkerLinks {
                dispatcher: dispatcher.clone(),
                requests,
                doorbell,
                stop: stop_rx.clone(),
                telemetry: telemetry_tx.clone(),
                counters: shared_counters.clone(),
            };
            let spec = ThreadSpec {
                core: ws.core,
                sched: ws.sched,
            };
            let intra_op_threads = rt_config.intra_op_threads;
            let worker_busy = busy.clone();
            let (worker_faults, worker_incidents) = (faults.clone(), incidents.clone());
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
                    // Loads on this (pinned) thread, so the model's memory
                    // is first touched where it will be used: at start, and
                    // again when the worker is restarted after a panic.
                    let load_faults = worker_faults.clone();
                    let load =
                        move || load_worker_models(&specs, &serves, device, &load_faults, wi);
                    match load() {
                        Ok(loaded) => {
                            if let Some(budget) = budget_mb.filter(|b| loaded.parameter_mb() > *b) {
                                let _ = ready.send(Err(StartError::MemoryBudget {
                                    worker: wname.clone(),
                                    needed_mb: loaded.parameter_mb(),
                                    budget_mb: budget,
                                }));
                                return;
                            }
                            // What the kernel granted: submitters below it
                            // are raised to it for their sends.
                            let _ = ready.send(Ok((
                                wi,
                                loaded.warm,
                                loaded.outputs,
                                rt::current_sched(),
                            )));
                            // Done with it: if another worker's thread dies
                            // before reporting, start-up sees the channel
                            // close instead of waiting for it forever.
                            drop(ready);
                            let worker = AcceleratorWorker::new(
                                wi,
                                wname,
                                loaded.models,
                                links,
                                clock,
                                worker_busy,
                                worker_faults,
                            );
                            let reload = move || {
                                load().map(|l| l.models).map_err(|e| {
                                    format!("tenant '{}': {}", names[e.tenant], e.reason)
                                })
                            };
                            worker.supervise(reload, &worker_incidents);
                        }
                        Err(e) => {
                            let _ = ready.send(Err(StartError::ModelLoad {
                                worker: wname.clone(),
                                tenant: names[e.tenant].clone(),
                                reason: e.reason,
                            }));
                        }
                    }
                },
            )?);
        }
        drop(ready_tx);
        drop(telemetry_tx);

        // Wait for every worker's models. On an error, closing the queues
        // and the stop channel lets the workers that did load wind down.
        let mut first_error = None;
        let mut warm = Vec::new();
        let mut granted = vec![None; rt_config.workers.len()];
        let mut outputs: Vec<Option<Vec<TensorSpec>>> = vec![None; workload.tenants.len()];
        for _ in 0..rt_config.workers.len() {
            match ready_rx.recv() {
                Ok(Ok((wi, w, outs, sched))) => {
                    warm.extend(w.into_iter().map(|(tenant, variant, took)| TimedPass {
                        unit: wi,
                        tenant,
                        variant,
                        took,
                    }));
                    for (t, o) in outs {
                        outputs[t].get_or_insert(o);
                    }
                    granted[wi] = Some(sched);
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => break,
            }
        }
        if first_error.is_none() {
            // A worker whose thread ended without reporting (it panicked
            // outside the guarded load): start-up fails, naming it.
            if let Some(wi) = granted.iter().position(Option::is_none) {
                first_error = Some(StartError::ModelLoad {
                    worker: rt_config.workers[wi].name.clone(),
                    tenant: "(any)".into(),
                    reason: "the worker's thread ended before its models were ready".into(),
                });
            }
        }
        if let Some(e) = first_error {
            // Closed queues and stop channel end the workers; telemetry
            // follows once the last sender (a worker's) is gone.
            drop(queues);
            drop(stop_tx);
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
        // Workers of one device kind are alike; between kinds (a CUDA worker
        // beside CPU workers) the warm passes say how much slower a model
        // runs where, so the dispatcher's estimates — kept at the fastest
        // kind's speed — predict a tenant moved between them at once.
        let kinds: Vec<usize> = rt_config
            .workers
            .iter()
            .map(|w| match w.device {
                ecomap::config::rt::DeviceSpec::Cpu => 0,
                // Two CUDA devices are one kind: alike unless measured
                // otherwise, which a single warm pass cannot do.
                ecomap::config::rt::DeviceSpec::Cuda(_) => 1,
            })
            .collect();
        let unit_costs = relative_costs(&kinds, &warm);
        let relative = |p: &TimedPass| {
            unit_costs
                .iter()
                .find(|c| c.unit == p.unit && c.tenant == p.tenant)
                .and_then(|c| c.relative.get(p.variant))
                .copied()
                .unwrap_or(1.0)
        };
        let quality = quality_policy.map(|qp| {
            let counts: Vec<usize> = workload
                .tenants
                .iter()
                .map(|t| t.variants().len())
                .collect();
            let deadlines: Vec<Duration> = workload.tenants.iter().map(|t| t.deadline).collect();
            let mut c = QualityController::new(qp, &counts, &deadlines);
            for p in &warm {
                c.seed_estimate(p.tenant, p.variant, p.took.div_f64(relative(p)));
            }
            c
        });
        {
            let mut d = dispatcher.lock();
            if let Some(q) = quality {
                d.set_quality(q);
            }
            d.set_shedding(workload.shed_mask(policy.shedding));
            for c in &unit_costs {
                d.set_relative_cost(c.unit, c.tenant, c.relative.clone());
            }
            for p in &warm {
                d.seed_service(p.tenant, p.variant, p.took.div_f64(relative(p)));
            }
        }

        // A submitter below the highest real-time priority among the workers
        // is raised to it for each send (see `TenantQueue::submit`). Every
        // worker, not only those holding the tenant's models: any worker's
        // dispatch step pulls from every tenant's channel.
        let floor = granted
            .iter()
            .flatten()
            .filter(|(policy, _)| {
                let class = policy & !libc::SCHED_RESET_ON_FORK;
                class == libc::SCHED_FIFO || class == libc::SCHED_RR
            })
            .map(|&(_, priority)| priority)
            .max();
        for q in &mut queues {
            q.set_sender_floor(floor);
        }

        let runtime = Runtime {
            stop: stop_tx,
            counters,
            telemetry_dropped,
            faults,
            scheduled_faults: Vec::new(),
            incidents,
            warm,
            serves,
            worker_names,
            strict: false,
            _wake_latency: wake_latency,
            control_plane_spec: rt_config.control_plane,
            server_spec: rt_config.server,
            outputs,
            latency,
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
            cpu_at_load_start: None,
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

    /// The fault injector (arm faults on it; see [`crate::faults`]).
    pub fn faults(&self) -> &FaultInjector {
        &self.faults
    }

    /// Arm these faults at their times after the first release of the
    /// next [`Runtime::run_load`]. Each must name an existing worker.
    pub fn schedule_faults(&mut self, faults: Vec<ScheduledFault>) -> Result<(), StartError> {
        for f in &faults {
            self.faults.validate(&f.fault).map_err(|e| {
                StartError::Config(ecomap::config::ConfigError::invalid(
                    std::path::Path::new("--inject-fault"),
                    "worker",
                    e.to_string(),
                ))
            })?;
        }
        self.scheduled_faults = faults;
        Ok(())
    }

    /// Refuse (rather than warn about) a workload that fails the
    /// admission-time schedulability test in [`Runtime::run_load`].
    pub fn set_strict(&mut self, strict: bool) {
        self.strict = strict;
    }

    /// The admission-time schedulability test of `workload` (rates as
    /// offered) on this runtime's workers at the power mode in force,
    /// with each tenant's fastest variant as timed warm at start.
    pub fn schedulability(&self, workload: &Workload) -> schedulability::Schedulability {
        let throttle = self.power.latest().map_or(1.0, |p| p.throttle.max(1.0));
        let demands: Vec<TenantDemand> = workload
            .tenants
            .iter()
            .enumerate()
            .map(|(t, spec)| {
                let fastest = self
                    .warm
                    .iter()
                    .filter(|p| p.tenant == t)
                    .map(|p| p.took)
                    .min()
                    .unwrap_or(Duration::ZERO);
                TenantDemand {
                    name: spec.name.clone(),
                    rate_hz: spec.arrival.rate_hz(),
                    deadline: spec.deadline,
                    service: fastest.mul_f64(throttle),
                    units: self.serves.iter().map(|s| s[t]).collect(),
                }
            })
            .collect();
        schedulability::check(&demands, &self.worker_names)
    }

    /// Busy time per worker and per tenant so far, bumped by each worker
    /// the moment a forward pass ends (what the energy meter reads).
    pub fn busy_counters(&self) -> Arc<BusyCounters> {
        self.busy.clone()
    }

    /// Start the control plane (carbon monitor, governor, energy meter),
    /// if the rt-config has a platform and it is not running yet, sized for
    /// the workload's rates × `load_factor`. [`Runtime::run_load`] calls it;
    /// a server that takes its requests from clients calls it before
    /// accepting any.
    pub fn start_control(&mut self, load_factor: f64) -> Result<(), StartError> {
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
                    crate::control_plane::ControlLinks {
                        power: self.power.clone(),
                        busy: self.busy.clone(),
                        queues,
                        clock: self.clock,
                        meter_interval: Duration::from_secs(1),
                        thread: self.control_plane_spec,
                        notes: self.notes.clone(),
                        faults: self.faults.clone(),
                        incidents: self.incidents.clone(),
                    },
                )
                .map_err(StartError::Control)?,
            );
            // Let the governor apply its first cap before the first request.
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Mark the start of serving (the report's duration counts from the
    /// first call), for callers that submit without [`Runtime::run_load`].
    pub fn mark_serving(&mut self) {
        self.mark_load_start(self.clock.now());
    }

    /// The first call sets when serving started (later ones keep it).
    fn mark_load_start(&mut self, at: Timestamp) {
        if self.load_started.is_none() {
            self.load_started = Some(at);
            self.cpu_at_load_start = CpuTimes::read();
        }
    }

    /// What tenant `t`'s model takes and gives (its heaviest variant's), as
    /// found when it was loaded: `(inputs, outputs)`.
    pub fn model_io(&self, t: usize) -> (Vec<TensorSpec>, Vec<TensorSpec>) {
        let inputs = vec![self.queues[t]
            .input_spec()
            .cloned()
            .unwrap_or_else(|| TensorSpec::new("input", DataType::Fp32, vec![-1]))];
        let outputs = self.outputs.get(t).cloned().flatten().unwrap_or_else(|| {
            // A synthetic model echoes its input.
            vec![TensorSpec::new("output", DataType::Fp32, vec![-1])]
        });
        (inputs, outputs)
    }

    /// What `GET /metrics` renders for this run (call after
    /// [`Runtime::start_control`] for the device's metrics).
    pub fn metrics(&self) -> crate::server::metrics::MetricsSource {
        let names: Vec<String> = self
            .workload
            .tenants
            .iter()
            .map(|t| t.name.clone())
            .collect();
        crate::server::metrics::MetricsSource::new(
            &names,
            self.counters.clone(),
            &self.latency,
            self.control.as_ref().map(ControlPlane::view),
        )
    }

    /// Where the HTTP server's threads go (rt-config `server`), and where
    /// refusals are noted.
    pub fn server_thread(&self) -> (ThreadSpec, RtNotes) {
        (self.server_spec, self.notes.clone())
    }

    /// A shared handle on the run's exact counters, one per tenant.
    pub fn counters(&self) -> Vec<Arc<TenantCounters>> {
        self.counters.clone()
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
        // Admission-time schedulability, at the mode in force (the
        // governor starts uncapped): refuse under --strict, else warn.
        let verdict = self.schedulability(&workload);
        if !verdict.is_feasible() {
            let problems: Vec<String> = verdict.problems.iter().map(|p| p.to_string()).collect();
            if self.strict {
                return Err(StartError::Unschedulable(problems));
            }
            for p in problems {
                self.incidents.record(
                    format!("admission: the workload cannot be feasible at the mode in force: {p}"),
                    false,
                );
            }
        }
        self.start_control(load_factor)?;
        let start = self.clock.now() + Duration::from_millis(5);
        self.mark_load_start(start);
        let until = start + duration;
        let stop = Arc::new(AtomicBool::new(false));
        if !self.scheduled_faults.is_empty() {
            // Arms the faults at their times; only stores atomics, so it
            // may run at any priority.
            let (faults, due, clock, stop) = (
                self.faults.clone(),
                std::mem::take(&mut self.scheduled_faults),
                self.clock,
                stop.clone(),
            );
            std::thread::Builder::new()
                .name("fault-timer".into())
                .spawn(move || {
                    let mut due = due;
                    due.sort_by_key(|f| f.at);
                    for f in due {
                        let at = start + f.at;
                        while clock.now() < at {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            std::thread::sleep(
                                at.saturating_since(clock.now())
                                    .min(Duration::from_millis(20)),
                            );
                        }
                        // Names were checked in `schedule_faults`.
                        let _ = faults.arm(&f.fault);
                    }
                })
                .map_err(|source| StartError::Spawn {
                    thread: "fault-timer".into(),
                    source,
                })?;
        }
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
    /// and return the report. A clone of a tenant queue taken with
    /// [`Runtime::queue`] and still held is refused from here on
    /// ([`SubmitError::Closed`](crate::tenant_queue::SubmitError::Closed),
    /// not counted: the report's counts are final); what it submitted
    /// before is served or counted as usual.
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
            cpu_at_load_start,
            control,
            stop,
            counters,
            telemetry_dropped,
            incidents,
            busy,
            ..
        } = self;
        // Admission closes first: a handle a caller still holds is refused
        // from now on (`SubmitError::Closed`), and the workers close its
        // tenant once what was admitted has arrived, so they can exit
        // though its channel never disconnects.
        for c in &counters {
            c.waiting.close();
        }
        drop(queues);
        // Workers asleep on queues of other tenants, or on nothing but their
        // doorbell, learn of the close here: the disconnection wakes them.
        drop(stop);
        for w in workers {
            let _ = w.join();
        }
        // Every worker has ended, so this is the last handle.
        let stats = dispatcher
            .into_inner()
            .map(EdfDispatcher::finish)
            .unwrap_or_default();
        if stats.stalled_slots > 0 {
            incidents.record(
                format!(
                    "{} request(s) were admitted but never reached the dispatcher by the end of \
                     the run (a submitter stalled between admission and its send): counted \
                     submitted with no outcome, so the counts do not add up",
                    stats.stalled_slots
                ),
                true,
            );
        }
        let names: Vec<String> = workload.tenants.iter().map(|t| t.name.clone()).collect();
        let (mut tenants, mut workers) = telemetry.join().unwrap_or_else(|_| {
            incidents.record(
                "the telemetry sink died: latency histograms and worker accounts are incomplete \
                 (the outcome counts are exact: they are kept where each outcome is decided)"
                    .into(),
                true,
            );
            (
                names
                    .iter()
                    .map(ecomap::accounting::TenantAccount::new)
                    .collect(),
                Vec::new(),
            )
        });
        // Busy and throttle time as the workers counted them for the meter
        // (exact: telemetry's sample of a pass may have been dropped), so
        // the throttle is always a part of the busy time it is shown in.
        for (i, w) in workers.iter_mut().enumerate() {
            w.busy = Duration::from_nanos(busy.workers[i].load(Ordering::Acquire));
            w.throttled = Duration::from_nanos(busy.throttled[i].load(Ordering::Relaxed));
        }
        // The exact counts replace what telemetry saw; what it missed is
        // said, not hidden.
        let (mut served, mut sampled) = (0, 0);
        for (t, c) in tenants.iter_mut().zip(&counters) {
            let exact = c.snapshot();
            served += exact.on_time + exact.late;
            sampled += t.end_to_end.len();
            debug_assert!(
                exact.is_conserved() || stats.stalled_slots > 0,
                "one outcome per request: {exact:?}"
            );
            t.counts = exact;
        }
        let dropped = telemetry_dropped.load(Ordering::Relaxed);
        if dropped > 0 || sampled < served {
            incidents.record(
                format!(
                    "telemetry fell behind: {dropped} latency sample(s) dropped rather than \
                     block a worker; the histograms hold {sampled} of {served} served requests \
                     (the outcome counts are exact)"
                ),
                false,
            );
        }
        // The control plane outlives the drain so its energy is counted.
        let outcome = control.map(ControlPlane::stop);
        let end = clock.now();
        let cpu_steal = cpu_at_load_start.and_then(|start| CpuTimes::read()?.stolen_since(&start));
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
                incidents: incidents.incidents(load_started.unwrap_or(Timestamp::ZERO)),
                clock_zero: std::time::SystemTime::now().checked_sub(end.since_epoch()),
                cpu_steal,
            },
            timeline,
        )
    }
}
