//! A budget on the *mean* accuracy lost over a run: the accuracy weight
//! rises while the plans in force have lost more than the budget on
//! average, and falls back as they make it up.
//!
//! The accuracy goal is a mean over the year (served accuracy
//! within 1.5 points of `max-perf`), while the planner's weight trades
//! accuracy against carbon one plan at a time. On a grid that is dirty all
//! year the weight alone can keep the lightest mapping every hour and end
//! the year just past the line; a hard cap on every plan
//! ([`SearchOptions::max_accuracy_lost`]) instead takes the light mapping
//! away in every hour, the clean ones included (results §8.7). The ledger
//! does what the goal says: it counts point-hours lost above the budget
//! (an integral controller on the mean) and multiplies the accuracy weight
//! by `1 + excess / gain_hours`, so the planner buys accuracy back in the
//! hours where it costs least carbon — the cleaner ones — until the mean
//! is within the budget again. Hours that lose less than the budget bank
//! room for later ones (the goal is a mean).
//!
//! The multiplier moves in steps of [`WEIGHT_STEP`] (a *level*), so that the
//! [`Replanner`](super::Replanner) can key its cache by level and re-plan
//! only when the level changes, and is at most [`MAX_WEIGHT_MULTIPLIER`]
//! (a budget the deadlines make infeasible does not grow the weight
//! without bound). The point-hours counted are held within what that
//! ceiling needs, both ways (±3 × `gain_hours`): a long stretch the budget
//! could not be kept in does not hold the weight at its ceiling for as
//! long again afterwards, and a long clean stretch does not license an
//! unbounded dirty one. The hours before the first plan count nothing.
//! Pure: the caller passes the grid time, in hours (the trace's clock in a
//! replay, the carbon monitor's in the runtime).

use super::SearchOptions;
use serde::{Deserialize, Serialize};

/// Levels per unit of the multiplier.
const LEVELS_PER_UNIT: f64 = 20.0;

/// One level of the accuracy weight's multiplier.
pub const WEIGHT_STEP: f64 = 1.0 / LEVELS_PER_UNIT;

/// Slack below a level boundary still counted as reaching it.
const LEVEL_SLACK: f64 = 1e-9;

/// The highest level.
pub const MAX_LEVEL: u32 = 60;

/// The largest multiplier of the accuracy weight (`1 + MAX_LEVEL ×
/// WEIGHT_STEP`).
pub const MAX_WEIGHT_MULTIPLIER: f64 = 1.0 + MAX_LEVEL as f64 / LEVELS_PER_UNIT;

/// A policy's `mean_accuracy_lost`: the budget and how hard to steer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeanAccuracyBudget {
    /// Points of request-weighted mean top-1 below the heaviest variants
    /// that the plans in force may lose on average over the run.
    pub points: f64,
    /// Point-hours above the budget that add 1 to the weight's multiplier
    /// (smaller: steers harder and swings more).
    #[serde(default = "day")]
    pub gain_hours: f64,
}

fn day() -> f64 {
    24.0
}

impl MeanAccuracyBudget {
    /// `Err` says which field is out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.points.is_finite() && self.points >= 0.0) {
            return Err(format!(
                "mean_accuracy_lost: points must be a number of points ≥ 0, got {}",
                self.points
            ));
        }
        if !(self.gain_hours.is_finite() && self.gain_hours > 0.0) {
            return Err(format!(
                "mean_accuracy_lost: gain_hours must be > 0, got {}",
                self.gain_hours
            ));
        }
        Ok(())
    }
}

/// The ledger across a run.
#[derive(Debug, Clone, PartialEq)]
pub struct AccuracyLedger {
    budget: MeanAccuracyBudget,
    /// Point-hours lost above the budget so far (negative: banked below
    /// it), within ±[`Self::excess_bound`].
    excess: f64,
    /// Point-hours lost, and hours counted, so far (for the mean).
    lost_point_hours: f64,
    hours: f64,
    /// Points the plan in force loses, since when (grid hours).
    in_force: Option<f64>,
    at_hours: Option<f64>,
}

impl AccuracyLedger {
    /// An empty ledger for a validated `budget`.
    pub fn new(budget: MeanAccuracyBudget) -> Self {
        debug_assert!(budget.validate().is_ok(), "validated with the policy");
        AccuracyLedger {
            budget,
            excess: 0.0,
            lost_point_hours: 0.0,
            hours: 0.0,
            in_force: None,
            at_hours: None,
        }
    }

    /// The most point-hours counted either way: what takes the multiplier
    /// to its ceiling.
    fn excess_bound(&self) -> f64 {
        (MAX_WEIGHT_MULTIPLIER - 1.0) * self.budget.gain_hours
    }

    /// Count the plan in force up to grid time `grid_hours`. Time counts
    /// once: a reading earlier than the latest seen counts nothing, and
    /// counting resumes when the clock passes the latest time again.
    pub fn advance(&mut self, grid_hours: f64) {
        if let (Some(lost), Some(at)) = (self.in_force, self.at_hours) {
            let dt = (grid_hours - at).max(0.0);
            let bound = self.excess_bound();
            self.excess = (self.excess + (lost - self.budget.points) * dt).clamp(-bound, bound);
            self.lost_point_hours += lost * dt;
            self.hours += dt;
        }
        self.at_hours = Some(match self.at_hours {
            Some(at) => at.max(grid_hours),
            None => grid_hours,
        });
        debug_assert!(self.hours >= 0.0 && self.lost_point_hours.is_finite());
    }

    /// From now on (the last [`advance`](Self::advance)), the plan in force
    /// loses `points_lost` points.
    /// (Negative when the plan is more accurate than the heaviest variants
    /// — a catalog whose lighter variant scores higher — and counted so.)
    pub fn set_in_force(&mut self, points_lost: f64) {
        debug_assert!(points_lost.is_finite(), "a plan's loss is a number");
        self.in_force = Some(points_lost);
    }

    /// The multiplier's level: `multiplier = 1 + level × WEIGHT_STEP`.
    pub fn level(&self) -> u32 {
        // The excess sits exactly on a boundary when clamped at the ceiling
        // (3 × gain) or built from round numbers; float division can land a
        // hair below it (3 × 0.7 / 0.7 < 3), so a nano-level of slack.
        let levels = self.excess.max(0.0) * LEVELS_PER_UNIT / self.budget.gain_hours;
        ((levels + LEVEL_SLACK).floor() as u32).min(MAX_LEVEL)
    }

    /// What the accuracy weight is multiplied by now.
    pub fn multiplier(&self) -> f64 {
        1.0 + f64::from(self.level()) * WEIGHT_STEP
    }

    /// `options` with the accuracy weight multiplied.
    pub fn weigh(&self, options: &SearchOptions) -> SearchOptions {
        SearchOptions {
            accuracy_point_g_per_h: options.accuracy_point_g_per_h * self.multiplier(),
            ..*options
        }
    }

    /// Mean points lost by the plans in force so far (`None` before an
    /// hour has passed under a plan).
    pub fn mean_lost(&self) -> Option<f64> {
        (self.hours > 0.0).then(|| self.lost_point_hours / self.hours)
    }

    /// Point-hours lost above the budget so far (negative: banked), within
    /// ±3 × `gain_hours`.
    pub fn excess_point_hours(&self) -> f64 {
        self.excess
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(points: f64) -> MeanAccuracyBudget {
        MeanAccuracyBudget {
            points,
            gain_hours: 24.0,
        }
    }

    #[test]
    fn the_weight_rises_only_past_the_budget_and_falls_as_it_is_made_up() {
        let mut l = AccuracyLedger::new(budget(1.0));
        l.advance(0.0);
        l.set_in_force(1.5);
        assert_eq!(l.multiplier(), 1.0);
        // 0.5 points over for 24 h: 12 point-hours → +0.5.
        l.advance(24.0);
        assert!((l.excess_point_hours() - 12.0).abs() < 1e-9);
        assert_eq!(l.level(), 10);
        assert!((l.multiplier() - 1.5).abs() < 1e-9);
        let o = l.weigh(&SearchOptions {
            accuracy_point_g_per_h: 2.0,
            ..Default::default()
        });
        assert!((o.accuracy_point_g_per_h - 3.0).abs() < 1e-9);
        // A plan losing 0.5 pays it back at 0.5 point-hours an hour.
        l.set_in_force(0.5);
        l.advance(36.0);
        assert!((l.excess_point_hours() - 6.0).abs() < 1e-9);
        assert_eq!(l.level(), 5);
        l.advance(48.0);
        assert_eq!(l.multiplier(), 1.0);
        // Mean over the 48 h: (1.5 × 24 + 0.5 × 24) / 48.
        assert!((l.mean_lost().unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn hours_below_the_budget_bank_room_and_the_clock_never_runs_back() {
        let mut l = AccuracyLedger::new(budget(1.0));
        assert_eq!(l.mean_lost(), None);
        l.advance(100.0);
        l.set_in_force(0.0);
        l.advance(110.0);
        assert!((l.excess_point_hours() + 10.0).abs() < 1e-9);
        // A clock that went back counts nothing, and the next step counts
        // from the latest time seen.
        l.set_in_force(2.0);
        l.advance(105.0);
        assert!((l.excess_point_hours() + 10.0).abs() < 1e-9);
        l.advance(115.0);
        // 5 h at one point over: still 5 banked.
        assert!((l.excess_point_hours() + 5.0).abs() < 1e-9);
        assert_eq!(l.level(), 0);
    }

    #[test]
    fn an_infeasible_budget_stops_at_the_largest_multiplier_and_does_not_wind_up() {
        let mut l = AccuracyLedger::new(budget(1.0));
        l.advance(0.0);
        l.set_in_force(5.0);
        l.advance(24.0 * 365.0);
        assert_eq!(l.level(), MAX_LEVEL);
        assert!((l.multiplier() - MAX_WEIGHT_MULTIPLIER).abs() < 1e-9);
        // A year over the budget is held to what the ceiling needs
        // (3 × 24 point-hours): a day of a perfect plan brings the weight
        // down by a full unit, not after another year.
        assert!((l.excess_point_hours() - 72.0).abs() < 1e-9);
        l.set_in_force(0.0);
        l.advance(24.0 * 366.0);
        assert!((l.multiplier() - 3.0).abs() < 1e-9, "{}", l.multiplier());
        // Banking is bounded the same way.
        l.advance(24.0 * 400.0);
        assert!((l.excess_point_hours() + 72.0).abs() < 1e-9);
        assert_eq!(l.level(), 0);
    }

    #[test]
    fn levels_sit_on_exact_boundaries() {
        // 1.2 point-hours over a 24-hour gain is exactly one level (1 point
        // over for 1.2 h: 1.2 / 24 × 20 is a hair below 1 in floats).
        let mut l = AccuracyLedger::new(budget(1.0));
        l.advance(0.0);
        l.set_in_force(2.0);
        l.advance(1.2);
        assert_eq!(l.level(), 1);
        assert!((l.multiplier() - 1.05).abs() < 1e-12);
        // The ceiling is reached for any gain (3 × 0.7 / 0.7 < 3 in floats).
        for gain_hours in [0.7, 3.3, 24.0] {
            let mut l = AccuracyLedger::new(MeanAccuracyBudget {
                points: 0.0,
                gain_hours,
            });
            l.advance(0.0);
            l.set_in_force(1.0);
            l.advance(1000.0);
            assert_eq!(l.level(), MAX_LEVEL, "gain {gain_hours}");
        }
    }

    #[test]
    fn bad_budgets_say_which_field() {
        let typo = ron::from_str::<MeanAccuracyBudget>("(points: 1.0, gain_hour: 6.0)");
        assert!(typo.unwrap_err().to_string().contains("gain_hour"));
        assert!(budget(-1.0).validate().unwrap_err().contains("points"));
        let b = MeanAccuracyBudget {
            points: 1.0,
            gain_hours: 0.0,
        };
        assert!(b.validate().unwrap_err().contains("gain_hours"));
    }
}
