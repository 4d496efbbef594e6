//! Overload: goodput with and without feasibility shedding, and a soak.
//!
//! Goodput (default): `workloads/robot.ron` on `rt-config/host.ron` under
//! `policies/edf.ron` (shedding on) and the same policy with shedding off,
//! at load factor 1 and 2, `--seconds` each, one after the other. Per run
//! and tenant: submitted, on time, late, expired, rejected, shed; the share
//! of served requests that were on time; on-time requests per second, and
//! its ratio to the load-factor-1 run of the same policy.
//!
//! Soak (`--soak-minutes N`): the shedding policy at load factor 2 for N
//! minutes; resident memory at start and end, and every tenant's outcomes
//! checked to add up to its submissions.
//!
//! Run from the repository root, as root for SCHED_FIFO:
//! `cargo run --release -p ecomap-bench --bin overload -- --seconds 60`

use clap::Parser;
use ecomap::config::policy::Policy;
use ecomap::config::rt::RtConfig;
use ecomap::config::workload::Workload;
use ecomap::report::RunReport;
use ecomap_actors::rt::allowed_cores;
use ecomap_actors::runtime::Runtime;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
struct Args {
    /// Seconds per goodput run (1..=3600).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Instead: soak at load factor 2 for this many minutes (1..=600).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=600))]
    soak_minutes: Option<u64>,
}

fn rss_mb() -> f64 {
    ecomap_bench::proc_status_mb("VmRSS")
}

fn run(
    w: &Workload,
    rt: &RtConfig,
    p: &Policy,
    secs: u64,
    factor: f64,
) -> Result<RunReport, String> {
    let mut r = Runtime::start(w, rt, p).map_err(|e| e.to_string())?;
    r.run_load(Duration::from_secs(secs), factor)
        .map_err(|e| e.to_string())?;
    Ok(r.shutdown())
}

fn on_time(r: &RunReport) -> u64 {
    r.tenants.iter().map(|t| t.counts.on_time).sum()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let load = || -> Result<_, String> {
        let w = Workload::load(Path::new("workloads/robot.ron")).map_err(|e| e.to_string())?;
        let rt = RtConfig::load(Path::new("rt-config/host.ron")).map_err(|e| e.to_string())?;
        let names: Vec<&str> = w.tenants.iter().map(|t| t.name.as_str()).collect();
        rt.validate(Path::new("rt-config/host.ron"), &allowed_cores(), &names)
            .map_err(|e| e.to_string())?;
        let shed = Policy::load(Path::new("policies/edf.ron")).map_err(|e| e.to_string())?;
        Ok((w, rt, shed))
    };
    let (workload, rt, shed) = match load() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(minutes) = args.soak_minutes {
        eprintln!("soak: {minutes} min at load factor 2 (edf, shedding on)…");
        let mut runtime = match Runtime::start(&workload, &rt, &shed) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        // Resident memory every 10 s while serving (models loaded first).
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut samples = vec![rss_mb()];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(10));
                    samples.push(rss_mb());
                }
                samples
            })
        };
        let served = runtime.run_load(Duration::from_secs(minutes * 60), 2.0);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let samples = sampler.join().unwrap_or_default();
        let report = runtime.shutdown();
        if let Err(e) = served {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
        println!("{}", report.render());
        let at = |i: usize| samples.get(i).copied().unwrap_or(f64::NAN);
        let after_warmup = samples.iter().skip(6).copied();
        let (lo, hi) = after_warmup.fold((f64::INFINITY, 0.0_f64), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
        println!(
            "soak {minutes} min: RSS {:.0} MB at the first release, {:.0} MB after 1 min, {:.0} MB at \
             the end; {lo:.0}–{hi:.0} MB from 1 min on ({} samples, every 10 s); outcomes \
             conserved per tenant: {}",
            at(0),
            at(6),
            samples.last().copied().unwrap_or(f64::NAN),
            samples.len(),
            report.is_conserved()
        );
        return if report.is_conserved() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    let mut no_shed = shed.clone();
    no_shed.shedding = false;
    no_shed.name = "edf-no-shedding".into();
    println!(
        "| policy | load | tenant | submitted | on time | late | expired | rejected | shed | on time of served | on-time/s | vs load 1 |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for policy in [&shed, &no_shed] {
        let mut base = None;
        for factor in [1.0, 2.0] {
            eprintln!(
                "{} at load factor {factor}: {} s…",
                policy.name, args.seconds
            );
            let r = match run(&workload, &rt, policy, args.seconds, factor) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
            assert!(r.is_conserved(), "{}", r.render());
            let secs = r.duration.as_secs_f64();
            let rate = on_time(&r) as f64 / secs;
            let base_rate = *base.get_or_insert(rate);
            for t in &r.tenants {
                let c = &t.counts;
                let served = c.on_time + c.late;
                println!(
                    "| {} | {factor} | {} | {} | {} | {} | {} | {} | {} | {:.1}% | {:.2} | |",
                    policy.name,
                    t.name,
                    c.submitted,
                    c.on_time,
                    c.late,
                    c.expired,
                    c.rejected,
                    c.shed,
                    100.0 * c.on_time as f64 / served.max(1) as f64,
                    c.on_time as f64 / secs
                );
            }
            let (served, ok): (u64, u64) = r.tenants.iter().fold((0, 0), |a, t| {
                (
                    a.0 + t.counts.on_time + t.counts.late,
                    a.1 + t.counts.on_time,
                )
            });
            println!(
                "| {} | {factor} | **all** | {} | {ok} | | | | | **{:.1}%** | **{rate:.2}** | **{:.2}** |",
                policy.name,
                r.tenants.iter().map(|t| t.counts.submitted).sum::<u64>(),
                100.0 * ok as f64 / served.max(1) as f64,
                rate / base_rate
            );
        }
    }
    ExitCode::SUCCESS
}
