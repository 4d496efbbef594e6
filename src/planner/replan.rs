//! When to search for a new plan, and which earlier plan to reuse — the
//! one decision the simulator and the runtime's governor share.
//!
//! A search runs when the intensity has moved by at least the hysteresis
//! since the last request, or when the accuracy weight's level
//! ([`AccuracyLedger`](super::AccuracyLedger)) changed. Plans are
//! remembered per intensity bucket (a third of the hysteresis) and weight
//! level: a nearby intensity at the same weight asks the same search with a
//! nearly equal objective, so the plan found there is reused.

use std::collections::HashMap;

/// What to do with a new intensity reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Replan<P> {
    /// Within the hysteresis: keep the plan in force.
    Keep,
    /// A plan found earlier for this intensity bucket.
    Reuse(P),
    /// Search, then [`Replanner::record`] what was found.
    Search,
}

/// The re-planning state.
#[derive(Debug, Clone)]
pub struct Replanner<P> {
    hysteresis: f64,
    last_gco2: Option<f64>,
    last_level: u32,
    found: HashMap<(i64, u32), P>,
}

impl<P: Clone> Replanner<P> {
    /// Re-plan when the intensity moves by `hysteresis_gco2` (g/kWh).
    pub fn new(hysteresis_gco2: f64) -> Self {
        debug_assert!(hysteresis_gco2 >= 0.0, "validated with the policy");
        Replanner {
            hysteresis: hysteresis_gco2,
            last_gco2: None,
            last_level: 0,
            found: HashMap::new(),
        }
    }

    fn bucket(&self, gco2: f64) -> i64 {
        (gco2 / (self.hysteresis / 3.0).max(1.0)).round() as i64
    }

    /// Decide for a reading of `gco2` (g/kWh) with the accuracy weight at
    /// `level` (0 without a mean accuracy budget).
    pub fn on_reading(&mut self, gco2: f64, level: u32) -> Replan<P> {
        let moved = self
            .last_gco2
            .is_none_or(|last| (gco2 - last).abs() >= self.hysteresis);
        if !moved && level == self.last_level {
            return Replan::Keep;
        }
        self.last_gco2 = Some(gco2);
        self.last_level = level;
        match self.found.get(&(self.bucket(gco2), level)) {
            Some(p) => Replan::Reuse(p.clone()),
            None => Replan::Search,
        }
    }

    /// Remember the plan a search at `gco2` and weight `level` found.
    pub fn record(&mut self, gco2: f64, level: u32, plan: P) {
        let key = (self.bucket(gco2), level);
        self.found.insert(key, plan);
    }

    /// The last request got no answer (not a verdict): ask again at the
    /// next reading.
    pub fn retry(&mut self) {
        self.last_gco2 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_past_the_hysteresis_and_reuses_per_bucket() {
        let mut r: Replanner<&str> = Replanner::new(15.0);
        assert_eq!(r.on_reading(300.0, 0), Replan::Search);
        r.record(300.0, 0, "a");
        assert_eq!(r.on_reading(310.0, 0), Replan::Keep);
        assert_eq!(r.on_reading(400.0, 0), Replan::Search);
        r.record(400.0, 0, "b");
        // Back near 300 (same 5 g/kWh bucket): the plan found there.
        assert_eq!(r.on_reading(301.0, 0), Replan::Reuse("a"));
        // A lost request is asked again at once.
        r.retry();
        assert_eq!(r.on_reading(301.0, 0), Replan::Reuse("a"));
        assert_eq!(r.on_reading(290.0, 0), Replan::Keep);
    }

    #[test]
    fn a_new_weight_level_searches_and_keys_the_cache() {
        let mut r: Replanner<&str> = Replanner::new(15.0);
        assert_eq!(r.on_reading(300.0, 0), Replan::Search);
        r.record(300.0, 0, "light");
        // Same intensity, heavier accuracy weight: a new search.
        assert_eq!(r.on_reading(300.0, 3), Replan::Search);
        r.record(300.0, 3, "heavy");
        assert_eq!(r.on_reading(301.0, 3), Replan::Keep);
        // Back to level 0 at the same intensity: that level's plan.
        assert_eq!(r.on_reading(301.0, 0), Replan::Reuse("light"));
    }
}
