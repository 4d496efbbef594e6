//! Workload files: the tenants ecomap serves.
//!
//! ```ron
//! (
//!     seed: 7,
//!     tenants: [
//!         (
//!             name: "detector",
//!             model: Vision(MobileNetV2),
//!             arrival: Periodic(rate_hz: 30.0, jitter: "2ms"),
//!             deadline: "100ms",
//!             capacity: 8,
//!             priority: 2,
//!         ),
//!     ],
//! )
//! ```

use super::{load_ron, ConfigError};
use crate::arrival::ArrivalProcess;
use crate::catalog::{Catalog, Variant};
use crate::model::ModelSpec;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

/// Most requests one tenant may queue (its channel is allocated up front).
pub const MAX_CAPACITY: usize = 1 << 20;

/// One tenant: a stream of requests for one model.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    /// Unique name, used in reports and file names.
    pub name: String,
    /// The model its requests run.
    pub model: ModelSpec,
    /// When its requests arrive.
    pub arrival: ArrivalProcess,
    /// Relative deadline of each request, e.g. "33ms".
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// Most requests the tenant may have queued (admitted, not yet started);
    /// a submission beyond that is rejected.
    pub capacity: usize,
    /// Breaks ties between equal deadlines: higher goes first. Default 0.
    #[serde(default)]
    pub priority: u8,
    /// Execution units of a simulated device that may serve it, by name
    /// (`ecomap simulate --device`), e.g. `Some(["gpu"])`; `None`: every unit
    /// that can run all its variants. The runtime maps tenants to workers
    /// in the rt-config instead and ignores this.
    #[serde(default)]
    pub units: Option<Vec<String>>,
    /// Whether requests of this tenant that are predicted to miss are shed
    /// (dropped before they start); `None`: the policy's `shedding`. Set
    /// `Some(false)` for a tenant that wants late results rather than none.
    #[serde(default)]
    pub shed: Option<bool>,
    /// Further units of a simulated device a mapping planner may move this
    /// tenant to (it holds its variants there too), e.g. `Some(["dla0"])`;
    /// it starts on `units`.
    #[serde(default)]
    pub movable_to: Option<Vec<String>>,
    /// Lowest published top-1 accuracy (%) a planner may serve this tenant
    /// at, e.g. `Some(75.0)`; `None`: any variant of its family.
    #[serde(default)]
    pub accuracy_floor: Option<f64>,
    /// The variants it may be served by, heaviest first (resolved from the
    /// catalog for a `Family`; else the one `model`).
    #[serde(skip)]
    pub resolved: Vec<Variant>,
}

impl TenantSpec {
    /// The variants this tenant may be served by, heaviest first.
    pub fn variants(&self) -> Vec<Variant> {
        if self.resolved.is_empty() {
            vec![Variant {
                name: self.model.to_string(),
                model: self.model.clone(),
                top1: None,
            }]
        } else {
            self.resolved.clone()
        }
    }
}

/// A workload file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Seed for arrival jitter and Poisson gaps; same seed, same arrivals.
    #[serde(default)]
    pub seed: u64,
    /// Model catalog for tenants whose model is a `Family`, relative to
    /// this file's folder, e.g. "../policies/models.ron".
    #[serde(default)]
    pub catalog: Option<std::path::PathBuf>,
    /// The tenants, at most 65,535.
    pub tenants: Vec<TenantSpec>,
}

impl Workload {
    /// Read, validate and resolve a workload file. Relative TorchScript paths
    /// are taken relative to the file's folder.
    pub fn load(path: &Path) -> Result<Workload, ConfigError> {
        let mut w: Workload = load_ron(path, "workload")?;
        let base = path.parent().unwrap_or(Path::new("."));
        for t in &mut w.tenants {
            if let ModelSpec::TorchScript { path: p, .. } = &mut t.model {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        w.resolve_families(path)?;
        w.validate(path)?;
        Ok(w)
    }

    /// Resolve `Family` models against the catalog.
    fn resolve_families(&mut self, path: &Path) -> Result<(), ConfigError> {
        let uses_family = self
            .tenants
            .iter()
            .any(|t| matches!(t.model, ModelSpec::Family(_)));
        let Some(cat_path) = &self.catalog else {
            if !uses_family {
                return Ok(());
            }
            return Err(ConfigError::invalid(
                path,
                "catalog",
                "a tenant names a model Family, but the workload has no `catalog`; add e.g. \
                 `catalog: \"../policies/models.ron\"`",
            ));
        };
        // A catalog the file names is checked even when no tenant uses it
        // yet: a wrong path should not wait for the first Family to show.
        let base = path.parent().unwrap_or(Path::new("."));
        let catalog = Catalog::load(&base.join(cat_path))?;
        if !uses_family {
            return Ok(());
        }
        for (i, t) in self.tenants.iter_mut().enumerate() {
            if let ModelSpec::Family(name) = &t.model {
                let f = catalog.family(name).ok_or_else(|| {
                    ConfigError::invalid(
                        path,
                        format!("tenants[{i}] \"{}\".model", t.name),
                        format!(
                            "no family {name:?} in the catalog; it has {:?}",
                            catalog.families.iter().map(|f| &f.name).collect::<Vec<_>>()
                        ),
                    )
                })?;
                t.resolved = f.variants.clone();
            }
        }
        Ok(())
    }

    /// Check every value; `path` is used in messages.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        if self.tenants.is_empty() {
            return Err(ConfigError::invalid(
                path,
                "tenants",
                "no tenants: add at least one (name, model, arrival, deadline, capacity)",
            ));
        }
        if self.tenants.len() > usize::from(u16::MAX) {
            return Err(ConfigError::invalid(
                path,
                "tenants",
                format!("{} tenants; at most 65535", self.tenants.len()),
            ));
        }
        let mut names = HashSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let place = |field: &str| format!("tenants[{i}] \"{}\".{field}", t.name);
            if !super::is_file_safe_name(&t.name) {
                return Err(ConfigError::invalid(
                    path,
                    format!("tenants[{i}].name"),
                    format!(
                        "name {:?} must be non-empty and use only letters, digits, '-' and '_', \
                         without '__' (it names output files)",
                        t.name
                    ),
                ));
            }
            if t.name == "all" {
                return Err(ConfigError::invalid(
                    path,
                    format!("tenants[{i}].name"),
                    "\"all\" names the all-tenant rows of summaries and reports; call the \
                     tenant something else",
                ));
            }
            if !names.insert(t.name.as_str()) {
                return Err(ConfigError::invalid(
                    path,
                    place("name"),
                    "two tenants share this name; names must be unique",
                ));
            }
            t.arrival
                .validate()
                .map_err(|m| ConfigError::invalid(path, place("arrival"), m))?;
            if t.deadline.is_zero() {
                return Err(ConfigError::invalid(
                    path,
                    place("deadline"),
                    "deadline must be positive, e.g. \"33ms\"",
                ));
            }
            if t.capacity > MAX_CAPACITY {
                return Err(ConfigError::invalid(
                    path,
                    place("capacity"),
                    format!(
                        "capacity {} is above {MAX_CAPACITY}; a tenant queue that long holds \
                         requests whose deadlines pass long before they start",
                        t.capacity
                    ),
                ));
            }
            if t.capacity == 0 {
                return Err(ConfigError::invalid(
                    path,
                    place("capacity"),
                    "capacity must be at least 1 (the number of requests the tenant may queue)",
                ));
            }
            t.model
                .validate()
                .map_err(|m| ConfigError::invalid(path, place("model"), m))?;
            if let Some(f) = t.accuracy_floor {
                if !(f.is_finite() && (0.0..=100.0).contains(&f)) {
                    return Err(ConfigError::invalid(
                        path,
                        place("accuracy_floor"),
                        format!("accuracy_floor is a top-1 percentage in 0..=100, got {f}"),
                    ));
                }
            }
            // An empty list reads as "no unit may serve it" (the device's
            // error would then blame a model), a repeated one as a typo.
            for (field, list) in [("units", &t.units), ("movable_to", &t.movable_to)] {
                if let Some(list) = list {
                    let repeated = list
                        .iter()
                        .enumerate()
                        .find(|(i, u)| list[..*i].contains(u));
                    if list.is_empty() {
                        return Err(ConfigError::invalid(
                            path,
                            place(field),
                            format!(
                                "{field} is an empty list; name at least one unit, e.g. \
                                 Some([\"gpu\"]), or leave it out"
                            ),
                        ));
                    }
                    if let Some((_, u)) = repeated {
                        return Err(ConfigError::invalid(
                            path,
                            place(field),
                            format!("{field} names unit {u:?} twice"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The same workload with every arrival rate multiplied by `factor`;
    /// `Err` says which tenant's rate the factor takes out of range.
    pub fn scaled(&self, factor: f64) -> Result<Workload, String> {
        let mut w = self.clone();
        for t in &mut w.tenants {
            t.arrival = t.arrival.scaled(factor).map_err(|m| {
                format!(
                    "load factor {factor} gives tenant '{}' an invalid arrival rate: {m}",
                    t.name
                )
            })?;
        }
        Ok(w)
    }

    /// Which tenants shed requests predicted to miss, given the policy's
    /// default.
    pub fn shed_mask(&self, policy_default: bool) -> Vec<bool> {
        self.tenants
            .iter()
            .map(|t| t.shed.unwrap_or(policy_default))
            .collect()
    }

    /// `top1[t][v]`: published accuracy of tenant `t`'s variant `v`, if known.
    pub fn top1_table(&self) -> Vec<Vec<Option<f64>>> {
        self.tenants
            .iter()
            .map(|t| t.variants().iter().map(|v| v.top1).collect())
            .collect()
    }

    /// Index of the tenant called `name`.
    pub fn tenant_index(&self, name: &str) -> Option<usize> {
        self.tenants.iter().position(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_ron;

    const GOOD: &str = r#"(
        seed: 3,
        tenants: [
            (name: "cam", model: Synthetic(service: "1ms"),
             arrival: Periodic(rate_hz: 30.0, jitter: "1ms"), deadline: "33ms", capacity: 4),
            (name: "cls", model: Vision(ResNet18), arrival: Poisson(rate_hz: 5.0),
             deadline: "200ms", capacity: 2, priority: 1),
        ],
    )"#;

    fn parse(text: &str) -> Result<Workload, ConfigError> {
        let p = Path::new("w.ron");
        let w: Workload = parse_ron(text, p, "workload")?;
        w.validate(p)?;
        Ok(w)
    }

    #[test]
    fn a_good_file_parses() {
        let w = parse(GOOD).unwrap();
        assert_eq!(w.tenants.len(), 2);
        assert_eq!(w.tenants[0].deadline, Duration::from_millis(33));
        assert_eq!(w.tenants[1].priority, 1);
        assert_eq!(w.tenant_index("cls"), Some(1));
        assert_eq!(w.scaled(2.0).unwrap().tenants[1].arrival.rate_hz(), 10.0);
        let e = w.scaled(1e-25).unwrap_err();
        assert!(e.contains("load factor") && e.contains("below"), "{e}");
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn malformed_ron_names_file_line_and_column() {
        let e = err("(\n  tenants: [\n    (name: \"a\" model: Vision(ResNet18))\n  ]\n)");
        assert!(e.starts_with("w.ron:3:"), "{e}");
        assert!(e.contains("hint:"), "{e}");
    }

    #[test]
    fn unknown_model_and_field_are_named() {
        let e = err(&GOOD.replace("ResNet18", "ResNet99"));
        assert!(e.contains("ResNet99") && e.contains("MobileNetV2"), "{e}");
        let e = err(&GOOD.replace("capacity: 4", "capacity: 4, colour: 1"));
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_with_their_place() {
        let e = err(&GOOD.replace("rate_hz: 30.0", "rate_hz: 0.0"));
        assert!(
            e.contains("tenants[0] \"cam\".arrival") && e.contains("positive"),
            "{e}"
        );
        let e = err(&GOOD.replace("rate_hz: 5.0", "rate_hz: -5.0"));
        assert!(e.contains("tenants[1] \"cls\".arrival"), "{e}");
        let e = err(&GOOD.replace("\"33ms\"", "\"0ms\""));
        assert!(e.contains("deadline must be positive"), "{e}");
        let e = err(&GOOD.replace("\"33ms\"", "\"33 parsecs\""));
        assert!(e.contains("w.ron:"), "{e}");
        let e = err(&GOOD.replace("capacity: 4", "capacity: 0"));
        assert!(e.contains("capacity must be at least 1"), "{e}");
        let e = err(&GOOD.replace("\"cls\"", "\"cam\""));
        assert!(e.contains("share this name"), "{e}");
        let e = err(&GOOD.replace("\"cls\"", "\"a b\""));
        assert!(e.contains("letters, digits"), "{e}");
        let e = err(&GOOD.replace("\"cls\"", "\"a__b\""));
        assert!(e.contains("without '__'"), "{e}");
        let e = err(&GOOD.replace("\"cls\"", "\"all\""));
        assert!(e.contains("all-tenant rows"), "{e}");
        let e = err("(tenants: [])");
        assert!(e.contains("no tenants"), "{e}");
        let e = err(&GOOD.replace(
            "Vision(ResNet18)",
            "TorchScript(path: \"/nonexistent/m.pt\", input_shape: [1, 3])",
        ));
        assert!(e.contains("/nonexistent/m.pt does not exist"), "{e}");
        let e = err(&GOOD.replace("capacity: 4", "capacity: 4, units: Some([])"));
        assert!(
            e.contains("tenants[0] \"cam\".units") && e.contains("empty list"),
            "{e}"
        );
        let e = err(&GOOD.replace(
            "capacity: 4",
            "capacity: 4, movable_to: Some([\"dla0\", \"dla0\"])",
        ));
        assert!(e.contains("movable_to names unit \"dla0\" twice"), "{e}");
        let e = err(&GOOD.replace("Vision(ResNet18)", "Synthetic(service: \"2h\")"));
        assert!(e.contains("at most an hour"), "{e}");
        // An example input allocated at load, with no example_shape given.
        let e = err(&GOOD.replace(
            "Vision(ResNet18)",
            "TorchScript(path: \"m.pt\", input_shape: [1, 3, 100000, 100000])",
        ));
        assert!(
            e.contains("example input") && e.contains("frame-sized"),
            "{e}"
        );
    }

    #[test]
    fn unreadable_file_is_reported() {
        let e = Workload::load(Path::new("/nonexistent/w.ron"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/w.ron: cannot read"), "{e}");
    }
}
