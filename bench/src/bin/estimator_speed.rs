//! Estimator query latency and plan time (issue 9's speed targets).
//!
//! On one core (this thread pinned, one libtorch intra-op thread):
//! 1. **Query**: batches of 32 candidate mappings of the six-tenant
//!    `workloads/xavier-robot.ron` (random modes, variants and units), each
//!    scored by the trained transformer in one call — p50 / p99 / max over
//!    `--queries` batches (target: p99 ≤ 1 ms) — through the query path
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
    /// Batches of 32 candidates to time.
    #[arg(long, default_value_t = 5000)]
    queries: usize,
    /// Intensities to plan for.
    #[arg(long, default_value_t = 16)]
    plans: usize,
    /// Trained estimator.
    #[arg(long, default_value = "rt-config/devices/xavier-estimator")]
    weights: PathBuf,
    /// Core to pin this thread to.
    #[arg(long, default_value_t = 1)]
    core: usize,
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn main() -> ExitCode {
    let a = Args::parse();
    if let Some(id) = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.id == a.core)
    {
        core_affinity::set_for_current(id);
    }
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
    let workload = Workload::load(&PathBuf::from("workloads/xavier-robot.ron")).expect("workload");
    let device = DeviceModel::load(&PathBuf::from("rt-config/devices/xavier.ron")).expect("device");
    let analysis = ecomap::sim::analyse(&workload, &device).expect("analysis");
    let problem = ecomap::sim::mapping::plan_problem(&analysis, &descriptors).expect("problem");

    // 1. Query latency: random full mappings, 32 per batch.
    let mut state = 0x5eedu64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let batches: Vec<Vec<MappingQuery>> = (0..64)
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
    for i in 0..a.queries {
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
    let line = |label: &str, est: &mut dyn MappingEstimator| {
        let mut times = Vec::new();
        let mut evaluated = 0;
        for i in 0..a.plans {
            let g = 50.0 + 750.0 * i as f64 / (a.plans.max(2) - 1) as f64;
            let t0 = Instant::now();
            match plan(&problem, est, g, &options) {
                Ok(p) => evaluated = p.evaluated,
                Err(e) => eprintln!("plan at {g:.0} g/kWh: {e}"),
            }
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "plan, 6 tenants on the virtual Xavier, {label}: median {:.1} ms, max {:.1} ms ({} candidates scored per plan, {} plans)",
            times[times.len() / 2],
            times[times.len() - 1],
            evaluated,
            times.len()
        );
        times[times.len() / 2]
    };
    let t = line("transformer", &mut est);
    let an = line("analytic", &mut analytic);
    println!("plan time ratio transformer / analytic: {:.2}", t / an);
    ExitCode::SUCCESS
}
