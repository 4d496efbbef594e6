//! `ecomap`: run the carbon-aware inference runtime from RON files.
//!
//! Exit codes: 0 success, 2 bad input (a file, a flag, a value), 1 a
//! failure while running.

use clap::{Parser, Subcommand};
use ecomap::config::policy::{CarbonSource, Policy};
use ecomap::config::rt::RtConfig;
use ecomap::config::workload::Workload;
use ecomap::config::ConfigError;
use ecomap_actors::rt::{allowed_cores, available_cores};
use ecomap_actors::runtime::{Runtime, StartError};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "ecomap",
    version,
    about = "Carbon-aware multi-tenant DNN inference runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug)]
struct Files {
    /// Real-time / platform configuration (RON).
    #[arg(long, default_value = "rt-config/host.ron")]
    rt_config: PathBuf,
    /// Policy (RON).
    #[arg(long, default_value = "policies/reactive.ron")]
    policy: PathBuf,
    /// Workload: the tenants (RON).
    #[arg(long, default_value = "workloads/robot-mixed.ron")]
    workload: PathBuf,
    /// Replay this carbon-intensity CSV instead of the policy's carbon source.
    #[arg(long)]
    carbon_trace: Option<PathBuf>,
    /// Trace seconds per run second (360 = one trace hour per 10 s), for
    /// --carbon-trace or the policy's own Trace source.
    #[arg(long, value_parser = parse_positive)]
    carbon_speedup: Option<f64>,
}

/// [`Files`] with `ecomap serve`'s defaults: the perception stack.
#[derive(clap::Args, Debug)]
struct ServeFiles {
    /// Real-time / platform configuration (RON).
    #[arg(long, default_value = "rt-config/host.ron")]
    rt_config: PathBuf,
    /// Policy (RON).
    #[arg(long, default_value = "policies/reactive.ron")]
    policy: PathBuf,
    /// Workload: the tenants (RON); each tenant is a model.
    #[arg(long, default_value = "workloads/perception.ron")]
    workload: PathBuf,
    /// Replay this carbon-intensity CSV instead of the policy's carbon source.
    #[arg(long)]
    carbon_trace: Option<PathBuf>,
    /// Trace seconds per run second (360 = one trace hour per 10 s), for
    /// --carbon-trace or the policy's own Trace source.
    #[arg(long, value_parser = parse_positive)]
    carbon_speedup: Option<f64>,
}

impl ServeFiles {
    fn files(&self) -> Files {
        Files {
            rt_config: self.rt_config.clone(),
            policy: self.policy.clone(),
            workload: self.workload.clone(),
            carbon_trace: self.carbon_trace.clone(),
            carbon_speedup: self.carbon_speedup,
        }
    }
}

/// `simulate --replay-by`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ReplayByArg {
    /// Each tenant's variant's passes in start order.
    Order,
    /// The pass that started nearest the same moment of the run.
    Time,
}

/// `train-estimator --power-head`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum PowerHeadArg {
    /// An MLP on the mean tenant token.
    Pooled,
    /// A base plus one non-negative contribution per tenant.
    Additive,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the workload for a while and report per-tenant outcomes and latencies.
    Run {
        #[command(flatten)]
        files: Files,
        /// How long to release requests, e.g. 20s, 1m30s.
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        duration: Duration,
        /// Multiply every tenant's arrival rate (2.0 = twice the load).
        #[arg(long, default_value_t = 1.0, value_parser = parse_positive)]
        load_factor: f64,
        /// Folder for the per-tenant latency files (`.hgrm`, `.hlog`).
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Write one row per meter interval (about a second), and one at each
        /// cap change, to this CSV: time, intensity, cap and level, power,
        /// utilisation, queue depths, variants.
        #[arg(long)]
        timeline: Option<PathBuf>,
        /// Write the run's totals in `ecomap simulate`'s summary.csv columns
        /// (one `all` row, one per tenant) to this CSV, to compare the two.
        #[arg(long)]
        summary: Option<PathBuf>,
        /// Refuse (exit 2) a workload that fails the admission-time
        /// schedulability test at the power mode in force, instead of
        /// warning and serving it.
        #[arg(long)]
        strict: bool,
        /// Fault injection, for testing what a run survives: KIND[@TIME]
        /// after the first release, KIND one of worker-panic:WORKER,
        /// pass-panic:WORKER, load-panic:WORKER, control-plane-panic,
        /// control-plane-stall:DURATION, telemetry-stall:DURATION,
        /// telemetry-panic. Repeatable.
        #[arg(long = "inject-fault", value_name = "KIND[@TIME]")]
        inject_fault: Vec<ecomap_actors::faults::ScheduledFault>,
        /// Serve `GET /metrics` (Prometheus) on this address while running.
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Write one CSV row per forward pass (tenant, request, worker,
        /// variant, release/start/finish µs, service µs, outcome) to this
        /// file, for `ecomap simulate --service-replay`.
        #[arg(long, value_name = "FILE")]
        pass_log: Option<PathBuf>,
    },
    /// Measure real co-located runs (sets of tenants, each with a variant,
    /// a worker and a thread count, at each emulated power mode) and write
    /// the estimator's dataset (CSV) row by row.
    Profile {
        /// Real-time config: its workers are the units profiled.
        #[arg(long, default_value = "rt-config/host.ron")]
        rt_config: PathBuf,
        /// Device description the rows are labelled with (modes, clocks)
        /// and whose solo costs size the arrival rates.
        #[arg(long, default_value = "rt-config/devices/host.ron")]
        device: PathBuf,
        /// Model catalog the variants come from.
        #[arg(long, default_value = "policies/models.ron")]
        catalog: PathBuf,
        /// Variants to draw from.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "resnet50,resnet34,resnet18,mobilenet_v2,mobilenet_v2@160,mobilenet_v2@128,squeezenet1_1"
        )]
        variants: Vec<String>,
        /// Intra-op thread counts to draw from.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<u32>,
        /// Configurations in all, at least 1 (every variant alone at every
        /// mode and thread count first).
        #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..))]
        configs: u32,
        /// Most tenants in one configuration.
        #[arg(long, default_value_t = 6)]
        max_tenants: usize,
        /// Measuring window per configuration.
        #[arg(long, default_value = "2500ms", value_parser = parse_duration)]
        window: Duration,
        /// Seed for the mixes.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output CSV.
        #[arg(long, default_value = "out/host-profile.csv")]
        out: PathBuf,
        /// Keep the configurations already complete in --out and run only
        /// the others, appending (an interrupted profile goes on).
        #[arg(long)]
        resume: bool,
        /// Simulate the configurations on the --device model instead of
        /// running them (every figure modelled; --rt-config is not used).
        #[arg(long)]
        simulate: bool,
    },
    /// Train the latency/power estimator on a profile dataset (writes
    /// OUT/estimator.safetensors, OUT/estimator.ron, OUT/descriptors.csv —
    /// the model descriptors it was trained with, which `ecomap run` needs
    /// beside the weights — and scores them in OUT/estimator_eval.csv), or
    /// with --evaluate score trained weights and the baselines (writes
    /// OUT/estimator_eval.csv).
    TrainEstimator {
        /// Profile dataset (CSV from `ecomap profile`).
        #[arg(long, default_value = "rt-config/host-profile.csv")]
        data: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Model descriptors (CSV) [default: rt-config/model-descriptors.csv;
        /// evaluating, the copy beside the weights when they carry one].
        #[arg(long)]
        descriptors: Option<PathBuf>,
        /// Evaluate instead of training.
        #[arg(long, requires = "weights")]
        evaluate: bool,
        /// Trained weights to evaluate: a folder or its estimator.safetensors.
        #[arg(long, requires = "evaluate")]
        weights: Option<PathBuf>,
        // Training-only settings conflict with --evaluate (clap counts only
        // what the command line gives, not defaults): evaluation scores the
        // weights on the split and seed they were trained with, and a flag
        // it would ignore must not pass silently.
        /// Seed of initialisation, batch order and the split (training
        /// only: evaluating uses the weights' own).
        #[arg(long, default_value_t = 2026, conflicts_with = "evaluate")]
        seed: u64,
        /// Training epochs (≥ 1).
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..),
              conflicts_with = "evaluate")]
        epochs: u32,
        /// Architecture held out of training [default: squeezenet1_1;
        /// evaluating, the one the weights were trained without].
        #[arg(long)]
        heldout_arch: Option<String>,
        /// AdamW weight decay (≥ 0).
        #[arg(long, default_value_t = 0.05, conflicts_with = "evaluate")]
        weight_decay: f64,
        /// Share of the training combinations kept out of the gradient
        /// steps to pick the epoch whose weights are kept (0: the last).
        #[arg(long, default_value_t = 0.15, conflicts_with = "evaluate")]
        validation: f64,
        /// How the network predicts power: from the mean tenant token
        /// (`pooled`), or as a base plus one contribution per tenant
        /// (`additive`).
        #[arg(
            long,
            value_enum,
            default_value = "pooled",
            conflicts_with = "evaluate"
        )]
        power_head: PowerHeadArg,
    },
    /// Serve the workload's models over HTTP, speaking the Open Inference
    /// Protocol (KServe v2) that Triton's clients use, until SIGINT /
    /// SIGTERM (or --duration); then drain, report and exit 0.
    Serve {
        #[command(flatten)]
        files: ServeFiles,
        /// Address to listen on (the host's loopback by default).
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: std::net::SocketAddr,
        /// Stop after this long instead of waiting for a signal.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Also release the workload's own arrivals, at this load factor
        /// (without it, only clients' requests are served).
        #[arg(long, value_parser = parse_positive)]
        generate: Option<f64>,
        /// HTTP worker threads (1..=64).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
        http_workers: u16,
        /// Largest request body accepted, in MB (1..=4096); beyond: 413.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
        max_body_mb: u32,
        /// Let clients on this host register shared-memory regions
        /// (Triton's system shared-memory extension) and pass tensors in
        /// them instead of in the body. Only for trusted local clients: a
        /// client that shrinks a registered object crashes the server.
        #[arg(long)]
        allow_client_shm: bool,
        /// Folder for the per-tenant latency files (`.hgrm`, `.hlog`).
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Write the run's totals in `ecomap simulate`'s summary.csv columns to this CSV.
        #[arg(long)]
        summary: Option<PathBuf>,
    },
    /// Check the files and exit (0 when all are valid, 2 otherwise).
    Check {
        #[command(flatten)]
        files: Files,
    },
    /// Replay carbon traces through the decision code on a simulated device,
    /// policy by policy; writes OUT/summary.csv, OUT/timeline/*.csv (with
    /// *__plans.csv for planning policies) and OUT/plots/*.svg.
    Simulate {
        /// Policies: names in policies/ (e.g. max-perf,ecomap) or paths.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "max-perf,efficient-static,ecomap-power,quality-only,lowest-mode,clover,carbon-buckets,reactive,ecomap,oracle,oracle-remap"
        )]
        policies: Vec<String>,
        /// Carbon-intensity CSVs (EIA, Electricity Maps, or timestamp,gco2_per_kwh).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "../shared/data/carbon/electricitymaps_2023/US-CAL-CISO_2023_hourly.csv"
        )]
        traces: Vec<PathBuf>,
        /// Workload (RON).
        #[arg(long, default_value = "workloads/xavier-robot.ron")]
        workload: PathBuf,
        /// Device description (RON).
        #[arg(long, default_value = "rt-config/devices/xavier.ron")]
        device: PathBuf,
        /// How much trace to replay: 3d, 30d, 1y (= 8760 h), 36h, …
        #[arg(long, default_value = "3d", value_parser = parse_span, allow_hyphen_values = true)]
        span: usize,
        /// Where to start: an offset from the trace's first row (0s, 30days)
        /// or a UTC date (2023-06-01).
        #[arg(long, default_value = "0s", value_parser = parse_start, allow_hyphen_values = true)]
        start: ecomap_actors::simulate::StartAt,
        /// Seed: XORed into the workload's seed for arrivals (0, the default,
        /// releases the same arrivals as `ecomap run`), and seeds the
        /// service-time draws (unless --service-seed).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Seed the device model's service-time draws apart from the
        /// arrivals: the same arrivals (e.g. a measured run's, --seed 0)
        /// under other draws show the model's own sampling spread.
        #[arg(long, value_name = "N")]
        service_seed: Option<u64>,
        /// Simulated time per trace hour (e.g. 2m), or `full`. Default: full
        /// up to 3 days of span, 2m beyond.
        #[arg(long, value_parser = parse_sample, allow_hyphen_values = true)]
        sample: Option<Sample>,
        /// Output folder.
        #[arg(long, default_value = "out/sim")]
        out: PathBuf,
        /// Runs in parallel (default: the cores available; never more
        /// threads than runs).
        #[arg(long, value_parser = parse_jobs)]
        jobs: Option<usize>,
        /// Hold `oracle` and `oracle-remap` to this mean accuracy (%, e.g.
        /// 76.0) on every trace instead of `ecomap`'s: the least predicted
        /// carbon of any hourly schedule of modes and variants (on the
        /// workload's unit mapping; `oracle-remap`: and of units) at that
        /// accuracy.
        #[arg(long, value_parser = parse_accuracy)]
        oracle_accuracy: Option<f64>,
        /// Replay the service a run measured (`ecomap run --pass-log FILE`,
        /// same workload) pass by pass, in place of the device model's
        /// draws, wherever the run served the tenant's variant. The times
        /// carry the run's mode and contention: replay them at that mode.
        #[arg(long, value_name = "FILE")]
        service_replay: Option<PathBuf>,
        /// How --service-replay picks a recorded pass: `order` (the
        /// tenant's variant's next pass, in start order) or `time` (its pass
        /// that started nearest the same moment of the run, so a slow
        /// stretch hits every tenant at once as it did in the run).
        #[arg(long, value_enum, default_value = "order", requires = "service_replay")]
        replay_by: ReplayByArg,
    },
}

fn parse_accuracy(s: &str) -> Result<f64, String> {
    let a: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number (a mean accuracy in %, e.g. 76.0)"))?;
    if a.is_finite() && a > 0.0 && a <= 100.0 {
        Ok(a)
    } else {
        Err(format!("{a} is not a mean accuracy in % (0 < a ≤ 100)"))
    }
}

use ecomap_actors::cli_args::{
    parse_duration, parse_jobs, parse_positive, parse_sample, parse_span, parse_start, Sample,
};

struct Loaded {
    workload: Workload,
    rt: RtConfig,
    policy: Policy,
}

fn load(files: &Files) -> Result<Loaded, ConfigError> {
    let workload = Workload::load(&files.workload)?;
    let rt = RtConfig::load(&files.rt_config)?;
    let names: Vec<&str> = workload.tenants.iter().map(|t| t.name.as_str()).collect();
    rt.validate(&files.rt_config, &allowed_cores(), &names)?;
    let mut policy = Policy::load(&files.policy)?;
    if policy
        .plan
        .as_ref()
        .is_some_and(|p| !matches!(p, ecomap::config::policy::PlanPolicy::Mapping { .. }))
    {
        return Err(ConfigError::invalid(
            &files.policy,
            "plan",
            "this planner (`plan: …`) runs in `ecomap simulate` only; `ecomap run` takes a \
             `Mapping` plan (e.g. policies/ecomap-host.ron) or a policy with a `governor` (e.g. \
             policies/reactive.ron)",
        ));
    }
    if let Some(trace) = &files.carbon_trace {
        let speedup = files.carbon_speedup.unwrap_or(match &policy.carbon {
            Some(CarbonSource::Trace { speedup, .. }) => *speedup,
            _ => 360.0,
        });
        policy.carbon = Some(CarbonSource::Trace {
            path: trace.clone(),
            speedup,
            start_offset: Duration::ZERO,
        });
    } else if let Some(s) = files.carbon_speedup {
        match policy.carbon.as_mut() {
            Some(CarbonSource::Trace { speedup, .. }) => *speedup = s,
            _ => {
                return Err(ConfigError::invalid(
                    &files.policy,
                    "carbon",
                    "--carbon-speedup speeds up a replayed trace, but there is none: give \
                     --carbon-trace FILE, or a policy whose `carbon` is a `Trace`",
                ))
            }
        }
    }
    // The flags may have replaced the policy's values: check them again.
    if let Some(c) = &policy.carbon {
        c.validate().map_err(|m| {
            ConfigError::invalid(
                &files.policy,
                "carbon (with --carbon-trace / --carbon-speedup)",
                m,
            )
        })?;
    }
    if !ecomap_actors::backend::HAS_LIBTORCH {
        // A family is judged by its variants (all Synthetic needs no
        // libtorch), a model by itself.
        let needs = workload.tenants.iter().find_map(|t| {
            t.variants()
                .into_iter()
                .find(|v| v.model.needs_libtorch())
                .map(|v| (t, v))
        });
        if let Some((t, v)) = needs {
            let what = if t.resolved.is_empty() {
                v.model.to_string()
            } else {
                format!("{} (variant {} of {})", v.model, v.name, t.model)
            };
            return Err(ConfigError::invalid(
                &files.workload,
                format!("tenant \"{}\".model", t.name),
                format!(
                    "{what} needs libtorch, but this ecomap was built without the `tch` \
                     feature; rebuild with default features or use a Synthetic model"
                ),
            ));
        }
    }
    Ok(Loaded {
        workload,
        rt,
        policy,
    })
}

/// `ecomap run`'s options besides the files.
struct RunOptions<'a> {
    duration: Duration,
    load_factor: f64,
    out: &'a Path,
    timeline: Option<&'a Path>,
    summary: Option<&'a Path>,
    strict: bool,
    faults: &'a [ecomap_actors::faults::ScheduledFault],
    metrics_listen: Option<std::net::SocketAddr>,
    pass_log: Option<&'a Path>,
}

fn run(files: &Files, o: RunOptions<'_>) -> Result<(), ExitCode> {
    let RunOptions {
        duration,
        load_factor,
        out,
        timeline,
        summary,
        strict,
        faults,
        metrics_listen,
        pass_log,
    } = o;
    let l = load_for_serving(files, "--load-factor", Some(load_factor))?;
    check_outputs(out, &[("--timeline", timeline), ("--summary", summary)])?;
    let pass_log = match pass_log {
        None => None,
        Some(path) => Some(
            ecomap_actors::dataplane::pass_log::PassLog::create(path).map_err(|e| {
                eprintln!(
                    "error: --pass-log {}: cannot create it: {e}; name a writable file in a folder that exists",
                    path.display()
                );
                ExitCode::from(2)
            })?,
        ),
    };
    let start_error = |e| start_failed(files, e);
    let worker_names: Vec<String> = l.rt.workers.iter().map(|w| w.name.clone()).collect();
    let injector = ecomap_actors::faults::FaultInjector::new(&worker_names);
    for f in faults {
        injector.validate(&f.fault).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(2)
        })?;
        if f.at >= duration {
            eprintln!(
                "error: --inject-fault: a fault at {} would never fire in a run of {}: give it a \
                 time within --duration",
                humantime::format_duration(f.at),
                humantime::format_duration(duration)
            );
            return Err(ExitCode::from(2));
        }
    }
    // Load-time faults fire while the models load; the rest at their times.
    let (at_load, later): (Vec<_>, Vec<_>) = faults
        .iter()
        .cloned()
        .partition(|f| matches!(f.fault, ecomap_actors::faults::Fault::LoadPanic(_)));
    for f in &at_load {
        let _ = injector.arm(&f.fault);
    }
    let mut runtime = Runtime::start_with(
        &l.workload,
        &l.rt,
        &l.policy,
        ecomap_actors::runtime::StartOptions {
            faults: Some(injector),
            pass_log,
        },
    )
    .map_err(start_error)?;
    runtime.set_strict(strict);
    runtime.schedule_faults(later).map_err(start_error)?;
    if strict {
        // Refuse before saying "serving" (run_load checks again, for
        // library callers).
        let offered = l.workload.scaled(load_factor).map_err(|m| {
            eprintln!("error: --load-factor {load_factor}: {m}");
            ExitCode::from(2)
        })?;
        let verdict = runtime.schedulability(&offered);
        if !verdict.is_feasible() {
            let problems = verdict.problems.iter().map(|p| p.to_string()).collect();
            let code = start_error(StartError::Unschedulable(problems));
            let _ = runtime.shutdown();
            return Err(code);
        }
    }
    let metrics_server = match metrics_listen {
        None => None,
        Some(addr) => {
            runtime.start_control(load_factor).map_err(start_error)?;
            let state = ecomap_actors::server::ServerState::new(
                Vec::new(),
                0,
                Some(runtime.metrics()),
                false,
            );
            let (spec, notes) = runtime.server_thread();
            match ecomap_actors::server::start(state, addr, 1, spec, notes) {
                Ok(s) => {
                    eprintln!("ecomap: metrics on http://{}/metrics", s.addr);
                    Some(s)
                }
                Err(e) => {
                    eprintln!("error: --metrics-listen {addr}: {e}");
                    let _ = runtime.shutdown();
                    return Err(ExitCode::from(2));
                }
            }
        }
    };
    // Handlers first: a signal after the line below (which a supervisor
    // may wait for) is always an orderly stop.
    let signals = Signals::install();
    eprintln!(
        "ecomap: serving for {} (load factor {load_factor})…",
        humantime::format_duration(duration)
    );
    let run_result = runtime.run_load_interruptible(duration, load_factor, &signals.any);
    if let Some(s) = metrics_server {
        let _ = s.stop();
    }
    let interrupted = matches!(run_result, Ok(true));
    if interrupted {
        eprintln!("ecomap: interrupted: stopped releasing; draining what is queued, then the report (again to quit at once)");
    }
    let (report, rows) = runtime.shutdown_with_timeline();
    if let Err(e) = run_result {
        return Err(match e {
            // Refused before the first release: bad input, not a failure.
            e @ StartError::Unschedulable(_) => start_error(e),
            e => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        });
    }
    write_outputs(&report, &l, out, summary)?;
    if let Some(path) = timeline {
        let names: Vec<String> = l.workload.tenants.iter().map(|t| t.name.clone()).collect();
        if rows.is_empty() {
            eprintln!(
                "ecomap: no timeline to write: the rt-config has no `platform`, so nothing was metered"
            );
        } else if let Err(e) = ecomap_actors::control_plane::write_timeline(path, &rows, &names) {
            eprintln!("error: {e}");
            return Err(ExitCode::from(1));
        } else {
            eprintln!(
                "ecomap: wrote {} timeline rows to {}",
                rows.len(),
                path.display()
            );
        }
    }
    report_status(&report, interrupted.then(|| signals.exit_code()))
}

/// Load and check the files, and the load factor given with `flag` (a
/// factor that takes a tenant's rate out of range is bad input, found
/// before anything starts); say what is about to load.
fn load_for_serving(files: &Files, flag: &str, factor: Option<f64>) -> Result<Loaded, ExitCode> {
    let l = load(files).map_err(bad_input)?;
    if let Some(f) = factor {
        if let Err(m) = l.workload.scaled(f) {
            eprintln!("error: {flag} {f}: {m}");
            return Err(ExitCode::from(2));
        }
    }
    eprintln!(
        "ecomap: {} tenant(s), {} worker(s), policy '{}'; loading models…",
        l.workload.tenants.len(),
        l.rt.workers.len(),
        l.policy.name
    );
    Ok(l)
}

/// Clients see one model per tenant: a family whose variants mix
/// `Synthetic` stand-ins (which answer with their input) and real models
/// (which answer with their outputs) would answer two different ways as
/// the quality controller swaps. Serving refuses it (exit 2); `ecomap run`,
/// whose requests carry no input, may mix them.
fn refuse_mixed_families(files: &Files, workload: &Workload) -> Result<(), ExitCode> {
    for t in &workload.tenants {
        let variants = t.variants();
        let real = variants.iter().filter(|v| v.model.needs_libtorch()).count();
        if real > 0 && real < variants.len() {
            let synthetic: Vec<&str> = variants
                .iter()
                .filter(|v| !v.model.needs_libtorch())
                .map(|v| v.name.as_str())
                .collect();
            eprintln!(
                "error: {}: tenant \"{}\" ({}) mixes Synthetic variants ({}) with real models; \
                 a Synthetic variant answers with its input, not the model's outputs, so clients \
                 would get two kinds of answer. To serve it, give the family only real models \
                 (or only Synthetic ones)",
                files.workload.display(),
                t.name,
                t.model,
                synthetic.join(", ")
            );
            return Err(ExitCode::from(2));
        }
    }
    Ok(())
}

/// A start-up error's message, and its exit status: 2 (bad input or a
/// model that does not load) but for a thread the OS would not create (1).
/// A control-plane error (carbon source, platform, planner) comes from the
/// policy or the rt-config: the message names both.
fn start_failed(files: &Files, e: StartError) -> ExitCode {
    match &e {
        StartError::Control(_) => eprintln!(
            "error: {e} (policy {}, rt-config {})",
            files.policy.display(),
            files.rt_config.display()
        ),
        _ => eprintln!("error: {e}"),
    }
    match e {
        StartError::Spawn { .. } => ExitCode::from(1),
        StartError::ModelLoad { .. }
        | StartError::Config(_)
        | StartError::Control(_)
        | StartError::MemoryBudget { .. }
        | StartError::Unschedulable(_) => ExitCode::from(2),
    }
}

/// Before any work: the `--out` folder exists (created if need be) and
/// each named output file can be created (its folder too). A run must not
/// serve for minutes and then fail to write what it measured; a path that
/// cannot be written is bad input (exit 2).
fn check_outputs(out: &Path, files: &[(&str, Option<&Path>)]) -> Result<(), ExitCode> {
    let refuse = |flag: &str, path: &Path, e: std::io::Error| {
        eprintln!(
            "error: {flag} {}: cannot be written ({e}); name a writable path",
            path.display()
        );
        ExitCode::from(2)
    };
    std::fs::create_dir_all(out).map_err(|e| refuse("--out", out, e))?;
    for (flag, path) in files {
        let Some(path) = path else { continue };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| refuse(flag, path, e))?;
        }
        // Opened to append (nothing existing is touched), and removed again
        // if this made it: an empty file must not pass for a run's output.
        let existed = path.exists();
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| refuse(flag, path, e))?;
        if !existed {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

/// The report on stdout, its `.hgrm` and `.hlog` files in `out`, and the
/// summary row(s) if asked for (exit 1 if a file cannot be written).
fn write_outputs(
    report: &ecomap::report::RunReport,
    l: &Loaded,
    out: &Path,
    summary: Option<&Path>,
) -> Result<(), ExitCode> {
    println!("{}", report.render());
    match report
        .write_hgrm(out)
        .and_then(|h| report.write_hlog(out).map(|l| (h, l)))
    {
        Ok((hgrm, hlog)) => eprintln!(
            "ecomap: wrote {} percentile files (.hgrm, ms) and {} interval logs (.hlog) to {}",
            hgrm.len(),
            hlog.len(),
            out.display()
        ),
        Err(e) => {
            eprintln!("error: cannot write .hgrm files to {}: {e}", out.display());
            return Err(ExitCode::from(1));
        }
    }
    if let Some(path) = summary {
        if let Err(e) = write_run_summary(path, report, l) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return Err(ExitCode::from(1));
        }
        eprintln!(
            "ecomap: wrote the run's summary row(s) to {}",
            path.display()
        );
    }
    Ok(())
}

/// The exit status a finished run's report calls for: 1 if its counts do
/// not add up (a bug), then `interrupted`'s (130 / 143) if a signal ended
/// it, then 3 if an incident degraded it.
fn report_status(
    report: &ecomap::report::RunReport,
    interrupted: Option<ExitCode>,
) -> Result<(), ExitCode> {
    if !report.is_conserved() {
        eprintln!("error: outcome counts do not add up to submissions (a bug; please report)");
        return Err(ExitCode::from(1));
    }
    if let Some(code) = interrupted {
        return Err(code);
    }
    if report.is_degraded() {
        eprintln!(
            "error: the run was degraded (see \"incidents\" in the report): its figures are \
             incomplete"
        );
        return Err(ExitCode::from(3));
    }
    Ok(())
}

/// `ecomap serve`'s options besides the files.
struct ServeOptions<'a> {
    listen: std::net::SocketAddr,
    duration: Option<Duration>,
    generate: Option<f64>,
    http_workers: usize,
    max_body: usize,
    allow_client_shm: bool,
    out: &'a Path,
    summary: Option<&'a Path>,
}

fn serve(files: &Files, o: ServeOptions<'_>) -> Result<(), ExitCode> {
    use ecomap_actors::server::{self, ModelEntry, ServerState};
    let l = load_for_serving(files, "--generate", o.generate)?;
    refuse_mixed_families(files, &l.workload)?;
    check_outputs(o.out, &[("--summary", o.summary)])?;
    let fail = |e| start_failed(files, e);
    let mut runtime = Runtime::start(&l.workload, &l.rt, &l.policy).map_err(fail)?;
    if let Err(e) = runtime.start_control(o.generate.unwrap_or(1.0)) {
        let _ = runtime.shutdown();
        return Err(fail(e));
    }
    runtime.mark_serving();
    let models = (0..l.workload.tenants.len())
        .map(|t| {
            let (inputs, outputs) = runtime.model_io(t);
            ModelEntry {
                queue: runtime.queue(t).clone(),
                inputs,
                outputs,
                platform: if l.workload.tenants[t]
                    .variants()
                    .iter()
                    .any(|v| v.model.needs_libtorch())
                {
                    "pytorch_libtorch"
                } else {
                    "ecomap_synthetic"
                },
            }
        })
        .collect();
    let state = ServerState::new(
        models,
        o.max_body,
        Some(runtime.metrics()),
        o.allow_client_shm,
    );
    let (spec, notes) = runtime.server_thread();
    let http = match server::start(state, o.listen, o.http_workers, spec, notes) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {}: {e}; pick another address with --listen",
                o.listen
            );
            let _ = runtime.shutdown();
            return Err(ExitCode::from(2));
        }
    };
    eprintln!(
        "ecomap: serving on http://{} (Open Inference Protocol v2; metrics at /metrics); \
         Ctrl-C to stop",
        http.addr
    );
    let signals = Signals::install();
    let result = match o.generate {
        Some(factor) => runtime
            .run_load_interruptible(
                o.duration
                    .unwrap_or(Duration::from_secs(100 * 365 * 86_400)),
                factor,
                &signals.any,
            )
            .map(drop),
        None => {
            let until = o
                .duration
                .and_then(|d| std::time::Instant::now().checked_add(d));
            while until.is_none_or(|u| std::time::Instant::now() < u)
                && !signals.any.load(std::sync::atomic::Ordering::Relaxed)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        }
    };
    eprintln!("ecomap: stopping: finishing the requests in flight, then the report");
    // Requests in flight finish (their tickets resolve while the runtime
    // still serves); then the queues close with the server's last handle.
    if let Err(e) = http.stop() {
        eprintln!("ecomap: warning: the HTTP server stopped with an error: {e}");
    }
    let report = runtime.shutdown();
    if let Err(e) = result {
        eprintln!("error: {e}");
        return Err(ExitCode::from(1));
    }
    write_outputs(&report, &l, o.out, o.summary)?;
    // A signal is how a server is stopped: not an interruption.
    report_status(&report, None)
}

/// SIGINT / SIGTERM: the first asks for a graceful stop (stop releasing,
/// drain, report), a second one exits at once.
struct Signals {
    /// Set by either signal.
    any: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Set by SIGTERM (exit 143 rather than 130).
    term: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Signals {
    fn install() -> Signals {
        use signal_hook::consts::{SIGINT, SIGTERM};
        use signal_hook::flag;
        let any = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let term = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Order matters: the conditional exit runs first, so it fires only
        // if an earlier signal already set `any`.
        let installed = flag::register_conditional_shutdown(SIGINT, 130, any.clone())
            .and_then(|_| flag::register_conditional_shutdown(SIGTERM, 143, any.clone()))
            .and_then(|_| flag::register(SIGINT, any.clone()))
            .and_then(|_| flag::register(SIGTERM, any.clone()))
            .and_then(|_| flag::register(SIGTERM, term.clone()));
        if let Err(e) = installed {
            // The run still works; only Ctrl-C falls back to the default.
            eprintln!("ecomap: warning: cannot install signal handlers ({e}); Ctrl-C ends the run without a report");
        }
        Signals { any, term }
    }

    /// 128 + the signal number, as shells report a signal's end.
    fn exit_code(&self) -> ExitCode {
        ExitCode::from(if self.term.load(std::sync::atomic::Ordering::Relaxed) {
            143
        } else {
            130
        })
    }
}

fn simulate_command(args: &ecomap_actors::simulate::SimulateArgs) -> Result<(), ExitCode> {
    let t0 = std::time::Instant::now();
    match ecomap_actors::simulate::run_simulate(args) {
        Ok(rows) => {
            print!("{}", ecomap_actors::simulate::render_rows(&rows));
            eprintln!(
                "ecomap: wrote {} and {} in {:.1} s",
                args.out.join("summary.csv").display(),
                args.out.join("timeline").display(),
                t0.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(if e.is_bad_input() { 2 } else { 1 }))
        }
    }
}

/// The run's totals in the simulator's summary columns.
fn write_run_summary(
    path: &Path,
    report: &ecomap::report::RunReport,
    l: &Loaded,
) -> Result<(), Box<dyn std::error::Error>> {
    let top1 = l.workload.top1_table();
    let ledger = report
        .energy
        .as_ref()
        .map(|e| e.ledger.clone())
        .unwrap_or_default();
    let trace = match &l.policy.carbon {
        Some(CarbonSource::Trace { path, .. }) => ecomap_actors::simulate::trace_name(path),
        Some(CarbonSource::Fixed { gco2_per_kwh }) => format!("fixed-{gco2_per_kwh}"),
        Some(CarbonSource::Http { .. }) => "live".into(),
        None => "none".into(),
    };
    let rows = ecomap::sim::output::totals_rows(
        &trace,
        &l.policy.name,
        &ecomap::sim::output::RunTotals {
            tenants: &report.tenants,
            energy_j: ledger.energy_j,
            carbon_g: ledger.carbon_g,
            tenant_energy_j: &ledger.tenant_energy_j,
            tenant_carbon_g: &ledger.tenant_carbon_g,
            top1: &top1,
            swaps: report.quality.as_ref().map_or(0, |q| q.swaps.len()),
            span_h: 0,
            simulated_s: report.duration.as_secs_f64(),
            unpriced_energy_j: ledger.unpriced_energy_j,
            stale_priced_energy_j: ledger.stale_priced_energy_j,
        },
    );
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    ecomap::sim::output::write_summary(std::fs::File::create(path)?, &rows)?;
    Ok(())
}

struct ProfileArgs<'a> {
    rt_config: &'a Path,
    device: &'a Path,
    catalog: &'a Path,
    variants: &'a [String],
    threads: &'a [u32],
    configs: usize,
    max_tenants: usize,
    window: Duration,
    seed: u64,
    out: &'a Path,
    resume: bool,
    simulate: bool,
}

/// What a real profile needs of its inputs, checked before it starts: a
/// platform that holds each mode by its cap, and selects the mode of the
/// device description's name; a service time for every variant on every
/// worker's kind of unit at every capped mode (it sizes the arrival
/// rates); and a window that sizes them within the workload's limits.
fn check_profile_inputs(
    a: &ProfileArgs<'_>,
    rt: &RtConfig,
    device: &ecomap::device::DeviceModel,
    plan: &ecomap::estimate::profile_plan::ProfilePlan,
    modes: &[(String, f64)],
) -> Result<(), String> {
    use ecomap::config::rt::PlatformSpec;
    match &rt.platform {
        None => {
            return Err(format!(
                "{}: no platform: the profile holds each mode of {} through the platform's cap; \
                 add one, e.g. platform: Some(Emulated(device: \"devices/xavier.ron\"))",
                a.rt_config.display(),
                a.device.display()
            ))
        }
        Some(PlatformSpec::Emulated { device: path }) => {
            let emulated = ecomap::device::DeviceModel::load(path).map_err(|e| e.to_string())?;
            for (name, cap) in modes {
                let chosen = &emulated.modes()[emulated.mode_for_cap(*cap)].name;
                if chosen != name {
                    return Err(format!(
                        "{}: its emulated device {} selects mode {chosen:?} for the {cap} W cap \
                         of {}'s mode {name:?}: the rows would be labelled with a mode the \
                         workers did not run; profile with --device {}",
                        a.rt_config.display(),
                        path.display(),
                        a.device.display(),
                        path.display()
                    ));
                }
            }
        }
        Some(_) => {}
    }
    let mut kinds = Vec::new();
    for &k in &plan.unit_kinds {
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    for v in &plan.variants {
        for &kind in &kinds {
            for (name, _) in modes {
                let Some(mode) = device.mode_by_name(name) else {
                    continue;
                };
                if device.service_s(v, kind, mode).is_none() {
                    return Err(format!(
                        "{}: no service time for variant {v:?} on a {} unit (a worker of {} \
                         stands for one): the arrival rates that load it cannot be sized; add \
                         its {}_ms to the device's `models`, or leave it out of --variants",
                        a.device.display(),
                        kind.name(),
                        a.rt_config.display(),
                        kind.name()
                    ));
                }
            }
        }
    }
    Ok(())
}

fn profile_command(a: &ProfileArgs<'_>) -> Result<(), ExitCode> {
    use ecomap::estimate::profile_plan::ProfilePlan;
    use ecomap_actors::profile;
    let usage = |m: String| {
        eprintln!("error: {m}");
        ExitCode::from(2)
    };
    let device = ecomap::device::DeviceModel::load(a.device).map_err(bad_input)?;
    let catalog = ecomap::catalog::Catalog::load(a.catalog).map_err(bad_input)?;
    let variants = profile::catalog_variants(&catalog, a.variants)
        .map_err(|m| usage(format!("--variants: {m} ({})", a.catalog.display())))?;
    // 64 tenants on one device is far past any edge workload (and each
    // configuration allocates its tenants up front).
    let max_threads = ecomap::config::rt::MAX_INTRA_OP_THREADS as u32;
    if a.threads.is_empty()
        || a.threads.iter().any(|t| !(1..=max_threads).contains(t))
        || !(1..=64).contains(&a.max_tenants)
    {
        return Err(usage(format!(
            "--threads needs counts in 1..={max_threads} and --max-tenants between 1 and 64"
        )));
    }
    let mut plan = ProfilePlan {
        variants: variants.iter().map(|v| v.name.clone()).collect(),
        modes: device.modes().iter().map(|m| m.name.clone()).collect(),
        threads: a.threads.to_vec(),
        unit_kinds: device.spec().units.iter().map(|u| u.kind).collect(),
        capable: ecomap::sim::profile::capable_units(&device, &variants),
        configs: a.configs,
        max_tenants: a.max_tenants,
        seed: a.seed,
    };
    if let Some((v, _)) = plan
        .capable
        .iter()
        .enumerate()
        .find(|(_, units)| !units.contains(&true))
    {
        return Err(usage(format!(
            "variant '{}' has no cost on any unit of {}; add it to the device's `models`",
            plan.variants[v],
            a.device.display()
        )));
    }
    if a.window < Duration::from_millis(100) {
        return Err(usage(format!(
            "--window {}: a window must be at least 100ms to measure a median over its \
             requests; e.g. --window 3s",
            humantime::format_duration(a.window)
        )));
    }
    let mut real = None;
    if !a.simulate {
        let rt = RtConfig::load(a.rt_config).map_err(bad_input)?;
        if let Some(w) = rt.workers.iter().find(|w| w.tenants.is_some()) {
            return Err(usage(format!(
                "{}: worker {:?} lists the tenants it serves, but `ecomap profile` places its own \
                 tenants on the workers; use an rt-config whose workers list none (e.g. \
                 rt-config/host.ron)",
                a.rt_config.display(),
                w.name
            )));
        }
        rt.validate(a.rt_config, &allowed_cores(), &[])
            .map_err(bad_input)?;
        let modes = profile::capped_modes(&device);
        if modes.is_empty() {
            return Err(usage(format!(
                "{}: no mode has a cap_w, so the emulated platform cannot select one",
                a.device.display()
            )));
        }
        // The rt-config's workers are the units, each of the kind its
        // device makes it — as the planner reads them, so the rows
        // describe a worker as a plan's queries will.
        if rt.workers.len() > ecomap::estimate::MAX_UNITS {
            return Err(usage(format!(
                "{}: {} workers, but the estimator's tokens name at most {} units; profile \
                 with fewer workers",
                a.rt_config.display(),
                rt.workers.len(),
                ecomap::estimate::MAX_UNITS
            )));
        }
        plan.modes = modes.iter().map(|m| m.0.clone()).collect();
        plan.unit_kinds = rt
            .workers
            .iter()
            .map(ecomap_actors::controlplane::planning::worker_unit_kind)
            .collect();
        plan.capable = vec![vec![true; rt.workers.len()]; variants.len()];
        // Found here, before --out is touched, rather than configurations
        // into the profile (exit 1, the file truncated).
        check_profile_inputs(a, &rt, &device, &plan, &modes).map_err(usage)?;
        profile::single_malloc_arena();
        real = Some((rt, modes.iter().map(|m| m.1).collect::<Vec<f64>>()));
    }
    let mut configs = plan.configurations();
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| usage(format!("{}: {e}", dir.display())))?;
    }
    // A file without a whole header line (an interruption before the first
    // configuration was written) holds nothing to resume: start it afresh,
    // header included.
    let resuming = a.resume && std::fs::read(a.out).is_ok_and(|text| text.contains(&b'\n'));
    if resuming {
        // The kept rows must be this plan's: a file of another --seed,
        // --variants, --threads, --configs or --device would otherwise be
        // extended with the configurations whose ids it happens to lack.
        // Checked before the file is rewritten: another plan's is left as
        // it is.
        let device_name = device.name().to_string();
        let same_plan = |done: &std::collections::BTreeMap<u32, profile::KeptConfiguration>| {
            for (id, kept) in done {
                let planned = configs.iter().find(|c| c.id == *id).map(|c| {
                    let mut tenants: Vec<(String, u32)> = c
                        .tenants
                        .iter()
                        .map(|&(v, u, _)| (plan.variants[v].clone(), u as u32))
                        .collect();
                    tenants.sort();
                    profile::KeptConfiguration {
                        device: device_name.clone(),
                        mode: plan.modes[c.mode].clone(),
                        threads: c.threads,
                        tenants,
                    }
                });
                if planned.as_ref() != Some(kept) {
                    return Err(format!(
                        "--resume: {} holds configuration {id} as {kept:?}, but this plan's is \
                         {planned:?}: the file was written with other --seed, --variants, \
                         --threads, --configs or --device; resume with those, or write to \
                         another --out",
                        a.out.display()
                    ));
                }
            }
            Ok(())
        };
        let (done, dropped) =
            profile::keep_complete_configurations(a.out, same_plan).map_err(|e| match e {
                e @ profile::ResumeError::Read(_) => usage(format!("--resume: {e}")),
                profile::ResumeError::OtherPlan(m) => usage(m),
                e @ profile::ResumeError::Write { .. } => {
                    eprintln!("error: --resume: {e}");
                    ExitCode::from(1)
                }
            })?;
        configs.retain(|c| !done.contains_key(&c.id));
        eprintln!(
            "ecomap: {} configurations already in {}{}; {} to run",
            done.len(),
            a.out.display(),
            if dropped > 0 {
                format!(" (and {dropped} row(s) of configurations cut short, dropped to run them again)")
            } else {
                String::new()
            },
            configs.len()
        );
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resuming)
        .truncate(!resuming)
        .open(a.out)
        .map_err(|e| usage(format!("cannot write {}: {e}", a.out.display())))?;
    let mut writer = csv::WriterBuilder::new()
        .has_headers(!resuming)
        .from_writer(file);
    let failed = |e: &dyn std::fmt::Display| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    };
    let bar = indicatif::ProgressBar::new(configs.len() as u64);
    let mut rows = 0usize;
    for cfg in &configs {
        let out = match &real {
            Some((rt, caps_w)) => profile::run_configuration(
                &profile::ProfileContext {
                    plan: &plan,
                    variants: &variants,
                    caps_w,
                    rt,
                    device: &device,
                    window: a.window,
                },
                cfg,
            )
            .map_err(|e| failed(&e))?,
            None => ecomap::sim::profile::simulate_configuration(
                &device, &plan, &variants, cfg, a.window,
            )
            .map_err(|e| failed(&e))?,
        };
        for r in &out {
            writer
                .serialize(r.clone().rounded())
                .map_err(|e| failed(&e))?;
        }
        // Flush each configuration: an interrupted profile keeps what it measured.
        writer.flush().map_err(|e| failed(&e))?;
        rows += out.len();
        bar.inc(1);
    }
    bar.finish_and_clear();
    eprintln!(
        "ecomap: wrote {rows} rows of {} configurations to {}",
        configs.len(),
        a.out.display()
    );
    Ok(())
}

#[cfg(feature = "tch")]
fn train_estimator_command(
    data: &Path,
    out: &Path,
    descriptors: Option<&Path>,
    evaluate: Option<PathBuf>,
    seed: u64,
    (epochs, weight_decay, validation_fraction, power_head): (u32, f64, f64, PowerHeadArg),
    heldout_arch: Option<&str>,
) -> Result<(), ExitCode> {
    use ecomap_actors::estimator::network::{NetworkShape, PowerHead};
    use ecomap_actors::estimator::{command, train::TrainOptions};
    if !(weight_decay.is_finite() && weight_decay >= 0.0) {
        eprintln!(
            "error: --weight-decay {weight_decay}: AdamW's weight decay must be a number ≥ 0, \
             e.g. 0.05 (0: none)"
        );
        return Err(ExitCode::from(2));
    }
    if !(0.0..1.0).contains(&validation_fraction) {
        eprintln!(
            "error: --validation {validation_fraction}: the share of training combinations \
             kept for validation must be in [0, 1), e.g. 0.15 (0 keeps the last epoch)"
        );
        return Err(ExitCode::from(2));
    }
    let args = command::TrainEstimatorArgs {
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        descriptors: descriptors.map_or_else(
            || PathBuf::from("rt-config/model-descriptors.csv"),
            Path::to_path_buf,
        ),
        descriptors_given: descriptors.is_some(),
        evaluate,
        heldout_arch_given: heldout_arch.is_some(),
        options: TrainOptions {
            seed,
            epochs: epochs as usize,
            weight_decay,
            validation_fraction,
            heldout_arch: heldout_arch.unwrap_or("squeezenet1_1").to_string(),
            shape: NetworkShape {
                power_head: match power_head {
                    PowerHeadArg::Pooled => PowerHead::Pooled,
                    PowerHeadArg::Additive => PowerHead::Additive,
                },
                ..NetworkShape::default()
            },
            ..TrainOptions::default()
        },
    };
    match command::run(&args) {
        Ok(rows) => {
            print!("{}", command::render_eval(&rows));
            Ok(())
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(e.exit_code()))
        }
    }
}

#[cfg(not(feature = "tch"))]
fn train_estimator_command(
    _: &Path,
    _: &Path,
    _: Option<&Path>,
    _: Option<PathBuf>,
    _: u64,
    _: (u32, f64, f64, PowerHeadArg),
    _: Option<&str>,
) -> Result<(), ExitCode> {
    eprintln!("error: train-estimator needs libtorch: build with the default `tch` feature");
    Err(ExitCode::from(2))
}

fn bad_input(e: ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colour only on a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Serve {
            files,
            listen,
            duration,
            generate,
            http_workers,
            max_body_mb,
            allow_client_shm,
            out,
            summary,
        } => serve(
            &files.files(),
            ServeOptions {
                listen: *listen,
                duration: *duration,
                generate: *generate,
                http_workers: usize::from(*http_workers),
                max_body: *max_body_mb as usize * (1 << 20),
                allow_client_shm: *allow_client_shm,
                out,
                summary: summary.as_deref(),
            },
        ),
        Command::Run {
            files,
            duration,
            load_factor,
            out,
            timeline,
            summary,
            strict,
            inject_fault,
            metrics_listen,
            pass_log,
        } => run(
            files,
            RunOptions {
                duration: *duration,
                load_factor: *load_factor,
                out,
                timeline: timeline.as_deref(),
                summary: summary.as_deref(),
                strict: *strict,
                faults: inject_fault,
                metrics_listen: *metrics_listen,
                pass_log: pass_log.as_deref(),
            },
        ),
        Command::Simulate {
            policies,
            traces,
            workload,
            device,
            span,
            start,
            seed,
            service_seed,
            sample,
            out,
            jobs,
            oracle_accuracy,
            service_replay,
            replay_by,
        } => {
            let args = ecomap_actors::simulate::SimulateArgs {
                policies: policies.clone(),
                traces: traces.clone(),
                workload: workload.clone(),
                device: device.clone(),
                hours: *span,
                start: *start,
                seed: *seed,
                service_seed: *service_seed,
                sample: match sample {
                    Some(Sample::Full) => None,
                    Some(Sample::Part(d)) => Some(*d),
                    None if *span <= 72 => None,
                    None => Some(Duration::from_secs(120)),
                },
                out: out.clone(),
                jobs: jobs.unwrap_or_else(|| available_cores().max(1)),
                policy_dir: PathBuf::from("policies"),
                descriptors: PathBuf::from("rt-config/model-descriptors.csv"),
                oracle_accuracy: *oracle_accuracy,
                service_replay: service_replay.clone(),
                replay_alignment: match replay_by {
                    ReplayByArg::Order => ecomap::pass_log::ReplayAlignment::InOrder,
                    ReplayByArg::Time => ecomap::pass_log::ReplayAlignment::ByTime,
                },
            };
            simulate_command(&args)
        }
        Command::Profile {
            rt_config,
            device,
            catalog,
            variants,
            threads,
            configs,
            max_tenants,
            window,
            seed,
            out,
            resume,
            simulate,
        } => profile_command(&ProfileArgs {
            rt_config,
            device,
            catalog,
            variants,
            threads,
            configs: *configs as usize,
            max_tenants: *max_tenants,
            window: *window,
            seed: *seed,
            out,
            resume: *resume,
            simulate: *simulate,
        }),
        Command::TrainEstimator {
            data,
            out,
            descriptors,
            evaluate,
            weights,
            seed,
            epochs,
            heldout_arch,
            weight_decay,
            validation,
            power_head,
        } => train_estimator_command(
            data,
            out,
            descriptors.as_deref(),
            evaluate.then(|| weights.clone()).flatten(),
            *seed,
            (*epochs, *weight_decay, *validation, *power_head),
            heldout_arch.as_deref(),
        ),
        Command::Check { files } => load(files).map_err(bad_input).and_then(|l| {
            ecomap_actors::control_plane::ControlPlan::prepare(&l.policy, &l.rt)
                .and_then(|_| {
                    ecomap_actors::controlplane::planning::RuntimePlanning::prepare(
                        &l.policy,
                        &l.workload,
                        &l.rt,
                    )
                })
                .map(|_| println!("ok"))
                .map_err(|e| {
                    eprintln!(
                        "error: {e} (policy {}, rt-config {})",
                        files.policy.display(),
                        files.rt_config.display()
                    );
                    ExitCode::from(2)
                })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
