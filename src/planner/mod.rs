//! The mapping planner: which power mode, which variant of each tenant's
//! model and which execution unit for each tenant, chosen together.
//!
//! A [`PlanProblem`] lists the tenants (their variants, the units each may
//! run on, rate, deadline, accuracy floor) and the device's modes. The
//! planner asks a [`MappingEstimator`](crate::estimate::MappingEstimator) — the learned transformer in the
//! runtime, any estimator in tests — for the service times and power of
//! candidate mappings, in batches, and returns the [`Plan`] that minimises
//!
//! ```text
//! carbon (g/h) = power (W) × priced intensity (g/kWh) / 1000
//!   + accuracy_point_g_per_h × accuracy lost (points of mean top-1 below the heaviest variants)
//!   + delay_ms_g_per_h × predicted mean response time (ms)
//! ```
//!
//! (the intensity as read, or relative to the grid's trailing mean: see
//! [`CarbonPrice`]) subject to every tenant's predicted response bound fitting its deadline
//! with a margin, every unit's predicted utilisation staying under a
//! ceiling, and every accuracy floor. Exhaustive where the space is small;
//! otherwise a beam search that places tenants one at a time (most
//! constrained first), scoring partial mappings with the estimator on the
//! tenants placed so far. An infeasible set of tenants is an error that
//! says which tenant could not be placed — never a silent best effort.

mod in_force;
mod ledger;
mod price;
mod replan;
mod search;

pub use in_force::PlanInForce;
pub use ledger::{
    AccuracyLedger, MeanAccuracyBudget, MAX_LEVEL, MAX_WEIGHT_MULTIPLIER, WEIGHT_STEP,
};
pub use price::{CarbonPrice, CarbonPricer};
pub use replan::{Replan, Replanner};
pub use search::{plan, SearchOptions};

use crate::device::spec::UnitKind;
use crate::estimate::{EstimateError, MappingPrediction, MappingQuery, Placement};

/// One variant a tenant may be served by.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanVariant {
    /// Name (for reports).
    pub name: String,
    /// Index in the estimator's descriptor table.
    pub model: usize,
    /// Published accuracy (%), if known.
    pub top1: Option<f64>,
    /// Units that can run it (indices into [`PlanProblem::units`]).
    pub units: Vec<usize>,
}

/// One tenant as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanTenant {
    /// Name (for reports).
    pub name: String,
    /// Its variants, heaviest first.
    pub variants: Vec<PlanVariant>,
    /// Offered rate, requests/s.
    pub rate_hz: f64,
    /// Relative deadline, seconds.
    pub deadline_s: f64,
    /// Lowest acceptable top-1 (%), if any.
    pub accuracy_floor: Option<f64>,
}

/// A power mode as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanMode {
    /// Name.
    pub name: String,
    /// GPU, DLA, CPU clocks as fractions of the reference mode.
    pub fracs: [f64; 3],
}

/// What to plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanProblem {
    /// Tenants.
    pub tenants: Vec<PlanTenant>,
    /// Modes the planner may choose.
    pub modes: Vec<PlanMode>,
    /// Kind of each unit.
    pub units: Vec<UnitKind>,
    /// Intra-op threads of the workers.
    pub threads: u32,
}

/// A complete mapping.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// Index into [`PlanProblem::modes`].
    pub mode: usize,
    /// Per tenant: index into its variants.
    pub variants: Vec<usize>,
    /// Per tenant: unit index.
    pub units: Vec<usize>,
}

/// The planner's choice and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The mapping.
    pub mapping: Mapping,
    /// What the estimator predicted of it.
    pub predicted: MappingPrediction,
    /// Predicted carbon rate, g/h.
    pub carbon_g_per_h: f64,
    /// Request-weighted mean top-1 of the chosen variants (%).
    pub accuracy: f64,
    /// Points below the heaviest variants' accuracy.
    pub accuracy_lost: f64,
    /// Predicted request-weighted mean response time, ms (median service
    /// plus the mean wait on its unit).
    pub mean_delay_ms: f64,
    /// The objective value (lower is better).
    pub objective: f64,
    /// Largest predicted response bound over deadline, over tenants.
    pub worst_deadline_fraction: f64,
    /// Candidate mappings the estimator scored in the search that found it.
    pub evaluated: usize,
    /// Whether it keeps within [`SearchOptions::max_accuracy_lost`] (always
    /// true without a budget); false when the search found no mapping
    /// within the budget that meets every deadline and gave up accuracy
    /// instead.
    pub within_accuracy_budget: bool,
}

/// Why no plan was chosen.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// No mapping meets every deadline, utilisation ceiling and floor.
    #[error("no mapping of the tenants meets every deadline: {reason}; lighten the workload, relax a deadline or accuracy floor, or add units")]
    Infeasible {
        /// Which tenant could not be placed, and with whom.
        reason: String,
    },
    /// The estimator failed.
    #[error(transparent)]
    Estimate(#[from] EstimateError),
    /// The problem is malformed (no tenants' variants, no modes…).
    #[error("cannot plan: {0}")]
    Malformed(String),
}

impl PlanProblem {
    /// The same problem without the units `gone` says are out (a worker
    /// that died): no variant may be placed on them. A tenant every unit
    /// of which is out keeps its units: it cannot be served anyway (its
    /// requests end `failed`), and leaving it in place lets the others be
    /// planned rather than the whole search fail on it.
    pub fn without_units(&self, gone: impl Fn(usize) -> bool) -> PlanProblem {
        let mut p = self.clone();
        for t in &mut p.tenants {
            let stranded = t.variants.iter().all(|v| v.units.iter().all(|&u| gone(u)));
            if stranded {
                continue;
            }
            for v in &mut t.variants {
                v.units.retain(|&u| !gone(u));
            }
        }
        p
    }

    /// The estimator's query for `mapping` restricted to `tenants`
    /// (indices, in the order given).
    pub fn query(&self, mode: usize, tenants: &[(usize, usize, usize)]) -> MappingQuery {
        MappingQuery {
            mode_fracs: self.modes[mode].fracs,
            tenants: tenants
                .iter()
                .map(|&(t, v, u)| Placement {
                    model: self.tenants[t].variants[v].model,
                    unit: u,
                    kind: self.units[u],
                    threads: self.threads,
                    rate_hz: self.tenants[t].rate_hz,
                })
                .collect(),
        }
    }

    /// Mean top-1 of the heaviest variants (request-weighted over tenants
    /// with a published accuracy).
    pub fn max_accuracy(&self) -> f64 {
        self.accuracy_of(|_| 0)
    }

    /// Request-weighted mean top-1 of the variants `pick(t)` chooses.
    pub fn accuracy_of(&self, pick: impl Fn(usize) -> usize) -> f64 {
        let (mut acc, mut rate) = (0.0, 0.0);
        for (t, tenant) in self.tenants.iter().enumerate() {
            if let Some(a) = tenant.variants[pick(t)].top1 {
                acc += tenant.rate_hz * a;
                rate += tenant.rate_hz;
            }
        }
        if rate > 0.0 {
            acc / rate
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests;
