//! Hourly planners and the analytic predictor they share.
//!
//! A [`Candidate`] is a power mode plus one variant per tenant. The
//! [`Analysis`] predicts, without simulating, whether a candidate meets
//! every deadline at the workload's load, the device's mean power, and the
//! mean accuracy of what it serves. The predictor is deliberately simple
//! (utilisation and a one-job-ahead response bound per unit, MODELLED);
//! the simulator then measures what the plan really does.

use super::SimError;
use crate::config::policy::PlanPolicy;
use crate::device::{DeviceModel, ModeId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Largest predicted utilisation of a unit that counts as feasible: the
/// rest is headroom for jitter and service-time tails (MODELLED).
pub const MAX_UTILISATION: f64 = 0.85;

/// A power mode and one variant per tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// The mode.
    pub mode: ModeId,
    /// `variants[t]`: tenant `t`'s variant (0 = heaviest).
    pub variants: Vec<usize>,
    /// `units[t]`: the unit tenant `t` is moved to; `None` keeps the
    /// workload's mapping (every planner but the mapping planner).
    pub units: Option<Vec<usize>>,
}

/// What the predictor says of a candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Every unit under [`MAX_UTILISATION`] and every tenant's response
    /// bound within its deadline.
    pub feasible: bool,
    /// Mean device power, watts (modelled).
    pub power_w: f64,
    /// Request-weighted mean published accuracy of the chosen variants (%),
    /// over tenants whose variants have one (0 when none has).
    pub accuracy: f64,
}

/// One tenant as the predictor sees it.
#[derive(Debug, Clone)]
pub(crate) struct TenantModel {
    pub(crate) name: String,
    /// Variant names, heaviest first.
    pub(crate) names: Vec<String>,
    /// Units it may be mapped to: `units` and `movable_to`.
    pub(crate) movable: Vec<usize>,
    pub(crate) accuracy_floor: Option<f64>,
    pub(crate) rate_hz: f64,
    pub(crate) deadline_s: f64,
    pub(crate) units: Vec<usize>,
    /// `cost_s[v][u]`: service of variant `v` on unit `u` at the reference
    /// mode (∞ where the unit cannot run it).
    pub(crate) cost_s: Vec<Vec<f64>>,
    /// Published accuracy per variant; `None` where unknown (such a
    /// tenant is left out of accuracy, as in the summary).
    pub(crate) top1: Vec<Option<f64>>,
}

/// The analytic predictor over one workload on one device.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub(crate) device: DeviceModel,
    pub(crate) tenants: Vec<TenantModel>,
    /// `slowdown[m][u]`.
    pub(crate) slowdown: Vec<Vec<f64>>,
}

impl Analysis {
    /// Predict a candidate.
    pub fn predict(&self, c: &Candidate) -> Prediction {
        let units = self.device.spec().units.len();
        let mut util = vec![0.0; units];
        // Per unit: one job of every tenant on it, for the response bound.
        let mut sum_service = vec![0.0; units];
        for (t, tm) in self.tenants.iter().enumerate() {
            let v = c.variants[t];
            let share = 1.0 / tm.units.len() as f64;
            for &u in &tm.units {
                let s = tm.cost_s[v][u] * self.slowdown[c.mode][u];
                util[u] += tm.rate_hz * share * s;
                sum_service[u] += s;
            }
        }
        // Shared memory bandwidth: a job is stretched by the other units
        // expected to be busy (their utilisation).
        let total: f64 = util.iter().sum();
        let stretch: Vec<f64> = util
            .iter()
            .map(|&u| 1.0 + self.contention(c.mode) * (total - u))
            .collect();
        let mut feasible = true;
        for u in 0..units {
            util[u] *= stretch[u];
            feasible &= util[u] <= MAX_UTILISATION;
        }
        for tm in &self.tenants {
            for &u in &tm.units {
                // Its own job plus one job of every other tenant on the unit
                // that may be ahead of it (non-preemptive EDF), all on this
                // unit, stretched.
                feasible &= sum_service[u] * stretch[u] <= tm.deadline_s;
            }
        }
        let power_w = self.device.power_w(c.mode, &util);
        let (mut acc, mut rate) = (0.0, 0.0);
        for (t, tm) in self.tenants.iter().enumerate() {
            if let Some(a) = tm.top1[c.variants[t]] {
                acc += tm.rate_hz * a;
                rate += tm.rate_hz;
            }
        }
        Prediction {
            feasible,
            power_w,
            accuracy: if rate > 0.0 { acc / rate } else { 0.0 },
        }
    }

    /// Stretch per busy neighbour at `mode`.
    fn contention(&self, mode: ModeId) -> f64 {
        self.device.contention_factor(1, mode) - 1.0
    }

    /// The heaviest variants at `mode`.
    pub fn heaviest(&self, mode: ModeId) -> Candidate {
        Candidate {
            mode,
            variants: vec![0; self.tenants.len()],
            units: None,
        }
    }

    /// Every candidate, modes × variants (for small spaces).
    pub fn all_candidates(&self) -> Vec<Candidate> {
        let mut out = Vec::new();
        let counts: Vec<usize> = self.tenants.iter().map(|t| t.top1.len()).collect();
        for mode in 0..self.device.modes().len() {
            let mut v = vec![0; counts.len()];
            loop {
                out.push(Candidate {
                    mode,
                    variants: v.clone(),
                    units: None,
                });
                // Odometer increment.
                let mut i = 0;
                while i < v.len() {
                    v[i] += 1;
                    if v[i] < counts[i] {
                        break;
                    }
                    v[i] = 0;
                    i += 1;
                }
                if i == v.len() {
                    break;
                }
            }
        }
        out
    }

    /// The lowest-power mode whose heaviest variants are feasible; `None`
    /// when no mode is.
    pub fn efficient_static(&self) -> Option<Candidate> {
        (0..self.device.modes().len())
            .map(|m| self.heaviest(m))
            .map(|c| {
                let p = self.predict(&c);
                (c, p)
            })
            .filter(|(_, p)| p.feasible)
            .min_by(|a, b| a.1.power_w.total_cmp(&b.1.power_w))
            .map(|(c, _)| c)
    }

    fn max_accuracy(&self) -> f64 {
        self.predict(&self.heaviest(self.device.reference_mode()))
            .accuracy
    }
}

/// A planner's running state.
#[derive(Debug)]
pub enum Planner {
    /// A fixed candidate for the whole run (static mode or efficient-static).
    Fixed(Candidate),
    /// Clover-style re-optimisation.
    Clover {
        /// Weight of carbon.
        lambda: f64,
        /// Normalising intensity.
        reference_gco2: f64,
        /// Relative change that triggers a re-plan.
        min_change: f64,
        /// Annealing steps.
        iterations: u32,
        /// Intensity at the last plan.
        last_gco2: Option<f64>,
        /// The plan in force.
        current: Candidate,
    },
    /// Carbon buckets over a look-ahead window; `modes` cleanest first.
    Buckets {
        /// Look-ahead in hours.
        window_h: usize,
        /// Mode per bucket.
        modes: Vec<ModeId>,
    },
    /// Clairvoyant schedule, one candidate per hour.
    Oracle(Vec<Candidate>),
    /// The mapping planner with its estimator.
    Mapping(Box<super::mapping::MappingPlanner>),
}

impl Planner {
    /// Build a planner. `hourly` is the span's intensity per hour (the
    /// trace, which only the look-ahead and clairvoyant planners read);
    /// `accuracy_target` is the oracle's required mean accuracy.
    pub fn new(
        policy: &PlanPolicy,
        analysis: &Analysis,
        hourly: &[f64],
        accuracy_target: Option<f64>,
        planning: Option<&super::mapping::Planning<'_>>,
    ) -> Result<Planner, SimError> {
        let mode = |name: &str| {
            analysis
                .device
                .mode_by_name(name)
                .ok_or_else(|| SimError::UnknownMode {
                    mode: name.to_string(),
                    device: analysis.device.name().to_string(),
                    modes: analysis
                        .device
                        .modes()
                        .iter()
                        .map(|m| m.name.clone())
                        .collect(),
                })
        };
        Ok(match policy {
            PlanPolicy::Static { mode: m } => Planner::Fixed(analysis.heaviest(mode(m)?)),
            PlanPolicy::EfficientStatic => Planner::Fixed(
                analysis
                    .efficient_static()
                    .unwrap_or_else(|| analysis.heaviest(analysis.device.reference_mode())),
            ),
            PlanPolicy::Clover {
                lambda,
                reference_gco2,
                min_change,
                iterations,
            } => Planner::Clover {
                lambda: *lambda,
                reference_gco2: *reference_gco2,
                min_change: *min_change,
                iterations: *iterations,
                last_gco2: None,
                current: analysis.heaviest(analysis.device.reference_mode()),
            },
            PlanPolicy::CarbonBuckets { window, modes } => Planner::Buckets {
                window_h: (window.as_secs() / 3600).max(1) as usize,
                modes: modes.iter().map(|m| mode(m)).collect::<Result<_, _>>()?,
            },
            PlanPolicy::Oracle => Planner::Oracle(oracle_schedule_checked(
                analysis,
                hourly,
                accuracy_target.unwrap_or_else(|| analysis.max_accuracy()),
            )?),
            PlanPolicy::Mapping {
                accuracy_point_g_per_h,
                delay_ms_g_per_h,
                max_accuracy_lost,
                mean_accuracy_lost,
                margin,
                hysteresis_gco2,
                beam_width,
                carbon_price,
                ..
            } => Planner::Mapping(Box::new(super::mapping::MappingPlanner::new(
                analysis,
                crate::planner::SearchOptions {
                    accuracy_point_g_per_h: *accuracy_point_g_per_h,
                    delay_ms_g_per_h: *delay_ms_g_per_h,
                    max_accuracy_lost: *max_accuracy_lost,
                    margin: *margin,
                    beam_width: *beam_width,
                    ..Default::default()
                },
                *carbon_price,
                *mean_accuracy_lost,
                *hysteresis_gco2,
                planning,
            )?)),
        })
    }

    /// Whether its plans choose variants too (Clover, the oracle); the
    /// others choose the mode only.
    pub fn pins_variants(&self) -> bool {
        matches!(
            self,
            Planner::Clover { .. } | Planner::Oracle(_) | Planner::Mapping(_)
        )
    }

    /// The plan for hour `h` (intensity `hourly[h]`); `None` keeps the
    /// plan in force.
    pub fn decide(&mut self, analysis: &Analysis, h: usize, hourly: &[f64]) -> Option<Candidate> {
        let gco2 = hourly[h];
        match self {
            Planner::Fixed(c) => (h == 0).then(|| c.clone()),
            Planner::Clover {
                lambda,
                reference_gco2,
                min_change,
                iterations,
                last_gco2,
                current,
            } => {
                let moved =
                    last_gco2.is_none_or(|last| (gco2 - last).abs() > *min_change * last.max(1e-9));
                if !moved {
                    return None;
                }
                *last_gco2 = Some(gco2);
                let objective = Objective {
                    lambda: *lambda,
                    carbon_scale: gco2
                        / (*reference_gco2
                            * analysis
                                .predict(&analysis.heaviest(analysis.device.reference_mode()))
                                .power_w),
                    accuracy_scale: 1.0 / analysis.max_accuracy(),
                };
                *current = anneal(analysis, current.clone(), &objective, *iterations, h as u64);
                Some(current.clone())
            }
            Planner::Buckets { window_h, modes } => {
                let end = (h + *window_h).min(hourly.len());
                let w = &hourly[h..end];
                let lo = w.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let n = modes.len();
                let bucket = if hi > lo {
                    (((gco2 - lo) / (hi - lo) * n as f64) as usize).min(n - 1)
                } else {
                    0
                };
                Some(analysis.heaviest(modes[bucket]))
            }
            Planner::Oracle(schedule) => schedule.get(h).cloned(),
            Planner::Mapping(m) => m.decide(h, gco2),
        }
    }
}

struct Objective {
    lambda: f64,
    carbon_scale: f64,
    accuracy_scale: f64,
}

impl Objective {
    fn value(&self, p: &Prediction) -> f64 {
        if !p.feasible {
            return f64::INFINITY;
        }
        self.lambda * p.power_w * self.carbon_scale
            - (1.0 - self.lambda) * p.accuracy * self.accuracy_scale
    }
}

/// Simulated annealing over candidates (Clover's search): a neighbour
/// changes the mode or one tenant's variant by one step.
fn anneal(
    analysis: &Analysis,
    start: Candidate,
    objective: &Objective,
    iterations: u32,
    seed: u64,
) -> Candidate {
    let mut rng = SmallRng::seed_from_u64(0x5eed_c10e ^ seed);
    let modes = analysis.device.modes().len();
    let mut current = start;
    let mut f_current = objective.value(&analysis.predict(&current));
    let (mut best, mut f_best) = (current.clone(), f_current);
    let mut temperature = 0.05;
    for _ in 0..iterations {
        let mut next = current.clone();
        let which = rng.random_range(0..=next.variants.len());
        if which == next.variants.len() {
            next.mode = rng.random_range(0..modes);
        } else {
            let n = analysis.tenants[which].top1.len();
            if n > 1 {
                let v = next.variants[which] as i64 + if rng.random_bool(0.5) { 1 } else { -1 };
                next.variants[which] = v.clamp(0, n as i64 - 1) as usize;
            }
        }
        let f_next = objective.value(&analysis.predict(&next));
        let accept = f_next <= f_current
            || (f_next.is_finite()
                && rng.random::<f64>() < ((f_current - f_next) / temperature).exp());
        if accept {
            current = next;
            f_current = f_next;
            if f_current < f_best {
                best = current.clone();
                f_best = f_current;
            }
        }
        temperature *= 0.99;
    }
    best
}

/// The largest search space the oracle enumerates.
pub const MAX_ORACLE_CANDIDATES: u128 = 2_000_000;

fn oracle_schedule_checked(
    analysis: &Analysis,
    hourly: &[f64],
    target: f64,
) -> Result<Vec<Candidate>, SimError> {
    let candidates = analysis
        .tenants
        .iter()
        .fold(analysis.device.modes().len() as u128, |n, t| {
            n.saturating_mul(t.top1.len() as u128)
        });
    if candidates > MAX_ORACLE_CANDIDATES {
        return Err(SimError::SearchSpace {
            candidates,
            max: MAX_ORACLE_CANDIDATES,
        });
    }
    let max = analysis.max_accuracy();
    // ecomap's own accuracy is never above the heaviest variants'; a target
    // given on the command line may be.
    if target > max + 1e-6 {
        return Err(SimError::AccuracyOutOfReach { target, max });
    }
    Ok(oracle_schedule(analysis, hourly, target))
}

/// The modes a plan names must exist on the device (checked before any run).
pub fn check_modes(policy: &PlanPolicy, device: &DeviceModel) -> Result<(), SimError> {
    let names: Vec<&String> = match policy {
        PlanPolicy::Static { mode } => vec![mode],
        PlanPolicy::CarbonBuckets { modes, .. } => modes.iter().collect(),
        _ => Vec::new(),
    };
    for m in names {
        if device.mode_by_name(m).is_none() {
            return Err(SimError::UnknownMode {
                mode: m.clone(),
                device: device.name().to_string(),
                modes: device.modes().iter().map(|x| x.name.clone()).collect(),
            });
        }
    }
    Ok(())
}

/// Per hour, the feasible candidate minimising `intensity × power − μ ×
/// accuracy`, with μ found by bisection so the span's mean predicted
/// accuracy reaches `target` (or the most accurate feasible schedule when
/// it cannot).
fn oracle_schedule(analysis: &Analysis, hourly: &[f64], target: f64) -> Vec<Candidate> {
    let mut options: Vec<(Candidate, Prediction)> = analysis
        .all_candidates()
        .into_iter()
        .map(|c| {
            let p = analysis.predict(&c);
            (c, p)
        })
        .filter(|(_, p)| p.feasible)
        .collect();
    if options.is_empty() {
        let c = analysis.heaviest(analysis.device.reference_mode());
        return vec![c; hourly.len()];
    }
    // Keep the Pareto front in (power, accuracy): nothing else can win.
    options.sort_by(|a, b| {
        a.1.power_w
            .total_cmp(&b.1.power_w)
            .then(b.1.accuracy.total_cmp(&a.1.accuracy))
    });
    let mut front: Vec<(Candidate, Prediction)> = Vec::new();
    for o in options {
        if front.last().is_none_or(|f| o.1.accuracy > f.1.accuracy) {
            front.push(o);
        }
    }
    let pick = |mu: f64, g: f64| -> usize {
        (0..front.len())
            .min_by(|&a, &b| {
                let f = |i: usize| g * front[i].1.power_w - mu * front[i].1.accuracy;
                f(a).total_cmp(&f(b))
            })
            .expect("front is non-empty")
    };
    let mean_acc = |mu: f64| {
        hourly
            .iter()
            .map(|&g| front[pick(mu, g)].1.accuracy)
            .sum::<f64>()
            / hourly.len() as f64
    };
    let (mut lo, mut hi) = (0.0, 1.0);
    while mean_acc(hi) < target && hi < 1e12 {
        hi *= 4.0;
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if mean_acc(mid) >= target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hourly
        .iter()
        .map(|&g| front[pick(hi, g)].0.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_ron;
    use crate::config::workload::Workload;
    use std::path::{Path, PathBuf};

    fn analysis(text: &str) -> Analysis {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rt-config/devices/xavier.ron");
        let d = DeviceModel::load(&p).unwrap();
        let w: Workload = parse_ron(text, Path::new("w.ron"), "workload").unwrap();
        crate::sim::analyse(&w, &d).unwrap()
    }

    /// One GPU tenant: 12 ms at MAXN, 30 Hz, 33 ms deadline — feasible at
    /// MAXN (36%), 30 W, MaxQ and 15 W (≈ 61%); 10 W needs 24 ms × 30 = 73%
    /// and a 24 ms response: also feasible. 60 Hz at 10 W is not.
    fn one(rate: f64) -> Analysis {
        analysis(&format!(
            r#"(tenants: [(name: "a", model: Synthetic(service: "12ms"), units: Some(["gpu"]),
                arrival: Periodic(rate_hz: {rate}), deadline: "33ms", capacity: 4)])"#
        ))
    }

    #[test]
    fn efficient_static_picks_the_lowest_power_feasible_mode() {
        let a = one(30.0);
        let c = a.efficient_static().unwrap();
        assert_eq!(a.device.modes()[c.mode].name, "MODE_10W");
        let a = one(60.0);
        let c = a.efficient_static().unwrap();
        let p = a.predict(&c);
        assert!(p.feasible);
        assert_ne!(a.device.modes()[c.mode].name, "MODE_10W");
        // Every mode that draws less is infeasible.
        for m in 0..a.device.modes().len() {
            let q = a.predict(&a.heaviest(m));
            if q.power_w < p.power_w {
                assert!(!q.feasible, "{}", a.device.modes()[m].name);
            }
        }
    }

    #[test]
    fn an_infeasible_workload_has_no_efficient_static_plan_and_the_oracle_falls_back() {
        let a = one(200.0); // 12 ms × 200 Hz = 240% of the GPU at MAXN
        assert!(a.efficient_static().is_none());
        let s = oracle_schedule(&a, &[100.0, 500.0], 0.0);
        assert_eq!(s, vec![a.heaviest(a.device.reference_mode()); 2]);
    }

    #[test]
    fn the_oracle_never_plans_a_predicted_miss_and_meets_its_accuracy() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.ron");
        let catalog = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/models.ron");
        std::fs::write(
            &file,
            format!(
                r#"(catalog: "{}", tenants: [
                (name: "cam", model: Family("imagenet-resnet-deep"), units: Some(["gpu"]),
                 arrival: Periodic(rate_hz: 60.0), deadline: "33ms", capacity: 4)])"#,
                catalog.display()
            ),
        )
        .unwrap();
        let w = Workload::load(&file).unwrap();
        let d = DeviceModel::load(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rt-config/devices/xavier.ron"),
        )
        .unwrap();
        let a = crate::sim::analyse(&w, &d).unwrap();
        let hourly: Vec<f64> = (0..48)
            .map(|h| if h % 24 < 12 { 50.0 } else { 600.0 })
            .collect();
        let s = oracle_schedule(&a, &hourly, 0.0);
        assert!(s.iter().all(|c| a.predict(c).feasible));
        // With no accuracy to keep, every hour runs the cheapest feasible plan.
        let cheapest = s[0].clone();
        assert!(s.iter().all(|c| *c == cheapest));
        // Asked for the heaviest variant's accuracy, it keeps it every hour.
        let best = a.predict(&a.heaviest(0)).accuracy;
        let s = oracle_schedule(&a, &hourly, best);
        assert!(s
            .iter()
            .all(|c| c.variants[0] == 0 && a.predict(c).feasible));
        // Halfway between, it degrades in the dirty hours, not the clean ones.
        let mid = 0.5 * (best + a.predict(&cheapest).accuracy);
        let s = oracle_schedule(&a, &hourly, mid);
        let mean: f64 = s.iter().map(|c| a.predict(c).accuracy).sum::<f64>() / s.len() as f64;
        assert!(mean >= mid - 1e-9, "{mean} < {mid}");
        let acc = |h: usize| a.predict(&s[h]).accuracy;
        assert!(
            acc(0) >= acc(12),
            "clean hour {} vs dirty hour {}",
            acc(0),
            acc(12)
        );
    }

    #[test]
    fn clover_replans_only_when_the_intensity_moves() {
        let a = one(30.0);
        let policy = PlanPolicy::Clover {
            lambda: 0.5,
            reference_gco2: 300.0,
            min_change: 0.05,
            iterations: 200,
        };
        let hourly = [300.0, 305.0, 400.0];
        let mut p = Planner::new(&policy, &a, &hourly, None, None).unwrap();
        let first = p.decide(&a, 0, &hourly).expect("the first hour plans");
        assert!(a.predict(&first).feasible);
        assert!(
            p.decide(&a, 1, &hourly).is_none(),
            "a 1.7% move keeps the plan"
        );
        assert!(p.decide(&a, 2, &hourly).is_some());
    }
}
