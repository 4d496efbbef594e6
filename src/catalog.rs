//! The model catalog: families of interchangeable models, heaviest first.
//!
//! ```ron
//! (families: [
//!     (name: "imagenet-resnet", variants: [
//!         (name: "resnet50", model: Vision(ResNet50), top1: 76.130),
//!         (name: "resnet18", model: Vision(ResNet18), top1: 69.758),
//!     ]),
//! ])
//! ```
//!
//! A tenant whose `model` is `Family("imagenet-resnet")` may be served by
//! any variant; the quality controller picks which (see [`crate::quality`]).

use crate::config::{load_ron, ConfigError};
use crate::model::ModelSpec;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// One model of a family.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Name in reports.
    pub name: String,
    /// What to run.
    pub model: ModelSpec,
    /// Published ImageNet top-1 accuracy (%), if known.
    #[serde(default)]
    pub top1: Option<f64>,
}

/// Interchangeable models, heaviest (most accurate) first.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Family {
    /// Name tenants refer to.
    pub name: String,
    /// Variants, heaviest first.
    pub variants: Vec<Variant>,
}

/// A catalog file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// The families.
    pub families: Vec<Family>,
}

impl Catalog {
    /// Read and validate a catalog; relative TorchScript paths are resolved
    /// against its folder, and every file must exist.
    pub fn load(path: &Path) -> Result<Catalog, ConfigError> {
        let mut c: Catalog = load_ron(path, "model catalog")?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut names = HashSet::new();
        if c.families.is_empty() {
            return Err(ConfigError::invalid(
                path,
                "families",
                "no families: add at least one",
            ));
        }
        for (i, f) in c.families.iter_mut().enumerate() {
            let place = format!("families[{i}] \"{}\"", f.name);
            if !names.insert(f.name.clone()) {
                return Err(ConfigError::invalid(
                    path,
                    place,
                    "two families share this name",
                ));
            }
            if f.variants.is_empty() {
                return Err(ConfigError::invalid(
                    path,
                    place,
                    "a family needs at least one variant",
                ));
            }
            for (j, v) in f.variants.iter_mut().enumerate() {
                let vplace = format!("{place}.variants[{j}] \"{}\"", v.name);
                if let ModelSpec::TorchScript { path: p, .. } = &mut v.model {
                    if p.is_relative() {
                        *p = base.join(&*p);
                    }
                }
                if matches!(v.model, ModelSpec::Family(_)) {
                    return Err(ConfigError::invalid(
                        path,
                        vplace,
                        "a variant cannot be another family",
                    ));
                }
                v.model
                    .validate()
                    .map_err(|m| ConfigError::invalid(path, format!("{vplace}.model"), m))?;
                if let Some(a) = v.top1 {
                    if !(0.0..=100.0).contains(&a) {
                        return Err(ConfigError::invalid(
                            path,
                            format!("{vplace}.top1"),
                            format!("top-1 accuracy is a percentage in 0..=100, got {a}"),
                        ));
                    }
                }
            }
            // The planner and the quality controller trade accuracy between
            // a family's variants: one without a figure would count as
            // losing nothing.
            let known = f.variants.iter().filter(|v| v.top1.is_some()).count();
            if known > 0 && known < f.variants.len() {
                let (j, v) = f
                    .variants
                    .iter()
                    .enumerate()
                    .find(|(_, v)| v.top1.is_none())
                    .expect("some variant lacks top1");
                return Err(ConfigError::invalid(
                    path,
                    format!("{place}.variants[{j}] \"{}\".top1", v.name),
                    "no published accuracy, while other variants of the family have one: a \
                     variant without one would count as losing no accuracy; give every variant \
                     its top1, or none",
                ));
            }
        }
        // Device costs, descriptors, variant shares and `profile
        // --variants` look variants up by name: two different models of
        // one name would silently share one cost. (The same model listed
        // in two families, under one name, is fine.)
        let mut seen: HashMap<&str, (&str, &ModelSpec)> = HashMap::new();
        for f in &c.families {
            let mut in_family: HashSet<&str> = HashSet::new();
            for v in &f.variants {
                let place = || format!("families \"{}\" variant \"{}\"", f.name, v.name);
                if !in_family.insert(&v.name) {
                    return Err(ConfigError::invalid(
                        path,
                        place(),
                        "two variants of the family share this name; give each its own",
                    ));
                }
                match seen.get(v.name.as_str()) {
                    Some((family, model)) if *model != &v.model => {
                        return Err(ConfigError::invalid(
                            path,
                            place(),
                            format!(
                                "the name is already used by a variant of family \"{family}\" \
                                 for another model; device costs and profiles look variants up \
                                 by name, so give each model its own"
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(&v.name, (&f.name, &v.model));
                    }
                }
            }
        }
        Ok(c)
    }

    /// The family called `name`.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Catalog, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("models.ron");
        std::fs::write(&p, text).unwrap();
        Catalog::load(&p).map_err(|e| e.to_string())
    }

    #[test]
    fn a_good_catalog_loads() {
        let c = load(
            r#"(families: [(name: "f", variants: [
                (name: "big", model: Vision(ResNet50), top1: 76.13),
                (name: "small", model: Synthetic(service: "1ms"), top1: 50.0),
            ])])"#,
        )
        .unwrap();
        assert_eq!(c.family("f").unwrap().variants.len(), 2);
        assert!(c.family("g").is_none());
        // Either every variant of a family has a published accuracy, or none.
        let e = load(
            r#"(families: [(name: "f", variants: [
                (name: "big", model: Vision(ResNet50), top1: 76.13),
                (name: "small", model: Synthetic(service: "1ms")),
            ])])"#,
        )
        .unwrap_err();
        assert!(e.contains("\"small\".top1") && e.contains("or none"), "{e}");
        assert!(load(
            r#"(families: [(name: "f", variants: [
                (name: "a", model: Synthetic(service: "2ms")),
                (name: "b", model: Synthetic(service: "1ms")),
            ])])"#,
        )
        .is_ok());
    }

    #[test]
    fn missing_files_unknown_builtins_and_bad_values_are_refused() {
        let e = load(
            r#"(families: [(name: "f", variants: [
                (name: "ts", model: TorchScript(path: "nope.pt", input_shape: [1, 3, 8, 8])),
            ])])"#,
        )
        .unwrap_err();
        assert!(
            e.contains("variants[0] \"ts\".model") && e.contains("nope.pt does not exist"),
            "{e}"
        );
        let e = load(
            r#"(families: [(name: "f", variants: [(name: "x", model: Vision(ResNet1000))])])"#,
        )
        .unwrap_err();
        assert!(e.contains("ResNet1000"), "{e}");
        let e = load(r#"(families: [(name: "f", variants: [])])"#).unwrap_err();
        assert!(e.contains("at least one variant"), "{e}");
        let e = load(
            r#"(families: [(name: "f", variants: [(name: "x", model: Vision(ResNet18), top1: 170.0)])])"#,
        )
        .unwrap_err();
        assert!(e.contains("percentage"), "{e}");
        // Variants are looked up by name: two models of one name are refused.
        let e = load(
            r#"(families: [(name: "f", variants: [
                (name: "a", model: Synthetic(service: "2ms")),
                (name: "a", model: Synthetic(service: "2ms")),
            ])])"#,
        )
        .unwrap_err();
        assert!(
            e.contains("variant \"a\"") && e.contains("share this name"),
            "{e}"
        );
        // Also when another family uses the name for the same model.
        let e = load(
            r#"(families: [
                (name: "f", variants: [(name: "a", model: Vision(ResNet18))]),
                (name: "g", variants: [(name: "a", model: Vision(ResNet18)),
                                       (name: "a", model: Vision(ResNet18))]),
            ])"#,
        )
        .unwrap_err();
        assert!(
            e.contains("\"g\" variant \"a\"") && e.contains("share this name"),
            "{e}"
        );
        let e = load(
            r#"(families: [
                (name: "f", variants: [(name: "a", model: Synthetic(service: "2ms"))]),
                (name: "g", variants: [(name: "a", model: Vision(ResNet18))]),
            ])"#,
        )
        .unwrap_err();
        assert!(e.contains("family \"f\" for another model"), "{e}");
        // The same model in two families, under one name, is fine.
        assert!(load(
            r#"(families: [
                (name: "f", variants: [(name: "a", model: Vision(ResNet18))]),
                (name: "g", variants: [(name: "a", model: Vision(ResNet18))]),
            ])"#,
        )
        .is_ok());
    }

    #[test]
    fn the_shipped_catalog_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/models.ron");
        let c = Catalog::load(&p).unwrap();
        assert!(c
            .families
            .iter()
            .all(|f| f.variants.iter().all(|v| v.top1.is_some())));
    }
}
