//! Platform backends: set a power cap, read the cap, read power.
//!
//! - [`emulated::EmulatedBackend`]: the virtual Xavier (`rt-config/devices/xavier.ron`)
//!   for hosts without power control — caps select a modelled performance
//!   level, workers are throttled to its speed, power is modelled;
//! - [`jetson::JetsonBackend`]: Jetson AGX Xavier — `nvpmodel -m N`, or
//!   clock caps through sysfs; power from the INA3221 rails (iio on L4T 32,
//!   hwmon on L4T 35);
//! - [`rapl::RaplBackend`]: Linux powercap (Intel RAPL) — power limit and
//!   `energy_uj` with wrap-around.
//!
//! And [`cpu_steal`]: how much CPU time a VM's host gave to other guests
//! while serving (`/proc/stat`), for the run report.
//!
//! Every sysfs path is taken under a configurable root, so tests run the
//! real code against a fake tree with the real layout.

pub mod cpu_steal;
pub mod emulated;
pub mod jetson;
pub mod rapl;

use ecomap::config::rt::PlatformSpec;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A platform operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// A sysfs (or other) file could not be read or written.
    #[error("{}: {action} failed: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// "write 1377000000", "read".
        action: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file's content was not what the driver writes.
    #[error("{}: unexpected content {content:?}: {why}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was read.
        content: String,
        /// What was expected.
        why: String,
    },
    /// A command (nvpmodel) failed.
    #[error("`{command}` failed: {why}")]
    Command {
        /// The command line.
        command: String,
        /// Its error or stderr.
        why: String,
    },
    /// Nothing to read power from.
    #[error("no power sensor found: {0}")]
    NoSensor(String),
    /// An energy counter went back further than a wrap explains: it was
    /// reset, and the energy since the last reading is unknown.
    #[error("{}: the energy counter went from {from} to {to}: a reset, not a wrap; the interval is unmetered", path.display())]
    CounterReset {
        /// The counter's file.
        path: PathBuf,
        /// The last reading.
        from: u64,
        /// This one.
        to: u64,
    },
    /// A cap the device cannot take.
    #[error("cannot apply a cap of {cap_w} W: {why}")]
    BadCap {
        /// The cap asked for.
        cap_w: f64,
        /// Why not.
        why: String,
    },
}

/// A cap as applied.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedCap {
    /// The cap asked for (watts).
    pub cap_w: f64,
    /// What it became on the device (a mode or level name).
    pub level: String,
    /// Expected slowdown of a forward pass relative to full speed.
    pub slowdown: f64,
}

/// Average power over an interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerReading {
    /// Watts.
    pub watts: f64,
    /// True when read from a sensor, false when modelled.
    pub measured: bool,
}

/// One device's power control and power sensing.
pub trait Platform: Send {
    /// Name in reports.
    fn name(&self) -> String;

    /// Apply a cap. Idempotent: applying the cap in force again does nothing.
    fn set_cap(&mut self, cap_w: f64) -> Result<AppliedCap, PlatformError>;

    /// The cap in force, if one was applied.
    fn current_cap(&self) -> Option<&AppliedCap>;

    /// Average power over the last `dt`; `utilisation` (0..=1, the share of
    /// worker time busy) feeds modelled backends and is ignored by sensors.
    fn read_power(&mut self, dt: Duration, utilisation: f64)
        -> Result<PowerReading, PlatformError>;

    /// How often the meter should take an extra power sample between its
    /// reads ([`Platform::poll_power`]): a sensor that reads instantaneous
    /// power (the Jetson's INA3221 rails) would otherwise price a whole
    /// interval at one instant of a bursty load. `None` (default): the
    /// backend already averages over the interval (an energy counter, or
    /// the model fed with the interval's utilisation).
    fn power_poll_interval(&self) -> Option<Duration> {
        None
    }

    /// Take one power sample, averaged into the next
    /// [`Platform::read_power`]. Default: nothing.
    fn poll_power(&mut self) {}

    /// The energy meter starts now: the next [`Platform::read_power`]
    /// covers the time from here (an energy counter re-reads its baseline,
    /// or the models' loading would be charged to the first interval).
    /// Default: nothing.
    fn start_metering(&mut self) -> Result<(), PlatformError> {
        Ok(())
    }

    /// The run is over: put the device's power settings back as they were
    /// before the first cap, so a run does not leave its last cap behind
    /// (a later run would read it as the device's maximum). Default:
    /// nothing to put back.
    fn restore(&mut self) -> Result<(), PlatformError> {
        Ok(())
    }

    /// Whether workers must be throttled by the cap's slowdown (only the
    /// emulated device: a real device slows down by itself).
    fn throttles_workers(&self) -> bool {
        false
    }

    /// The largest cap the device supports (its uncapped state).
    fn max_cap_w(&self) -> f64;
}

/// Read a sysfs file as trimmed text.
pub(crate) fn read_text(path: &Path) -> Result<String, PlatformError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| PlatformError::File {
            path: path.to_path_buf(),
            action: "read".into(),
            source,
        })
}

/// Read a sysfs file holding one integer.
pub(crate) fn read_u64(path: &Path) -> Result<u64, PlatformError> {
    let s = read_text(path)?;
    s.parse().map_err(|_| PlatformError::Parse {
        path: path.to_path_buf(),
        content: s,
        why: "expected an unsigned integer".into(),
    })
}

/// Read a sysfs file holding a reading that may dip below zero (an INA3221
/// rail's current reads a few mA negative when idle): at least 0.
pub(crate) fn read_non_negative(path: &Path) -> Result<f64, PlatformError> {
    let s = read_text(path)?;
    s.parse::<i64>()
        .map(|v| v.max(0) as f64)
        .map_err(|_| PlatformError::Parse {
            path: path.to_path_buf(),
            content: s,
            why: "expected an integer".into(),
        })
}

/// Write a value to a sysfs file.
pub(crate) fn write_value(path: &Path, value: &str) -> Result<(), PlatformError> {
    std::fs::write(path, value).map_err(|source| PlatformError::File {
        path: path.to_path_buf(),
        action: format!("write {value}"),
        source,
    })
}

/// Build the backend an rt-config names; relative paths are resolved
/// against `base` (the rt-config's folder).
pub fn from_spec(spec: &PlatformSpec, base: &Path) -> Result<Box<dyn Platform>, String> {
    match spec {
        PlatformSpec::Emulated { device } => {
            let path = base.join(device);
            let d = ecomap::device::DeviceModel::load(&path).map_err(|e| e.to_string())?;
            Ok(Box::new(emulated::EmulatedBackend::new(d)))
        }
        PlatformSpec::Jetson(j) => Ok(Box::new(jetson::JetsonBackend::new(j.clone()))),
        PlatformSpec::Rapl { zone } => rapl::RaplBackend::open(Path::new(zone))
            .map(|r| Box::new(r) as Box<dyn Platform>)
            .map_err(|e| e.to_string()),
    }
}
