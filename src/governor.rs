//! The power governor's decision rule: grid carbon intensity in, power cap out.
//!
//! Pure logic; the `PowerGovernor` actor feeds it samples and applies what
//! it decides. Two rules, both from `policies/*.ron`:
//! - `Thresholds`: intensity bands, each with a cap;
//! - `Linear`: interpolate between a low-carbon cap and a high-carbon cap.
//!
//! Two guards stop the cap from flapping: a change needs the intensity to
//! have moved at least `hysteresis` gCO2/kWh since the last change, and at
//! least `min_dwell` to have passed. A sample older than `max_staleness`
//! (or none at all) switches to the conservative `fallback_cap_w` at once.

use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One intensity band of a thresholds rule.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    /// The band holds intensities below this (gCO2eq/kWh).
    pub below: f64,
    /// Cap in watts while the intensity is in the band.
    pub cap_w: f64,
}

/// How intensity maps to a cap.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub enum CapRule {
    /// Bands in increasing order of `below`; intensities at or above the
    /// last band get `otherwise_w`.
    Thresholds {
        /// The bands.
        bands: Vec<Band>,
        /// Cap above the last band.
        otherwise_w: f64,
    },
    /// `low_carbon_cap_w` at or below `low_gco2`, `high_carbon_cap_w` at or
    /// above `high_gco2`, linear in between.
    Linear {
        /// Intensity of the low-carbon end.
        low_gco2: f64,
        /// Intensity of the high-carbon end.
        high_gco2: f64,
        /// Cap at the low-carbon end (the larger cap).
        low_carbon_cap_w: f64,
        /// Cap at the high-carbon end.
        high_carbon_cap_w: f64,
    },
    /// Always the same cap, whatever the intensity (a carbon-agnostic baseline).
    Fixed {
        /// The cap.
        cap_w: f64,
    },
}

impl CapRule {
    /// The cap for an intensity.
    pub fn cap_for(&self, gco2: f64) -> f64 {
        match self {
            CapRule::Thresholds { bands, otherwise_w } => bands
                .iter()
                .find(|b| gco2 < b.below)
                .map_or(*otherwise_w, |b| b.cap_w),
            CapRule::Linear {
                low_gco2,
                high_gco2,
                low_carbon_cap_w,
                high_carbon_cap_w,
            } => {
                let x = ((gco2 - low_gco2) / (high_gco2 - low_gco2)).clamp(0.0, 1.0);
                low_carbon_cap_w + x * (high_carbon_cap_w - low_carbon_cap_w)
            }
            CapRule::Fixed { cap_w } => *cap_w,
        }
    }

    fn validate(&self) -> Result<(), String> {
        let positive = |w: f64, what: &str| {
            if w.is_finite() && w > 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "{what} must be a positive number of watts, got {w}"
                ))
            }
        };
        match self {
            CapRule::Thresholds { bands, otherwise_w } => {
                positive(*otherwise_w, "otherwise_w")?;
                for (i, b) in bands.iter().enumerate() {
                    positive(b.cap_w, &format!("bands[{i}].cap_w"))?;
                    // NaN compares false everywhere: a NaN band would never
                    // apply and would hide the order check below.
                    if b.below.is_nan() {
                        return Err(format!(
                            "bands[{i}].below must be an intensity in gCO2/kWh, got NaN"
                        ));
                    }
                    if i > 0 && b.below <= bands[i - 1].below {
                        return Err(format!(
                            "bands must be in increasing order of `below`: bands[{i}].below {} ≤ \
                             bands[{}].below {}",
                            b.below,
                            i - 1,
                            bands[i - 1].below
                        ));
                    }
                }
                Ok(())
            }
            CapRule::Linear {
                low_gco2,
                high_gco2,
                low_carbon_cap_w,
                high_carbon_cap_w,
            } => {
                positive(*low_carbon_cap_w, "low_carbon_cap_w")?;
                positive(*high_carbon_cap_w, "high_carbon_cap_w")?;
                // Infinite ends would make every reading's position NaN.
                if !low_gco2.is_finite() || !high_gco2.is_finite() || low_gco2 >= high_gco2 {
                    return Err(format!(
                        "low_gco2 ({low_gco2}) must be below high_gco2 ({high_gco2}), both \
                         finite intensities in gCO2/kWh"
                    ));
                }
                Ok(())
            }
            CapRule::Fixed { cap_w } => positive(*cap_w, "cap_w"),
        }
    }
}

/// The governor section of a policy file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GovernorPolicy {
    /// Intensity to cap.
    pub rule: CapRule,
    /// Least intensity change (gCO2/kWh) since the last cap change that may
    /// change the cap again.
    #[serde(default)]
    pub hysteresis_gco2: f64,
    /// Least time between two cap changes (run time), e.g. "2s".
    #[serde(default, with = "humantime_serde")]
    pub min_dwell: Duration,
    /// A sample older than this is stale, e.g. "30s".
    #[serde(with = "humantime_serde")]
    pub max_staleness: Duration,
    /// Cap while the intensity is unknown or stale.
    pub fallback_cap_w: f64,
}

impl GovernorPolicy {
    /// Check the values; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        self.rule.validate()?;
        if !(self.hysteresis_gco2.is_finite() && self.hysteresis_gco2 >= 0.0) {
            return Err(format!(
                "hysteresis_gco2 must be ≥ 0, got {}",
                self.hysteresis_gco2
            ));
        }
        if self.max_staleness.is_zero() {
            return Err("max_staleness must be positive, e.g. \"30s\"".into());
        }
        if !(self.fallback_cap_w.is_finite() && self.fallback_cap_w > 0.0) {
            return Err(format!(
                "fallback_cap_w must be a positive number of watts, got {}",
                self.fallback_cap_w
            ));
        }
        Ok(())
    }
}

/// Why the cap changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CapReason {
    /// The first decision of the run.
    Initial,
    /// The intensity moved.
    Intensity(f64),
    /// No fresh sample: the fallback cap.
    Stale,
}

/// A cap to apply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapDecision {
    /// Watts.
    pub cap_w: f64,
    /// Why.
    pub reason: CapReason,
}

/// The governor's memory between samples.
#[derive(Debug, Clone)]
pub struct Governor {
    policy: GovernorPolicy,
    cap_w: Option<f64>,
    last_change: Timestamp,
    intensity_at_change: f64,
    stale: bool,
    stale_spells: u64,
}

/// The age a reading is judged at: one its source marks stale (a trace's
/// row held over an empty or malformed one) is never fresh, however recent.
/// The runtime's governor and the simulator both judge readings by it, and
/// neither plans on a stale one.
///
/// ```
/// use ecomap::governor::reading_age;
/// use std::time::Duration;
/// assert_eq!(reading_age(false, Duration::from_secs(3)), Duration::from_secs(3));
/// assert_eq!(reading_age(true, Duration::ZERO), Duration::MAX);
/// ```
pub fn reading_age(stale: bool, since_observed: Duration) -> Duration {
    if stale {
        Duration::MAX
    } else {
        since_observed
    }
}

impl Governor {
    /// A governor with no cap decided yet.
    pub fn new(policy: GovernorPolicy) -> Self {
        Governor {
            policy,
            cap_w: None,
            last_change: Timestamp::ZERO,
            intensity_at_change: f64::NAN,
            stale: false,
            stale_spells: 0,
        }
    }

    /// How many times the governor fell back: each move from a fresh
    /// reading (or none yet) to a stale or missing one counts once, whether
    /// or not the fallback cap differs from the cap in force.
    pub fn stale_spells(&self) -> u64 {
        self.stale_spells
    }

    /// The cap in force.
    pub fn cap_w(&self) -> Option<f64> {
        self.cap_w
    }

    /// Whether the last decision was the stale fallback.
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// Consider the latest sample (`None` when there has never been one):
    /// its intensity and its age. Returns a decision only when the cap changes.
    pub fn on_sample(
        &mut self,
        now: Timestamp,
        sample: Option<(f64, Duration)>,
    ) -> Option<CapDecision> {
        let fresh = sample.filter(|(_, age)| *age <= self.policy.max_staleness);
        let Some((gco2, _)) = fresh else {
            if !std::mem::replace(&mut self.stale, true) {
                self.stale_spells += 1;
            }
            return self.change(now, self.policy.fallback_cap_w, CapReason::Stale, f64::NAN);
        };
        let was_stale = std::mem::replace(&mut self.stale, false);
        let target = self.policy.rule.cap_for(gco2);
        match self.cap_w {
            None => self.change(now, target, CapReason::Initial, gco2),
            // Leaving the fallback: apply the rule at once, and measure the
            // next move from this reading even when the cap stays (else
            // the hysteresis would compare with the NaN of the fallback).
            Some(_) if was_stale => {
                let d = self.change(now, target, CapReason::Intensity(gco2), gco2);
                self.intensity_at_change = gco2;
                d
            }
            Some(_) => {
                let dwelt = now.saturating_since(self.last_change) >= self.policy.min_dwell;
                // NaN (no intensity at the last change, e.g. the fallback) counts as moved.
                let change = (gco2 - self.intensity_at_change).abs();
                let moved = change.is_nan() || change >= self.policy.hysteresis_gco2;
                if dwelt && moved {
                    self.change(now, target, CapReason::Intensity(gco2), gco2)
                } else {
                    None
                }
            }
        }
    }

    fn change(
        &mut self,
        now: Timestamp,
        cap_w: f64,
        reason: CapReason,
        gco2: f64,
    ) -> Option<CapDecision> {
        if self.cap_w == Some(cap_w) {
            return None;
        }
        self.cap_w = Some(cap_w);
        self.last_change = now;
        self.intensity_at_change = gco2;
        Some(CapDecision { cap_w, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(h: f64, dwell_s: u64) -> GovernorPolicy {
        GovernorPolicy {
            rule: CapRule::Thresholds {
                bands: vec![
                    Band {
                        below: 100.0,
                        cap_w: 40.0,
                    },
                    Band {
                        below: 300.0,
                        cap_w: 30.0,
                    },
                ],
                otherwise_w: 15.0,
            },
            hysteresis_gco2: h,
            min_dwell: Duration::from_secs(dwell_s),
            max_staleness: Duration::from_secs(10),
            fallback_cap_w: 15.0,
        }
    }

    fn t(s: u64) -> Timestamp {
        Timestamp::from_nanos(s * 1_000_000_000)
    }

    fn fresh(g: f64) -> Option<(f64, Duration)> {
        Some((g, Duration::ZERO))
    }

    #[test]
    fn rules_map_intensity_to_caps() {
        let p = policy(0.0, 0);
        assert_eq!(p.rule.cap_for(50.0), 40.0);
        assert_eq!(p.rule.cap_for(100.0), 30.0);
        assert_eq!(p.rule.cap_for(900.0), 15.0);
        let lin = CapRule::Linear {
            low_gco2: 100.0,
            high_gco2: 500.0,
            low_carbon_cap_w: 40.0,
            high_carbon_cap_w: 10.0,
        };
        assert_eq!(lin.cap_for(0.0), 40.0);
        assert_eq!(lin.cap_for(300.0), 25.0);
        assert_eq!(lin.cap_for(1000.0), 10.0);
        assert_eq!(CapRule::Fixed { cap_w: 40.0 }.cap_for(800.0), 40.0);
    }

    #[test]
    fn caps_follow_bands_and_decisions_are_idempotent() {
        let mut g = Governor::new(policy(0.0, 0));
        assert_eq!(g.on_sample(t(0), fresh(50.0)).unwrap().cap_w, 40.0);
        assert_eq!(g.on_sample(t(1), fresh(60.0)), None);
        let d = g.on_sample(t(2), fresh(350.0)).unwrap();
        assert_eq!((d.cap_w, d.reason), (15.0, CapReason::Intensity(350.0)));
        assert_eq!(g.cap_w(), Some(15.0));
    }

    #[test]
    fn hysteresis_and_dwell_stop_flapping() {
        let mut g = Governor::new(policy(20.0, 5));
        g.on_sample(t(0), fresh(95.0));
        // Noise around the 100 boundary: never more than 20 from 95.
        let noisy = [101.0, 99.0, 110.0, 96.0, 112.0, 90.0, 105.0];
        for (i, x) in noisy.iter().enumerate() {
            assert_eq!(g.on_sample(t(10 + i as u64), fresh(*x)), None, "{x}");
        }
        // A real move, but within the dwell time of the last change: wait.
        let mut g = Governor::new(policy(20.0, 5));
        g.on_sample(t(0), fresh(95.0));
        assert_eq!(g.on_sample(t(2), fresh(200.0)), None);
        assert_eq!(g.on_sample(t(5), fresh(200.0)).unwrap().cap_w, 30.0);
    }

    #[test]
    fn stale_or_missing_samples_fall_back_at_once_and_recover() {
        let mut g = Governor::new(policy(20.0, 60));
        assert_eq!(
            g.on_sample(t(0), None),
            Some(CapDecision {
                cap_w: 15.0,
                reason: CapReason::Stale
            })
        );
        assert!(g.is_stale());
        assert_eq!(g.on_sample(t(1), fresh(50.0)).unwrap().cap_w, 40.0);
        let d = g
            .on_sample(t(2), Some((50.0, Duration::from_secs(11))))
            .unwrap();
        assert_eq!(d.reason, CapReason::Stale);
        // Recovery ignores dwell: the fallback is not meant to stick.
        assert_eq!(g.on_sample(t(3), fresh(50.0)).unwrap().cap_w, 40.0);
        assert_eq!(g.stale_spells(), 2, "two falls back");
        // A stale spell while the fallback cap is the cap in force already
        // changes no cap, but it counts.
        let mut g = Governor::new(policy(15.0, 0));
        assert_eq!(g.on_sample(t(0), fresh(900.0)).unwrap().cap_w, 15.0);
        assert_eq!(g.on_sample(t(1), None), None);
        assert_eq!(g.on_sample(t(2), None), None, "one spell, not two");
        assert_eq!(g.stale_spells(), 1);
    }

    #[test]
    fn after_a_stale_spell_the_hysteresis_counts_from_the_reading_it_recovered_on() {
        // 250 → 30 W; stale → 15 W; back at 305 → 15 W (no change of cap).
        // A reading of 295 (the 30 W band) is 10 from 305, within the
        // hysteresis of 15: the cap stays (it was measured against the
        // fallback's NaN, and moved).
        let mut g = Governor::new(policy(15.0, 0));
        assert_eq!(g.on_sample(t(0), fresh(250.0)).unwrap().cap_w, 30.0);
        assert_eq!(g.on_sample(t(1), None).unwrap().cap_w, 15.0);
        assert_eq!(g.on_sample(t(2), fresh(305.0)), None);
        assert_eq!(g.on_sample(t(3), fresh(295.0)), None);
        assert_eq!(g.on_sample(t(4), fresh(280.0)).unwrap().cap_w, 30.0);
    }

    #[test]
    fn bad_policies_are_explained() {
        let mut p = policy(0.0, 0);
        p.rule = CapRule::Thresholds {
            bands: vec![
                Band {
                    below: 300.0,
                    cap_w: 30.0,
                },
                Band {
                    below: 100.0,
                    cap_w: 40.0,
                },
            ],
            otherwise_w: 15.0,
        };
        assert!(p.validate().unwrap_err().contains("increasing order"));
        if let CapRule::Thresholds { bands, .. } = &mut p.rule {
            bands[0].below = f64::NAN;
        }
        assert!(p.validate().unwrap_err().contains("bands[0].below"));
        let mut p = policy(0.0, 0);
        p.fallback_cap_w = 0.0;
        assert!(p.validate().unwrap_err().contains("fallback_cap_w"));
        let mut p = policy(-1.0, 0);
        assert!(p.validate().unwrap_err().contains("hysteresis"));
        p.hysteresis_gco2 = 0.0;
        p.rule = CapRule::Linear {
            low_gco2: 500.0,
            high_gco2: 100.0,
            low_carbon_cap_w: 40.0,
            high_carbon_cap_w: 10.0,
        };
        assert!(p.validate().unwrap_err().contains("must be below"));
        // An infinite end would put every reading at NaN.
        let p = GovernorPolicy {
            rule: CapRule::Linear {
                low_gco2: f64::NEG_INFINITY,
                high_gco2: 500.0,
                low_carbon_cap_w: 40.0,
                high_carbon_cap_w: 10.0,
            },
            ..p
        };
        assert!(p.validate().unwrap_err().contains("finite"));
    }
}
