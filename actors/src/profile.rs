//! `ecomap profile`: measure real co-located runs and write the estimator's
//! dataset ([`ecomap::estimate::dataset`]).
//!
//! Each *configuration* is a set of 1…N tenants from the catalog, each with
//! a variant and a worker, at one intra-op thread count and one power mode
//! of the emulated platform. The configuration runs through the real
//! runtime ([`Runtime`]: per-tenant queues, the EDF dispatcher, pinned
//! SCHED_FIFO workers running libtorch, the governor holding the mode) for
//! a short window; per tenant the measured service-time median and p95 and
//! the utilisation are recorded, with the platform's power (modelled on
//! this host, labelled so).
//!
//! The first configurations are every variant alone at every mode and
//! thread count (the solo profiles the lookup baseline needs); the rest
//! are random mixes drawn from a seed, so the same arguments plan the same
//! configurations.

use crate::runtime::{Runtime, StartError};
use ecomap::catalog::{Catalog, Variant};
use ecomap::config::policy::Policy;
use ecomap::config::rt::RtConfig;
use ecomap::config::workload::Workload;
use ecomap::config::{parse_ron, ConfigError};
use ecomap::device::DeviceModel;
use ecomap::estimate::dataset::ProfileRow;
pub use ecomap::estimate::profile_plan::{ProfileConfig, ProfilePlan};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why profiling stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// An input file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The arguments are inconsistent.
    #[error("{0}")]
    Plan(String),
    /// The runtime could not start a configuration.
    #[error("configuration {config}: {source}")]
    Start {
        /// Which configuration.
        config: u32,
        /// Why.
        source: StartError,
    },
    /// A configuration ran but its report lacks a worker's figures (its
    /// telemetry thread died): nothing trustworthy to write for it.
    #[error("configuration {config}: the run's report has no figures for worker {worker} (its telemetry stopped); the configuration is not written — run the profile again")]
    NoWorkerReport {
        /// Which configuration.
        config: u32,
        /// The worker index.
        worker: usize,
    },
}

/// Everything a configuration run needs besides the configuration.
pub struct ProfileContext<'a> {
    /// The plan.
    pub plan: &'a ProfilePlan,
    /// The plan's variants from the catalog (what to run).
    pub variants: &'a [Variant],
    /// Per mode of the plan: the cap that selects it on the emulated platform.
    pub caps_w: &'a [f64],
    /// The rt-config to start from (workers, priorities, platform).
    pub rt: &'a RtConfig,
    /// The device description the rows are labelled with (modes, clocks)
    /// and whose solo costs size the arrival rates.
    pub device: &'a DeviceModel,
    /// Measuring window per configuration.
    pub window: Duration,
}

/// Run one configuration through the real runtime and return its rows.
pub fn run_configuration(
    ctx: &ProfileContext<'_>,
    cfg: &ProfileConfig,
) -> Result<Vec<ProfileRow>, ProfileError> {
    let plan = ctx.plan;
    let (mode_name, cap_w) = (&plan.modes[cfg.mode], ctx.caps_w[cfg.mode]);
    let mode = ctx.device.mode_by_name(mode_name).ok_or_else(|| {
        ProfileError::Plan(format!(
            "mode '{mode_name}' is not in the device description '{}'",
            ctx.device.name()
        ))
    })?;
    let unit_kind = ctx.device.spec().units[0].kind;
    let slowdown = ctx.device.slowdown(mode, unit_kind);
    let window_s = ctx.window.as_secs_f64();
    // Arrival rates: each tenant's share of its worker at the device
    // model's solo service time at this mode, and at least 3 requests per
    // window so the percentiles have samples. Queues are short (16): a
    // configuration the floor overloads rejects the excess instead of
    // draining a long backlog after the window.
    let mut tenants_ron = String::new();
    let mut rates = Vec::new();
    for (i, &(v, w, util)) in cfg.tenants.iter().enumerate() {
        let variant = &ctx.variants[v];
        // The kind of unit its worker stands for in the plan (as its row
        // is labelled below).
        let kind = ctx.plan.unit_kinds[w];
        let solo_s = ctx
            .device
            .service_s(&variant.name, kind, mode)
            .ok_or_else(|| {
                ProfileError::Plan(format!(
                    "the device description has no service time for {} on a {} unit at mode {mode:?}: \
                     the arrival rate that loads it to {util:.2} cannot be sized; add the cost, \
                     or profile on workers of a kind it has",
                    variant.name,
                    kind.name(),
                ))
            })?;
        let rate = (util / solo_s).max(3.0 / window_s);
        rates.push(rate);
        let model = ron::to_string(&variant.model)
            .map_err(|e| ProfileError::Plan(format!("cannot write model spec: {e}")))?;
        tenants_ron.push_str(&format!(
            "(name: \"t{i}\", model: {model}, arrival: Periodic(rate_hz: {rate:.6}, jitter: \"1ms\"), \
             deadline: \"10s\", capacity: 16),"
        ));
    }
    let here = Path::new("<profile>");
    let workload: Workload = parse_ron(
        &format!("(seed: {}, tenants: [{tenants_ron}])", cfg.id),
        here,
        "workload",
    )?;
    workload.validate(here)?;
    let policy: Policy = parse_ron(
        &format!(
            "(name: \"profile-{mode_name}\", queue_order: EarliestDeadline, \
             carbon: Fixed(gco2_per_kwh: 300.0), \
             governor: (rule: Fixed(cap_w: {cap_w}), max_staleness: \"1h\", fallback_cap_w: {cap_w}))"
        ),
        here,
        "policy",
    )?;
    let mut rt = ctx.rt.clone();
    rt.intra_op_threads = cfg.threads as usize;
    for (w, spec) in rt.workers.iter_mut().enumerate() {
        spec.tenants = Some(
            cfg.tenants
                .iter()
                .enumerate()
                .filter(|(_, t)| t.1 == w)
                .map(|(i, _)| format!("t{i}"))
                .collect(),
        );
        // More than one intra-op thread per worker: let the worker's
        // OpenMP team spread over the cores instead of sharing one, and
        // time-share them. Under SCHED_FIFO two unpinned teams whose
        // threads spin at barriers starve each other's members (FIFO never
        // slices a spinning thread off its core): measured here, a
        // two-worker, two-thread configuration made no progress for
        // minutes with both cores at 95%.
        if cfg.threads > 1 {
            spec.core = None;
            spec.sched = ecomap::config::rt::SchedSpec::Other;
        }
    }
    if cfg.threads > 1 {
        // Telemetry receives from the workers: never above its senders.
        rt.telemetry.sched = ecomap::config::rt::SchedSpec::Other;
    }
    let start = |source| ProfileError::Start {
        config: cfg.id,
        source,
    };
    let mut runtime = Runtime::start(&workload, &rt, &policy).map_err(start)?;
    runtime.run_load(ctx.window, 1.0).map_err(start)?;
    let report = runtime.shutdown();
    let power_w = report
        .energy
        .as_ref()
        .map(|e| e.ledger.mean_power_w())
        .filter(|w| w.is_finite() && *w > 0.0)
        .ok_or_else(|| {
            // A row without it would be refused when the dataset is read:
            // say so now, not after an hour of profiling.
            ProfileError::Plan(format!(
                "configuration {}: the run reported no device power (its control plane did not \
                 meter it: {:?})",
                cfg.id,
                report.energy.as_ref().map(|e| &e.notes)
            ))
        })?;
    let power_measured = report.energy.as_ref().is_some_and(|e| e.power_measured);
    let duration_s = report.duration.as_secs_f64().max(1e-9);
    let fracs = ctx.device.mode_fracs(mode);
    let mut rows = Vec::new();
    for (i, &(v, w, _)) in cfg.tenants.iter().enumerate() {
        let account = &report.tenants[i];
        let ms = |q: f64| account.service.quantile_us(q).unwrap_or(0) as f64 / 1000.0;
        let served = account.service.len();
        let mean_s = account.service.mean_us().unwrap_or(0.0) / 1e6;
        rows.push(ProfileRow {
            config: cfg.id,
            device: ctx.device.name().to_string(),
            mode: mode_name.clone(),
            mode_gpu_frac: fracs[0],
            mode_dla_frac: fracs[1],
            mode_cpu_frac: fracs[2],
            threads: cfg.threads,
            n_tenants: cfg.tenants.len() as u32,
            tenant: format!("t{i}"),
            variant: ctx.variants[v].name.clone(),
            unit: rt.workers[w].name.clone(),
            unit_index: w as u32,
            unit_kind: plan.unit_kinds[w].name().to_string(),
            rate_hz: rates[i],
            served,
            service_p50_ms: ms(0.5),
            service_p95_ms: ms(0.95),
            tenant_util: (served as f64 * mean_s / duration_s).min(1.5),
            unit_util: (report
                .workers
                .get(w)
                .ok_or(ProfileError::NoWorkerReport {
                    config: cfg.id,
                    worker: w,
                })?
                .busy
                .as_secs_f64()
                / duration_s)
                .min(1.5),
            power_w,
            source: "measured".into(),
            power_source: if power_measured {
                "measured"
            } else {
                "modelled"
            }
            .into(),
            window_s: duration_s,
        });
    }
    if slowdown <= 0.0 || rows.iter().any(|r| r.served == 0) {
        return Err(ProfileError::Plan(format!(
            "configuration {}: a tenant served nothing in {window_s} s; lengthen --window",
            cfg.id
        )));
    }
    Ok(rows)
}

/// Resolve variant names against a catalog (the first family naming each).
pub fn catalog_variants(catalog: &Catalog, names: &[String]) -> Result<Vec<Variant>, String> {
    names
        .iter()
        .map(|n| {
            catalog
                .families
                .iter()
                .flat_map(|f| &f.variants)
                .find(|v| &v.name == n)
                .cloned()
                .ok_or_else(|| format!("variant '{n}' is not in the catalog"))
        })
        .collect()
}

/// The modes of a device description that have a cap (the emulated
/// platform selects a mode by its cap).
pub fn capped_modes(device: &DeviceModel) -> Vec<(String, f64)> {
    device
        .modes()
        .iter()
        .filter_map(|m| m.cap_w.map(|c| (m.name.clone(), c)))
        .collect()
}

/// Limit glibc to one malloc arena: a thread's own arena moves libtorch's
/// activation buffers and swings its forward pass by up to ±25% on this
/// host (docs/results.md §2), noise the estimator cannot learn.
pub fn single_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; it is called before
    // any worker thread starts, and M_ARENA_MAX takes a plain int.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Why a profile cannot resume from its file.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// The file is not a profile dataset (or a row is malformed).
    #[error(transparent)]
    Read(#[from] ecomap::estimate::dataset::DatasetError),
    /// Rewriting it without a configuration cut short failed.
    #[error("cannot rewrite {path} without its incomplete configuration: {source}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The error.
        source: csv::Error,
    },
    /// The file holds another plan's configurations (left as it is).
    #[error("{0}")]
    OtherPlan(String),
}

/// What a dataset file says a configuration was: its device, mode, threads, and
/// each tenant's (variant, unit index), sorted — to check, on `--resume`,
/// that the file was written by the same plan (ids alone would let a
/// resumed profile with another `--seed` or `--variants` skip its own
/// configurations for another plan's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptConfiguration {
    /// The device description's name.
    pub device: String,
    /// Mode name.
    pub mode: String,
    /// Intra-op threads.
    pub threads: u32,
    /// (variant, unit index) per tenant, sorted.
    pub tenants: Vec<(String, u32)>,
}

/// For `--resume`: the configurations of a dataset file whose every row is
/// present, after dropping the rows of any configuration cut short by an
/// interruption (the file is rewritten without them, through a temporary
/// file renamed over it, so a resumed profile writes that configuration
/// once, whole). Also returns how many rows were dropped. `check` sees the
/// complete configurations first: if it refuses them (another plan's
/// file), the file is left as it is.
pub fn keep_complete_configurations(
    path: &Path,
    check: impl FnOnce(&std::collections::BTreeMap<u32, KeptConfiguration>) -> Result<(), String>,
) -> Result<(std::collections::BTreeMap<u32, KeptConfiguration>, usize), ResumeError> {
    use ecomap::estimate::dataset::DatasetError;
    let read = |source| DatasetError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut text = std::fs::read(path).map_err(|e| read(e.into()))?;
    // A last line without its newline was cut off mid-write: drop it (its
    // configuration is then incomplete, or absent, and runs again).
    let cut_line = !text.is_empty() && !text.ends_with(b"\n");
    if cut_line {
        let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        text.truncate(keep);
    }
    let mut reader = csv::Reader::from_reader(text.as_slice());
    let headers = reader.headers().map_err(read)?.clone();
    let mut count: std::collections::BTreeMap<u32, (u32, u32)> = Default::default();
    let mut kept: std::collections::BTreeMap<u32, KeptConfiguration> = Default::default();
    let mut records = Vec::new();
    for record in reader.records() {
        let bad = |line: u64, message: String| DatasetError::BadRow {
            path: path.to_path_buf(),
            line,
            message,
        };
        let record =
            record.map_err(|e| bad(e.position().map_or(0, |p| p.line()), e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line());
        let r: ProfileRow = record
            .deserialize(Some(&headers))
            .map_err(|e| bad(line, e.to_string()))?;
        let c = count.entry(r.config).or_insert((r.n_tenants, 0));
        c.1 += 1;
        kept.entry(r.config)
            .or_insert_with(|| KeptConfiguration {
                device: r.device.clone(),
                mode: r.mode.clone(),
                threads: r.threads,
                tenants: Vec::new(),
            })
            .tenants
            .push((r.variant.clone(), r.unit_index));
        records.push((r.config, record));
    }
    let complete: std::collections::BTreeSet<u32> = count
        .into_iter()
        .filter(|(_, (n, seen))| n == seen)
        .map(|(id, _)| id)
        .collect();
    kept.retain(|id, _| complete.contains(id));
    for k in kept.values_mut() {
        k.tenants.sort();
    }
    check(&kept).map_err(ResumeError::OtherPlan)?;
    let dropped = records
        .iter()
        .filter(|(c, _)| !complete.contains(c))
        .count()
        + usize::from(cut_line);
    if dropped > 0 {
        // Written beside it, synced, then renamed over it: an interruption
        // now leaves either file whole.
        let tmp = path.with_extension("csv.resume");
        let rewrite = || -> Result<(), csv::Error> {
            let mut w = csv::Writer::from_path(&tmp)?;
            w.write_record(&headers)?;
            for (_, record) in records.iter().filter(|(c, _)| complete.contains(c)) {
                w.write_record(record)?;
            }
            let file = w
                .into_inner()
                .map_err(|e| csv::Error::from(e.into_error()))?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)?;
            Ok(())
        };
        if let Err(source) = rewrite() {
            let _ = std::fs::remove_file(&tmp);
            return Err(ResumeError::Write {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    Ok((kept, dropped))
}
