//! The mapping planner inside the simulator: builds the
//! [`PlanProblem`] of a workload on a device,
//! re-plans when the intensity moves past the hysteresis, and logs every
//! plan and why.

use super::plan::{Analysis, Candidate};
use super::SimError;
use crate::device::ModeId;
use crate::estimate::analytic::AnalyticEstimator;
use crate::estimate::descriptors::Descriptors;
use crate::estimate::{EstimateError, MappingEstimator};
use crate::planner::{
    self, AccuracyLedger, CarbonPrice, CarbonPricer, MeanAccuracyBudget, PlanError, PlanMode,
    PlanProblem, PlanTenant, PlanVariant, Replan, Replanner, SearchOptions,
};

/// Maps a variant name to its index in the estimator's table.
type ModelIndex = Box<dyn Fn(&str) -> Option<usize>>;

/// A trained estimator for the simulator's planner: its descriptor table
/// and a way to make one estimator per simulation run.
#[derive(Clone, Copy)]
pub struct Planning<'a> {
    /// The table the estimator's model indices refer to.
    pub descriptors: &'a Descriptors,
    /// Makes a fresh estimator (each run owns one).
    pub make: &'a (dyn Fn() -> Result<Box<dyn MappingEstimator>, EstimateError> + Sync),
}

impl std::fmt::Debug for Planning<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planning").finish_non_exhaustive()
    }
}

/// The outcome of a plan the search found only past the accuracy budget.
const PLANNED_OVER_BUDGET: &str =
    "planned over the accuracy budget: the search found no mapping within it that meets every deadline";

/// One decision of the planner.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanLogEntry {
    /// Hour of the span.
    pub hour: usize,
    /// Intensity read that hour (g/kWh).
    pub gco2_per_kwh: f64,
    /// Intensity the plan priced carbon at (g/kWh): the reading, or the
    /// reading relative to the grid's trailing mean ([`CarbonPrice`]).
    pub priced_gco2_per_kwh: f64,
    /// The accuracy weight the search used (g/h per point): the policy's,
    /// times the mean accuracy budget's multiplier.
    pub accuracy_weight: f64,
    /// Mode chosen (empty when infeasible).
    pub mode: String,
    /// Per tenant: `variant@unit`.
    pub mapping: Vec<String>,
    /// Predicted device power (W, modelled by the estimator).
    pub predicted_power_w: f64,
    /// Predicted mean accuracy (%).
    pub predicted_accuracy: f64,
    /// Points of mean top-1 the plan loses below the heaviest variants
    /// ([`planner::Plan::accuracy_lost`]; what the mean accuracy budget
    /// counts, as in the runtime's governor).
    pub accuracy_lost: f64,
    /// Predicted request-weighted mean response time (ms).
    pub predicted_mean_delay_ms: f64,
    /// Largest predicted response bound over usable deadline.
    pub worst_deadline_fraction: f64,
    /// Candidates the estimator scored (0 when reused from the cache).
    pub evaluated: usize,
    /// `planned`, `reused` (same intensity bucket as an earlier plan), or
    /// `infeasible: …` (the plan in force is kept).
    pub outcome: String,
}

/// The planner's state across a run.
pub struct MappingPlanner {
    problem: PlanProblem,
    options: SearchOptions,
    estimator: Box<dyn MappingEstimator>,
    pricer: CarbonPricer,
    ledger: Option<AccuracyLedger>,
    replanner: Replanner<(Candidate, PlanLogEntry)>,
    /// Every decision, in order.
    pub log: Vec<PlanLogEntry>,
}

impl std::fmt::Debug for MappingPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappingPlanner")
            .field("problem", &self.problem)
            .field("log", &self.log.len())
            .finish_non_exhaustive()
    }
}

impl MappingPlanner {
    /// A planner over `analysis`; with `planning`, the trained estimator,
    /// else the device model's analytic one.
    pub fn new(
        analysis: &Analysis,
        options: SearchOptions,
        price: CarbonPrice,
        mean_accuracy: Option<MeanAccuracyBudget>,
        hysteresis: f64,
        planning: Option<&Planning<'_>>,
    ) -> Result<MappingPlanner, SimError> {
        let device = &analysis.device;
        let names: Vec<String> = analysis
            .tenants
            .iter()
            .flat_map(|t| t.names.iter().cloned())
            .collect();
        let (index, estimator): (ModelIndex, Box<dyn MappingEstimator>) = match planning {
            Some(p) => {
                let d = p.descriptors.clone();
                (
                    Box::new(move |n: &str| d.index(n)),
                    (p.make)().map_err(|e| SimError::Estimator(e.to_string()))?,
                )
            }
            None => {
                let table = names.clone();
                (
                    Box::new(move |n: &str| table.iter().position(|x| x == n)),
                    Box::new(AnalyticEstimator::from_names(device.clone(), names.clone())),
                )
            }
        };
        let problem = problem_with(analysis, &*index)?;
        Ok(MappingPlanner {
            problem,
            options,
            estimator,
            pricer: CarbonPricer::new(price),
            ledger: mean_accuracy.map(AccuracyLedger::new),
            replanner: Replanner::new(hysteresis),
            log: Vec::new(),
        })
    }

    /// The plan for hour `h` at intensity `gco2`; `None` keeps the plan in
    /// force (intensity within the hysteresis, or no feasible mapping —
    /// logged).
    pub fn decide(&mut self, h: usize, gco2: f64) -> Option<Candidate> {
        // Hour h of the span is h hours on the grid's clock.
        let priced = self.pricer.price(gco2, h as f64);
        if let Some(ledger) = &mut self.ledger {
            ledger.advance(h as f64);
        }
        let level = self.ledger.as_ref().map_or(0, AccuracyLedger::level);
        match self.replanner.on_reading(priced, level) {
            Replan::Keep => return None,
            Replan::Reuse((c, mut e)) => {
                self.put_in_force(e.accuracy_lost);
                e.hour = h;
                e.gco2_per_kwh = gco2;
                e.priced_gco2_per_kwh = priced;
                e.evaluated = 0;
                e.outcome = if e.outcome == PLANNED_OVER_BUDGET {
                    "reused (over the accuracy budget)".into()
                } else {
                    "reused".into()
                };
                self.log.push(e);
                return Some(c);
            }
            Replan::Search => {}
        }
        let options = match &self.ledger {
            Some(ledger) => ledger.weigh(&self.options),
            None => self.options,
        };
        match planner::plan(&self.problem, self.estimator.as_mut(), priced, &options) {
            Ok(p) => {
                let c = Candidate {
                    mode: p.mapping.mode,
                    variants: p.mapping.variants.clone(),
                    units: Some(p.mapping.units.clone()),
                };
                let entry = PlanLogEntry {
                    hour: h,
                    gco2_per_kwh: gco2,
                    priced_gco2_per_kwh: priced,
                    accuracy_weight: options.accuracy_point_g_per_h,
                    mode: self.problem.modes[p.mapping.mode].name.clone(),
                    mapping: self
                        .problem
                        .tenants
                        .iter()
                        .enumerate()
                        .map(|(t, tenant)| {
                            format!(
                                "{}@{}",
                                tenant.variants[p.mapping.variants[t]].name, p.mapping.units[t]
                            )
                        })
                        .collect(),
                    predicted_power_w: p.predicted.power_w,
                    predicted_accuracy: p.accuracy,
                    accuracy_lost: p.accuracy_lost,
                    predicted_mean_delay_ms: p.mean_delay_ms,
                    worst_deadline_fraction: p.worst_deadline_fraction,
                    evaluated: p.evaluated,
                    outcome: if p.within_accuracy_budget {
                        "planned".into()
                    } else {
                        PLANNED_OVER_BUDGET.into()
                    },
                };
                self.replanner
                    .record(priced, level, (c.clone(), entry.clone()));
                self.put_in_force(p.accuracy_lost);
                self.log.push(entry);
                Some(c)
            }
            Err(e) => {
                let why = match e {
                    PlanError::Infeasible { reason } => format!("infeasible: {reason}"),
                    other => format!("failed: {other}"),
                };
                self.log.push(PlanLogEntry {
                    hour: h,
                    gco2_per_kwh: gco2,
                    priced_gco2_per_kwh: priced,
                    accuracy_weight: options.accuracy_point_g_per_h,
                    mode: String::new(),
                    mapping: Vec::new(),
                    predicted_power_w: f64::NAN,
                    predicted_accuracy: f64::NAN,
                    accuracy_lost: f64::NAN,
                    predicted_mean_delay_ms: f64::NAN,
                    worst_deadline_fraction: f64::NAN,
                    evaluated: 0,
                    outcome: why,
                });
                None
            }
        }
    }

    /// The ledger learns that a plan losing `accuracy_lost` points is in
    /// force.
    fn put_in_force(&mut self, accuracy_lost: f64) {
        if let Some(ledger) = &mut self.ledger {
            ledger.set_in_force(accuracy_lost);
        }
    }
}

/// The planning problem of a workload on a device, with model indices into
/// `descriptors` (the trained estimator's table).
pub fn plan_problem(
    analysis: &Analysis,
    descriptors: &Descriptors,
) -> Result<PlanProblem, SimError> {
    problem_with(analysis, &|n: &str| descriptors.index(n))
}

fn problem_with(
    analysis: &Analysis,
    index: &dyn Fn(&str) -> Option<usize>,
) -> Result<PlanProblem, SimError> {
    let device = &analysis.device;
    if device.spec().units.len() > crate::estimate::MAX_UNITS {
        return Err(SimError::Estimator(format!(
            "device '{}' has {} units; the estimator's tokens name at most {}",
            device.name(),
            device.spec().units.len(),
            crate::estimate::MAX_UNITS
        )));
    }
    let units = &device.spec().units;
    let tenants = analysis
        .tenants
        .iter()
        .map(|t| {
            let variants = t
                .names
                .iter()
                .enumerate()
                .map(|(v, name)| {
                    Ok(PlanVariant {
                        name: name.clone(),
                        model: index(name).ok_or_else(|| {
                            SimError::Estimator(format!(
                                "variant '{name}' of tenant '{}' has no model descriptor; add \
                                 it to rt-config/model-descriptors.csv \
                                 (scripts/model_descriptors.py) and retrain",
                                t.name
                            ))
                        })?,
                        top1: t.top1[v],
                        units: t
                            .movable
                            .iter()
                            .copied()
                            .filter(|&u| t.cost_s[v][u].is_finite())
                            .collect(),
                    })
                })
                .collect::<Result<Vec<_>, SimError>>()?;
            Ok(PlanTenant {
                name: t.name.clone(),
                variants,
                rate_hz: t.rate_hz,
                deadline_s: t.deadline_s,
                accuracy_floor: t.accuracy_floor,
            })
        })
        .collect::<Result<Vec<_>, SimError>>()?;
    Ok(PlanProblem {
        tenants,
        modes: (0..device.modes().len())
            .map(|m: ModeId| PlanMode {
                name: device.modes()[m].name.clone(),
                fracs: device.mode_fracs(m),
            })
            .collect(),
        units: units.iter().map(|u| u.kind).collect(),
        threads: 1,
    })
}
