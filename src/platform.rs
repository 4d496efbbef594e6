//! The virtual Xavier: a power-cap → performance-level table and a power model.
//!
//! Used by the `emulated` platform backend on hosts without Jetson or RAPL
//! power control. A cap selects the highest level whose `cap_w` fits under
//! it; the level's `slowdown` stretches every forward pass (the workers
//! really run slower, by duty-cycle throttling), and power is modelled as
//! `idle_w + utilisation × (busy_w − idle_w)`. The calibration and the source
//! of each number live in `rt-config/xavier-emulated.ron`. Every figure this
//! model produces is **modelled**, and reports say so.

use crate::config::{load_ron, ConfigError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One performance level of the emulated device.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PowerLevel {
    /// Name, e.g. the nvpmodel mode it stands for.
    pub name: String,
    /// The power budget this level fits in (watts).
    pub cap_w: f64,
    /// Forward passes take `slowdown` times as long as at the reference level.
    pub slowdown: f64,
    /// Modelled power with every unit idle (watts).
    pub idle_w: f64,
    /// Modelled power with every unit busy (watts).
    pub busy_w: f64,
}

/// The emulated platform's table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmulatedPlatform {
    /// Name in reports.
    pub name: String,
    /// Levels; any order.
    pub levels: Vec<PowerLevel>,
}

impl EmulatedPlatform {
    /// Read and validate a table.
    pub fn load(path: &Path) -> Result<EmulatedPlatform, ConfigError> {
        let t: EmulatedPlatform = load_ron(path, "emulated platform")?;
        t.validate()
            .map_err(|(place, m)| ConfigError::invalid(path, place, m))?;
        Ok(t)
    }

    /// Check the table.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.levels.is_empty() {
            return Err(("levels".into(), "no levels: add at least one".into()));
        }
        for (i, l) in self.levels.iter().enumerate() {
            let place = format!("levels[{i}] \"{}\"", l.name);
            let ok = |x: f64| x.is_finite() && x > 0.0;
            if !(ok(l.cap_w) && ok(l.busy_w) && l.idle_w.is_finite() && l.idle_w >= 0.0) {
                return Err((
                    place,
                    "cap_w and busy_w must be positive, idle_w ≥ 0".into(),
                ));
            }
            if !(l.slowdown.is_finite() && l.slowdown >= 1.0) {
                return Err((
                    place,
                    format!(
                        "slowdown must be ≥ 1 (relative to the fastest level), got {}",
                        l.slowdown
                    ),
                ));
            }
            if l.idle_w > l.busy_w {
                return Err((place, "idle_w must not exceed busy_w".into()));
            }
        }
        Ok(())
    }

    /// The level a cap selects: the highest `cap_w` at or under the cap, or
    /// the lowest level when the cap is below all of them.
    pub fn level_for_cap(&self, cap_w: f64) -> &PowerLevel {
        let fitting = self
            .levels
            .iter()
            .filter(|l| l.cap_w <= cap_w)
            .max_by(|a, b| a.cap_w.total_cmp(&b.cap_w));
        fitting.unwrap_or_else(|| {
            self.levels
                .iter()
                .min_by(|a, b| a.cap_w.total_cmp(&b.cap_w))
                .expect("validated: at least one level")
        })
    }

    /// The highest level's cap (the uncapped device).
    pub fn max_cap_w(&self) -> f64 {
        self.levels.iter().map(|l| l.cap_w).fold(0.0, f64::max)
    }
}

impl PowerLevel {
    /// Modelled power at a utilisation in [0, 1].
    pub fn power_w(&self, utilisation: f64) -> f64 {
        self.idle_w + utilisation.clamp(0.0, 1.0) * (self.busy_w - self.idle_w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> EmulatedPlatform {
        let l = |name: &str, cap: f64, slow: f64, busy: f64| PowerLevel {
            name: name.into(),
            cap_w: cap,
            slowdown: slow,
            idle_w: 5.0,
            busy_w: busy,
        };
        EmulatedPlatform {
            name: "x".into(),
            levels: vec![
                l("MAXN", 40.0, 1.0, 40.0),
                l("30W", 30.0, 1.6, 13.0),
                l("10W", 10.0, 2.5, 7.0),
            ],
        }
    }

    #[test]
    fn caps_select_levels_and_power_is_modelled_from_utilisation() {
        let t = table();
        t.validate().unwrap();
        assert_eq!(t.level_for_cap(100.0).name, "MAXN");
        assert_eq!(t.level_for_cap(35.0).name, "30W");
        assert_eq!(t.level_for_cap(10.0).name, "10W");
        assert_eq!(t.level_for_cap(3.0).name, "10W");
        assert_eq!(t.max_cap_w(), 40.0);
        let maxn = t.level_for_cap(40.0);
        assert_eq!(maxn.power_w(0.0), 5.0);
        assert_eq!(maxn.power_w(0.5), 22.5);
        assert_eq!(maxn.power_w(2.0), 40.0);
    }

    #[test]
    fn bad_tables_are_refused() {
        let mut t = table();
        t.levels[1].slowdown = 0.5;
        assert!(t.validate().unwrap_err().1.contains("slowdown must be ≥ 1"));
        let mut t = table();
        t.levels[2].idle_w = 9.0;
        assert!(t.validate().is_err());
        t.levels.clear();
        assert!(t.validate().is_err());
    }

    #[test]
    fn the_shipped_xavier_table_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("rt-config/xavier-emulated.ron");
        let t = EmulatedPlatform::load(&p).unwrap();
        assert!(t.levels.len() >= 4);
        assert_eq!(t.level_for_cap(t.max_cap_w()).slowdown, 1.0);
    }
}
