//! `PlanCell`: the mapping planner's chosen variant and worker per tenant,
//! published by the control plane and read by the dispatcher at every step
//! without a lock.
//!
//! A sequence lock over two atomics per tenant: the single writer (the
//! power governor applying a plan) makes the generation odd, stores the
//! plan, and makes it even again; a reader takes the plan only if it saw
//! the same even generation before and after reading it, and otherwise
//! tries again at its next step. Readers never wait and never block the
//! writer — the data plane must not spin on the control plane.
//!
//! ```
//! use ecomap_sync::plan_cell::{PlanCell, PlannedMapping};
//!
//! let cell = PlanCell::new(2);
//! let reader = cell.clone();
//! assert_eq!(reader.newer_than(0), None); // nothing published yet
//! let plan = PlannedMapping { variants: vec![1, 0], units: vec![0, 1] };
//! cell.publish(&plan);
//! let (generation, seen) = reader.newer_than(0).unwrap();
//! assert_eq!(seen, plan);
//! assert_eq!(reader.newer_than(generation), None); // taken once
//! ```

use crate::sync::{fence, Arc, AtomicU64, AtomicUsize, Ordering};

#[derive(Debug)]
struct Inner {
    generation: AtomicU64,
    variants: Vec<AtomicUsize>,
    units: Vec<AtomicUsize>,
}

/// One published plan: per tenant its variant and its worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMapping {
    /// `variants[t]`: tenant `t`'s variant.
    pub variants: Vec<usize>,
    /// `units[t]`: the worker tenant `t` is served by.
    pub units: Vec<usize>,
}

/// The cell, shared by cloning.
#[derive(Debug, Clone)]
pub struct PlanCell(Arc<Inner>);

impl PlanCell {
    /// A cell for `tenants` tenants with nothing published.
    pub fn new(tenants: usize) -> Self {
        PlanCell(Arc::new(Inner {
            generation: AtomicU64::new(0),
            variants: (0..tenants).map(|_| AtomicUsize::new(0)).collect(),
            units: (0..tenants).map(|_| AtomicUsize::new(0)).collect(),
        }))
    }

    /// Publish one variant and one worker per tenant (single writer).
    pub fn publish(&self, plan: &PlannedMapping) {
        debug_assert_eq!(plan.variants.len(), self.0.variants.len(), "one per tenant");
        debug_assert_eq!(plan.units.len(), self.0.units.len(), "one per tenant");
        let g = self.0.generation.fetch_add(1, Ordering::Relaxed);
        debug_assert!(g % 2 == 0, "one writer at a time");
        // The odd generation must be visible before any of the plan's
        // stores: a release fence orders the increment before them (an
        // AcqRel increment would only order what came before it). A reader
        // whose load sees one of them, then runs its acquire fence, sees
        // the odd generation and drops what it read.
        fence(Ordering::Release);
        for (cell, &v) in self.0.variants.iter().zip(&plan.variants) {
            cell.store(v, Ordering::Relaxed);
        }
        for (cell, &u) in self.0.units.iter().zip(&plan.units) {
            cell.store(u, Ordering::Relaxed);
        }
        // Release: a reader that sees the even generation sees the plan.
        self.0.generation.fetch_add(1, Ordering::Release);
    }

    /// The plan published after generation `seen`, and its generation;
    /// `None` when nothing new or a publish is in progress.
    pub fn newer_than(&self, seen: u64) -> Option<(u64, PlannedMapping)> {
        let g1 = self.0.generation.load(Ordering::Acquire);
        if g1 == seen || g1 % 2 == 1 {
            return None;
        }
        let load = |cells: &[AtomicUsize]| -> Vec<usize> {
            cells.iter().map(|c| c.load(Ordering::Relaxed)).collect()
        };
        let plan = PlannedMapping {
            variants: load(&self.0.variants),
            units: load(&self.0.units),
        };
        // Order the loads above before the second generation check (and
        // synchronise with the writer's release fence if they read a store
        // made after it).
        fence(Ordering::Acquire);
        let g2 = self.0.generation.load(Ordering::Relaxed);
        debug_assert!(g2 >= g1, "the generation only grows");
        (g1 == g2).then_some((g1, plan))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_reader_sees_each_publication_once_and_whole() {
        let plan = |variants: Vec<usize>| PlannedMapping {
            units: variants.iter().map(|v| v % 2).collect(),
            variants,
        };
        let cell = PlanCell::new(3);
        assert_eq!(cell.newer_than(0), None);
        cell.publish(&plan(vec![1, 0, 2]));
        let (g, v) = cell.newer_than(0).unwrap();
        assert_eq!(v, plan(vec![1, 0, 2]));
        assert_eq!(cell.newer_than(g), None);
        cell.publish(&plan(vec![0, 0, 1]));
        assert_eq!(cell.newer_than(g).unwrap().1, plan(vec![0, 0, 1]));
    }

    #[test]
    fn concurrent_readers_never_see_a_torn_plan() {
        // The writer publishes k everywhere; a reader must never see a mix.
        // (A stress test on real threads; tests/loom.rs checks every
        // interleaving of a smaller case.)
        let cell = PlanCell::new(4);
        let reader = cell.clone();
        let r = std::thread::spawn(move || {
            let mut seen = 0;
            let mut reads = 0;
            while reads < 2000 {
                if let Some((g, p)) = reader.newer_than(seen) {
                    let v: Vec<usize> = p.variants.iter().chain(&p.units).copied().collect();
                    assert!(v.iter().all(|&x| x == v[0]), "torn: {v:?}");
                    seen = g;
                    reads += 1;
                }
                std::hint::spin_loop();
                if seen >= 2 * 20_000 {
                    break;
                }
            }
        });
        for k in 1..=20_000usize {
            cell.publish(&PlannedMapping {
                variants: vec![k; 4],
                units: vec![k; 4],
            });
        }
        r.join().unwrap();
    }
}
