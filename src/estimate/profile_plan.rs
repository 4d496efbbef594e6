//! Which configurations a profile measures: every variant alone on every
//! kind of unit at every mode and thread count (the solo profiles), then
//! random mixes from a seed, so the same arguments plan the same
//! configurations. Shared by `ecomap profile` on a real host and by the
//! simulated profile of a device model.

use crate::device::spec::UnitKind;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// What to profile.
#[derive(Debug, Clone)]
pub struct ProfilePlan {
    /// Variant names to draw from.
    pub variants: Vec<String>,
    /// Mode names to run at.
    pub modes: Vec<String>,
    /// Intra-op thread counts to draw from.
    pub threads: Vec<u32>,
    /// The units' kinds, in unit order.
    pub unit_kinds: Vec<UnitKind>,
    /// `capable[v][u]`: variant `v` can run on unit `u`.
    pub capable: Vec<Vec<bool>>,
    /// Total configurations (solo ones first).
    pub configs: usize,
    /// Most tenants in one configuration.
    pub max_tenants: usize,
    /// Seed for the mixes.
    pub seed: u64,
}

/// One configuration to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileConfig {
    /// Its number.
    pub id: u32,
    /// Index into [`ProfilePlan::modes`].
    pub mode: usize,
    /// Intra-op threads.
    pub threads: u32,
    /// Per tenant: (variant index, unit index, target utilisation of its unit).
    pub tenants: Vec<(usize, usize, f64)>,
}

impl ProfilePlan {
    /// Every configuration, solo ones first, then seeded random mixes.
    pub fn configurations(&self) -> Vec<ProfileConfig> {
        let mut out = Vec::new();
        for v in 0..self.variants.len() {
            // Solo on the first capable unit of each kind.
            let mut kinds = Vec::new();
            for (u, &k) in self.unit_kinds.iter().enumerate() {
                if self.capable[v][u] && !kinds.contains(&k) {
                    kinds.push(k);
                    for m in 0..self.modes.len() {
                        for &th in &self.threads {
                            out.push(ProfileConfig {
                                id: out.len() as u32,
                                mode: m,
                                threads: th,
                                tenants: vec![(v, u, 0.5)],
                            });
                        }
                    }
                }
            }
        }
        let units = self.unit_kinds.len();
        let mut rng = SmallRng::seed_from_u64(self.seed);
        // Mixes need at least two tenants.
        while self.max_tenants >= 2 && out.len() < self.configs {
            let n = rng.random_range(2..=self.max_tenants);
            // A total load per unit, split over its tenants at random.
            let load: Vec<f64> = (0..units).map(|_| rng.random_range(0.15..0.85)).collect();
            let mut tenants: Vec<(usize, usize, f64)> = Vec::with_capacity(n);
            while tenants.len() < n {
                let v = rng.random_range(0..self.variants.len());
                let able: Vec<usize> = (0..units).filter(|&u| self.capable[v][u]).collect();
                if able.is_empty() {
                    continue;
                }
                let u = able[rng.random_range(0..able.len())];
                tenants.push((v, u, rng.random_range(0.2..1.0)));
            }
            for (u, &unit_load) in load.iter().enumerate() {
                let weight: f64 = tenants.iter().filter(|t| t.1 == u).map(|t| t.2).sum();
                for t in tenants.iter_mut().filter(|t| t.1 == u) {
                    t.2 = unit_load * t.2 / weight;
                }
            }
            out.push(ProfileConfig {
                id: out.len() as u32,
                mode: rng.random_range(0..self.modes.len()),
                threads: self.threads[rng.random_range(0..self.threads.len())],
                tenants,
            });
        }
        out.truncate(self.configs.max(1));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> ProfilePlan {
        ProfilePlan {
            variants: vec!["resnet18".into(), "mobilenet_v2".into()],
            modes: vec!["MAXN".into(), "MODE_10W".into()],
            threads: vec![1, 2],
            unit_kinds: vec![UnitKind::Cpu, UnitKind::Cpu],
            capable: vec![vec![true, true], vec![true, true]],
            configs: 30,
            max_tenants: 4,
            seed: 7,
        }
    }

    #[test]
    fn solo_configurations_come_first_and_mixes_are_seeded() {
        let p = plan();
        let c = p.configurations();
        assert_eq!(c.len(), 30);
        // 2 variants × 1 unit kind × 2 modes × 2 thread counts alone.
        assert!(c[..8].iter().all(|c| c.tenants.len() == 1));
        assert!(c[8..].iter().all(|c| (2..=4).contains(&c.tenants.len())));
        assert_eq!(c, p.configurations());
        // A unit's tenants share out its drawn load (0.15..0.85).
        for cfg in &c[8..] {
            for u in 0..2 {
                let load: f64 = cfg.tenants.iter().filter(|t| t.1 == u).map(|t| t.2).sum();
                assert!(load == 0.0 || (0.149..0.851).contains(&load), "{load}");
            }
        }
    }

    #[test]
    fn mixes_only_use_capable_units() {
        let mut p = plan();
        p.unit_kinds = vec![UnitKind::Gpu, UnitKind::Dla];
        p.capable = vec![vec![true, false], vec![true, true]];
        let c = p.configurations();
        // resnet18 alone on the GPU only; mobilenet on both kinds.
        assert_eq!(c.iter().filter(|c| c.tenants.len() == 1).count(), 12);
        for cfg in &c {
            for t in &cfg.tenants {
                assert!(p.capable[t.0][t.1]);
            }
        }
    }
}
