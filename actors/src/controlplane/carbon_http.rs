//! Live carbon-intensity providers over HTTP (used by the carbon monitor).
//!
//! - Electricity Maps: `GET {base}/v3/carbon-intensity/latest?zone=Z` with
//!   header `auth-token`; answer `{"zone": "DE", "carbonIntensity": 302, "datetime": …}`.
//! - UK National Grid: `GET {base}/intensity`; answer
//!   `{"data": [{"from": …, "to": …, "intensity": {"forecast": 266, "actual": 263, "index": "moderate"}}]}`
//!   (`actual` is null until measured; the forecast is used then).
//!
//! Each request has a timeout; failures are retried with exponential
//! back-off. Every error is returned as a message, never a panic: a provider
//! failure never stops the runtime.

use ecomap::config::policy::HttpProvider;
use std::time::Duration;

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
    ) -> Result<Self, String> {
        let (url, token) = match &provider {
            HttpProvider::ElectricityMaps { zone, token_env } => {
                let token = std::env::var(token_env).map_err(|_| {
                    format!(
                        "Electricity Maps needs an API token in the environment variable \
                         {token_env}, which is not set"
                    )
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

    /// One request: the intensity, or why not.
    pub fn fetch_once(&self) -> Result<f64, String> {
        let mut req = self.agent.get(&self.url);
        if let Some(t) = &self.token {
            req = req.set("auth-token", t);
        }
        let body = match req.call() {
            Ok(resp) => resp
                .into_string()
                .map_err(|e| format!("{}: reading the answer failed: {e}", self.url))?,
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let hint = match code {
                    401 | 403 => " (check the API token)",
                    429 => " (rate-limited; poll less often)",
                    _ => "",
                };
                return Err(format!(
                    "{}: HTTP {code}{hint}: {}",
                    self.url,
                    text.chars().take(200).collect::<String>()
                ));
            }
            Err(e) => return Err(format!("{}: {e}", self.url)),
        };
        self.parse(&body)
    }

    /// Parse a provider's JSON answer.
    pub fn parse(&self, body: &str) -> Result<f64, String> {
        let v: serde_json::Value = serde_json::from_str(body).map_err(|e| {
            format!(
                "{}: invalid JSON ({e}): {:?}",
                self.url,
                body.chars().take(100).collect::<String>()
            )
        })?;
        let value = match &self.provider {
            HttpProvider::ElectricityMaps { .. } => {
                v.get("carbonIntensity").and_then(|x| x.as_f64())
            }
            HttpProvider::UkNationalGrid => v
                .get("data")
                .and_then(|d| d.get(0))
                .and_then(|d| d.get("intensity"))
                .and_then(|i| {
                    i.get("actual")
                        .and_then(|a| a.as_f64())
                        .or_else(|| i.get("forecast").and_then(|f| f.as_f64()))
                }),
        };
        match value {
            Some(x) if x.is_finite() && x >= 0.0 => Ok(x),
            Some(x) => Err(format!("{}: intensity {x} is not a valid value", self.url)),
            None => Err(format!(
                "{}: the answer has no intensity where the provider's format puts it",
                self.url
            )),
        }
    }

    /// Up to `attempts` requests, waiting 0.5 s, 1 s, 2 s… between them.
    /// Returns the value, or every attempt's error.
    pub fn fetch_with_retries(
        &self,
        attempts: u32,
        first_backoff: Duration,
    ) -> Result<f64, String> {
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
        Err(errors.join("; then "))
    }
}
