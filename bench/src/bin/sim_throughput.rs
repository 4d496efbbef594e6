//! Simulator speed and memory, and sampled-vs-full agreement.
//!
//! On one core (this thread pinned), the default Xavier workload under one
//! policy (`--policy`, default `policies/reactive.ron`; `policies/ecomap.ron`
//! is the planner with its trained estimator) on one trace:
//! 1. simulated requests per second of wall time, full simulation of a span
//!    (median of `--repeats` runs), and peak RSS after `--days` and after a
//!    further `--check-days` run;
//! 2. the same month simulated in full and sampled (`--sample` of every
//!    hour): carbon, miss % and accuracy side by side, and their difference.
//!
//! ```sh
//! cargo run --release -p ecomap-bench --bin sim_throughput -- --days 3 --repeats 3
//! ```

use clap::Parser;
use ecomap::carbon::CarbonTrace;
use ecomap::config::policy::Policy;
use ecomap::config::workload::Workload;
use ecomap::device::DeviceModel;
use ecomap::sim::output::summary_rows;
use ecomap::sim::{simulate, SimSetup};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// Days simulated in full for the speed figure.
    #[arg(long, default_value_t = 3)]
    days: usize,
    /// Speed runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Sampled seconds per hour for the agreement check.
    #[arg(long, default_value_t = 120)]
    sample_s: u64,
    /// Days of the agreement check (full vs sampled).
    #[arg(long, default_value_t = 30)]
    check_days: usize,
    /// Policy file.
    #[arg(long, default_value = "policies/reactive.ron")]
    policy: PathBuf,
    /// Trace.
    #[arg(
        long,
        default_value = "../shared/data/carbon/eia_2022/CISO_2022_hourly_avgCI.csv"
    )]
    trace: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.days == 0 || args.repeats == 0 || args.check_days == 0 || args.sample_s == 0 {
        eprintln!("error: --days, --repeats, --check-days and --sample-s must be at least 1");
        return ExitCode::from(2);
    }
    // One core: the process's first, and pinning must take (else the
    // figure would not be the one-core figure it says it is).
    let core = ecomap_actors::rt::allowed_cores()[0];
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        eprintln!("error: pinning this thread to core {core} was refused");
        return ExitCode::from(2);
    }
    let load = || -> Result<_, String> {
        let w = Workload::load(std::path::Path::new("workloads/xavier-robot.ron"))
            .map_err(|e| e.to_string())?;
        let d = DeviceModel::load(std::path::Path::new("rt-config/devices/xavier.ron"))
            .map_err(|e| e.to_string())?;
        let p = Policy::load(&args.policy).map_err(|e| e.to_string())?;
        let t = CarbonTrace::load(&args.trace).map_err(|e| e.to_string())?;
        let descriptors = ecomap_actors::simulate::load_descriptors(
            &p,
            std::path::Path::new("rt-config/model-descriptors.csv"),
        )
        .map_err(|e| e.to_string())?;
        let maker = ecomap_actors::simulate::estimator_maker(&p, descriptors.as_ref(), &d)
            .map_err(|e| e.to_string())?;
        Ok((w, d, p, t, descriptors, maker))
    };
    let (workload, device, policy, trace, descriptors, maker) = match load() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let setup = |hours: usize, sample: Option<Duration>| SimSetup {
        workload: &workload,
        device: &device,
        policy: &policy,
        trace: &trace,
        start: Duration::ZERO,
        hours,
        sample,
        seed: 1,
        service_seed: None,
        accuracy_target: None,
        planning: match (&maker, &descriptors) {
            (Some(make), Some(d)) => Some(ecomap::sim::mapping::Planning {
                descriptors: d,
                make: make.as_ref(),
            }),
            _ => None,
        },
        service_replay: None,
    };
    // Memory before any simulation: the binary and its libraries
    // (libtorch's, linked for a trained estimator, are most of it).
    let rss_at_start = ecomap_bench::proc_status_mb("VmRSS");
    println!(
        "policy '{}' ({}), core {core}; RSS before simulating {rss_at_start:.0} MB",
        policy.name,
        args.policy.display()
    );
    let mut rates = Vec::new();
    let mut rss_after_short = f64::NAN;
    for _ in 0..args.repeats {
        let t0 = Instant::now();
        let r = match simulate(&setup(args.days * 24, None), |_| {}) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let secs = t0.elapsed().as_secs_f64();
        let n: u64 = r.tenants.iter().map(|t| t.counts.submitted).sum();
        rates.push(n as f64 / secs);
        rss_after_short = ecomap_bench::proc_status_mb("VmHWM");
        println!(
            "full {} d: {n} requests in {secs:.2} s = {:.2} M simulated requests/s (one core)",
            args.days,
            n as f64 / secs / 1e6
        );
    }
    println!(
        "median: {:.2} M simulated requests/s; peak RSS after {} d: {:.0} MB",
        ecomap_bench::median(&mut rates) / 1e6,
        args.days,
        rss_after_short
    );
    let hours = args.check_days * 24;
    let t0 = Instant::now();
    let run = |sample: Option<Duration>| {
        simulate(&setup(hours, sample), |_| {}).map_err(|e| {
            eprintln!("error: --check-days {}: {e}", args.check_days);
            ExitCode::from(2)
        })
    };
    let full = match run(None) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let t_full = t0.elapsed().as_secs_f64();
    let rss_after_long = ecomap_bench::proc_status_mb("VmHWM");
    let t0 = Instant::now();
    let sampled = match run(Some(Duration::from_secs(args.sample_s))) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let t_sampled = t0.elapsed().as_secs_f64();
    println!(
        "peak RSS after a further full {} d run: {:.0} MB (flat in the span: histograms and counters only)",
        args.check_days,
        rss_after_long
    );
    let f = &summary_rows("", "", &full)[0];
    let s = &summary_rows("", "", &sampled)[0];
    // A zero full-run figure has no relative difference: NaN, printed so.
    let rel = |a: f64, b: f64| {
        if a == 0.0 {
            f64::NAN
        } else {
            100.0 * (b - a) / a
        }
    };
    println!(
        "{} d, full ({t_full:.1} s) vs sampled {} s/h ({t_sampled:.1} s):",
        args.check_days, args.sample_s
    );
    println!(
        "  carbon_g   {:>12.3} {:>12.3}  ({:+.2}%)",
        f.carbon_g,
        s.carbon_g,
        rel(f.carbon_g, s.carbon_g)
    );
    println!(
        "  energy_j   {:>12.0} {:>12.0}  ({:+.2}%)",
        f.energy_j,
        s.energy_j,
        rel(f.energy_j, s.energy_j)
    );
    println!(
        "  miss_pct   {:>12.4} {:>12.4}  ({:+.4} points)",
        f.miss_pct,
        s.miss_pct,
        s.miss_pct - f.miss_pct
    );
    println!(
        "  mean_e2e   {:>12.3} {:>12.3}  ({:+.2}%)",
        f.mean_e2e_ms,
        s.mean_e2e_ms,
        rel(f.mean_e2e_ms, s.mean_e2e_ms)
    );
    println!(
        "  accuracy   {:>12.3} {:>12.3}  ({:+.3} points)",
        f.accuracy_pct,
        s.accuracy_pct,
        s.accuracy_pct - f.accuracy_pct
    );
    ExitCode::SUCCESS
}
