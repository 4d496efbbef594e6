//! How much slower one execution unit runs a tenant's model than another,
//! from passes timed on each: the relative costs the dispatch step divides
//! out of measured service times ([`super::DispatchCore::set_relative_cost`]).
//!
//! Units of one kind (every CPU worker, say) are taken as alike: a single
//! warm-up pass on each swings by ±25% with the allocator's arenas, and a
//! ratio between two of them would be that noise, not a speed. Between
//! kinds (a CUDA worker and a CPU worker) the ratio is the median pass of
//! one kind over the fastest kind's, per tenant and variant — and for the
//! same reason a ratio below [`NOISE_RATIO`] counts as 1 (a model that
//! ignores the device, or two kinds about as fast). The ratios are
//! measured once, at load, while every worker loads at once; a tenant
//! that stays on one kind corrects its estimate with every pass anyway.
//!
//! ```
//! use ecomap::dispatch::unit_cost::{relative_costs, TimedPass};
//! use std::time::Duration;
//!
//! // Unit 0 is a GPU, units 1 and 2 CPU cores; tenant 0 has one variant.
//! let kind = [0, 1, 1];
//! let pass = |unit, ms| TimedPass { unit, tenant: 0, variant: 0, took: Duration::from_millis(ms) };
//! let costs = relative_costs(&kind, &[pass(0, 4), pass(1, 30), pass(2, 34)]);
//! assert_eq!(costs[0].relative, vec![1.0]);
//! assert_eq!(costs[1].relative, vec![8.0]); // the CPU kind's median, 32 ms
//! assert_eq!(costs[2].relative, vec![8.0]);
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

/// Below this a ratio between two kinds counts as 1. Each warm pass
/// swings by up to ±25% (docs/results.md §2), so a ratio of two could
/// read 0.6–1.67 between units that are alike; a real difference between
/// kinds (a GPU against CPU cores: several times) stands far above this,
/// and a small one left as 1 is corrected by the estimate's own passes.
pub const NOISE_RATIO: f64 = 1.25;

/// One timed pass of a tenant's variant on a unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimedPass {
    /// The unit it ran on.
    pub unit: usize,
    /// The tenant.
    pub tenant: usize,
    /// The variant (0 = heaviest).
    pub variant: usize,
    /// How long the pass took.
    pub took: Duration,
}

/// One unit's costs for one tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitCost {
    /// The unit.
    pub unit: usize,
    /// The tenant.
    pub tenant: usize,
    /// `relative[v]`: variant `v` on this unit over the fastest kind of
    /// unit timed for the tenant (≥ 1; 1 where a variant was not timed).
    pub relative: Vec<f64>,
}

/// The relative costs of every unit that timed a tenant, for the tenants
/// timed on more than one kind of unit (with one kind, every cost is 1 and
/// nothing is returned). `kind[u]` groups the units that are alike.
pub fn relative_costs(kind: &[usize], passes: &[TimedPass]) -> Vec<UnitCost> {
    // (tenant, variant, kind) → the passes' seconds.
    let mut by_kind: BTreeMap<(usize, usize, usize), Vec<f64>> = BTreeMap::new();
    for p in passes {
        debug_assert!(p.unit < kind.len(), "a pass on a unit with no kind");
        by_kind
            .entry((p.tenant, p.variant, kind[p.unit]))
            .or_default()
            .push(p.took.as_secs_f64());
    }
    let median: BTreeMap<(usize, usize, usize), f64> = by_kind
        .into_iter()
        .map(|(key, mut s)| {
            s.sort_by(f64::total_cmp);
            let m = s.len() / 2;
            let mid = if s.len() % 2 == 1 {
                s[m]
            } else {
                (s[m - 1] + s[m]) / 2.0
            };
            (key, mid)
        })
        .collect();
    // (tenant, variant) → the fastest kind's median.
    let mut fastest: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    for (&(t, v, _), &s) in &median {
        let f = fastest.entry((t, v)).or_insert(f64::INFINITY);
        *f = f.min(s);
    }
    let mut out = Vec::new();
    let mut units: Vec<(usize, usize)> = passes.iter().map(|p| (p.tenant, p.unit)).collect();
    units.sort_unstable();
    units.dedup();
    for (t, u) in units {
        let kinds_of_tenant = median
            .keys()
            .filter(|(mt, _, _)| *mt == t)
            .map(|(_, _, k)| *k)
            .collect::<std::collections::BTreeSet<_>>();
        if kinds_of_tenant.len() < 2 {
            continue;
        }
        let variants = passes
            .iter()
            .filter(|p| p.tenant == t)
            .map(|p| p.variant + 1)
            .max()
            .unwrap_or(0);
        let relative = (0..variants)
            .map(|v| {
                let here = median.get(&(t, v, kind[u]));
                let best = fastest.get(&(t, v));
                match (here, best) {
                    // A zero-length pass (a fixture) has no speed to compare.
                    (Some(&h), Some(&b)) if b > 0.0 && h / b >= NOISE_RATIO => h / b,
                    _ => 1.0,
                }
            })
            .collect();
        out.push(UnitCost {
            unit: u,
            tenant: t,
            relative,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(unit: usize, tenant: usize, variant: usize, ms: u64) -> TimedPass {
        TimedPass {
            unit,
            tenant,
            variant,
            took: Duration::from_millis(ms),
        }
    }

    #[test]
    fn units_of_one_kind_are_alike_whatever_their_warm_passes_say() {
        // Two CPU workers whose single passes differ by the allocator's
        // noise: no cost is set.
        let costs = relative_costs(&[0, 0], &[pass(0, 0, 0, 20), pass(1, 0, 0, 26)]);
        assert!(costs.is_empty());
    }

    #[test]
    fn each_variant_is_compared_with_the_fastest_kind_that_ran_it() {
        // Tenant 0: variant 0 is 4x slower on the CPU (unit 1), variant 1
        // 2x. Tenant 1 runs on the CPU only. (Powers of two: the ratios
        // are exact.)
        let passes = [
            pass(0, 0, 0, 8),
            pass(0, 0, 1, 4),
            pass(1, 0, 0, 32),
            pass(1, 0, 1, 8),
            pass(1, 1, 0, 7),
        ];
        let costs = relative_costs(&[0, 1], &passes);
        assert_eq!(
            costs,
            vec![
                UnitCost {
                    unit: 0,
                    tenant: 0,
                    relative: vec![1.0, 1.0]
                },
                UnitCost {
                    unit: 1,
                    tenant: 0,
                    relative: vec![4.0, 2.0]
                },
            ]
        );
    }

    #[test]
    fn a_ratio_within_one_passs_noise_counts_as_one() {
        // A synthetic model ignores the device: 20 ms on the GPU, 23 ms on
        // the CPU is noise, not a slower unit.
        let costs = relative_costs(&[0, 1], &[pass(0, 0, 0, 20), pass(1, 0, 0, 23)]);
        assert_eq!(costs.len(), 2, "{costs:?}");
        assert!(costs.iter().flat_map(|c| &c.relative).all(|&r| r == 1.0));
    }

    #[test]
    fn a_variant_timed_on_one_kind_only_costs_one_and_costs_never_fall_below_one() {
        let passes = [pass(0, 0, 0, 8), pass(1, 0, 0, 32), pass(1, 0, 1, 9)];
        let costs = relative_costs(&[0, 1], &passes);
        assert_eq!(costs[1].relative, vec![4.0, 1.0]);
        assert!(costs.iter().flat_map(|c| &c.relative).all(|&r| r >= 1.0));
    }
}
