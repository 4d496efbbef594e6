//! Policy files: how ecomap decides.
//!
//! ```ron
//! (
//!     name: "edf",
//!     queue_order: EarliestDeadline,
//! )
//! ```

use super::{load_ron, ConfigError};
use crate::dispatch::QueueOrder;
use crate::governor::GovernorPolicy;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A live carbon-intensity provider.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub enum HttpProvider {
    /// Electricity Maps `GET /v3/carbon-intensity/latest?zone=…` with an
    /// `auth-token` header read from the environment variable `token_env`.
    ElectricityMaps {
        /// Zone, e.g. "DE".
        zone: String,
        /// Name of the environment variable holding the API token.
        token_env: String,
    },
    /// The UK National Grid carbon-intensity API, `GET /intensity` (no token).
    UkNationalGrid,
}

/// Where the carbon monitor gets the grid's intensity.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub enum CarbonSource {
    /// A constant, for experiments.
    Fixed {
        /// gCO2eq/kWh.
        gco2_per_kwh: f64,
    },
    /// A CSV trace replayed against the run's clock.
    Trace {
        /// The CSV file; a relative path is relative to the policy file's folder.
        path: PathBuf,
        /// Trace seconds per run second (360: one trace hour per 10 s).
        #[serde(default = "default_speedup")]
        speedup: f64,
        /// Where in the trace to start, measured from its first row, e.g. "30days".
        #[serde(default, with = "humantime_serde")]
        start_offset: Duration,
    },
    /// A live provider over HTTP.
    Http {
        /// Which provider.
        provider: HttpProvider,
        /// Base URL; the provider's public API when `None`.
        #[serde(default)]
        base_url: Option<String>,
        /// How often to ask, e.g. "5m".
        #[serde(with = "humantime_serde")]
        poll: Duration,
        /// Give up on one request after this long, e.g. "10s".
        #[serde(default = "default_timeout", with = "humantime_serde")]
        timeout: Duration,
    },
}

/// Fastest trace replay: a year of trace in about 3 s of run.
pub const MAX_SPEEDUP: f64 = 1e7;

fn default_speedup() -> f64 {
    360.0
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl CarbonSource {
    /// Check the values.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            CarbonSource::Fixed { gco2_per_kwh } => {
                if gco2_per_kwh.is_finite() && *gco2_per_kwh >= 0.0 {
                    Ok(())
                } else {
                    Err(format!("gco2_per_kwh must be ≥ 0, got {gco2_per_kwh}"))
                }
            }
            CarbonSource::Trace { speedup, .. } => {
                if speedup.is_finite() && *speedup > 0.0 && *speedup <= MAX_SPEEDUP {
                    Ok(())
                } else {
                    Err(format!(
                        "speedup must be in (0, {MAX_SPEEDUP}] trace seconds per run second (at \
                         most a year of trace in 3 s), got {speedup}"
                    ))
                }
            }
            CarbonSource::Http {
                poll,
                timeout,
                base_url,
                ..
            } => {
                if poll.is_zero() || timeout.is_zero() {
                    return Err("poll and timeout must be positive durations".into());
                }
                // A typo here would only show as every poll failing, the
                // run sitting at the fallback cap, and exit 0.
                if let Some(url) = base_url {
                    let host = url
                        .strip_prefix("http://")
                        .or_else(|| url.strip_prefix("https://"));
                    if !host.is_some_and(|h| !h.is_empty() && !h.starts_with('/')) {
                        return Err(format!(
                            "base_url {url:?} is not an http:// or https:// address with a \
                             host, e.g. \"https://api.electricitymap.org\""
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

/// A policy file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Name in reports.
    pub name: String,
    /// Dispatch order of queued requests.
    #[serde(default = "edf")]
    pub queue_order: QueueOrder,
    /// Where the grid's carbon intensity comes from; `None`: carbon is not tracked.
    #[serde(default)]
    pub carbon: Option<CarbonSource>,
    /// How the power cap follows the intensity; `None`: the device stays uncapped.
    #[serde(default)]
    pub governor: Option<GovernorPolicy>,
    /// When to swap tenants' models for lighter variants; `None`: never.
    #[serde(default)]
    pub quality: Option<crate::quality::QualityPolicy>,
    /// Feasibility shedding: drop a request before it starts when its
    /// predicted finish (the variant's recent service, at the current
    /// speed) is past its deadline, counted as `shed`. A tenant's `shed`
    /// in the workload overrides it. Default: off.
    #[serde(default)]
    pub shedding: bool,
    /// An hourly planner that picks the power mode (and, for some, every
    /// tenant's variant and unit) itself, instead of the governor's cap
    /// rule. `ecomap run` takes `Mapping` (the runtime plans with its
    /// estimator) and refuses the others (simulator only: the baselines
    /// and bounds of the evaluation, some of which read the trace ahead).
    #[serde(default)]
    pub plan: Option<PlanPolicy>,
}

/// Hourly planners (the simulator's baselines and bound).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub enum PlanPolicy {
    /// One named mode for the whole run.
    Static {
        /// Mode name in the device description, e.g. "MAXN".
        mode: String,
    },
    /// The lowest-power mode that meets every deadline at the workload's
    /// load with the heaviest variants, fixed for the run (carbon-blind).
    EfficientStatic,
    /// After Clover (SC'23): each period, if the intensity moved more than
    /// `min_change` (relative) since the last plan, re-optimise mode and
    /// variants by simulated annealing on
    /// `lambda · carbon/carbon_ref − (1 − lambda) · accuracy/accuracy_max`
    /// subject to the predicted latency fitting every deadline.
    Clover {
        /// Weight of carbon against accuracy, in [0, 1].
        lambda: f64,
        /// Intensity (gCO2/kWh) that normalises carbon.
        reference_gco2: f64,
        /// Relative intensity change that triggers a re-plan, e.g. 0.05.
        #[serde(default = "five_percent")]
        min_change: f64,
        /// Annealing steps per plan.
        #[serde(default = "iterations")]
        iterations: u32,
    },
    /// Like the Azure carbon-aware KEDA operator: the look-ahead window's
    /// min..max intensity split into as many equal buckets as `modes`; the
    /// bucket of the current intensity picks the mode (first = cleanest).
    /// Near the span's end the window is its last `window` hours (the whole
    /// span when that is shorter), so it never shrinks.
    CarbonBuckets {
        /// Look-ahead window, e.g. "24h".
        #[serde(with = "humantime_serde")]
        window: Duration,
        /// Modes from the cleanest bucket to the dirtiest.
        modes: Vec<String>,
    },
    /// Clairvoyant bound: knows the whole trace; per hour the mode and
    /// variants that minimise carbon subject to every deadline, at the
    /// same mean accuracy as the `ecomap` policy over the span.
    Oracle,
    /// [`PlanPolicy::Oracle`] that may also move each tenant to any one
    /// unit the workload lets it run on (`units`, `movable_to`), as the
    /// mapping planner may: the bound on what any schedule of modes,
    /// variants and single-unit mappings can do.
    RemappingOracle,
    /// The mapping planner (`ecomap::planner`): when the intensity moves
    /// past `hysteresis_gco2` since the last plan, search power mode ×
    /// variant × unit per tenant with the latency/power estimator, for the
    /// least `carbon (g/h) + accuracy_point_g_per_h × accuracy points
    /// lost + delay_ms_g_per_h × predicted mean response (ms)` with every
    /// tenant's predicted tail within its deadline.
    Mapping {
        /// Grams CO2 per hour one point of mean top-1 is worth.
        accuracy_point_g_per_h: f64,
        /// Grams CO2 per hour one millisecond of predicted mean response
        /// time is worth (the carbon-delay product's delay side); 0, the
        /// default, plans for carbon and accuracy alone.
        #[serde(default)]
        delay_ms_g_per_h: f64,
        /// The most points of request-weighted mean top-1 a plan may lose
        /// below the heaviest variants, e.g. `Some(1.25)`; `None` (the
        /// default): the weight alone decides. When no mapping within it
        /// meets every deadline, the plan gives up accuracy rather than
        /// deadlines, and says so.
        #[serde(default)]
        max_accuracy_lost: Option<f64>,
        /// A budget on the *mean* points lost over the run, e.g.
        /// `Some((points: 1.4, gain_hours: 24.0))`: while the plans in force
        /// have lost more on average, the accuracy weight is multiplied by
        /// `1 + point-hours above the budget / gain_hours`
        /// (`ecomap::planner::AccuracyLedger`). `None` (the default): the
        /// weight alone decides.
        #[serde(default)]
        mean_accuracy_lost: Option<crate::planner::MeanAccuracyBudget>,
        /// Share of each deadline kept free, e.g. 0.1.
        #[serde(default = "ten_percent")]
        margin: f64,
        /// Re-plan when the intensity moved at least this much (g/kWh).
        #[serde(default = "fifteen")]
        hysteresis_gco2: f64,
        /// Beam width of the search.
        #[serde(default = "eight")]
        beam_width: usize,
        /// The intensity carbon is priced at: `Absolute` (the default) or
        /// `Relative(window_hours: …, typical_g_per_kwh: …)`, relative to
        /// the grid's trailing mean (`ecomap::planner::CarbonPrice`).
        #[serde(default)]
        carbon_price: crate::planner::CarbonPrice,
        /// Trained estimator (folder with estimator.safetensors, relative
        /// to the policy file); `None`: the device model's analytic one.
        #[serde(default)]
        estimator: Option<std::path::PathBuf>,
        /// `ecomap run` only: the device description whose modes the plan
        /// chooses among — the one the estimator was trained with (relative
        /// to the policy file). The simulator uses `--device`.
        #[serde(default)]
        device: Option<std::path::PathBuf>,
    },
}

fn ten_percent() -> f64 {
    0.1
}

fn fifteen() -> f64 {
    15.0
}

fn eight() -> usize {
    8
}

fn five_percent() -> f64 {
    0.05
}

fn iterations() -> u32 {
    400
}

impl PlanPolicy {
    /// Check the values.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            PlanPolicy::Clover {
                lambda,
                reference_gco2,
                min_change,
                iterations,
            } => {
                if !(0.0..=1.0).contains(lambda) {
                    return Err(format!("lambda must be in [0, 1], got {lambda}"));
                }
                if !(reference_gco2.is_finite() && *reference_gco2 > 0.0) {
                    return Err(format!(
                        "reference_gco2 must be positive, got {reference_gco2}"
                    ));
                }
                if !(min_change.is_finite() && *min_change >= 0.0) {
                    return Err(format!("min_change must be ≥ 0, got {min_change}"));
                }
                if *iterations == 0 {
                    return Err("iterations must be at least 1".into());
                }
                Ok(())
            }
            PlanPolicy::CarbonBuckets { window, modes } => {
                // The buckets split the window's hourly min..max: a window
                // of one hour has no spread (every hour would fall in the
                // cleanest bucket), and a part hour would be cut off.
                if window.as_secs() % 3600 != 0 || window.subsec_nanos() != 0 {
                    Err(format!(
                        "window must be a whole number of hours (the trace is hourly), got {}; \
                         e.g. \"24h\"",
                        humantime::format_duration(*window)
                    ))
                } else if window.as_secs() < 2 * 3600 {
                    Err(format!(
                        "window must be at least 2 hours (its buckets split the hours' min..max \
                         intensity), got {}; e.g. \"24h\"",
                        humantime::format_duration(*window)
                    ))
                } else if modes.is_empty() {
                    Err("modes must name at least one mode".into())
                } else {
                    Ok(())
                }
            }
            PlanPolicy::Mapping {
                accuracy_point_g_per_h,
                delay_ms_g_per_h,
                margin,
                hysteresis_gco2,
                beam_width,
                carbon_price,
                max_accuracy_lost,
                mean_accuracy_lost,
                ..
            } => {
                carbon_price.validate()?;
                if let Some(budget) = mean_accuracy_lost {
                    budget.validate()?;
                    // The budget multiplies the weight: a zero weight stays zero.
                    if *accuracy_point_g_per_h <= 0.0 {
                        return Err(format!(
                            "mean_accuracy_lost steers by multiplying accuracy_point_g_per_h, \
                             which is {accuracy_point_g_per_h}: give it a positive weight \
                             (e.g. 1.0) or drop mean_accuracy_lost"
                        ));
                    }
                }
                if let Some(points) = max_accuracy_lost {
                    if !(points.is_finite() && *points >= 0.0) {
                        return Err(format!(
                            "max_accuracy_lost must be a number of points ≥ 0, got {points}"
                        ));
                    }
                }
                if !(accuracy_point_g_per_h.is_finite() && *accuracy_point_g_per_h >= 0.0) {
                    return Err(format!(
                        "accuracy_point_g_per_h must be ≥ 0, got {accuracy_point_g_per_h}"
                    ));
                }
                if !(delay_ms_g_per_h.is_finite() && *delay_ms_g_per_h >= 0.0) {
                    return Err(format!(
                        "delay_ms_g_per_h must be ≥ 0, got {delay_ms_g_per_h}"
                    ));
                }
                if !(margin.is_finite() && (0.0..1.0).contains(margin)) {
                    return Err(format!("margin must be in [0, 1), got {margin}"));
                }
                if !(hysteresis_gco2.is_finite() && *hysteresis_gco2 >= 0.0) {
                    return Err(format!(
                        "hysteresis_gco2 must be ≥ 0, got {hysteresis_gco2}"
                    ));
                }
                if *beam_width == 0 {
                    return Err("beam_width must be at least 1".into());
                }
                Ok(())
            }
            PlanPolicy::Static { .. }
            | PlanPolicy::EfficientStatic
            | PlanPolicy::Oracle
            | PlanPolicy::RemappingOracle => Ok(()),
        }
    }
}

fn edf() -> QueueOrder {
    QueueOrder::EarliestDeadline
}

impl Policy {
    /// A plain EDF policy with no carbon tracking or governor.
    pub fn edf(name: &str) -> Policy {
        Policy {
            name: name.into(),
            queue_order: QueueOrder::EarliestDeadline,
            carbon: None,
            governor: None,
            quality: None,
            shedding: false,
            plan: None,
        }
    }
}

impl Policy {
    /// Read and validate a policy file.
    pub fn load(path: &Path) -> Result<Policy, ConfigError> {
        let mut p: Policy = load_ron(path, "policy")?;
        if !super::is_file_safe_name(&p.name) {
            return Err(ConfigError::invalid(
                path,
                "name",
                format!(
                    "name {:?} must be non-empty and use only letters, digits, '-' and '_', \
                     without '__' (it names the simulator's output files)",
                    p.name
                ),
            ));
        }
        if let Some(c) = &mut p.carbon {
            c.validate()
                .map_err(|m| ConfigError::invalid(path, "carbon", m))?;
            if let CarbonSource::Trace { path: t, .. } = c {
                if t.is_relative() {
                    *t = path.parent().unwrap_or(Path::new(".")).join(&*t);
                }
            }
        }
        if let Some(q) = &p.quality {
            q.validate()
                .map_err(|m| ConfigError::invalid(path, "quality", m))?;
        }
        if let Some(pl) = &mut p.plan {
            pl.validate()
                .map_err(|m| ConfigError::invalid(path, "plan", m))?;
            if let PlanPolicy::Mapping {
                estimator, device, ..
            } = pl
            {
                for p in [estimator, device].into_iter().flatten() {
                    if p.is_relative() {
                        *p = path.parent().unwrap_or(Path::new(".")).join(&*p);
                    }
                }
            }
            if p.governor.is_some() {
                return Err(ConfigError::invalid(
                    path,
                    "plan",
                    "a policy with a `plan` chooses the power mode itself; remove its `governor` \
                     (or the `plan`)",
                ));
            }
        }
        if let Some(g) = &p.governor {
            g.validate()
                .map_err(|m| ConfigError::invalid(path, "governor", m))?;
            // A reading goes stale before the next poll can replace it: the
            // cap would sit at the fallback and every gram would be priced
            // as an estimate, without anything being wrong.
            if let Some(CarbonSource::Http { poll, .. }) = &p.carbon {
                if g.max_staleness <= *poll {
                    return Err(ConfigError::invalid(
                        path,
                        "governor",
                        format!(
                            "max_staleness {} is not longer than the carbon source's poll {}: \
                             every reading would go stale before the next one arrives; give \
                             max_staleness a few polls, e.g. \"{}\"",
                            humantime::format_duration(g.max_staleness),
                            humantime::format_duration(*poll),
                            humantime::format_duration(poll.saturating_mul(3))
                        ),
                    ));
                }
            }
        }
        Ok(p)
    }
}
