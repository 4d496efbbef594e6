//! The intensity the planner prices carbon at.
//!
//! The objective weighs carbon (g/h) against accuracy and delay in the same
//! unit. Priced at the intensity as read ([`CarbonPrice::Absolute`]), one
//! set of weights means different trade-offs on different grids: on a hydro
//! grid at 30 g/kWh carbon is nearly free and the planner buys speed and
//! accuracy with it; on a coal grid at 700 g/kWh it saves carbon at any
//! cost. [`CarbonPrice::Relative`] prices carbon at the reading *relative
//! to the grid's own trailing mean*, scaled so that the mean reads as
//! `typical_g_per_kwh`: the planner still moves with the grid (dirtier
//! than usual → save; cleaner than usual → spend), and the weights a
//! policy tunes on one region mean the same on another.
//!
//! The trailing mean is an exponentially weighted mean over grid time (the
//! trace's clock in a replay), each reading weighted by how long it held,
//! so it does not depend on how often the caller reads. Pure: the caller
//! passes the grid time.

use serde::{Deserialize, Serialize};

/// The least trailing mean a reading is priced against (g/kWh).
const MEAN_FLOOR_G_PER_KWH: f64 = 1.0;

/// How the planner prices carbon (a policy's `carbon_price`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum CarbonPrice {
    /// At the intensity as read.
    #[default]
    Absolute,
    /// At `reading × typical_g_per_kwh / trailing mean`.
    Relative {
        /// Time constant of the trailing mean, hours of grid time.
        window_hours: f64,
        /// What the trailing mean is priced as (g/kWh): the scale of the
        /// policy's weights.
        typical_g_per_kwh: f64,
    },
}

impl CarbonPrice {
    /// `Err` says which field is out of range.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            CarbonPrice::Absolute => Ok(()),
            CarbonPrice::Relative {
                window_hours,
                typical_g_per_kwh,
            } => {
                if !(window_hours.is_finite() && window_hours > 0.0) {
                    return Err(format!(
                        "carbon_price: window_hours must be > 0, got {window_hours}"
                    ));
                }
                if !(typical_g_per_kwh.is_finite() && typical_g_per_kwh > 0.0) {
                    return Err(format!(
                        "carbon_price: typical_g_per_kwh must be > 0, got {typical_g_per_kwh}"
                    ));
                }
                Ok(())
            }
        }
    }
}

/// The pricing state across a run.
#[derive(Debug, Clone, PartialEq)]
pub struct CarbonPricer {
    price: CarbonPrice,
    /// Trailing mean (g/kWh) and the last reading with its grid time (h).
    state: Option<(f64, f64, f64)>,
}

impl CarbonPricer {
    /// A pricer with no history.
    pub fn new(price: CarbonPrice) -> Self {
        debug_assert!(price.validate().is_ok(), "validated with the policy");
        CarbonPricer { price, state: None }
    }

    /// The trailing mean so far (g/kWh); `None` before the first reading
    /// or when pricing is absolute.
    pub fn trailing_mean(&self) -> Option<f64> {
        match self.price {
            CarbonPrice::Absolute => None,
            CarbonPrice::Relative { .. } => self.state.map(|(mean, _, _)| mean),
        }
    }

    /// The intensity to price a reading of `gco2` (g/kWh) at, observed at
    /// `grid_hours` on the grid's clock. Readings must not go back in time
    /// (an earlier one is treated as simultaneous).
    pub fn price(&mut self, gco2: f64, grid_hours: f64) -> f64 {
        let CarbonPrice::Relative {
            window_hours,
            typical_g_per_kwh,
        } = self.price
        else {
            return gco2;
        };
        let mean = match self.state {
            None => gco2,
            Some((mean, last, at)) => {
                // The last reading held from `at` until now: it moves the
                // mean by the share of the window it covered.
                let held = (grid_hours - at).max(0.0);
                let weight = 1.0 - (-held / window_hours).exp();
                mean + weight * (last - mean)
            }
        };
        debug_assert!(mean.is_finite(), "a finite reading keeps the mean finite");
        // A reading from the past counts as now: time never runs backwards.
        let at = self
            .state
            .map_or(grid_hours, |(_, _, at)| at.max(grid_hours));
        self.state = Some((mean, gco2, at));
        // On a grid whose mean is near 0 g/kWh (fully renewable) the ratio
        // would explode: the mean counts as at least 1 g/kWh.
        gco2 * typical_g_per_kwh / mean.max(MEAN_FLOOR_G_PER_KWH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_field_is_refused_not_ignored() {
        let parse = |text: &str| {
            crate::config::parse_ron::<CarbonPrice>(text, std::path::Path::new("p.ron"), "policy")
        };
        assert!(parse("Relative(window_hours: 168.0, typical_g_per_kwh: 400.0)").is_ok());
        let e = parse("Relative(window_hours: 168.0, typical_g_per_kwh: 400.0, floor: 5.0)")
            .unwrap_err()
            .to_string();
        assert!(e.contains("floor"), "{e}");
    }

    #[test]
    fn absolute_pricing_passes_the_reading_through() {
        let mut p = CarbonPricer::new(CarbonPrice::Absolute);
        assert_eq!(p.price(420.0, 0.0), 420.0);
        assert_eq!(p.price(30.0, 5.0), 30.0);
        assert_eq!(p.trailing_mean(), None);
    }

    #[test]
    fn relative_pricing_is_the_same_on_a_clean_and_a_dirty_grid() {
        let price = CarbonPrice::Relative {
            window_hours: 24.0,
            typical_g_per_kwh: 400.0,
        };
        // The same daily shape at two levels, 20× apart.
        let shape = |h: usize| 1.0 + 0.3 * ((h % 24) as f64 / 24.0 * std::f64::consts::TAU).sin();
        let (mut clean, mut dirty) = (CarbonPricer::new(price), CarbonPricer::new(price));
        for h in 0..24 * 14 {
            let a = clean.price(30.0 * shape(h), h as f64);
            let b = dirty.price(600.0 * shape(h), h as f64);
            assert!((a - b).abs() < 1e-6 * b, "hour {h}: {a} vs {b}");
        }
        // After two weeks the mean has settled near the level: the peak
        // of the day prices above typical, the trough below.
        let m = clean.trailing_mean().unwrap();
        assert!((m - 30.0).abs() < 3.0, "mean {m}");
        assert!(clean.price(30.0 * 1.3, 24.0 * 14.0 + 6.0) > 400.0);
        assert!(clean.price(30.0 * 0.7, 24.0 * 14.0 + 18.0) < 400.0);
    }

    #[test]
    fn the_mean_weights_readings_by_how_long_they_held_not_how_often_they_came() {
        let price = CarbonPrice::Relative {
            window_hours: 10.0,
            typical_g_per_kwh: 100.0,
        };
        let (mut hourly, mut often) = (CarbonPricer::new(price), CarbonPricer::new(price));
        hourly.price(100.0, 0.0);
        often.price(100.0, 0.0);
        // 200 g/kWh from hour 1: read once an hour, or once a minute.
        for h in 1..=20 {
            hourly.price(200.0, h as f64);
        }
        for i in 0..=19 * 60 {
            often.price(200.0, 1.0 + i as f64 / 60.0);
        }
        let (a, b) = (
            hourly.trailing_mean().unwrap(),
            often.trailing_mean().unwrap(),
        );
        assert!((a - b).abs() < 1e-9 * a, "{a} vs {b}");
        assert!(a > 150.0 && a < 200.0, "moving towards the new level: {a}");
    }

    #[test]
    fn a_zero_mean_grid_prices_finitely_and_time_never_runs_backwards() {
        let mut p = CarbonPricer::new(CarbonPrice::Relative {
            window_hours: 24.0,
            typical_g_per_kwh: 400.0,
        });
        // A day of a fully renewable grid, then a small blip.
        for h in 0..24 {
            assert_eq!(p.price(0.0, h as f64), 0.0);
        }
        let blip = p.price(2.0, 24.0);
        assert!(blip.is_finite() && blip <= 2.0 * 400.0, "{blip}");
        // A reading stamped earlier than the last counts as simultaneous:
        // the next one is weighted from hour 24, not from hour 10.
        let mut q = p.clone();
        p.price(2.0, 10.0);
        p.price(2.0, 25.0);
        q.price(2.0, 24.0);
        q.price(2.0, 25.0);
        assert_eq!(p.trailing_mean(), q.trailing_mean());
    }

    #[test]
    fn bad_settings_are_named() {
        let bad = CarbonPrice::Relative {
            window_hours: 0.0,
            typical_g_per_kwh: 400.0,
        };
        assert!(bad.validate().unwrap_err().contains("window_hours"));
        let bad = CarbonPrice::Relative {
            window_hours: 24.0,
            typical_g_per_kwh: f64::NAN,
        };
        assert!(bad.validate().unwrap_err().contains("typical_g_per_kwh"));
    }
}
