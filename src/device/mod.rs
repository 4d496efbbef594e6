//! The device model: a virtual device with execution units and power
//! modes, shared by the simulator and the runtime's emulated platform.
//!
//! For a unit of kind `k` at mode `m`, a model variant's mean service time
//! is its cost at the reference mode × `(f_ref,k / f_m,k)^α_k` — the unit's
//! *slowdown* at `m` — stretched by `contention` for each other unit busy
//! when it starts, and drawn log-normal with the kind's coefficient of
//! variation. Power is `idle_w(m) + Σ_units busy_fraction × busy_w(m, k)`.
//! The description file ([`spec::DeviceSpec`], e.g.
//! `rt-config/devices/xavier.ron`) cites the source of every number; the
//! figures this model produces are **modelled**, and reports say so.

pub mod spec;

use crate::config::{load_ron, ConfigError};
use spec::{DeviceSpec, ModeSpec, ModelCost, UnitKind};
use std::collections::HashMap;
use std::path::Path;

/// What is wrong with a device description, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{place}: {message}")]
pub struct InvalidDevice {
    /// The field, e.g. `modes[2] "MODE_10W"`.
    pub place: String,
    /// What to fix.
    pub message: String,
}

fn invalid(place: impl ToString, message: impl ToString) -> InvalidDevice {
    InvalidDevice {
        place: place.to_string(),
        message: message.to_string(),
    }
}

/// The most a mode may slow a unit against the reference mode (the
/// Xavier's slowest, MODE_10W's GPU, is about 2×).
pub const MAX_SLOWDOWN: f64 = 100.0;

/// The largest coefficient of variation of a service time (measured ones
/// are 0.01–0.5).
pub const MAX_CV: f64 = 10.0;

/// The largest power figure (watts) of a device description: an edge
/// device draws tens of watts; a figure in kilowatts is a unit mistake.
pub const MAX_WATTS: f64 = 10_000.0;

/// A validated device description with its look-ups.
#[derive(Debug, Clone)]
pub struct DeviceModel {
    spec: DeviceSpec,
    reference: usize,
    models: HashMap<String, usize>,
}

/// Index of a mode in [`DeviceModel::modes`].
pub type ModeId = usize;

impl DeviceModel {
    /// Read and validate a description file.
    pub fn load(path: &Path) -> Result<DeviceModel, ConfigError> {
        let spec: DeviceSpec = load_ron(path, "device description")?;
        DeviceModel::new(spec).map_err(|e| ConfigError::invalid(path, e.place, e.message))
    }

    /// Validate a description: `Err(invalid(place, message))` says what to fix.
    pub fn new(spec: DeviceSpec) -> Result<DeviceModel, InvalidDevice> {
        let positive = |x: f64| x.is_finite() && x > 0.0;
        let non_negative = |x: f64| x.is_finite() && x >= 0.0;
        if spec.units.is_empty() {
            return Err(invalid("units", "no units: add at least one"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, u) in spec.units.iter().enumerate() {
            if !names.insert(&u.name) {
                return Err(invalid(
                    format!("units[{i}]"),
                    format!("two units are named {:?}", u.name),
                ));
            }
        }
        if spec.modes.is_empty() {
            return Err(invalid("modes", "no modes: add at least one"));
        }
        let mut mode_names = std::collections::HashSet::new();
        for (i, m) in spec.modes.iter().enumerate() {
            let place = format!("modes[{i}] \"{}\"", m.name);
            // Policies and profiles name modes: a second one of a name
            // could never be chosen.
            if !mode_names.insert(&m.name) {
                return Err(invalid(
                    place,
                    "two modes share this name; names must be unique",
                ));
            }
            if m.budget_w.is_some_and(|b| !positive(b)) {
                return Err(invalid(
                    place,
                    "budget_w must be a positive number of watts",
                ));
            }
            for k in UnitKind::ALL {
                if !positive(m.clocks_mhz.get(k)) || !non_negative(m.busy_w.get(k)) {
                    return Err(invalid(
                        place,
                        format!(
                            "clocks_mhz.{0} must be positive and busy_w.{0} ≥ 0",
                            k.name()
                        ),
                    ));
                }
            }
            if !(non_negative(m.idle_w) && m.idle_w <= MAX_WATTS)
                || m.cap_w.is_some_and(|c| !positive(c))
                || UnitKind::ALL.iter().any(|&k| m.busy_w.get(k) > MAX_WATTS)
            {
                return Err(invalid(
                    place,
                    format!("idle_w and busy_w must be in [0, {MAX_WATTS}] W and cap_w positive"),
                ));
            }
            if let Some(budget) = m.budget_w {
                let full = spec.units.iter().map(|u| m.busy_w.get(u.kind)).sum::<f64>() + m.idle_w
                    - spec.board_w;
                // 2% slack for rounding in the file's figures.
                if full > budget * 1.02 {
                    return Err(invalid(
                        place,
                        format!(
                            "modelled full-load module power {full:.2} W (idle_w + every unit's \
                             busy_w − board_w) exceeds the mode's budget {budget} W; lower busy_w"
                        ),
                    ));
                }
            }
        }
        let reference = spec
            .modes
            .iter()
            .position(|m| m.name == spec.reference_mode)
            .ok_or_else(|| {
                invalid(
                    "reference_mode",
                    format!("no mode named {:?}", spec.reference_mode),
                )
            })?;
        let fastest = &spec.modes[reference].clocks_mhz;
        for m in &spec.modes {
            for k in UnitKind::ALL {
                if m.clocks_mhz.get(k) > fastest.get(k) {
                    return Err(invalid(
                        "reference_mode",
                        format!(
                            "the reference mode {:?} must be the fastest, but mode {:?} clocks \
                             the {} higher ({} > {} MHz); costs are given at the reference mode",
                            spec.reference_mode,
                            m.name,
                            k.name(),
                            m.clocks_mhz.get(k),
                            fastest.get(k)
                        ),
                    ));
                }
            }
        }
        for k in UnitKind::ALL {
            let cv = spec.service_cv.get(k);
            if !(non_negative(spec.clock_exponent.get(k)) && non_negative(cv) && cv <= MAX_CV) {
                return Err(invalid(
                    "clock_exponent / service_cv",
                    format!(
                        "{} values must be ≥ 0 (service_cv at most {MAX_CV})",
                        k.name()
                    ),
                ));
            }
        }
        if !(non_negative(spec.contention) && spec.contention <= 1.0) {
            return Err(invalid(
                "contention",
                "must be in [0, 1]: the stretch of a job per fully busy neighbour (1 doubles it)",
            ));
        }
        if !(non_negative(spec.board_w) && spec.board_w <= MAX_WATTS) {
            return Err(invalid(
                "board_w",
                format!("must be ≥ 0 and at most {MAX_WATTS} W"),
            ));
        }
        if let Some(u) = &spec.emulated_unit {
            if !spec.units.iter().any(|x| &x.name == u) {
                return Err(invalid("emulated_unit", format!("no unit named {u:?}")));
            }
        }
        let mut models = HashMap::new();
        for (i, c) in spec.models.iter().enumerate() {
            let place = format!("models[{i}] \"{}\"", c.name);
            if UnitKind::ALL.iter().all(|&k| c.ms(k).is_none()) {
                return Err(invalid(
                    place,
                    "no unit kind can run it: give gpu_ms, dla_ms or cpu_ms",
                ));
            }
            // At most an hour: the simulator turns them into durations,
            // and a pass longer than a trace hour is no model of a DNN.
            if UnitKind::ALL.iter().any(|&k| {
                c.ms(k)
                    .is_some_and(|x| !positive(x) || !(0.001..=3_600_000.0).contains(&x))
            }) {
                return Err(invalid(
                    place,
                    "service times must be milliseconds from 0.001 (1 µs) to an hour (3600000)",
                ));
            }
            if c.service_cv
                .is_some_and(|cv| !(non_negative(cv) && cv <= MAX_CV))
            {
                return Err(invalid(
                    place,
                    format!("service_cv must be ≥ 0 and at most {MAX_CV}"),
                ));
            }
            if models.insert(c.name.clone(), i).is_some() {
                return Err(invalid(place, "two entries share this name"));
            }
        }
        // Every derived service time must stay a sane duration: a slipped
        // decimal point in a clock exponent (72.55 for 0.7255) slows a mode
        // by 10^22, and the throttle and the shedding test turn that into
        // durations (a panic, not an error, far from the file).
        for m in &spec.modes {
            for k in UnitKind::ALL {
                let slowdown =
                    (fastest.get(k) / m.clocks_mhz.get(k)).powf(spec.clock_exponent.get(k));
                if !(slowdown.is_finite() && slowdown <= MAX_SLOWDOWN) {
                    return Err(invalid(
                        "clock_exponent",
                        format!(
                            "mode {:?} would run the {} {slowdown:.3e}× slower than {:?} \
                             ((clock ratio)^clock_exponent; at most {MAX_SLOWDOWN}); check \
                             clock_exponent.{} and the mode's clocks_mhz",
                            m.name,
                            k.name(),
                            spec.reference_mode,
                            k.name()
                        ),
                    ));
                }
                for c in &spec.models {
                    if c.ms(k).is_some_and(|ms| ms * slowdown > 3_600_000.0) {
                        return Err(invalid(
                            format!("models \"{}\"", c.name),
                            format!(
                                "{}_ms × mode {:?}'s slowdown is over an hour a pass",
                                k.name(),
                                m.name
                            ),
                        ));
                    }
                }
            }
        }
        Ok(DeviceModel {
            spec,
            reference,
            models,
        })
    }

    /// The description.
    pub fn spec(&self) -> &DeviceSpec {
        &self.spec
    }

    /// Name in reports.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The modes.
    pub fn modes(&self) -> &[ModeSpec] {
        &self.spec.modes
    }

    /// The mode with this name.
    pub fn mode_by_name(&self, name: &str) -> Option<ModeId> {
        self.spec.modes.iter().position(|m| m.name == name)
    }

    /// The reference (fastest) mode.
    pub fn reference_mode(&self) -> ModeId {
        self.reference
    }

    /// A mode's GPU, DLA and CPU clocks as fractions of the reference mode's.
    pub fn mode_fracs(&self, mode: ModeId) -> [f64; 3] {
        let r = &self.spec.modes[self.reference].clocks_mhz;
        let m = &self.spec.modes[mode].clocks_mhz;
        [m.gpu / r.gpu, m.dla / r.dla, m.cpu / r.cpu]
    }

    /// The mode a power cap selects: the highest `cap_w` at or under the
    /// cap, or the lowest-capped mode when the cap is below all of them.
    /// Modes without `cap_w` are never selected by a cap.
    pub fn mode_for_cap(&self, cap_w: f64) -> ModeId {
        let capped: Vec<(ModeId, f64)> = self
            .spec
            .modes
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.cap_w.map(|c| (i, c)))
            .collect();
        pick_for_cap(&capped, cap_w, |&(_, c)| c).map_or(self.reference, |&(i, _)| i)
    }

    /// The largest cap any mode has (the uncapped device).
    pub fn max_cap_w(&self) -> f64 {
        self.spec
            .modes
            .iter()
            .filter_map(|m| m.cap_w)
            .fold(0.0, f64::max)
    }

    /// How many times longer a pass takes on a unit of `kind` at `mode` than
    /// at the reference mode.
    pub fn slowdown(&self, mode: ModeId, kind: UnitKind) -> f64 {
        let f_ref = self.spec.modes[self.reference].clocks_mhz.get(kind);
        let f = self.spec.modes[mode].clocks_mhz.get(kind);
        (f_ref / f).powf(self.spec.clock_exponent.get(kind))
    }

    /// The cost entry of a model variant.
    pub fn model(&self, variant: &str) -> Option<&ModelCost> {
        self.models.get(variant).map(|&i| &self.spec.models[i])
    }

    /// Mean service time (s) of `variant` on a unit of `kind` at `mode`,
    /// without contention; `None` if that kind cannot run it.
    pub fn service_s(&self, variant: &str, kind: UnitKind, mode: ModeId) -> Option<f64> {
        let ms = self.model(variant)?.ms(kind)?;
        Some(ms / 1000.0 * self.slowdown(mode, kind))
    }

    /// Coefficient of variation of one service time of `variant` on a unit
    /// of `kind`: the variant's own figure where the description gives one,
    /// else the kind's.
    pub fn service_cv(&self, variant: &str, kind: UnitKind) -> f64 {
        self.model(variant)
            .and_then(|c| c.service_cv)
            .unwrap_or_else(|| self.spec.service_cv.get(kind))
    }

    /// Stretch of a job that starts at `mode` while `others_busy` other
    /// units are busy: `1 + contention × others_busy` with lower clocks
    /// ([`Throttle::Clock`](spec::Throttle::Clock)); with the host's
    /// sleeping throttle ([`Throttle::Sleep`](spec::Throttle::Sleep)) a busy
    /// unit computes for only `1 / slowdown` of the time (the slowdown of
    /// the unit the host's workers stand for), and contends only then.
    pub fn contention_factor(&self, others_busy: usize, mode: ModeId) -> f64 {
        let computing = match self.spec.throttle {
            spec::Throttle::Clock => 1.0,
            spec::Throttle::Sleep => {
                let kind = self.spec.units[self.emulated_unit()].kind;
                1.0 / self.slowdown(mode, kind)
            }
        };
        debug_assert!(
            computing > 0.0 && computing <= 1.0 + 1e-9,
            "a share of busy time"
        );
        1.0 + self.spec.contention * computing * others_busy as f64
    }

    /// Modelled wall power (W) at `mode` with each unit busy for the given
    /// fraction of the time (`busy[u]` in [0, 1], one per unit).
    pub fn power_w(&self, mode: ModeId, busy: &[f64]) -> f64 {
        let m = &self.spec.modes[mode];
        m.idle_w
            + self
                .spec
                .units
                .iter()
                .zip(busy)
                .map(|(u, b)| b.clamp(0.0, 1.0) * m.busy_w.get(u.kind))
                .sum::<f64>()
    }

    /// Index of the unit the runtime's workers stand for under emulation.
    pub fn emulated_unit(&self) -> usize {
        let name = self.spec.emulated_unit.as_deref();
        self.spec
            .units
            .iter()
            .position(|u| Some(u.name.as_str()) == name)
            .unwrap_or(0)
    }
}

/// What a power cap selects among `items` of a given `budget` (watts):
/// the largest budget at or under the cap, or the smallest when the cap is
/// below all of them; `None` only when there are none. The simulated
/// device's modes and a real Jetson's nvpmodel modes and clock levels are
/// all chosen by this one rule.
pub fn pick_for_cap<T>(items: &[T], cap_w: f64, budget: impl Fn(&T) -> f64) -> Option<&T> {
    items
        .iter()
        .filter(|i| budget(i) <= cap_w)
        .max_by(|a, b| budget(a).total_cmp(&budget(b)))
        .or_else(|| items.iter().min_by(|a, b| budget(a).total_cmp(&budget(b))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn shipped(name: &str) -> DeviceModel {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("rt-config/devices")
            .join(name);
        DeviceModel::load(&p).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_shipped_xavier_loads_and_is_calibrated_on_mlperf_maxq() {
        let x = shipped("xavier.ron");
        let maxn = x.mode_by_name("MAXN").unwrap();
        let maxq = x.mode_by_name("MLPERF_MAXQ").unwrap();
        assert_eq!(x.reference_mode(), maxn);
        assert_eq!(x.slowdown(maxn, UnitKind::Gpu), 1.0);
        // MLPerf v1.0 ResNet-50 SingleStream: 1.951 ms MaxP vs 3.172 ms
        // MaxQ (1.626x); SSD-MobileNet 1.728x. The fitted exponent lands
        // between the two.
        let s = x.slowdown(maxq, UnitKind::Gpu);
        assert!((1.60..=1.75).contains(&s), "MaxQ GPU slowdown {s}");
        // Wall power at MaxQ: idle ≈ 9.6 W, GPU + both DLAs busy ≈ 23.3–25.4 W
        // (mlperf_power_agx_xavier_maxq.csv, v1.0 Offline rows).
        let units = x.spec().units.len();
        let mut busy = vec![0.0; units];
        assert!((x.power_w(maxq, &busy) - 9.6).abs() < 0.2);
        for (b, u) in busy.iter_mut().zip(&x.spec().units) {
            if u.kind != UnitKind::Cpu {
                *b = 1.0;
            }
        }
        let full = x.power_w(maxq, &busy);
        assert!((23.3..=25.4).contains(&full), "MaxQ full load {full} W");
        // Caps select modes; slower modes are slower and cheaper.
        let m10 = x.mode_for_cap(10.0);
        assert_eq!(x.modes()[m10].name, "MODE_10W");
        assert_eq!(x.mode_for_cap(1.0), m10);
        assert_eq!(x.mode_for_cap(1000.0), maxn);
        assert!(x.slowdown(m10, UnitKind::Gpu) > s);
        assert!(x.power_w(m10, &busy) < full);
        assert!(
            x.service_s("resnet50", UnitKind::Dla, maxn).unwrap()
                > x.service_s("resnet50", UnitKind::Gpu, maxn).unwrap()
        );
    }

    #[test]
    fn the_shipped_host_description_loads() {
        let h = shipped("host.ron");
        assert!(h.spec().units.iter().all(|u| u.kind == UnitKind::Cpu));
        assert!(
            h.service_s("resnet50", UnitKind::Cpu, h.reference_mode())
                .unwrap()
                > 0.05
        );
        // The host's modes sleep after each pass: a busy neighbour contends
        // fully at the reference mode and for 1/slowdown of the time below.
        let (maxn, m15) = (h.reference_mode(), h.mode_for_cap(15.0));
        let c = h.spec().contention;
        assert!((h.contention_factor(1, maxn) - (1.0 + c)).abs() < 1e-12);
        let s = h.slowdown(m15, UnitKind::Cpu);
        assert!(s > 1.5, "MODE_15W slowdown {s}");
        assert!((h.contention_factor(1, m15) - (1.0 + c / s)).abs() < 1e-12);
        // The Xavier's modes lower clocks: contention does not depend on them.
        let x = shipped("xavier.ron");
        let m10 = x.mode_for_cap(10.0);
        let c = x.spec().contention;
        assert!((x.contention_factor(2, m10) - (1.0 + 2.0 * c)).abs() < 1e-12);
    }

    #[test]
    fn a_variant_measured_cv_overrides_its_kind_and_must_be_non_negative() {
        let mut spec = shipped("xavier.ron").spec().clone();
        let kind_cv = spec.service_cv.gpu;
        let i = spec
            .models
            .iter()
            .position(|m| m.name == "resnet50")
            .unwrap();
        spec.models[i].service_cv = Some(0.09);
        let x = DeviceModel::new(spec.clone()).unwrap();
        assert_eq!(x.service_cv("resnet50", UnitKind::Gpu), 0.09);
        assert_eq!(x.service_cv("resnet18", UnitKind::Gpu), kind_cv);
        // An unknown name (a synthetic model) takes the kind's figure.
        assert_eq!(x.service_cv("no-such-model", UnitKind::Gpu), kind_cv);
        for bad in [-0.1, f64::NAN, f64::INFINITY] {
            spec.models[i].service_cv = Some(bad);
            let e = DeviceModel::new(spec.clone()).unwrap_err();
            assert!(
                e.place.contains("resnet50") && e.message.contains("service_cv"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_mode_over_its_budget_is_refused() {
        let mut spec = shipped("xavier.ron").spec().clone();
        let i = spec
            .modes
            .iter()
            .position(|m| m.name == "MODE_10W")
            .unwrap();
        spec.modes[i].busy_w.gpu = 50.0;
        let e = DeviceModel::new(spec).unwrap_err();
        assert!(
            e.place.contains("MODE_10W") && e.message.contains("budget"),
            "{e}"
        );
    }

    #[test]
    fn a_second_mode_of_a_name_a_bad_budget_and_an_endless_pass_are_refused() {
        let good = shipped("xavier.ron").spec().clone();
        let mut spec = good.clone();
        let copy = spec.modes[1].clone();
        spec.modes.push(copy);
        let e = DeviceModel::new(spec).unwrap_err();
        assert!(e.message.contains("two modes share this name"), "{e}");
        let mut spec = good.clone();
        spec.modes[0].budget_w = Some(f64::NAN);
        let e = DeviceModel::new(spec).unwrap_err();
        assert!(e.message.contains("budget_w must be"), "{e}");
        let mut spec = good;
        spec.models[0].gpu_ms = Some(1e22);
        let e = DeviceModel::new(spec).unwrap_err();
        assert!(e.message.contains("to an hour"), "{e}");
    }

    /// Figures that would turn into absurd durations or watts far from
    /// the file (a panic in the throttle or the shedding test) are refused
    /// where they are written.
    #[test]
    fn a_slipped_decimal_point_is_refused_not_a_panic_later() {
        let good = shipped("xavier.ron").spec().clone();
        let mut spec = good.clone();
        spec.clock_exponent.gpu *= 100.0;
        let e = DeviceModel::new(spec).unwrap_err();
        assert!(
            e.place == "clock_exponent"
                && e.message.contains("slower")
                && e.message.contains("gpu"),
            "{e}"
        );
        // Within the slowdown bound, a pass that the slowest mode makes
        // longer than an hour.
        let mut spec = good.clone();
        spec.models[0].gpu_ms = Some(3_000_000.0);
        let e = DeviceModel::new(spec).unwrap_err();
        assert!(e.message.contains("over an hour a pass"), "{e}");
        let mut spec = good.clone();
        spec.service_cv.gpu = 1e200;
        let e = DeviceModel::new(spec).unwrap_err();
        assert!(e.message.contains("service_cv at most"), "{e}");
        let mut spec = good.clone();
        spec.contention = 5.0;
        let e = DeviceModel::new(spec).unwrap_err();
        assert!(e.message.contains("[0, 1]"), "{e}");
        let mut spec = good;
        spec.modes[0].idle_w = 9e9;
        let e = DeviceModel::new(spec).unwrap_err();
        assert!(e.message.contains("idle_w and busy_w"), "{e}");
    }
}
