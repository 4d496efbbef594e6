//! The planner on hand-made estimators.

use super::*;
use crate::estimate::{EstimateError, MappingEstimator, MappingPrediction, MappingQuery};
use proptest::prelude::*;

/// Service = `cost[model][unit] / clock`, p95 = 1.2 × p50; power =
/// `idle[mode] + Σ util × busy_w`. Modes are told apart by their GPU clock.
struct Table {
    cost: Vec<Vec<f64>>,
    idle: Vec<(f64, f64)>,
    busy_w: f64,
    calls: usize,
}

impl MappingEstimator for Table {
    fn predict(&mut self, qs: &[MappingQuery]) -> Result<Vec<MappingPrediction>, EstimateError> {
        self.calls += 1;
        Ok(qs
            .iter()
            .map(|q| {
                let clock = q.mode_fracs[0];
                let idle = self
                    .idle
                    .iter()
                    .find(|(f, _)| (*f - clock).abs() < 1e-9)
                    .map_or(10.0, |x| x.1);
                let p50: Vec<f64> = q
                    .tenants
                    .iter()
                    .map(|p| self.cost[p.model][p.unit] / clock)
                    .collect();
                let util: f64 = q.tenants.iter().zip(&p50).map(|(p, s)| p.rate_hz * s).sum();
                MappingPrediction {
                    service_p95_s: p50.iter().map(|s| s * 1.2).collect(),
                    service_p50_s: p50,
                    power_w: idle + util * self.busy_w * clock,
                }
            })
            .collect())
    }
}

fn variant(name: &str, model: usize, top1: f64, units: Vec<usize>) -> PlanVariant {
    PlanVariant {
        name: name.into(),
        model,
        top1: Some(top1),
        units,
    }
}

fn tenant(name: &str, rate_hz: f64, deadline_ms: f64, variants: Vec<PlanVariant>) -> PlanTenant {
    PlanTenant {
        name: name.into(),
        variants,
        rate_hz,
        deadline_s: deadline_ms / 1000.0,
        accuracy_floor: None,
    }
}

fn modes() -> Vec<PlanMode> {
    vec![
        PlanMode {
            name: "fast".into(),
            fracs: [1.0, 1.0, 1.0],
        },
        PlanMode {
            name: "slow".into(),
            fracs: [0.5, 0.5, 0.5],
        },
    ]
}

fn table() -> Table {
    // model 0 heavy: 10 ms on unit 0, 20 ms on unit 1; model 1 light: 4 / 8 ms.
    Table {
        cost: vec![vec![0.010, 0.020], vec![0.004, 0.008]],
        idle: vec![(1.0, 12.0), (0.5, 8.0)],
        busy_w: 20.0,
        calls: 0,
    }
}

fn problem(tenants: Vec<PlanTenant>) -> PlanProblem {
    PlanProblem {
        tenants,
        modes: modes(),
        units: vec![UnitKind::Gpu, UnitKind::Dla],
        threads: 1,
    }
}

fn both_variants() -> Vec<PlanVariant> {
    vec![
        variant("heavy", 0, 80.0, vec![0, 1]),
        variant("light", 1, 70.0, vec![0, 1]),
    ]
}

#[test]
fn picks_the_known_best_mapping() {
    // Two 10 Hz tenants with 50 ms deadlines (45 ms usable with the 10%
    // margin). At the slow mode the heavy model takes 20 ms on unit 0 and
    // 40 ms on unit 1: both heavy on unit 0 fit (a 24 ms tail + 20 ms
    // ahead = 44 ms), but heavy on unit 1 has a 48 ms tail and misses. So
    // the best is: slow mode (idle 8 W), both heavy, both on unit 0.
    let p = problem(vec![
        tenant("a", 10.0, 50.0, both_variants()),
        tenant("b", 10.0, 50.0, both_variants()),
    ]);
    let mut est = table();
    let opts = SearchOptions {
        accuracy_point_g_per_h: 10.0,
        ..SearchOptions::default()
    };
    let plan = plan(&p, &mut est, 400.0, &opts).unwrap();
    assert_eq!(
        plan.mapping,
        Mapping {
            mode: 1,
            variants: vec![0, 0],
            units: vec![0, 0]
        }
    );
    assert_eq!(plan.accuracy_lost, 0.0);
    assert!(plan.worst_deadline_fraction <= 1.0);
    // Cheap accuracy: at a very dirty grid, giving up accuracy pays.
    let cheap = SearchOptions {
        accuracy_point_g_per_h: 0.0001,
        ..SearchOptions::default()
    };
    let lean = super::plan(&p, &mut est, 2000.0, &cheap).unwrap();
    assert_eq!(lean.mapping.variants, vec![1, 1]);
    assert!(lean.predicted.power_w < plan.predicted.power_w);
}

#[test]
fn an_infeasible_set_of_tenants_is_reported() {
    // 5 ms deadline: even the light model (4 ms, tail 4.8 ms > 4.5 ms usable) misses.
    let p = problem(vec![
        tenant("ok", 10.0, 50.0, both_variants()),
        tenant("tight", 10.0, 5.0, both_variants()),
    ]);
    let e = plan(&p, &mut table(), 300.0, &SearchOptions::default()).unwrap_err();
    assert!(matches!(e, PlanError::Infeasible { .. }), "{e}");
    // The beam search names the tenant it could not place.
    let beam = SearchOptions {
        exhaustive_limit: 0,
        ..SearchOptions::default()
    };
    let e = plan(&p, &mut table(), 300.0, &beam)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tight"), "{e}");
}

#[test]
fn a_narrow_beam_widens_rather_than_call_a_feasible_set_infeasible() {
    // "first" (20 Hz, 15 ms) is placed first; alone it is cheapest on unit
    // 0 (4 ms) but fits unit 1 too (8 ms). "second" (10 Hz, 15 ms) runs
    // only on unit 0 (10 ms, tail 12 ms) and misses beside "first" there
    // (12 + 4 ms > 13.5 ms usable). A beam of width 1 keeps only "first"
    // on unit 0 and empties at "second"; the search must widen and find
    // "first" on unit 1.
    let p = problem(vec![
        tenant(
            "first",
            20.0,
            15.0,
            vec![variant("light", 1, 70.0, vec![0, 1])],
        ),
        tenant(
            "second",
            10.0,
            15.0,
            vec![variant("heavy", 0, 80.0, vec![0])],
        ),
    ]);
    let narrow = SearchOptions {
        exhaustive_limit: 0,
        beam_width: 1,
        ..SearchOptions::default()
    };
    let plan = plan(&p, &mut table(), 300.0, &narrow).unwrap();
    assert_eq!(
        plan.mapping,
        Mapping {
            mode: 0,
            variants: vec![0, 0],
            units: vec![1, 0]
        }
    );
    // The exhaustive search agrees.
    let all = super::plan(&p, &mut table(), 300.0, &SearchOptions::default()).unwrap();
    assert_eq!(all.mapping, plan.mapping);
    // Under an accuracy budget the budget's own search widens too: the
    // plan is found within it (it lost nothing), and says so.
    let capped = SearchOptions {
        max_accuracy_lost: Some(0.0),
        ..narrow
    };
    let within = super::plan(&p, &mut table(), 300.0, &capped).unwrap();
    assert_eq!(within.mapping, plan.mapping);
    assert_eq!(within.accuracy_lost, 0.0);
    assert!(within.within_accuracy_budget);
}

#[test]
fn a_unit_that_is_out_is_planned_around() {
    // Both tenants heavy on unit 0 at the slow mode is the best mapping
    // (picks_the_known_best_mapping); with unit 0 out they go to unit 1,
    // where the heavy model misses its deadline at either mode — so they
    // run light there.
    let p = problem(vec![
        tenant("a", 10.0, 50.0, both_variants()),
        tenant("b", 10.0, 50.0, both_variants()),
    ]);
    let without_0 = p.without_units(|u| u == 0);
    let around = plan(&without_0, &mut table(), 400.0, &SearchOptions::default()).unwrap();
    assert_eq!(around.mapping.units, vec![1, 1]);
    // A tenant whose only unit is out keeps it (it cannot be served
    // anyway), and the others are still planned, around the unit.
    let q = problem(vec![
        tenant(
            "pinned",
            10.0,
            50.0,
            vec![variant("heavy", 0, 80.0, vec![0])],
        ),
        tenant("free", 10.0, 50.0, both_variants()),
    ]);
    let around = plan(
        &q.without_units(|u| u == 0),
        &mut table(),
        400.0,
        &SearchOptions::default(),
    )
    .unwrap();
    assert_eq!(around.mapping.units, vec![0, 1]);
}

/// Predicts NaN for everything (e.g. corrupt normalisation).
struct Broken;

impl MappingEstimator for Broken {
    fn predict(&mut self, qs: &[MappingQuery]) -> Result<Vec<MappingPrediction>, EstimateError> {
        Ok(qs
            .iter()
            .map(|q| MappingPrediction {
                service_p50_s: vec![f64::NAN; q.tenants.len()],
                service_p95_s: vec![f64::NAN; q.tenants.len()],
                power_w: f64::NAN,
            })
            .collect())
    }
}

#[test]
fn nan_predictions_are_never_feasible() {
    let p = problem(vec![tenant("a", 10.0, 50.0, both_variants())]);
    for opts in [
        SearchOptions::default(),
        SearchOptions {
            exhaustive_limit: 0,
            ..SearchOptions::default()
        },
    ] {
        let e = plan(&p, &mut Broken, 300.0, &opts).unwrap_err();
        assert!(matches!(e, PlanError::Infeasible { .. }), "{e}");
    }
}

#[test]
fn accuracy_floor_is_kept() {
    let mut t = tenant("a", 10.0, 50.0, both_variants());
    t.accuracy_floor = Some(75.0);
    let p = problem(vec![t]);
    let cheap = SearchOptions {
        accuracy_point_g_per_h: 0.0,
        ..SearchOptions::default()
    };
    let plan = plan(&p, &mut table(), 900.0, &cheap).unwrap();
    assert_eq!(plan.mapping.variants, vec![0]);
}

#[test]
fn accuracy_budget_is_kept_and_yields_to_deadlines() {
    // Accuracy nearly free on a dirty grid: without a budget both tenants
    // go light (10 points lost).
    let p = problem(vec![
        tenant("a", 10.0, 50.0, both_variants()),
        tenant("b", 10.0, 50.0, both_variants()),
    ]);
    let cheap = SearchOptions {
        accuracy_point_g_per_h: 0.0001,
        ..SearchOptions::default()
    };
    assert_eq!(
        plan(&p, &mut table(), 2000.0, &cheap)
            .unwrap()
            .accuracy_lost,
        10.0
    );
    // A 5-point budget: exactly one of the two equal-rate tenants goes
    // light, by the exhaustive search and by the beam alike.
    for exhaustive_limit in [2048, 0] {
        let budget = SearchOptions {
            max_accuracy_lost: Some(5.0),
            exhaustive_limit,
            ..cheap
        };
        let planned = plan(&p, &mut table(), 2000.0, &budget).unwrap();
        assert_eq!(planned.accuracy_lost, 5.0, "limit {exhaustive_limit}");
        assert!(planned.within_accuracy_budget);
        let mut variants = planned.mapping.variants.clone();
        variants.sort_unstable();
        assert_eq!(variants, vec![0, 1]);
    }
    // A 12 ms deadline (10.8 ms usable) rules the heavy model out (a 12 ms
    // tail even at the fast mode): no mapping within a zero budget meets
    // it, so the plan gives up accuracy, not the deadline, and says so.
    let tight = problem(vec![
        tenant("a", 10.0, 50.0, both_variants()),
        tenant("tight", 10.0, 12.0, both_variants()),
    ]);
    for exhaustive_limit in [2048, 0] {
        let zero = SearchOptions {
            accuracy_point_g_per_h: 10.0,
            max_accuracy_lost: Some(0.0),
            exhaustive_limit,
            ..SearchOptions::default()
        };
        let planned = plan(&tight, &mut table(), 400.0, &zero).unwrap();
        assert!(!planned.within_accuracy_budget, "limit {exhaustive_limit}");
        assert_eq!(planned.mapping.variants, vec![0, 1]);
        assert!(planned.worst_deadline_fraction <= 1.0);
    }
}

#[test]
fn beam_batches_queries() {
    // Six tenants: 2 modes × (2 variants × 2 units)^6 = 8192 mappings, over
    // the exhaustive limit; the beam asks one batch per tenant placed.
    let tenants = (0..6)
        .map(|i| tenant(&format!("t{i}"), 2.0, 200.0, both_variants()))
        .collect();
    let p = problem(tenants);
    let mut est = table();
    let plan = plan(&p, &mut est, 300.0, &SearchOptions::default()).unwrap();
    assert_eq!(est.calls, 6);
    assert!(plan.evaluated < 8192);
}

fn random_problem(seed: u64) -> PlanProblem {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let n = rng.random_range(1..=4);
    let tenants = (0..n)
        .map(|i| {
            tenant(
                &format!("t{i}"),
                rng.random_range(1.0..30.0),
                rng.random_range(10.0..120.0),
                both_variants(),
            )
        })
        .collect();
    problem(tenants)
}

/// Every mapping, scored independently of the planner's own code.
fn brute_force(p: &PlanProblem, est: &mut Table, gco2: f64, o: &SearchOptions) -> Option<f64> {
    let n = p.tenants.len();
    let mut best: Option<f64> = None;
    for mode in 0..p.modes.len() {
        for code in 0..(4usize.pow(n as u32)) {
            let assign: Vec<(usize, usize, usize)> = (0..n)
                .map(|t| {
                    let c = (code >> (2 * t)) & 3;
                    (t, c / 2, c % 2)
                })
                .collect();
            let pred = &est.predict(&[p.query(mode, &assign)]).unwrap()[0];
            // Table's p95 is 1.2 × p50: a log-normal with σ = ln 1.2 / 1.645,
            // whose mean is p50 · e^(σ²/2).
            let sigma = 1.2f64.ln() / 1.645;
            let mean = |i: usize| pred.service_p50_s[i] * (sigma * sigma / 2.0).exp();
            let mut util = [0.0; 2];
            for (i, a) in assign.iter().enumerate() {
                util[a.2] += p.tenants[a.0].rate_hz * mean(i);
            }
            let fits = util.iter().all(|&u| u <= o.max_utilisation)
                && assign.iter().enumerate().all(|(i, a)| {
                    let ahead: f64 = assign
                        .iter()
                        .enumerate()
                        .filter(|(j, b)| *j != i && b.2 == a.2)
                        .map(|(j, _)| mean(j))
                        .sum();
                    pred.service_p95_s[i] + ahead <= p.tenants[a.0].deadline_s * (1.0 - o.margin)
                });
            if fits {
                let rate: f64 = p.tenants.iter().map(|t| t.rate_hz).sum();
                let lost: f64 = assign
                    .iter()
                    .map(|a| p.tenants[a.0].rate_hz * if a.1 == 1 { 10.0 } else { 0.0 })
                    .sum::<f64>()
                    / rate;
                let f = pred.power_w * gco2 / 1000.0 + o.accuracy_point_g_per_h * lost;
                best = Some(best.map_or(f, |b: f64| b.min(f)));
            }
        }
    }
    best
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Exhaustive search finds the brute-force optimum; the plan it picks
    /// never has a predicted bound past a deadline; a wide beam agrees.
    #[test]
    fn exhaustive_is_optimal_and_never_misses(seed in any::<u64>(), gco2 in 20.0f64..900.0) {
        let p = random_problem(seed);
        let o = SearchOptions::default();
        let expect = brute_force(&p, &mut table(), gco2, &o);
        match plan(&p, &mut table(), gco2, &o) {
            Ok(plan) => {
                let best = expect.expect("brute force finds a feasible mapping too");
                prop_assert!((plan.objective - best).abs() < 1e-9, "{} vs {best}", plan.objective);
                prop_assert!(plan.worst_deadline_fraction <= 1.0);
                for t in 0..p.tenants.len() {
                    prop_assert!(plan.predicted.service_p95_s[t] <= p.tenants[t].deadline_s);
                }
                let wide = SearchOptions { exhaustive_limit: 0, beam_width: 256, ..o };
                let beam = super::plan(&p, &mut table(), gco2, &wide).unwrap();
                prop_assert!((beam.objective - best).abs() < 1e-9);
            }
            Err(PlanError::Infeasible { .. }) => prop_assert!(expect.is_none()),
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}

#[test]
fn a_delay_weight_buys_speed_with_carbon() {
    // One 10 Hz tenant, heavy variant only, on unit 0 (10 ms at the fast
    // mode, 20 ms at the slow one). Carbon alone picks the slow mode (8 W
    // idle + 0.2 × 20 × 0.5 = 10 W against 12 + 0.1 × 20 = 14 W); at 100
    // g/kWh that saves 0.4 g/h for 10 ms more of service (plus the wait,
    // ρ S / 2 / (1 − ρ): 2.5 ms against 0.56 ms).
    let heavy_on_0 = || vec![variant("heavy", 0, 80.0, vec![0])];
    let p = problem(vec![tenant("a", 10.0, 100.0, heavy_on_0())]);
    let mut est = table();
    let carbon_only = plan(&p, &mut est, 100.0, &SearchOptions::default()).unwrap();
    assert_eq!(carbon_only.mapping.mode, 1, "slow: least carbon");
    // Log-normal service through p50 = 20 ms, p95 = 24 ms: σ = ln 1.2 /
    // 1.645, mean = p50·e^(σ²/2), E[S²] = p50²·e^(2σ²); the wait is
    // λ E[S²] / 2 / (1 − λ mean).
    let sigma = 1.2f64.ln() / 1.645;
    let mean = 0.020 * (sigma * sigma / 2.0).exp();
    let second = 0.020f64.powi(2) * (2.0 * sigma * sigma).exp();
    let expected = (mean + 10.0 * second / 2.0 / (1.0 - 10.0 * mean)) * 1000.0;
    assert!((carbon_only.mean_delay_ms - expected).abs() < 1e-9);
    assert!((expected - 22.7).abs() < 0.05);
    // 0.1 g/h per ms: 11.9 ms saved is worth 1.19 g/h > 0.4 g/h spent.
    let opts = SearchOptions {
        delay_ms_g_per_h: 0.1,
        ..SearchOptions::default()
    };
    let fast = plan(&p, &mut est, 100.0, &opts).unwrap();
    assert_eq!(fast.mapping.mode, 0, "fast: the delay is worth the carbon");
    assert!(fast.mean_delay_ms < carbon_only.mean_delay_ms);
    assert!(fast.carbon_g_per_h > carbon_only.carbon_g_per_h);
    // At a dirty grid the same weight no longer pays for the fast mode
    // (2000 g/kWh: 8 g/h more for 1.19 g/h of delay).
    let dirty = plan(&p, &mut est, 2000.0, &opts).unwrap();
    assert_eq!(dirty.mapping.mode, 1);
}

/// One tenant's service, with a spread of its own, whatever the mapping.
struct Skewed {
    p50: f64,
    p95: f64,
}

impl MappingEstimator for Skewed {
    fn predict(&mut self, qs: &[MappingQuery]) -> Result<Vec<MappingPrediction>, EstimateError> {
        Ok(qs
            .iter()
            .map(|q| MappingPrediction {
                service_p50_s: vec![self.p50 / q.mode_fracs[0]; q.tenants.len()],
                service_p95_s: vec![self.p95 / q.mode_fracs[0]; q.tenants.len()],
                power_w: 10.0,
            })
            .collect())
    }
}

/// `tenants` on one mode, planned with every service at `p50` / `p95`
/// seconds (default options, 300 g/kWh).
fn plan_skewed(tenants: Vec<PlanTenant>, p50: f64, p95: f64) -> Result<Plan, PlanError> {
    let p = PlanProblem {
        modes: modes()[..1].to_vec(),
        ..problem(tenants)
    };
    plan(
        &p,
        &mut Skewed { p50, p95 },
        300.0,
        &SearchOptions::default(),
    )
}

fn only_unit_0() -> Vec<PlanVariant> {
    vec![variant("only", 0, 80.0, vec![0])]
}

#[test]
fn utilisation_counts_the_mean_service_not_the_median() {
    // 84 requests/s of a 10 ms median: 0.84 of the unit by the median,
    // under the 0.85 ceiling. With a p95 of twice the median the
    // log-normal's mean is 10.93 ms: 0.92 of the unit, over it.
    let one = || vec![tenant("t", 84.0, 100.0, only_unit_0())];
    let even = plan_skewed(one(), 0.010, 0.010);
    assert!(
        even.is_ok(),
        "no spread: mean = median, 0.84 fits: {even:?}"
    );
    let skewed = plan_skewed(one(), 0.010, 0.020);
    assert!(
        matches!(skewed, Err(PlanError::Infeasible { .. })),
        "{skewed:?}"
    );
}

#[test]
fn the_work_ahead_counts_the_mean_service_not_the_median() {
    // Two tenants on one unit, each 10 ms at the median and 20 ms at p95
    // (mean 10.93 ms). Each must fit its own p95 plus one job of the
    // other within 90% of a 33.9 ms deadline (30.5 ms): 20 + 10 = 30 by
    // the median, 20 + 10.93 = 30.93 by the mean — it does not fit.
    let two = |deadline_ms| {
        vec![
            tenant("a", 1.0, deadline_ms, only_unit_0()),
            tenant("b", 1.0, deadline_ms, only_unit_0()),
        ]
    };
    let tight = plan_skewed(two(33.9), 0.010, 0.020);
    assert!(
        matches!(tight, Err(PlanError::Infeasible { .. })),
        "30.9 ms of work for 30.5 ms: {tight:?}"
    );
    // With a deadline a little longer (31.05 ms usable) it fits.
    assert!(plan_skewed(two(34.5), 0.010, 0.020).is_ok());
}
