//! Estimator query latency and plan time (issue 9's speed targets).
//!
//! On one core (this thread pinned, one libtorch intra-op thread):
//! 1. **Query**: batches of 32 candidate mappings of the six-tenant
//!    `workloads/xavier-robot.ron` (random modes, variants and units; 512
//!    distinct batches, cycled), each scored by the trained transformer in
//!    one call — p50 / p99 / max over `--queries` batches (target: p99 ≤
//!    1 ms) — through the query path
//!    (the weights in plain Rust) and, batch for batch in turn, libtorch's
//!    forward pass of the same weights;
//! 2. **Plan**: the mapping planner's search for that workload on the
//!    virtual Xavier at `--plans` intensities from 50 to 800 g/kWh, with the
//!    transformer and, side by side, the device model's analytic estimator
//!    — median / max (target: ≤ 50 ms with the transformer).
//!
//! ```sh
//! cargo run --release -p ecomap-bench --bin estimator_speed
//! ```

use clap::Parser;
use ecomap::config::workload::Workload;
use ecomap::device::DeviceModel;
use ecomap::estimate::analytic::AnalyticEstimator;
use ecomap::estimate::descriptors::Descriptors;
use ecomap::estimate::{MappingEstimator, MappingQuery};
use ecomap::planner::{plan, SearchOptions};
use ecomap_actors::estimator::TransformerEstimator;
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser, Debug)]
struct Args {
    /// Batches of 32 candidates to time (at least 1).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    queries: u64,
    /// Intensities to plan for (at least 1).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    plans: u64,
    /// Trained estimator.
    #[arg(long, default_value = "rt-config/devices/xavier-estimator")]
    weights: PathBuf,
    /// Core to pin this thread to (default: the last this process may use).
    #[arg(long)]
    core: Option<usize>,
}

/// Distinct random batches the timed queries cycle through: enough that
/// the weights, not one batch's tokens, are what stays in cache.
const BATCHES: usize = 512;

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn main() -> ExitCode {
    let a = Args::parse();
    let allowed = ecomap_actors::rt::allowed_cores();
    let core = a.core.unwrap_or(allowed[allowed.len() - 1]);
    if !allowed.contains(&core)
        || !core_affinity::set_for_current(core_affinity::CoreId { id: core })
    {
        eprintln!(
            "error: --core {core}: this thread cannot be pinned there (the process may use cores \
             {allowed:?})"
        );
        return ExitCode::from(2);
    }
    println!("pinned to core {core}");
    tch::set_num_threads(1);
    let descriptors = match Descriptors::load(&PathBuf::from("rt-config/model-descriptors.csv")) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut est = match TransformerEstimator::load(&a.weights, descriptors.clone()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let inputs = || -> Result<_, String> {
        let workload = Workload::load(&PathBuf::from("workloads/xavier-robot.ron"))
            .map_err(|e| e.to_string())?;
        let device = DeviceModel::load(&PathBuf::from("rt-config/devices/xavier.ron"))
            .map_err(|e| e.to_string())?;
        let analysis = ecomap::sim::analyse(&workload, &device).map_err(|e| e.to_string())?;
        let problem = ecomap::sim::mapping::plan_problem(&analysis, &descriptors)
            .map_err(|e| e.to_string())?;
        Ok((device, problem))
    };
    let (device, problem) = match inputs() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e} (run from the repository root)");
            return ExitCode::from(2);
        }
    };

    // 1. Query latency: random full mappings, 32 per batch.
    let mut state = 0x5eedu64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let batches: Vec<Vec<MappingQuery>> = (0..BATCHES)
        .map(|_| {
            (0..32)
                .map(|_| {
                    let mode = next(problem.modes.len());
                    let assign: Vec<(usize, usize, usize)> = problem
                        .tenants
                        .iter()
                        .enumerate()
                        .map(|(t, tenant)| {
                            let v = next(tenant.variants.len());
                            let units = &tenant.variants[v].units;
                            (t, v, units[next(units.len())])
                        })
                        .collect();
                    problem.query(mode, &assign)
                })
                .collect()
        })
        .collect();
    for b in &batches {
        est.predict(b).expect("warm-up");
        est.predict_libtorch(b).expect("warm-up");
    }
    // Both forward passes of the same weights, batch by batch in turn, so
    // they share the machine's minutes.
    let mut plain = Histogram::<u64>::new(3).expect("histogram");
    let mut libtorch = Histogram::<u64>::new(3).expect("histogram");
    // Time one call into `h`; every call answers all 32 candidates.
    let time = |h: &mut Histogram<u64>, call: &mut dyn FnMut() -> usize| {
        let t0 = Instant::now();
        let answered = call();
        h.record(t0.elapsed().as_nanos() as u64).expect("in range");
        assert_eq!(answered, 32);
    };
    for i in 0..a.queries as usize {
        let batch = &batches[i % batches.len()];
        time(&mut plain, &mut || {
            est.predict(batch).expect("predict").len()
        });
        time(&mut libtorch, &mut || {
            est.predict_libtorch(batch).expect("predict").len()
        });
    }
    for (label, h) in [
        ("query path (plain Rust)", &plain),
        ("libtorch forward", &libtorch),
    ] {
        println!(
            "query, 32 candidates × 6 tenants, transformer, {label}, one core: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} batches)",
            us(h, 0.5) / 1000.0,
            us(h, 0.99) / 1000.0,
            h.max() as f64 / 1e6,
            a.queries
        );
    }
    println!(
        "query p50 ratio libtorch / plain: {:.1}",
        us(&libtorch, 0.5) / us(&plain, 0.5)
    );

    // 2. Plan time, transformer and analytic side by side.
    let options = SearchOptions {
        accuracy_point_g_per_h: 1.0,
        ..SearchOptions::default()
    };
    let names: Vec<String> = descriptors
        .rows()
        .iter()
        .map(|d| d.variant.clone())
        .collect();
    let mut analytic = AnalyticEstimator::from_names(device.clone(), names);
    // A plan that fails is reported and left out of the times (a failure
    // is not a plan), and the bench exits 1.
    let mut failed = 0;
    let mut line = |label: &str, est: &mut dyn MappingEstimator| {
        let mut times = Vec::new();
        let mut evaluated = Vec::new();
        for i in 0..a.plans {
            let g = 50.0 + 750.0 * i as f64 / (a.plans.max(2) - 1) as f64;
            let t0 = Instant::now();
            let planned = plan(&problem, est, g, &options);
            let took = t0.elapsed().as_secs_f64() * 1000.0;
            match planned {
                Ok(p) => {
                    evaluated.push(p.evaluated);
                    times.push(took);
                }
                Err(e) => {
                    eprintln!("error: {label}: plan at {g:.0} g/kWh failed: {e}");
                    failed += 1;
                }
            }
        }
        if times.is_empty() {
            return f64::NAN;
        }
        let max = times.iter().copied().fold(f64::NAN, f64::max);
        let median = ecomap_bench::median(&mut times);
        let (fewest, most) = (
            evaluated.iter().min().copied().unwrap_or(0),
            evaluated.iter().max().copied().unwrap_or(0),
        );
        println!(
            "plan, 6 tenants on the virtual Xavier, {label}: median {median:.1} ms, max {max:.1} ms \
             ({fewest}–{most} candidates scored per plan, {} plans)",
            times.len()
        );
        median
    };
    let t = line("transformer", &mut est);
    let an = line("analytic", &mut analytic);
    println!("plan time ratio transformer / analytic: {:.2}", t / an);
    if failed > 0 {
        eprintln!("error: {failed} plan(s) failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
