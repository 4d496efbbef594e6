//! Arrival processes: when a tenant's requests are released.
//!
//! Generators are seeded and pure, so a simulator replays the same arrivals
//! as the real-time runtime given the same seed.

use crate::time::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How a tenant's requests arrive.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub enum ArrivalProcess {
    /// One request every `1/rate_hz` seconds, each delayed by a uniform random
    /// jitter in `[0, jitter)` (a camera with a jittery trigger). The jitter
    /// must be shorter than the period so releases stay in order.
    Periodic {
        /// Requests per second; must be positive.
        rate_hz: f64,
        /// Largest random delay added to each release, e.g. "2ms".
        #[serde(default, with = "humantime_serde")]
        jitter: Duration,
    },
    /// Exponentially distributed inter-arrival times with mean `1/rate_hz`.
    Poisson {
        /// Mean requests per second; must be positive.
        rate_hz: f64,
    },
}

impl ArrivalProcess {
    /// Mean requests per second.
    pub fn rate_hz(&self) -> f64 {
        match self {
            ArrivalProcess::Periodic { rate_hz, .. } | ArrivalProcess::Poisson { rate_hz } => {
                *rate_hz
            }
        }
    }

    /// The same process with its rate multiplied by `factor` (for overload
    /// tests); the jitter shrinks to at most half the new period. The
    /// result is validated: a factor that takes the rate out of range is
    /// an error that says so, never a panic.
    pub fn scaled(&self, factor: f64) -> Result<ArrivalProcess, String> {
        let rate = self.rate_hz() * factor;
        let scaled = match self.clone() {
            ArrivalProcess::Periodic { jitter, .. } => ArrivalProcess::Periodic {
                rate_hz: rate,
                jitter: Duration::try_from_secs_f64(0.5 / rate)
                    .map_or(jitter, |half_period| jitter.min(half_period)),
            },
            ArrivalProcess::Poisson { .. } => ArrivalProcess::Poisson { rate_hz: rate },
        };
        scaled.validate().map(|()| scaled)
    }

    /// Check the parameters; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        let rate = self.rate_hz();
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!(
                "rate_hz must be a positive number of requests per second, got {rate}"
            ));
        }
        if rate < MIN_RATE_HZ {
            return Err(format!(
                "rate_hz {rate} is below {MIN_RATE_HZ} (one request per 11.6 days); give a \
                 larger rate"
            ));
        }
        if rate > 1e6 {
            return Err(format!(
                "rate_hz {rate} is above 1,000,000 requests per second; ecomap's clock \
                 resolution and queues are not meant for that"
            ));
        }
        if let ArrivalProcess::Periodic { jitter, .. } = self {
            let period = Duration::from_secs_f64(1.0 / rate);
            if *jitter >= period {
                return Err(format!(
                    "jitter {} must be shorter than the period {} (1/rate_hz)",
                    humantime::format_duration(*jitter),
                    humantime::format_duration(period)
                ));
            }
        }
        Ok(())
    }
}

/// The arrival seed of tenant `tenant` of a workload seeded `workload_seed`:
/// the runtime's load generators and the simulator derive it the same way,
/// so both release the same arrival sequence.
pub fn tenant_seed(workload_seed: u64, tenant: usize) -> u64 {
    workload_seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(tenant as u64)
}

/// The least rate a tenant may have (requests per second): one request per
/// 11.6 days. Below it, periods overflow the clock.
pub const MIN_RATE_HZ: f64 = 1e-6;

/// Produces release times of one arrival process.
#[derive(Debug, Clone)]
pub struct ArrivalGenerator {
    process: ArrivalProcess,
    rng: StdRng,
    start: Timestamp,
    index: u64,
    last: Timestamp,
}

impl ArrivalGenerator {
    /// Releases start at `start`; `seed` fixes the random jitter/gaps.
    pub fn new(process: ArrivalProcess, seed: u64, start: Timestamp) -> Self {
        ArrivalGenerator {
            process,
            rng: StdRng::seed_from_u64(seed),
            start,
            index: 0,
            last: start,
        }
    }

    /// The next release time. Never earlier than the previous one.
    pub fn next_release(&mut self) -> Timestamp {
        let t = match &self.process {
            ArrivalProcess::Periodic { rate_hz, jitter } => {
                let nominal = self.start.as_nanos() as f64 + self.index as f64 * 1e9 / rate_hz;
                let jitter_ns = if jitter.is_zero() {
                    0.0
                } else {
                    self.rng.random_range(0.0..jitter.as_nanos() as f64)
                };
                Timestamp::from_nanos((nominal + jitter_ns) as u64)
            }
            ArrivalProcess::Poisson { rate_hz } => {
                let gap = Exp::new(*rate_hz)
                    .expect("validated rate is positive")
                    .sample(&mut self.rng);
                self.last + Duration::from_secs_f64(gap)
            }
        };
        self.index += 1;
        let t = t.max(self.last);
        self.last = t;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_releases_are_one_period_apart_within_jitter() {
        let p = ArrivalProcess::Periodic {
            rate_hz: 100.0,
            jitter: Duration::from_millis(2),
        };
        p.validate().unwrap();
        let mut g = ArrivalGenerator::new(p, 1, Timestamp::ZERO);
        let ts: Vec<u64> = (0..1000).map(|_| g.next_release().as_nanos()).collect();
        for (k, t) in ts.iter().enumerate() {
            let nominal = k as u64 * 10_000_000;
            assert!(*t >= nominal && *t < nominal + 2_000_000, "{k}: {t}");
        }
        assert!(ts.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn poisson_mean_rate_matches() {
        let p = ArrivalProcess::Poisson { rate_hz: 50.0 };
        let mut g = ArrivalGenerator::new(p, 42, Timestamp::ZERO);
        let mut last = Timestamp::ZERO;
        for _ in 0..20_000 {
            last = g.next_release();
        }
        let rate = 20_000.0 / last.since_epoch().as_secs_f64();
        assert!((rate - 50.0).abs() < 2.0, "{rate}");
    }

    #[test]
    fn same_seed_same_arrivals() {
        let p = ArrivalProcess::Poisson { rate_hz: 10.0 };
        let mut a = ArrivalGenerator::new(p.clone(), 3, Timestamp::ZERO);
        let mut b = ArrivalGenerator::new(p, 3, Timestamp::ZERO);
        for _ in 0..100 {
            assert_eq!(a.next_release(), b.next_release());
        }
    }

    #[test]
    fn bad_parameters_are_explained() {
        for rate in [0.0, -5.0, f64::NAN, f64::INFINITY] {
            let e = ArrivalProcess::Poisson { rate_hz: rate }
                .validate()
                .unwrap_err();
            assert!(e.contains("rate_hz must be a positive"), "{e}");
        }
        let e = ArrivalProcess::Periodic {
            rate_hz: 100.0,
            jitter: Duration::from_millis(10),
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("shorter than the period 10ms"), "{e}");
        let scaled = ArrivalProcess::Periodic {
            rate_hz: 100.0,
            jitter: Duration::from_millis(9),
        }
        .scaled(2.0)
        .unwrap();
        assert_eq!(scaled.rate_hz(), 200.0);
        scaled.validate().unwrap();
    }
}
