//! `ecomap simulate`: run the core's simulator over traces × policies, in
//! parallel, and write `summary.csv` and per-run timelines.
//!
//! The simulation itself is pure and single-threaded ([`ecomap::sim`]);
//! this module owns the threads (one run per thread at a time), the
//! progress bar and the files. Runs are independent and each is
//! deterministic, so the output does not depend on the thread count.

pub mod plots;

use ecomap::carbon::{CarbonTrace, TraceError};
use ecomap::config::policy::{PlanPolicy, Policy};
use ecomap::config::workload::Workload;
use ecomap::config::ConfigError;
use ecomap::device::DeviceModel;
use ecomap::sim::output::{summary_rows, write_summary, write_timeline, SummaryRow};
use ecomap::sim::{simulate, SimError, SimResult, SimSetup};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Hours in the one-year span (`--span 1y`): the traces hold 8760 rows.
pub const YEAR_H: usize = 8760;

/// What `ecomap simulate` was asked to do.
#[derive(Debug, Clone)]
pub struct SimulateArgs {
    /// Policy names (`policies/<name>.ron`) or paths.
    pub policies: Vec<String>,
    /// Carbon traces.
    pub traces: Vec<PathBuf>,
    /// Workload file.
    pub workload: PathBuf,
    /// Device description.
    pub device: PathBuf,
    /// Trace hours to simulate.
    pub hours: usize,
    /// Where to start, as an offset from each trace's first row.
    pub start: StartAt,
    /// Seed.
    pub seed: u64,
    /// Seeds the service draws apart from the arrivals (`None`: `seed`).
    pub service_seed: Option<u64>,
    /// Simulated time per trace hour (`None`: all of it).
    pub sample: Option<Duration>,
    /// Output folder.
    pub out: PathBuf,
    /// Parallel runs.
    pub jobs: usize,
    /// Folder that policy names resolve in.
    pub policy_dir: PathBuf,
    /// Model descriptors for mapping policies' trained estimators.
    pub descriptors: PathBuf,
    /// Hold the oracles to this mean accuracy (%) on every trace instead of
    /// `ecomap`'s: the least predicted carbon of any hourly schedule of
    /// modes and variants (on the workload's unit mapping; `oracle-remap`:
    /// and of units) at it.
    pub oracle_accuracy: Option<f64>,
    /// A pass log of `ecomap run` (`--pass-log`) whose measured service
    /// replaces the device model's draws (see [`ecomap::pass_log`]).
    pub service_replay: Option<PathBuf>,
    /// How the replay picks a recorded pass.
    pub replay_alignment: ecomap::pass_log::ReplayAlignment,
}

/// Where a span starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StartAt {
    /// This long after the trace's first row.
    Offset(Duration),
    /// At this UTC date (00:00).
    Date(chrono::NaiveDate),
}

/// Why `simulate` stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// A policy name or path that does not resolve.
    #[error(
        "unknown policy {name:?}: no file {} (name a file in {}, e.g. ecomap, or give a path)",
        path.display(), dir.display()
    )]
    UnknownPolicy {
        /// As given.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
        /// The policies folder.
        dir: PathBuf,
    },
    /// A bad file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A bad trace.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// The simulation cannot run as asked.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// The workload does not fit the device (a unit or model it lacks).
    #[error("{} on {}: {source}", workload.display(), device.display())]
    Mismatch {
        /// The workload file.
        workload: PathBuf,
        /// The device description.
        device: PathBuf,
        /// What does not fit.
        source: Box<SimError>,
    },
    /// A policy's plan names a mode the device lacks.
    #[error("{}: plan: {source}; name one of the device's modes ({})", policy.display(), device.display())]
    PlanMode {
        /// The policy file (or name).
        policy: PathBuf,
        /// The device description.
        device: PathBuf,
        /// Which mode.
        source: Box<SimError>,
    },
    /// A mapping policy's trained estimator or the descriptors cannot be used.
    #[error("{0}")]
    Estimator(String),
    /// `--oracle-accuracy` without an `oracle` to hold to it.
    #[error("--oracle-accuracy holds the oracles to an accuracy, but --policies has no `oracle` or `oracle-remap`; add one (e.g. --policies oracle)")]
    OracleAccuracyWithoutOracle,
    /// A pass log that cannot be replayed.
    #[error(transparent)]
    Replay(#[from] ecomap::pass_log::PassLogError),
    /// A start date outside a trace.
    #[error("{}: --start {date} is outside the trace ({first} … {last}); give a date within it", trace.display())]
    StartOutside {
        /// The trace.
        trace: PathBuf,
        /// The date asked for.
        date: chrono::NaiveDate,
        /// The trace's first row.
        first: String,
        /// The trace's last row.
        last: String,
    },
    /// Two traces or two policies that would write the same rows and files.
    #[error(
        "two {what} are both called {name:?} ({first} and {second}): their summary rows and \
         timeline files would collide; {hint}"
    )]
    DuplicateName {
        /// `traces` or `policies`.
        what: &'static str,
        /// The shared name.
        name: String,
        /// The first one, as given.
        first: String,
        /// The second one, as given.
        second: String,
        /// How to fix it.
        hint: &'static str,
    },
    /// The output folder cannot be made.
    #[error("--out {}: cannot create the output folder: {source}; give a folder path", path.display())]
    OutDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Output could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// One run failed: the first that did in the order runs are scheduled
    /// (non-oracle runs trace by trace, then the oracles); runs after it
    /// were not started.
    #[error("trace {trace}, policy {policy}: {source}")]
    Run {
        /// The trace's name.
        trace: String,
        /// The policy's name.
        policy: String,
        /// Why.
        source: Box<SimError>,
    },
    /// More than one input is wrong: every one, in command-line order.
    #[error("{} problems with the input:{}", .0.len(), list(.0))]
    Inputs(Vec<SimulateError>),
}

fn list(errors: &[SimulateError]) -> String {
    errors
        .iter()
        .enumerate()
        .map(|(i, e)| format!("\n  {}. {e}", i + 1))
        .collect()
}

impl SimulateError {
    /// Bad input (exit 2) rather than a failure while running (exit 1).
    pub fn is_bad_input(&self) -> bool {
        match self {
            SimulateError::Write { .. } => false,
            // Inputs are checked before any run; a planner's estimator
            // failing in a run is a failure, not bad input.
            SimulateError::Run { source, .. } => !matches!(**source, SimError::Estimator(_)),
            SimulateError::Inputs(all) => all.iter().all(SimulateError::is_bad_input),
            _ => true,
        }
    }

    /// One error for `errors` (at least one): itself when alone.
    fn all(mut errors: Vec<SimulateError>) -> SimulateError {
        debug_assert!(!errors.is_empty(), "called with no error");
        if errors.len() == 1 {
            if let Some(e) = errors.pop() {
                return e;
            }
        }
        SimulateError::Inputs(errors)
    }
}

/// Resolve a policy name or path.
pub fn resolve_policy(name: &str, dir: &Path) -> Result<Policy, SimulateError> {
    let as_path = PathBuf::from(name);
    let path = if name.ends_with(".ron") || as_path.components().count() > 1 {
        as_path
    } else {
        dir.join(format!("{name}.ron"))
    };
    if !path.is_file() {
        return Err(SimulateError::UnknownPolicy {
            name: name.into(),
            path,
            dir: dir.into(),
        });
    }
    Ok(Policy::load(&path)?)
}

/// Makes one estimator for a simulation run.
pub type EstimatorMaker = dyn Fn() -> Result<Box<dyn ecomap::estimate::MappingEstimator>, ecomap::estimate::EstimateError>
    + Sync;

fn trained_estimator(p: &Policy) -> Option<&Path> {
    match &p.plan {
        Some(PlanPolicy::Mapping {
            estimator: Some(e), ..
        }) => Some(e),
        _ => None,
    }
}

/// The descriptor table a policy's trained estimator was trained with:
/// the copy in its folder, else `fallback`; `None` for a policy without a
/// trained estimator.
pub fn load_descriptors(
    p: &Policy,
    fallback: &Path,
) -> Result<Option<ecomap::estimate::descriptors::Descriptors>, SimulateError> {
    let Some(dir) = trained_estimator(p) else {
        return Ok(None);
    };
    let own = dir.join("descriptors.csv");
    let path = if own.is_file() {
        own.as_path()
    } else {
        fallback
    };
    ecomap::estimate::descriptors::Descriptors::load(path)
        .map(Some)
        .map_err(|e| SimulateError::Estimator(format!("policy '{}': {e}", p.name)))
}

/// What makes a fresh trained estimator for each run of policy `p`
/// (checked once here: bad weights fail before any run); `None` for a
/// policy without a trained estimator.
#[cfg(feature = "tch")]
pub fn estimator_maker(
    p: &Policy,
    descriptors: Option<&ecomap::estimate::descriptors::Descriptors>,
    device: &DeviceModel,
) -> Result<Option<Box<EstimatorMaker>>, SimulateError> {
    use crate::estimator::TransformerEstimator;
    let (Some(path), Some(d)) = (trained_estimator(p), descriptors) else {
        return Ok(None);
    };
    // Fail on bad weights before any run starts.
    let est = TransformerEstimator::load(path, d.clone())
        .map_err(|e| SimulateError::Estimator(format!("policy '{}': {e}", p.name)))?;
    crate::estimator::check_trained_on(est.meta(), path, device)
        .map_err(|e| SimulateError::Estimator(format!("policy '{}': {e}", p.name)))?;
    let (path, d) = (path.to_path_buf(), d.clone());
    Ok(Some(Box::new(move || {
        tch::set_num_threads(1);
        TransformerEstimator::load(&path, d.clone())
            .map(|e| Box::new(e) as Box<dyn ecomap::estimate::MappingEstimator>)
            .map_err(|e| ecomap::estimate::EstimateError::Backend(e.to_string()))
    })))
}

/// Without libtorch a trained estimator cannot be loaded: an error for a
/// policy that names one.
#[cfg(not(feature = "tch"))]
pub fn estimator_maker(
    p: &Policy,
    _: Option<&ecomap::estimate::descriptors::Descriptors>,
    _: &DeviceModel,
) -> Result<Option<Box<EstimatorMaker>>, SimulateError> {
    match trained_estimator(p) {
        Some(_) => Err(SimulateError::Estimator(format!(
            "policy '{}' names a trained estimator, which needs libtorch: build with the default \
             `tch` feature",
            p.name
        ))),
        None => Ok(None),
    }
}

/// A trace's file stem, for tables and file names.
pub fn trace_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

struct RunSpec {
    trace: usize,
    policy: usize,
}

/// Run everything and write the outputs; returns the summary rows.
pub fn run_simulate(args: &SimulateArgs) -> Result<Vec<SummaryRow>, SimulateError> {
    // Load and check every input before any work, and report every
    // problem at once: a user with a mistyped policy and a wrong trace
    // path should not need two tries to learn of both.
    let mut bad: Vec<SimulateError> = Vec::new();
    let workload = Workload::load(&args.workload)
        .map_err(|e| bad.push(e.into()))
        .ok();
    let device = DeviceModel::load(&args.device)
        .map_err(|e| bad.push(e.into()))
        .ok();
    if let (Some(workload), Some(device)) = (&workload, &device) {
        if let Err(source) = ecomap::sim::analyse(workload, device) {
            bad.push(SimulateError::Mismatch {
                workload: args.workload.clone(),
                device: args.device.clone(),
                source: Box::new(source),
            });
        }
    }
    let replay = match (&args.service_replay, &workload) {
        (Some(path), Some(workload)) => {
            let variants: Vec<usize> = workload
                .tenants
                .iter()
                .map(|t| t.variants().len())
                .collect();
            let tenants: Vec<(&str, usize)> = workload
                .tenants
                .iter()
                .zip(variants)
                .map(|(t, v)| (t.name.as_str(), v))
                .collect();
            ecomap::pass_log::ServiceReplay::read(path, &tenants)
                .map_err(|e| bad.push(e.into()))
                .ok()
                .map(|r| r.aligned(args.replay_alignment))
        }
        _ => None,
    };
    let mut policies: Vec<Policy> = Vec::new();
    for name in &args.policies {
        let p = match resolve_policy(name, &args.policy_dir) {
            Ok(p) => p,
            Err(e) => {
                bad.push(e);
                continue;
            }
        };
        if let (Some(plan), Some(device)) = (&p.plan, &device) {
            if let Err(source) = ecomap::sim::plan::check_modes(plan, device) {
                bad.push(SimulateError::PlanMode {
                    policy: PathBuf::from(name),
                    device: args.device.clone(),
                    source: Box::new(source),
                });
            }
        }
        if let Some(i) = policies.iter().position(|q| q.name == p.name) {
            bad.push(SimulateError::DuplicateName {
                what: "policies",
                name: p.name,
                first: args.policies[i].clone(),
                second: name.clone(),
                hint: "name each once, and give a copied policy file a `name:` of its own",
            });
            continue;
        }
        policies.push(p);
    }
    for (i, path) in args.traces.iter().enumerate() {
        let name = trace_name(path);
        if let Some(first) = args.traces[..i].iter().find(|p| trace_name(p) == name) {
            bad.push(SimulateError::DuplicateName {
                what: "traces",
                name,
                first: first.display().to_string(),
                second: path.display().to_string(),
                hint: "name each once, or copy one under another file name",
            });
        }
    }
    let mut traces = Vec::new();
    let mut starts = Vec::new();
    for path in &args.traces {
        let t = match CarbonTrace::load(path) {
            Ok(t) => t,
            Err(e) => {
                bad.push(e.into());
                continue;
            }
        };
        // Empty or malformed rows are held over and marked stale: say so,
        // as `ecomap run` does.
        for w in &t.warnings {
            tracing::warn!("carbon trace: {w}");
        }
        let start = match args.start {
            StartAt::Offset(d) => d,
            StartAt::Date(date) => {
                let first = t.samples[0].at;
                let last = t.samples[t.samples.len() - 1].at;
                let at = date
                    .and_hms_opt(0, 0, 0)
                    .expect("midnight exists")
                    .and_utc();
                let outside = || SimulateError::StartOutside {
                    trace: path.clone(),
                    date,
                    first: first.to_string(),
                    last: last.to_string(),
                };
                match (at <= last).then(|| (at - first).to_std()) {
                    Some(Ok(d)) => d,
                    _ => {
                        bad.push(outside());
                        continue;
                    }
                }
            }
        };
        if let Err(e) = ecomap::sim::check_span(&t, start, args.hours) {
            bad.push(e.into());
            continue;
        }
        traces.push(t);
        starts.push(start);
    }
    let needs_oracle = policies.iter().any(|p| {
        matches!(
            p.plan,
            Some(PlanPolicy::Oracle | PlanPolicy::RemappingOracle)
        )
    });
    // Only when every policy resolved: an oracle among the unknown ones
    // cannot be ruled out.
    if args.oracle_accuracy.is_some() && !needs_oracle && policies.len() == args.policies.len() {
        bad.push(SimulateError::OracleAccuracyWithoutOracle);
    }
    // A workload or device that failed to load left its error in `bad`.
    let (Some(workload), Some(device)) = (workload, device) else {
        return Err(SimulateError::all(bad));
    };
    // An oracle's search space and asked accuracy, now: found in its own
    // run, they would end a sweep after every other run had finished.
    // (A workload the device cannot serve is already in `bad`.)
    let analysis = ecomap::sim::analyse(&workload, &device).ok();
    if let Some(analysis) = &analysis {
        for remap in [false, true] {
            let plan = if remap {
                PlanPolicy::RemappingOracle
            } else {
                PlanPolicy::Oracle
            };
            if policies.iter().any(|p| p.plan.as_ref() == Some(&plan)) {
                if let Err(e) =
                    ecomap::sim::plan::check_oracle(analysis, remap, args.oracle_accuracy)
                {
                    bad.push(e.into());
                }
            }
        }
    }
    if !bad.is_empty() {
        return Err(SimulateError::all(bad));
    }
    // The oracle must match `ecomap`'s accuracy on the same trace: make
    // sure an `ecomap` run exists (run it even if not asked for).
    let ecomap_index = match policies.iter().position(|p| p.name == "ecomap") {
        Some(i) => Some(i),
        None if needs_oracle && args.oracle_accuracy.is_none() => {
            policies.push(resolve_policy("ecomap", &args.policy_dir)?);
            Some(policies.len() - 1)
        }
        None => None,
    };
    let asked = args.policies.len();
    let is_oracle = |p: &Policy| {
        matches!(
            p.plan,
            Some(PlanPolicy::Oracle | PlanPolicy::RemappingOracle)
        )
    };
    let mut first_wave = Vec::new();
    let mut second_wave = Vec::new();
    for trace in 0..traces.len() {
        for (policy, p) in policies.iter().enumerate() {
            let spec = RunSpec { trace, policy };
            if is_oracle(p) {
                second_wave.push(spec);
            } else {
                first_wave.push(spec);
            }
        }
    }
    let total_hours = (first_wave.len() + second_wave.len()) as u64 * args.hours as u64;
    let bar = indicatif::ProgressBar::new(total_hours);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} trace-hours ({eta} left) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // Trained estimators of mapping policies: checked once here, then
    // loaded once per run (each run owns its estimator).
    let descriptors: Vec<Option<ecomap::estimate::descriptors::Descriptors>> = policies
        .iter()
        .map(|p| load_descriptors(p, &args.descriptors))
        .collect::<Result<_, _>>()?;
    let makers: Vec<Option<Box<EstimatorMaker>>> = policies
        .iter()
        .zip(&descriptors)
        .map(|(p, d)| estimator_maker(p, d.as_ref(), &device))
        .collect::<Result<_, _>>()?;
    // The output folder too, before any work: a year's sweep should not
    // end in a path that cannot be written.
    let timeline_dir = args.out.join("timeline");
    std::fs::create_dir_all(&timeline_dir).map_err(|source| SimulateError::OutDir {
        path: args.out.clone(),
        source,
    })?;
    let results: Mutex<Vec<Option<SimResult>>> =
        Mutex::new((0..traces.len() * policies.len()).map(|_| None).collect());
    let setup = |spec: &RunSpec, target: Option<f64>| SimSetup {
        workload: &workload,
        device: &device,
        policy: &policies[spec.policy],
        trace: &traces[spec.trace],
        start: starts[spec.trace],
        hours: args.hours,
        sample: args.sample,
        seed: args.seed,
        service_seed: args.service_seed,
        accuracy_target: target,
        service_replay: replay.as_ref(),
        planning: match (&makers[spec.policy], &descriptors[spec.policy]) {
            (Some(make), Some(d)) => Some(ecomap::sim::mapping::Planning {
                descriptors: d,
                make: make.as_ref(),
            }),
            _ => None,
        },
    };
    let run_wave = |wave: &[RunSpec], targets: &[Option<f64>]| -> Result<(), SimulateError> {
        let next = AtomicUsize::new(0);
        // The failed run first in the wave's order, so the error reported
        // does not depend on which thread failed first; once one has
        // failed, no further run starts.
        let error: Mutex<Option<(usize, SimulateError)>> = Mutex::new(None);
        let failed = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            // Never more threads than runs.
            for _ in 0..args.jobs.clamp(1, wave.len().max(1)) {
                s.spawn(|| loop {
                    if failed.load(Ordering::Acquire) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(spec) = wave.get(i) else { break };
                    let st = setup(spec, targets[spec.trace]);
                    match simulate(&st, |_| bar.inc(1)) {
                        Ok(r) => {
                            let slot = spec.trace * policies.len() + spec.policy;
                            results.lock().unwrap_or_else(|e| e.into_inner())[slot] = Some(r);
                        }
                        Err(source) => {
                            failed.store(true, Ordering::Release);
                            let e = SimulateError::Run {
                                trace: trace_name(&args.traces[spec.trace]),
                                policy: policies[spec.policy].name.clone(),
                                source: Box::new(source),
                            };
                            let mut first = error.lock().unwrap_or_else(|e| e.into_inner());
                            if first.as_ref().is_none_or(|(j, _)| i < *j) {
                                *first = Some((i, e));
                            }
                            break;
                        }
                    }
                });
            }
        });
        match error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    };
    run_wave(&first_wave, &vec![None; traces.len()])?;
    let ecomap_accuracy = |trace: usize| -> Option<f64> {
        let i = ecomap_index?;
        let results = results.lock().unwrap_or_else(|e| e.into_inner());
        let r = results[trace * policies.len() + i].as_ref()?;
        let row = summary_rows("", "", r).into_iter().next()?;
        row.accuracy_pct.is_finite().then_some(row.accuracy_pct)
    };
    // `ecomap`'s accuracy is measured over the requests it served; the
    // oracle plans on its predictor's, the variants' accuracies weighted
    // by the tenants' nominal rates. Where the served mix leans to the
    // more accurate tenants (a Poisson draw, or requests of a less
    // accurate tenant expiring), the measured mean can exceed what the
    // heaviest variants give in the predictor's terms: then the oracle
    // keeps the heaviest variants (the target an explicit
    // `--oracle-accuracy` names was checked above and is kept as asked).
    let reachable = analysis
        .as_ref()
        .map_or(f64::INFINITY, |a| a.max_accuracy());
    let targets: Vec<Option<f64>> = match args.oracle_accuracy {
        Some(a) => vec![Some(a); traces.len()],
        None => (0..traces.len())
            .map(|t| ecomap_accuracy(t).map(|a| a.min(reachable)))
            .collect(),
    };
    run_wave(&second_wave, &targets)?;
    bar.finish_and_clear();
    // Write, in a fixed order: traces × policies as asked.
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let names: Vec<String> = workload.tenants.iter().map(|t| t.name.clone()).collect();
    let mut rows = Vec::new();
    for (ti, path) in args.traces.iter().enumerate() {
        let tname = trace_name(path);
        for (pi, p) in policies.iter().enumerate().take(asked) {
            let r = results[ti * policies.len() + pi]
                .as_ref()
                .expect("every run finished or returned an error");
            rows.extend(summary_rows(&tname, &p.name, r));
            let file = timeline_dir.join(format!("{tname}__{}.csv", p.name));
            let f = std::fs::File::create(&file).map_err(|source| SimulateError::Write {
                path: file.clone(),
                source,
            })?;
            write_timeline(std::io::BufWriter::new(f), r, &names).map_err(|e| {
                SimulateError::Write {
                    path: file.clone(),
                    source: std::io::Error::other(e),
                }
            })?;
            if !r.plans.is_empty() {
                let file = timeline_dir.join(format!("{tname}__{}__plans.csv", p.name));
                let f = std::fs::File::create(&file).map_err(|source| SimulateError::Write {
                    path: file.clone(),
                    source,
                })?;
                ecomap::sim::output::write_plans(std::io::BufWriter::new(f), &r.plans).map_err(
                    |e| SimulateError::Write {
                        path: file.clone(),
                        source: std::io::Error::other(e),
                    },
                )?;
            }
        }
    }
    let summary = args.out.join("summary.csv");
    let f = std::fs::File::create(&summary).map_err(|source| SimulateError::Write {
        path: summary.clone(),
        source,
    })?;
    write_summary(std::io::BufWriter::new(f), &rows).map_err(|e| SimulateError::Write {
        path: summary.clone(),
        source: std::io::Error::other(e),
    })?;
    let trace_names: Vec<String> = args.traces.iter().map(|p| trace_name(p)).collect();
    let per_trace: Vec<Vec<(&str, &SimResult)>> = (0..args.traces.len())
        .map(|ti| {
            policies
                .iter()
                .enumerate()
                .take(asked)
                .filter_map(|(pi, p)| {
                    results[ti * policies.len() + pi]
                        .as_ref()
                        .map(|r| (p.name.as_str(), r))
                })
                .collect()
        })
        .collect();
    let plot_dir = args.out.join("plots");
    plots::write_plots(&plot_dir, &trace_names, &per_trace, &names, &rows).map_err(|e| {
        SimulateError::Write {
            path: plot_dir.clone(),
            source: std::io::Error::other(e.to_string()),
        }
    })?;
    Ok(rows)
}

/// Render the all-tenant rows as a plain table for the terminal.
pub fn render_rows(rows: &[SummaryRow]) -> String {
    let mut s = format!(
        "{:<28} {:<17} {:>10} {:>7} {:>12} {:>10} {:>9} {:>9} {:>11} {:>7}\n",
        "trace",
        "policy",
        "submitted",
        "miss%",
        "energy_kJ",
        "carbon_g",
        "mean_ms",
        "p99_ms",
        "cdp_g_s",
        "acc%"
    );
    for r in rows.iter().filter(|r| r.tenant == "all") {
        s.push_str(&format!(
            "{:<28} {:<17} {:>10} {:>7.2} {:>12.1} {:>10.2} {:>9.2} {:>9.2} {:>11.5} {:>7.2}\n",
            r.trace,
            r.policy,
            r.submitted,
            r.miss_pct,
            r.energy_j / 1000.0,
            r.carbon_g,
            r.mean_e2e_ms,
            r.p99_e2e_ms,
            r.cdp_g_s,
            r.accuracy_pct
        ));
    }
    s.push_str("energy and carbon are MODELLED (device model); latencies simulated\n");
    s
}
