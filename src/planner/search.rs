//! The search: exhaustive for small spaces, beam search otherwise.

use super::{Mapping, Plan, PlanError, PlanProblem};
use crate::estimate::{MappingEstimator, MappingPrediction};

/// How to search and what counts as feasible.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchOptions {
    /// Grams of CO2 per hour one point of mean top-1 accuracy is worth:
    /// the planner gives up a point only to save at least this much.
    pub accuracy_point_g_per_h: f64,
    /// Grams of CO2 per hour one millisecond of predicted mean response
    /// time is worth: the planner spends up to this much carbon rate to
    /// answer 1 ms sooner on average. With it the objective follows the
    /// carbon-delay product rather than carbon alone; 0 ignores delay.
    pub delay_ms_g_per_h: f64,
    /// The most points of mean top-1 a plan may lose below the heaviest
    /// variants (`None`: no budget, the weight alone decides). Deadlines
    /// come first: when no mapping fits the budget, [`plan`] plans without
    /// it step by step and says so ([`Plan::within_accuracy_budget`]).
    pub max_accuracy_lost: Option<f64>,
    /// Share of each deadline kept free: a tenant's predicted response
    /// bound must fit `deadline × (1 − margin)`.
    pub margin: f64,
    /// Highest predicted utilisation of any unit.
    pub max_utilisation: f64,
    /// Partial mappings kept per mode and depth.
    pub beam_width: usize,
    /// Enumerate every mapping when there are at most this many.
    pub exhaustive_limit: usize,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            accuracy_point_g_per_h: 0.5,
            delay_ms_g_per_h: 0.0,
            max_accuracy_lost: None,
            margin: 0.1,
            max_utilisation: 0.85,
            beam_width: 8,
            exhaustive_limit: 2048,
        }
    }
}

/// A (partial) assignment: (tenant, variant, unit) in placement order.
type Assignment = Vec<(usize, usize, usize)>;

/// Feasibility of an assignment from its prediction: `Some(worst
/// bound / usable deadline)` when every tenant fits and no unit is over
/// the ceiling.
fn check(
    problem: &PlanProblem,
    assign: &Assignment,
    pred: &MappingPrediction,
    opts: &SearchOptions,
) -> Option<f64> {
    // Utilisation and the work ahead are sums of *mean* service times (the
    // log-normal's through the predicted p50 and p95, as the delay term
    // takes them): a median under-states a right-skewed service's load.
    let mean: Vec<f64> = (0..assign.len())
        .map(|i| service_moments(pred.service_p50_s[i], pred.service_p95_s[i]).0)
        .collect();
    let mut util = vec![0.0; problem.units.len()];
    for (i, &(t, _, u)) in assign.iter().enumerate() {
        util[u] += problem.tenants[t].rate_hz * mean[i];
    }
    // Written so that a NaN prediction is infeasible, never feasible.
    let fits = |x: f64, limit: f64| x.is_finite() && x <= limit;
    if !pred.power_w.is_finite() || util.iter().any(|&x| !fits(x, opts.max_utilisation)) {
        return None;
    }
    let mut worst: f64 = 0.0;
    for (i, &(t, _, u)) in assign.iter().enumerate() {
        // Its own tail plus one job of every other tenant on its unit that
        // may be ahead of it (non-preemptive EDF).
        let ahead: f64 = assign
            .iter()
            .enumerate()
            .filter(|&(j, a)| j != i && a.2 == u)
            .map(|(j, _)| mean[j])
            .sum();
        let usable = problem.tenants[t].deadline_s * (1.0 - opts.margin);
        let fraction = (pred.service_p95_s[i] + ahead) / usable;
        if !fits(fraction, 1.0) {
            return None;
        }
        worst = worst.max(fraction);
    }
    Some(worst)
}

struct Scored {
    assign: Assignment,
    pred: MappingPrediction,
    objective: f64,
    worst: f64,
}

/// Accuracy lost by an assignment, in points of the workload's mean.
fn accuracy_lost(problem: &PlanProblem, assign: &Assignment) -> f64 {
    let total_rate: f64 = problem
        .tenants
        .iter()
        .filter(|t| t.variants[0].top1.is_some())
        .map(|t| t.rate_hz)
        .sum();
    if total_rate <= 0.0 {
        return 0.0;
    }
    assign
        .iter()
        .map(|&(t, v, _)| {
            let tenant = &problem.tenants[t];
            match (tenant.variants[0].top1, tenant.variants[v].top1) {
                (Some(best), Some(got)) => tenant.rate_hz * (best - got),
                _ => 0.0,
            }
        })
        .sum::<f64>()
        / total_rate
}

/// Predicted request-weighted mean response time of an assignment, ms:
/// per tenant its mean service plus the mean wait for the work ahead of it
/// on its unit — the residual of the job in service and the queue, as an
/// M/G/1 queue gives it, `Σ_j λ_j E[S_j²] / 2 / (1 − ρ)` over the unit's
/// tenants `j`. Service is taken as log-normal through the predicted
/// median and 95th percentile (σ = ln(p95/p50) / 1.645), so a variable
/// service costs its waiting time too.
pub(crate) fn mean_delay_ms(
    problem: &PlanProblem,
    assign: &Assignment,
    pred: &MappingPrediction,
) -> f64 {
    let units = problem.units.len();
    let (mut util, mut residual) = (vec![0.0; units], vec![0.0; units]);
    let moments: Vec<(f64, f64)> = (0..assign.len())
        .map(|i| service_moments(pred.service_p50_s[i], pred.service_p95_s[i]))
        .collect();
    for (&(t, _, u), &(mean, second)) in assign.iter().zip(&moments) {
        let lambda = problem.tenants[t].rate_hz;
        util[u] += lambda * mean;
        residual[u] += lambda * second / 2.0;
    }
    let (mut weighted, mut rate) = (0.0, 0.0);
    for (&(t, _, u), &(mean, _)) in assign.iter().zip(&moments) {
        // Utilisation is capped below 1 by the feasibility check; the
        // clamp only keeps an infeasible candidate's score finite.
        let wait = residual[u] / (1.0 - util[u]).max(0.05);
        let lambda = problem.tenants[t].rate_hz;
        weighted += lambda * (mean + wait);
        rate += lambda;
    }
    if rate > 0.0 {
        weighted / rate * 1000.0
    } else {
        0.0
    }
}

/// The mean and second moment of a service time taken as log-normal
/// through its median `p50` and 95th percentile `p95` (σ = ln(p95/p50) /
/// 1.645; a p95 at or below the median, or an unreadable one, is no
/// spread).
fn service_moments(p50: f64, p95: f64) -> (f64, f64) {
    /// The standard normal's 95th percentile.
    const Z95: f64 = 1.645;
    let sigma = (p95 / p50).ln().max(0.0) / Z95;
    let sigma = if sigma.is_finite() { sigma } else { 0.0 };
    (
        p50 * (sigma * sigma / 2.0).exp(),
        p50 * p50 * (2.0 * sigma * sigma).exp(),
    )
}

fn objective(
    problem: &PlanProblem,
    assign: &Assignment,
    pred: &MappingPrediction,
    gco2: f64,
    opts: &SearchOptions,
) -> f64 {
    let delay = if opts.delay_ms_g_per_h > 0.0 {
        opts.delay_ms_g_per_h * mean_delay_ms(problem, assign, pred)
    } else {
        0.0
    };
    pred.power_w * gco2 / 1000.0
        + opts.accuracy_point_g_per_h * accuracy_lost(problem, assign)
        + delay
}

/// Score a batch of assignments at `mode` (all at once, one estimator call).
fn score(
    problem: &PlanProblem,
    est: &mut dyn MappingEstimator,
    batch: Vec<(usize, Assignment)>,
    gco2: f64,
    opts: &SearchOptions,
) -> Result<Vec<(usize, Scored)>, PlanError> {
    let queries: Vec<_> = batch.iter().map(|(m, a)| problem.query(*m, a)).collect();
    let preds = est.predict(&queries)?;
    debug_assert_eq!(preds.len(), batch.len(), "one prediction per query");
    Ok(batch
        .into_iter()
        .zip(preds)
        .filter_map(|((m, assign), pred)| {
            let worst = check(problem, &assign, &pred, opts)?;
            let objective = objective(problem, &assign, &pred, gco2, opts);
            Some((
                m,
                Scored {
                    assign,
                    pred,
                    objective,
                    worst,
                },
            ))
        })
        .collect())
}

/// Which assignments may still end within the accuracy budget, decided
/// once per search.
struct BudgetCheck {
    budget: Option<f64>,
    /// Partial assignments are judged too: every tenant's first variant is
    /// its most accurate, so the tenants not yet placed can only add to the
    /// loss and pruning early is exact. Otherwise only complete ones are.
    partial: bool,
}

impl BudgetCheck {
    fn new(problem: &PlanProblem, opts: &SearchOptions) -> BudgetCheck {
        let first_is_best = |t: &super::PlanTenant| {
            t.variants
                .iter()
                .all(|v| match (v.top1, t.variants[0].top1) {
                    (Some(a), Some(best)) => a <= best,
                    _ => true,
                })
        };
        BudgetCheck {
            budget: opts.max_accuracy_lost,
            partial: problem.tenants.iter().all(first_is_best),
        }
    }

    fn keeps(&self, problem: &PlanProblem, assign: &Assignment) -> bool {
        let Some(budget) = self.budget else {
            return true;
        };
        if !self.partial && assign.len() < problem.tenants.len() {
            return true;
        }
        accuracy_lost(problem, assign) <= budget + 1e-9
    }
}

/// The (variant, unit) options of tenant `t` that meet its accuracy floor.
fn options(problem: &PlanProblem, t: usize) -> Vec<(usize, usize)> {
    let tenant = &problem.tenants[t];
    tenant
        .variants
        .iter()
        .enumerate()
        .filter(|(_, v)| match (tenant.accuracy_floor, v.top1) {
            (Some(floor), Some(a)) => a >= floor,
            (Some(_), None) => false,
            (None, _) => true,
        })
        .flat_map(|(vi, v)| v.units.iter().map(move |&u| (vi, u)))
        .collect()
}

fn finish(problem: &PlanProblem, best: Scored, mode: usize, gco2: f64, evaluated: usize) -> Plan {
    let n = problem.tenants.len();
    let mut variants = vec![0; n];
    let mut units = vec![0; n];
    let mut p50 = vec![0.0; n];
    let mut p95 = vec![0.0; n];
    for (i, &(t, v, u)) in best.assign.iter().enumerate() {
        variants[t] = v;
        units[t] = u;
        p50[t] = best.pred.service_p50_s[i];
        p95[t] = best.pred.service_p95_s[i];
    }
    let lost = accuracy_lost(problem, &best.assign);
    let mean_delay_ms = mean_delay_ms(problem, &best.assign, &best.pred);
    Plan {
        mean_delay_ms,
        accuracy: problem.accuracy_of(|t| variants[t]),
        mapping: Mapping {
            mode,
            variants,
            units,
        },
        predicted: MappingPrediction {
            service_p50_s: p50,
            service_p95_s: p95,
            power_w: best.pred.power_w,
        },
        carbon_g_per_h: best.pred.power_w * gco2 / 1000.0,
        accuracy_lost: lost,
        objective: best.objective,
        worst_deadline_fraction: best.worst,
        evaluated,
        within_accuracy_budget: true,
    }
}

/// Choose the mapping for intensity `gco2` (g/kWh).
///
/// With an accuracy budget ([`SearchOptions::max_accuracy_lost`]) within
/// which the search finds no mapping that meets every deadline, the budget
/// is loosened by 1, 2, 4, 8, 16 points, then dropped, and the plan found
/// is marked `within_accuracy_budget: false`: a lighter model beats a
/// missed deadline.
pub fn plan(
    problem: &PlanProblem,
    est: &mut dyn MappingEstimator,
    gco2: f64,
    opts: &SearchOptions,
) -> Result<Plan, PlanError> {
    let Some(budget) = opts.max_accuracy_lost else {
        return search(problem, est, gco2, opts, true);
    };
    // The budget, then looser ones, then none: give up as little accuracy
    // beyond the budget as the deadlines need.
    let caps = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0]
        .map(|extra| Some(budget + extra))
        .into_iter()
        .chain([None]);
    let mut infeasible = None;
    for (i, cap) in caps.enumerate() {
        let step = SearchOptions {
            max_accuracy_lost: cap,
            ..*opts
        };
        // The budget's own search widens its beam before giving up, as the
        // uncapped one does: a narrow beam must not trade away accuracy a
        // wider one finds within the budget. The looser steps do not (that
        // cost is paid at most twice).
        match search(problem, est, gco2, &step, i == 0 || cap.is_none()) {
            Ok(mut plan) => {
                plan.within_accuracy_budget = plan.accuracy_lost <= budget + 1e-9;
                return Ok(plan);
            }
            Err(e @ PlanError::Infeasible { .. }) => infeasible = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(infeasible.unwrap_or_else(|| PlanError::Malformed("no search ran".into())))
}

fn search(
    problem: &PlanProblem,
    est: &mut dyn MappingEstimator,
    gco2: f64,
    opts: &SearchOptions,
    widen: bool,
) -> Result<Plan, PlanError> {
    if problem.modes.is_empty() || problem.tenants.is_empty() {
        return Err(PlanError::Malformed("no modes or no tenants".into()));
    }
    let n = problem.tenants.len();
    let budget = BudgetCheck::new(problem, opts);
    let opts_per: Vec<Vec<(usize, usize)>> = (0..n).map(|t| options(problem, t)).collect();
    if let Some(t) = (0..n).find(|&t| opts_per[t].is_empty()) {
        return Err(PlanError::Infeasible {
            reason: format!(
                "tenant '{}' has no variant on any unit that meets its accuracy floor",
                problem.tenants[t].name
            ),
        });
    }
    // Most constrained first: shortest deadline, then highest rate.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        let (ta, tb) = (&problem.tenants[a], &problem.tenants[b]);
        ta.deadline_s
            .total_cmp(&tb.deadline_s)
            .then(tb.rate_hz.total_cmp(&ta.rate_hz))
    });
    let space = opts_per.iter().fold(problem.modes.len() as u128, |s, o| {
        s.saturating_mul(o.len() as u128)
    });
    let better = |a: &Scored, b: &Scored| {
        a.objective
            .total_cmp(&b.objective)
            .then(a.worst.total_cmp(&b.worst))
    };
    let mut evaluated = 0usize;
    if space <= opts.exhaustive_limit as u128 {
        let mut all = Vec::new();
        for m in 0..problem.modes.len() {
            let mut idx = vec![0usize; n];
            loop {
                let assign: Assignment = order
                    .iter()
                    .map(|&t| {
                        let (v, u) = opts_per[t][idx[t]];
                        (t, v, u)
                    })
                    .collect();
                all.push((m, assign));
                let mut i = 0;
                while i < n {
                    idx[i] += 1;
                    if idx[i] < opts_per[i].len() {
                        break;
                    }
                    idx[i] = 0;
                    i += 1;
                }
                if i == n {
                    break;
                }
            }
        }
        all.retain(|(_, a)| budget.keeps(problem, a));
        evaluated = all.len();
        let mut best: Option<(usize, Scored)> = None;
        for chunk in all.chunks(256) {
            for (m, s) in score(problem, est, chunk.to_vec(), gco2, opts)? {
                if best.as_ref().is_none_or(|(_, b)| better(&s, b).is_lt()) {
                    best = Some((m, s));
                }
            }
        }
        return best
            .map(|(m, s)| finish(problem, s, m, gco2, evaluated))
            .ok_or_else(|| PlanError::Infeasible {
                reason: format!(
                    "none of the {evaluated} mappings (every mode, variant and unit) fits"
                ),
            });
    }
    // Beam search: one beam per mode, tenants placed in `order`. Partial
    // mappings are ranked by their objective, so a narrow beam can drop
    // the only partials a later tenant fits beside; when the beams empty
    // after pruning, the search runs again four times as wide (up to 64 ×
    // the policy's width, 85 searches' worth at most) before it calls the
    // tenants infeasible — in the search at the accuracy budget and in the
    // one without a cap only (the first and last of `plan`'s loosening
    // steps), so that cost is paid at most twice.
    let modes = problem.modes.len();
    let widest = if widen {
        opts.beam_width.max(1).saturating_mul(64)
    } else {
        opts.beam_width.max(1)
    };
    let mut width = opts.beam_width.max(1);
    'widen: loop {
        let mut beams: Vec<Vec<Scored>> = (0..modes)
            .map(|_| {
                vec![Scored {
                    assign: Vec::new(),
                    pred: MappingPrediction {
                        service_p50_s: Vec::new(),
                        service_p95_s: Vec::new(),
                        power_w: 0.0,
                    },
                    objective: 0.0,
                    worst: 0.0,
                }]
            })
            .collect();
        let mut pruned = false;
        for (depth, &t) in order.iter().enumerate() {
            let mut batch = Vec::new();
            for (m, beam) in beams.iter().enumerate() {
                for s in beam {
                    for &(v, u) in &opts_per[t] {
                        let mut a = s.assign.clone();
                        a.push((t, v, u));
                        batch.push((m, a));
                    }
                }
            }
            batch.retain(|(_, a)| budget.keeps(problem, a));
            evaluated += batch.len();
            let mut next: Vec<Vec<Scored>> = (0..modes).map(|_| Vec::new()).collect();
            for (m, s) in score(problem, est, batch, gco2, opts)? {
                next[m].push(s);
            }
            if next.iter().all(|b| b.is_empty()) {
                // Had nothing been pruned, no mapping exists at all.
                if pruned && width < widest {
                    width = width.saturating_mul(4).min(widest);
                    continue 'widen;
                }
                let placed: Vec<&str> = order[..depth]
                    .iter()
                    .map(|&p| problem.tenants[p].name.as_str())
                    .collect();
                let tenant = &problem.tenants[t];
                let how = if pruned {
                    format!(" (a beam search of width up to {width} over {space} mappings)")
                } else {
                    String::new()
                };
                return Err(PlanError::Infeasible {
                    reason: format!(
                        "tenant '{}' ({:.1} Hz, deadline {:.1} ms) cannot be placed with any \
                         variant, unit or mode alongside {:?}{how}",
                        tenant.name,
                        tenant.rate_hz,
                        tenant.deadline_s * 1000.0,
                        placed
                    ),
                });
            }
            for beam in &mut next {
                beam.sort_by(&better);
                pruned |= beam.len() > width;
                beam.truncate(width);
            }
            beams = next;
        }
        return beams
            .into_iter()
            .enumerate()
            .filter_map(|(m, b)| b.into_iter().next().map(|s| (m, s)))
            .min_by(|a, b| better(&a.1, &b.1))
            .map(|(m, s)| finish(problem, s, m, gco2, evaluated))
            .ok_or_else(|| PlanError::Infeasible {
                reason: "no complete mapping survived the search".into(),
            });
    }
}
