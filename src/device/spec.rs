//! The device description file: units, power modes, model costs.
//!
//! Every number in a shipped description cites its source in a comment
//! beside it: MEASURED (a measurement in `../shared/data/`), PUBLISHED (a
//! published table or fact) or MODELLED (our assumption, and why).

use serde::{Deserialize, Serialize};

/// What kind of execution unit a unit is; speeds and power scale per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum UnitKind {
    /// The integrated GPU.
    Gpu,
    /// A deep-learning accelerator core (NVDLA).
    Dla,
    /// A CPU core running inference.
    Cpu,
}

impl UnitKind {
    /// All kinds, in table order.
    pub const ALL: [UnitKind; 3] = [UnitKind::Gpu, UnitKind::Dla, UnitKind::Cpu];

    /// Index into per-kind arrays.
    pub fn index(self) -> usize {
        match self {
            UnitKind::Gpu => 0,
            UnitKind::Dla => 1,
            UnitKind::Cpu => 2,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            UnitKind::Gpu => "gpu",
            UnitKind::Dla => "dla",
            UnitKind::Cpu => "cpu",
        }
    }
}

/// One value per unit kind.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PerKind {
    /// GPU.
    pub gpu: f64,
    /// Each DLA core.
    pub dla: f64,
    /// Each CPU core.
    pub cpu: f64,
}

impl PerKind {
    /// The value for `kind`.
    pub fn get(&self, kind: UnitKind) -> f64 {
        match kind {
            UnitKind::Gpu => self.gpu,
            UnitKind::Dla => self.dla,
            UnitKind::Cpu => self.cpu,
        }
    }
}

/// One execution unit.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UnitSpec {
    /// Name tenants refer to, e.g. "gpu", "dla0".
    pub name: String,
    /// Its kind.
    pub kind: UnitKind,
}

/// One power mode (an nvpmodel mode on a Jetson).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModeSpec {
    /// Name, e.g. "MODE_15W".
    pub name: String,
    /// The power cap (watts) that selects this mode under a cap rule: the
    /// highest `cap_w` at or under the cap wins. `None`: selectable only by
    /// name (planners, static policies).
    #[serde(default)]
    pub cap_w: Option<f64>,
    /// The module's power budget (watts), if the mode has one; the modelled
    /// full-load power minus `board_w` must fit it.
    #[serde(default)]
    pub budget_w: Option<f64>,
    /// Clock caps in MHz per unit kind.
    pub clocks_mhz: PerKind,
    /// Wall power with every unit idle (watts).
    pub idle_w: f64,
    /// Wall power added by one busy unit of each kind (watts).
    pub busy_w: PerKind,
}

/// Mean service time of one model variant on each kind of unit at the
/// reference mode, in milliseconds (the simulator draws log-normal service
/// times with this mean and the variant's own `service_cv`, else the
/// kind's; the analytic estimator reads it as the median, which for the
/// Xavier GPU's and DLAs' 1.1% spread differs from the mean by 0.006%, for
/// its CPU's 8% by 0.3%, for the host's 9–16% by 0.4–1.3%); `None` where the
/// kind cannot run it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCost {
    /// The variant's name in the model catalog, e.g. "resnet50".
    pub name: String,
    /// On the GPU.
    #[serde(default)]
    pub gpu_ms: Option<f64>,
    /// On one DLA core.
    #[serde(default)]
    pub dla_ms: Option<f64>,
    /// On one CPU core.
    #[serde(default)]
    pub cpu_ms: Option<f64>,
    /// This variant's own coefficient of variation of one service time,
    /// where it was measured; `None` takes the device's per-kind
    /// [`DeviceSpec::service_cv`]. (On the host a MobileNet's passes
    /// spread about twice as widely as a ResNet's, so one figure per kind
    /// over-states the ResNets' queueing.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_cv: Option<f64>,
}

impl ModelCost {
    /// Milliseconds on `kind` at the reference mode.
    pub fn ms(&self, kind: UnitKind) -> Option<f64> {
        match kind {
            UnitKind::Gpu => self.gpu_ms,
            UnitKind::Dla => self.dla_ms,
            UnitKind::Cpu => self.cpu_ms,
        }
    }
}

/// How a device's modes slow its units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum Throttle {
    /// Lower clocks (a real Jetson's nvpmodel modes): a slowed unit computes,
    /// and so contends for memory, the whole time it is busy.
    #[default]
    Clock,
    /// The emulated platform on a host: each pass runs at full speed and
    /// the worker then sleeps `(slowdown − 1) ×` the pass, so a unit
    /// contends only for `1 / slowdown` of its busy time.
    Sleep,
}

/// A device description file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// Name in reports.
    pub name: String,
    /// The execution units.
    pub units: Vec<UnitSpec>,
    /// The power modes.
    pub modes: Vec<ModeSpec>,
    /// The mode the model costs are given at (usually the fastest).
    pub reference_mode: String,
    /// Service time ∝ (f_reference / f_mode)^exponent, per kind.
    pub clock_exponent: PerKind,
    /// Coefficient of variation of one service time, per kind (log-normal),
    /// for every variant that does not give its own
    /// ([`ModelCost::service_cv`]).
    pub service_cv: PerKind,
    /// Each other busy unit stretches a starting job by this fraction
    /// (shared memory bandwidth).
    #[serde(default)]
    pub contention: f64,
    /// How a mode's slowdown comes about, which decides how much a slowed
    /// unit contends; default `Clock`.
    #[serde(default)]
    pub throttle: Throttle,
    /// Wall power that is not the module's (carrier board, fan, supply loss).
    #[serde(default)]
    pub board_w: f64,
    /// Which unit the runtime's workers stand for when this device is
    /// emulated on a host (`platform: Emulated(...)`); default: the first.
    #[serde(default)]
    pub emulated_unit: Option<String>,
    /// Model costs at the reference mode.
    pub models: Vec<ModelCost>,
}
