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
                if speedup.is_finite() && *speedup > 0.0 {
                    Ok(())
                } else {
                    Err(format!(
                        "speedup must be positive (trace seconds per run second), got {speedup}"
                    ))
                }
            }
            CarbonSource::Http { poll, timeout, .. } => {
                if poll.is_zero() || timeout.is_zero() {
                    Err("poll and timeout must be positive durations".into())
                } else {
                    Ok(())
                }
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
        }
    }
}

impl Policy {
    /// Read and validate a policy file.
    pub fn load(path: &Path) -> Result<Policy, ConfigError> {
        let mut p: Policy = load_ron(path, "policy")?;
        if p.name.trim().is_empty() {
            return Err(ConfigError::invalid(path, "name", "name must not be empty"));
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
        if let Some(g) = &p.governor {
            g.validate()
                .map_err(|m| ConfigError::invalid(path, "governor", m))?;
        }
        Ok(p)
    }
}
