//! An estimator computed from a device model (no learning): each tenant's
//! service is its variant's cost on its unit's kind × the mode's slowdown,
//! stretched by the contention of the other busy units; the tail follows
//! a log-normal of the variant's own spread (else its kind's); power is the model's
//! `idle + Σ busy × busy_w`. Every figure is **modelled**. It answers
//! where no trained estimator is given, and is the reference the learned
//! estimator is compared with on the virtual device.

use super::descriptors::Descriptors;
use super::{EstimateError, MappingEstimator, MappingPrediction, MappingQuery};
use crate::device::{DeviceModel, ModeId};

/// The device model as an estimator.
#[derive(Debug, Clone)]
pub struct AnalyticEstimator {
    device: DeviceModel,
    names: Vec<String>,
}

impl AnalyticEstimator {
    /// An estimator over `device`, whose queries index `descriptors`.
    pub fn new(device: DeviceModel, descriptors: &Descriptors) -> Self {
        AnalyticEstimator {
            device,
            names: descriptors
                .rows()
                .iter()
                .map(|d| d.variant.clone())
                .collect(),
        }
    }

    /// An estimator over `device` whose queries index `names` (variant
    /// names as the device description spells them).
    pub fn from_names(device: DeviceModel, names: Vec<String>) -> Self {
        AnalyticEstimator { device, names }
    }

    fn mode_of(&self, fracs: [f64; 3]) -> ModeId {
        (0..self.device.modes().len())
            .min_by(|&a, &b| {
                let d = |m| {
                    let f = self.device.mode_fracs(m);
                    (0..3).map(|k| (f[k] - fracs[k]).abs()).sum::<f64>()
                };
                d(a).total_cmp(&d(b))
            })
            .unwrap_or(0)
    }
}

impl MappingEstimator for AnalyticEstimator {
    fn predict(
        &mut self,
        queries: &[MappingQuery],
    ) -> Result<Vec<MappingPrediction>, EstimateError> {
        let units = self.device.spec().units.len();
        queries
            .iter()
            .map(|q| {
                let mode = self.mode_of(q.mode_fracs);
                let solo: Vec<f64> = q
                    .tenants
                    .iter()
                    .map(|p| {
                        let name = self.names.get(p.model).ok_or_else(|| {
                            EstimateError::Encode(format!("model index {}", p.model))
                        })?;
                        self.device.service_s(name, p.kind, mode).ok_or_else(|| {
                            EstimateError::Encode(format!(
                                "device '{}' has no {} cost for '{name}'",
                                self.device.name(),
                                p.kind.name()
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?;
                let mut util = vec![0.0; units];
                for (p, s) in q.tenants.iter().zip(&solo) {
                    util[p.unit.min(units - 1)] += p.rate_hz * s;
                }
                let total: f64 = util.iter().map(|u| u.min(1.0)).sum();
                let contention = self.device.contention_factor(1, mode) - 1.0;
                let p50: Vec<f64> = q
                    .tenants
                    .iter()
                    .zip(&solo)
                    .map(|(p, s)| {
                        let others = total - util[p.unit.min(units - 1)].min(1.0);
                        s * (1.0 + contention * others)
                    })
                    .collect();
                let p95 = q
                    .tenants
                    .iter()
                    .zip(&p50)
                    .map(|(p, s)| {
                        // The name was checked when `solo` was computed.
                        let cv = match self.names.get(p.model) {
                            Some(name) => self.device.service_cv(name, p.kind),
                            None => self.device.spec().service_cv.get(p.kind),
                        };
                        let sigma = (1.0 + cv * cv).ln().sqrt();
                        s * (1.645 * sigma).exp()
                    })
                    .collect();
                let busy: Vec<f64> = util.iter().map(|u| u.min(1.0)).collect();
                Ok(MappingPrediction {
                    service_p50_s: p50,
                    service_p95_s: p95,
                    power_w: self.device.power_w(mode, &busy),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::spec::UnitKind;
    use crate::estimate::Placement;
    use std::path::PathBuf;

    #[test]
    fn each_variant_tail_follows_its_own_measured_spread() {
        // The host's ResNet50 (measured CV 0.087) and MobileNetV2 (0.163),
        // each alone and lightly loaded on a worker: p95 / p50 is
        // exp(1.645 σ), σ² = ln(1 + CV²).
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rt-config/devices/host.ron");
        let host = DeviceModel::load(&p).unwrap();
        let mut est = AnalyticEstimator::from_names(
            host.clone(),
            vec!["ResNet50".into(), "MobileNetV2".into()],
        );
        let at = |model, unit| Placement {
            model,
            unit,
            kind: UnitKind::Cpu,
            threads: 1,
            rate_hz: 0.1,
        };
        let q = MappingQuery {
            mode_fracs: [1.0; 3],
            tenants: vec![at(0, 0), at(1, 1)],
        };
        let r = est.predict(&[q]).unwrap().remove(0);
        let ratio = |i: usize| r.service_p95_s[i] / r.service_p50_s[i];
        let expect = |cv: f64| (1.645 * (1.0 + cv * cv).ln().sqrt()).exp();
        for (i, name) in ["ResNet50", "MobileNetV2"].into_iter().enumerate() {
            let cv = host.service_cv(name, UnitKind::Cpu);
            assert!((ratio(i) - expect(cv)).abs() < 1e-9, "{name}: {}", ratio(i));
        }
        assert!(ratio(0) < ratio(1), "the ResNet's tail is the narrower");
    }
}
