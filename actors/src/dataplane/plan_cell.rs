//! `PlanCell`: the mapping planner's chosen variants, published by the
//! control plane and read by the dispatcher at every step without a lock.
//!
//! A sequence lock over one atomic per tenant: the single writer (the
//! power governor applying a plan) makes the generation odd, stores the
//! variants, and makes it even again; a reader takes the variants only if
//! it saw the same even generation before and after reading them, and
//! otherwise tries again at its next step. Readers never wait and never
//! block the writer — the data plane must not spin on the control plane.

use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug)]
struct Inner {
    generation: AtomicU64,
    variants: Vec<AtomicUsize>,
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
        }))
    }

    /// Publish one variant per tenant (single writer).
    pub fn publish(&self, variants: &[usize]) {
        debug_assert_eq!(variants.len(), self.0.variants.len(), "one per tenant");
        let g = self.0.generation.fetch_add(1, Ordering::AcqRel);
        debug_assert!(g % 2 == 0, "one writer at a time");
        for (cell, &v) in self.0.variants.iter().zip(variants) {
            cell.store(v, Ordering::Relaxed);
        }
        self.0.generation.fetch_add(1, Ordering::Release);
    }

    /// The variants published after generation `seen`, and their
    /// generation; `None` when nothing new or a publish is in progress.
    pub fn newer_than(&self, seen: u64) -> Option<(u64, Vec<usize>)> {
        let g1 = self.0.generation.load(Ordering::Acquire);
        if g1 == seen || g1 % 2 == 1 {
            return None;
        }
        let v: Vec<usize> = self
            .0
            .variants
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        // Order the loads above before the second generation check.
        fence(Ordering::Acquire);
        let g2 = self.0.generation.load(Ordering::Relaxed);
        (g1 == g2).then_some((g1, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_sees_each_publication_once_and_whole() {
        let cell = PlanCell::new(3);
        assert_eq!(cell.newer_than(0), None);
        cell.publish(&[1, 0, 2]);
        let (g, v) = cell.newer_than(0).unwrap();
        assert_eq!(v, vec![1, 0, 2]);
        assert_eq!(cell.newer_than(g), None);
        cell.publish(&[0, 0, 1]);
        assert_eq!(cell.newer_than(g).unwrap().1, vec![0, 0, 1]);
    }

    #[test]
    fn concurrent_readers_never_see_a_torn_plan() {
        // The writer publishes [k, k, k, k]; a reader must never see a mix.
        let cell = PlanCell::new(4);
        let reader = cell.clone();
        let r = std::thread::spawn(move || {
            let mut seen = 0;
            let mut reads = 0;
            while reads < 2000 {
                if let Some((g, v)) = reader.newer_than(seen) {
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
            cell.publish(&[k; 4]);
        }
        r.join().unwrap();
    }
}
