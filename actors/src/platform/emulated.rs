//! The emulated platform: a virtual device from the core's device model
//! (e.g. `rt-config/devices/xavier.ron`), the same model the simulator uses.

use super::{AppliedCap, Platform, PlatformError, PowerReading};
use ecomap::device::spec::UnitKind;
use ecomap::device::{DeviceModel, ModeId};
use std::time::Duration;

/// Caps select the device's modes; the workers stand for one of its units
/// (its `emulated_unit`) and are throttled to that unit's slowdown; power
/// is modelled from their utilisation.
#[derive(Debug)]
pub struct EmulatedBackend {
    device: DeviceModel,
    kind: UnitKind,
    /// Busy fraction per device unit; only the emulated unit's is set.
    busy: Vec<f64>,
    unit: usize,
    mode: ModeId,
    applied: Option<AppliedCap>,
}

impl EmulatedBackend {
    /// A backend over `device`, at its reference mode until a cap is set.
    pub fn new(device: DeviceModel) -> Self {
        let unit = device.emulated_unit();
        EmulatedBackend {
            kind: device.spec().units[unit].kind,
            busy: vec![0.0; device.spec().units.len()],
            unit,
            mode: device.reference_mode(),
            device,
            applied: None,
        }
    }
}

impl Platform for EmulatedBackend {
    fn name(&self) -> String {
        format!("emulated: {}", self.device.name())
    }

    fn set_cap(&mut self, cap_w: f64) -> Result<AppliedCap, PlatformError> {
        self.mode = self.device.mode_for_cap(cap_w);
        let applied = AppliedCap {
            cap_w,
            level: self.device.modes()[self.mode].name.clone(),
            slowdown: self.device.slowdown(self.mode, self.kind).max(1.0),
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
        // The workers together stand for one unit: their mean utilisation
        // is that unit's busy fraction.
        self.busy[self.unit] = utilisation;
        Ok(PowerReading {
            watts: self.device.power_w(self.mode, &self.busy),
            measured: false,
        })
    }

    fn throttles_workers(&self) -> bool {
        true
    }

    fn max_cap_w(&self) -> f64 {
        self.device.max_cap_w()
    }
}
