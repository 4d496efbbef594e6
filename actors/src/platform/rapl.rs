//! Linux powercap (Intel RAPL): `constraint_0_power_limit_uw` and `energy_uj`.
//!
//! Power is the change of the zone's energy counter over the interval; the
//! counter wraps at `max_energy_range_uj`, which is handled.

use super::{read_u64, write_value, AppliedCap, Platform, PlatformError, PowerReading};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One RAPL zone, e.g. `/sys/class/powercap/intel-rapl:0`.
#[derive(Debug)]
pub struct RaplBackend {
    zone: PathBuf,
    max_range_uj: u64,
    last_energy_uj: u64,
    max_cap_w: f64,
    applied: Option<AppliedCap>,
}

impl RaplBackend {
    /// Open a zone and take the first energy reading.
    pub fn open(zone: &Path) -> Result<Self, PlatformError> {
        let max_range_uj = read_u64(&zone.join("max_energy_range_uj"))?;
        let last_energy_uj = read_u64(&zone.join("energy_uj"))?;
        let limit = read_u64(&zone.join("constraint_0_power_limit_uw"))?;
        let max_cap_w = read_u64(&zone.join("constraint_0_max_power_uw"))
            .map(|uw| uw as f64 / 1e6)
            .unwrap_or(limit as f64 / 1e6);
        Ok(RaplBackend {
            zone: zone.to_path_buf(),
            max_range_uj,
            last_energy_uj,
            max_cap_w,
            applied: None,
        })
    }
}

impl Platform for RaplBackend {
    fn name(&self) -> String {
        format!("rapl ({})", self.zone.display())
    }

    fn set_cap(&mut self, cap_w: f64) -> Result<AppliedCap, PlatformError> {
        if self.applied.as_ref().is_some_and(|a| a.cap_w == cap_w) {
            return Ok(self.applied.clone().expect("checked"));
        }
        let uw = (cap_w * 1e6).round() as u64;
        write_value(
            &self.zone.join("constraint_0_power_limit_uw"),
            &uw.to_string(),
        )?;
        let applied = AppliedCap {
            cap_w,
            level: format!("{cap_w} W"),
            slowdown: 1.0,
        };
        self.applied = Some(applied.clone());
        Ok(applied)
    }

    fn current_cap(&self) -> Option<&AppliedCap> {
        self.applied.as_ref()
    }

    fn read_power(
        &mut self,
        dt: Duration,
        _utilisation: f64,
    ) -> Result<PowerReading, PlatformError> {
        let now = read_u64(&self.zone.join("energy_uj"))?;
        let delta = if now >= self.last_energy_uj {
            now - self.last_energy_uj
        } else {
            // The counter wrapped.
            self.max_range_uj - self.last_energy_uj + now
        };
        self.last_energy_uj = now;
        let secs = dt.as_secs_f64().max(1e-9);
        Ok(PowerReading {
            watts: delta as f64 / 1e6 / secs,
            measured: true,
        })
    }

    fn max_cap_w(&self) -> f64 {
        self.max_cap_w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(dir: &Path, energy: u64) {
        std::fs::write(dir.join("name"), "package-0\n").unwrap();
        std::fs::write(dir.join("max_energy_range_uj"), "262143328850\n").unwrap();
        std::fs::write(dir.join("energy_uj"), format!("{energy}\n")).unwrap();
        std::fs::write(dir.join("constraint_0_power_limit_uw"), "65000000\n").unwrap();
        std::fs::write(dir.join("constraint_0_max_power_uw"), "95000000\n").unwrap();
    }

    #[test]
    fn caps_and_power_with_wrap_around() {
        let dir = tempfile::tempdir().unwrap();
        zone(dir.path(), 262_143_000_000);
        let mut r = RaplBackend::open(dir.path()).unwrap();
        assert_eq!(r.max_cap_w(), 95.0);
        r.set_cap(40.5).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("constraint_0_power_limit_uw")).unwrap(),
            "40500000"
        );
        // 328_850 µJ to the wrap, then 9_671_150 µJ after it: 10 J in 2 s.
        std::fs::write(dir.path().join("energy_uj"), "9671150\n").unwrap();
        let p = r.read_power(Duration::from_secs(2), 0.0).unwrap();
        assert!((p.watts - 5.0).abs() < 1e-6, "{p:?}");
        std::fs::write(dir.path().join("energy_uj"), "29671150\n").unwrap();
        assert!((r.read_power(Duration::from_secs(1), 0.0).unwrap().watts - 20.0).abs() < 1e-6);
    }

    #[test]
    fn missing_or_garbled_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = RaplBackend::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("max_energy_range_uj: read failed"), "{e}");
        zone(dir.path(), 5);
        std::fs::write(dir.path().join("energy_uj"), "lots\n").unwrap();
        let e = RaplBackend::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("energy_uj: unexpected content \"lots\""), "{e}");
    }
}
