//! The emulated platform: the virtual Xavier of `rt-config/xavier-emulated.ron`.

use super::{AppliedCap, Platform, PlatformError, PowerReading};
use ecomap::platform::EmulatedPlatform;
use std::time::Duration;

/// Caps select modelled levels; power is modelled from utilisation.
#[derive(Debug)]
pub struct EmulatedBackend {
    table: EmulatedPlatform,
    applied: Option<AppliedCap>,
}

impl EmulatedBackend {
    /// A backend over `table`, uncapped until a cap is set.
    pub fn new(table: EmulatedPlatform) -> Self {
        EmulatedBackend {
            table,
            applied: None,
        }
    }
}

impl Platform for EmulatedBackend {
    fn name(&self) -> String {
        format!("emulated: {}", self.table.name)
    }

    fn set_cap(&mut self, cap_w: f64) -> Result<AppliedCap, PlatformError> {
        let level = self.table.level_for_cap(cap_w);
        let applied = AppliedCap {
            cap_w,
            level: level.name.clone(),
            slowdown: level.slowdown,
        };
        self.applied = Some(applied.clone());
        Ok(applied)
    }

    fn current_cap(&self) -> Option<&AppliedCap> {
        self.applied.as_ref()
    }

    fn read_power(
        &mut self,
        _dt: Duration,
        utilisation: f64,
    ) -> Result<PowerReading, PlatformError> {
        let cap = self
            .applied
            .as_ref()
            .map_or(self.table.max_cap_w(), |a| a.cap_w);
        Ok(PowerReading {
            watts: self.table.level_for_cap(cap).power_w(utilisation),
            measured: false,
        })
    }

    fn throttles_workers(&self) -> bool {
        true
    }

    fn max_cap_w(&self) -> f64 {
        self.table.max_cap_w()
    }
}
