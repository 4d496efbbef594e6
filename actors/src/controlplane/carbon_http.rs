//! Live carbon-intensity providers over HTTP (used by the carbon monitor).
//!
//! - Electricity Maps: `GET {base}/v3/carbon-intensity/latest?zone=Z` with
//!   header `auth-token`; answer `{"zone": "DE", "carbonIntensity": 302, "datetime": …}`
//!   (`datetime`: the start of the hour the figure is for).
//! - UK National Grid: `GET {base}/intensity`; answer
//!   `{"data": [{"from": …, "to": …, "intensity": {"forecast": 266, "actual": 263, "index": "moderate"}}]}`
//!   (`actual` is null until measured; the forecast is used then).
//!
//! Each answer's own time is read as well as its figure: a provider that
//! keeps answering with an hours-old figure (a stalled feed) is as stale
//! as one that does not answer, and the carbon monitor says so.
//!
//! Each request has a timeout; failures are retried with exponential
//! back-off. Every error is returned as a [`ProviderError`], never a
//! panic: a provider failure never stops the runtime.

use chrono::{DateTime, NaiveDateTime, Utc};
use ecomap::config::policy::HttpProvider;
use std::time::Duration;

/// Why a provider gave no usable figure.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Electricity Maps' token is not in the environment.
    #[error(
        "Electricity Maps needs an API token in the environment variable {var}, which is not set"
    )]
    MissingToken {
        /// The variable the policy names.
        var: String,
    },
    /// The provider answered with an error status.
    #[error("{url}: HTTP {code}{hint}: {body}")]
    Status {
        /// The URL asked.
        url: String,
        /// The status.
        code: u16,
        /// What to check, where the status says (with a leading space).
        hint: &'static str,
        /// The start of the answer's body.
        body: String,
    },
    /// No answer: connection refused, timed out, or the body unreadable.
    #[error("{url}: {message}")]
    Transport {
        /// The URL asked.
        url: String,
        /// What the HTTP client said.
        message: String,
    },
    /// The answer is not JSON.
    #[error("{url}: invalid JSON ({message}): {start:?}")]
    InvalidJson {
        /// The URL asked.
        url: String,
        /// The parser's message.
        message: String,
        /// The start of the body.
        start: String,
    },
    /// The answer has no intensity where the provider's format puts it.
    #[error("{url}: the answer has no intensity where the provider's format puts it")]
    NoIntensity {
        /// The URL asked.
        url: String,
    },
    /// The intensity is negative or not finite.
    #[error("{url}: intensity {value} is not a valid value")]
    InvalidIntensity {
        /// The URL asked.
        url: String,
        /// What it said.
        value: f64,
    },
    /// The answer's time is not one the provider's format allows.
    #[error("{url}: the answer's time {value:?} is not an RFC 3339 time (or the UK API's minutes-only form)")]
    InvalidTime {
        /// The URL asked.
        url: String,
        /// What it said.
        value: String,
    },
    /// Every attempt of a retried fetch failed.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; then "))]
    Attempts(Vec<ProviderError>),
}

/// One figure from a provider.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProviderReading {
    /// gCO2eq/kWh.
    pub gco2_per_kwh: f64,
    /// When the period the figure describes ends (Electricity Maps: its
    /// hour's end; UK National Grid: the half hour's `to`); `None` when the
    /// answer gives no time (then it is taken as current).
    pub valid_until: Option<DateTime<Utc>>,
}

impl ProviderReading {
    /// How long ago, at `now`, the figure's period ended: zero while it
    /// lasts, or when the answer gave no time.
    pub fn age_at(&self, now: DateTime<Utc>) -> Duration {
        self.valid_until
            .and_then(|end| (now - end).to_std().ok())
            .unwrap_or(Duration::ZERO)
    }
}

/// Electricity Maps' `latest` figures are hourly: each lasts its hour.
const ELECTRICITY_MAPS_PERIOD: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Parse a provider's time: RFC 3339 (`2019-01-01T00:00:00.000Z`), or the
/// UK API's minutes-only UTC form (`2018-01-20T12:30Z`).
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%MZ")
                .ok()
                .map(|t| t.and_utc())
        })
}

/// Public API roots.
pub const ELECTRICITY_MAPS_BASE: &str = "https://api.electricitymap.org";
/// Public API root of the UK National Grid carbon-intensity API.
pub const UK_NATIONAL_GRID_BASE: &str = "https://api.carbonintensity.org.uk";

/// A configured provider client.
#[derive(Debug, Clone)]
pub struct ProviderClient {
    provider: HttpProvider,
    url: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl ProviderClient {
    /// A client; reads the token from the environment variable the config names.
    pub fn new(
        provider: HttpProvider,
        base_url: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let (url, token) = match &provider {
            HttpProvider::ElectricityMaps { zone, token_env } => {
                let token = std::env::var(token_env).map_err(|_| ProviderError::MissingToken {
                    var: token_env.clone(),
                })?;
                (
                    format!(
                        "{}/v3/carbon-intensity/latest?zone={zone}",
                        base_url
                            .unwrap_or(ELECTRICITY_MAPS_BASE)
                            .trim_end_matches('/')
                    ),
                    Some(token),
                )
            }
            HttpProvider::UkNationalGrid => (
                format!(
                    "{}/intensity",
                    base_url
                        .unwrap_or(UK_NATIONAL_GRID_BASE)
                        .trim_end_matches('/')
                ),
                None,
            ),
        };
        let agent = ureq::AgentBuilder::new().timeout(timeout).build();
        Ok(ProviderClient {
            provider,
            url,
            token,
            agent,
        })
    }

    /// The URL asked.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One request: the figure, or why not.
    pub fn fetch_once(&self) -> Result<ProviderReading, ProviderError> {
        let mut req = self.agent.get(&self.url);
        if let Some(t) = &self.token {
            req = req.set("auth-token", t);
        }
        let body = match req.call() {
            Ok(resp) => resp.into_string().map_err(|e| ProviderError::Transport {
                url: self.url.clone(),
                message: format!("reading the answer failed: {e}"),
            })?,
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let hint = match code {
                    401 | 403 => " (check the API token)",
                    429 => " (rate-limited; poll less often)",
                    _ => "",
                };
                return Err(ProviderError::Status {
                    url: self.url.clone(),
                    code,
                    hint,
                    body: text.chars().take(200).collect(),
                });
            }
            Err(e) => {
                return Err(ProviderError::Transport {
                    url: self.url.clone(),
                    message: e.to_string(),
                })
            }
        };
        self.parse(&body)
    }

    /// Parse a provider's JSON answer.
    pub fn parse(&self, body: &str) -> Result<ProviderReading, ProviderError> {
        let v: serde_json::Value =
            serde_json::from_str(body).map_err(|e| ProviderError::InvalidJson {
                url: self.url.clone(),
                message: e.to_string(),
                start: body.chars().take(100).collect(),
            })?;
        let time = |field: Option<&serde_json::Value>| -> Result<_, ProviderError> {
            match field.and_then(|t| t.as_str()) {
                None => Ok(None),
                Some(t) => parse_time(t).map(Some).ok_or(ProviderError::InvalidTime {
                    url: self.url.clone(),
                    value: t.to_string(),
                }),
            }
        };
        let (value, valid_until) = match &self.provider {
            HttpProvider::ElectricityMaps { .. } => (
                v.get("carbonIntensity").and_then(|x| x.as_f64()),
                time(v.get("datetime"))?.map(|hour| hour + ELECTRICITY_MAPS_PERIOD),
            ),
            HttpProvider::UkNationalGrid => {
                let period = v.get("data").and_then(|d| d.get(0));
                let value = period.and_then(|d| d.get("intensity")).and_then(|i| {
                    i.get("actual")
                        .and_then(|a| a.as_f64())
                        .or_else(|| i.get("forecast").and_then(|f| f.as_f64()))
                });
                (value, time(period.and_then(|d| d.get("to")))?)
            }
        };
        match value {
            Some(x) if x.is_finite() && x >= 0.0 => Ok(ProviderReading {
                gco2_per_kwh: x,
                valid_until,
            }),
            Some(x) => Err(ProviderError::InvalidIntensity {
                url: self.url.clone(),
                value: x,
            }),
            None => Err(ProviderError::NoIntensity {
                url: self.url.clone(),
            }),
        }
    }

    /// Up to `attempts` requests, waiting 0.5 s, 1 s, 2 s… between them.
    /// Returns the figure, or every attempt's error.
    pub fn fetch_with_retries(
        &self,
        attempts: u32,
        first_backoff: Duration,
    ) -> Result<ProviderReading, ProviderError> {
        let mut errors = Vec::new();
        let mut backoff = first_backoff;
        for i in 0..attempts.max(1) {
            match self.fetch_once() {
                Ok(v) => return Ok(v),
                Err(e) => errors.push(e),
            }
            if i + 1 < attempts {
                std::thread::sleep(backoff);
                backoff *= 2;
            }
        }
        Err(ProviderError::Attempts(errors))
    }
}
