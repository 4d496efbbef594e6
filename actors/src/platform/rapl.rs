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
    /// The power limit before the first cap (µW), put back by `restore`.
    original_limit_uw: u64,
}

impl RaplBackend {
    /// Open a zone and take the first energy reading.
    pub fn open(zone: &Path) -> Result<Self, PlatformError> {
        let range_path = zone.join("max_energy_range_uj");
        let max_range_uj = read_u64(&range_path)?;
        if max_range_uj == 0 {
            return Err(PlatformError::Parse {
                path: range_path,
                content: "0".into(),
                why: "the counter's range must be positive".into(),
            });
        }
        let energy_path = zone.join("energy_uj");
        let last_energy_uj = read_u64(&energy_path)?;
        if last_energy_uj > max_range_uj {
            return Err(PlatformError::Parse {
                path: energy_path,
                content: last_energy_uj.to_string(),
                why: format!("above the counter's range {max_range_uj}"),
            });
        }
        let limit = read_u64(&zone.join("constraint_0_power_limit_uw"))?;
        // A maximum of 0 (some drivers), or none, says nothing: the zone
        // then has no known maximum (the limit in force may be one an
        // earlier run left behind, and is no maximum).
        let max_cap_w = read_u64(&zone.join("constraint_0_max_power_uw"))
            .ok()
            .filter(|&uw| uw > 0)
            .map_or(f64::INFINITY, |uw| uw as f64 / 1e6);
        Ok(RaplBackend {
            zone: zone.to_path_buf(),
            max_range_uj,
            last_energy_uj,
            max_cap_w,
            applied: None,
            original_limit_uw: limit,
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
        if !(cap_w.is_finite() && cap_w > 0.0) {
            return Err(PlatformError::BadCap {
                cap_w,
                why: "a power limit must be a positive number of watts".into(),
            });
        }
        // Never above the zone's maximum (the driver would refuse it); the
        // level says what was written.
        let written = cap_w.min(self.max_cap_w);
        let uw = (written * 1e6).round() as u64;
        write_value(
            &self.zone.join("constraint_0_power_limit_uw"),
            &uw.to_string(),
        )?;
        let level = if written < cap_w {
            format!("{written} W (the zone's maximum)")
        } else {
            format!("{written} W")
        };
        let applied = AppliedCap {
            cap_w,
            level,
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
        let path = self.zone.join("energy_uj");
        let now = read_u64(&path)?;
        let last = std::mem::replace(&mut self.last_energy_uj, now);
        let secs = dt.as_secs_f64().max(1e-9);
        let delta = if now >= last {
            now - last
        } else {
            // The counter went back: a wrap, or a reset (a driver reload, a
            // resume, a VM migration). A wrap's energy is the rest of the
            // range plus the new value; more than ten times the zone's
            // maximum (10 kW without one) over the interval, with 10 ms of
            // slack for the counter's own update period, is no wrap.
            let wrapped = self.max_range_uj.saturating_sub(last).saturating_add(now);
            let plausible_w = if self.max_cap_w.is_finite() {
                10.0 * self.max_cap_w
            } else {
                10_000.0
            };
            if wrapped as f64 / 1e6 > plausible_w * (secs + 0.010) {
                return Err(PlatformError::CounterReset {
                    path,
                    from: last,
                    to: now,
                });
            }
            wrapped
        };
        Ok(PowerReading {
            watts: delta as f64 / 1e6 / secs,
            measured: true,
        })
    }

    fn restore(&mut self) -> Result<(), PlatformError> {
        if self.applied.take().is_some() {
            write_value(
                &self.zone.join("constraint_0_power_limit_uw"),
                &self.original_limit_uw.to_string(),
            )?;
        }
        Ok(())
    }

    fn start_metering(&mut self) -> Result<(), PlatformError> {
        self.last_energy_uj = read_u64(&self.zone.join("energy_uj"))?;
        Ok(())
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
    fn a_reset_counter_a_zero_maximum_and_a_bad_cap_are_not_taken_at_face_value() {
        let dir = tempfile::tempdir().unwrap();
        zone(dir.path(), 5_000_000_000);
        let mut r = RaplBackend::open(dir.path()).unwrap();
        // Metering starts after the models loaded: 100 J spent meanwhile
        // are not the first interval's.
        std::fs::write(dir.path().join("energy_uj"), "5100000000\n").unwrap();
        r.start_metering().unwrap();
        std::fs::write(dir.path().join("energy_uj"), "5110000000\n").unwrap();
        let p = r.read_power(Duration::from_secs(1), 0.0).unwrap();
        assert!((p.watts - 10.0).abs() < 1e-6, "{p:?}");
        // A very short interval (one closed at a cap change) is no reset.
        std::fs::write(dir.path().join("energy_uj"), "5110050000\n").unwrap();
        assert!(r.read_power(Duration::from_micros(50), 0.0).is_ok());
        // The counter restarts at 1 J: not a wrap worth 257 kJ.
        std::fs::write(dir.path().join("energy_uj"), "1000000\n").unwrap();
        let e = r.read_power(Duration::from_secs(1), 0.0).unwrap_err();
        assert!(matches!(e, PlatformError::CounterReset { .. }), "{e}");
        std::fs::write(dir.path().join("energy_uj"), "3000000\n").unwrap();
        let p = r.read_power(Duration::from_secs(1), 0.0).unwrap();
        assert!((p.watts - 2.0).abs() < 1e-6, "metering goes on: {p:?}");
        // A cap is positive, and never above the maximum.
        assert!(r.set_cap(f64::NAN).is_err() && r.set_cap(0.0).is_err());
        r.set_cap(500.0).unwrap();
        let limit = || std::fs::read_to_string(dir.path().join("constraint_0_power_limit_uw"));
        assert_eq!(limit().unwrap(), "95000000");
        // The run's end puts the limit found at open back.
        r.restore().unwrap();
        assert_eq!(limit().unwrap(), "65000000");
        // A maximum of 0 is no maximum.
        std::fs::write(dir.path().join("constraint_0_max_power_uw"), "0\n").unwrap();
        assert_eq!(
            RaplBackend::open(dir.path()).unwrap().max_cap_w(),
            f64::INFINITY
        );
        std::fs::write(dir.path().join("max_energy_range_uj"), "0\n").unwrap();
        let e = RaplBackend::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("range must be positive"), "{e}");
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
