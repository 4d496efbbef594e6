//! Fault injection on the real perception workload: what each fault costs.
//!
//! `workloads/robot.ron` (real libtorch models) on `rt-config/host.ron`
//! (pinned SCHED_FIFO workers), `policies/edf.ron` plus a fixed-cap
//! governor on the emulated Xavier (so a control-plane failure has a cap to
//! fall back to). One clean run, then one run per fault armed `--at`
//! seconds into a `--seconds` run; a worker that fails to load is timed to
//! its start-up error. Per run: the outcome counts over every tenant,
//! whether they add up to the submissions, whether the run was reported
//! degraded, and the incident the report gives.
//!
//! Run from the repository root, as root for SCHED_FIFO:
//! `cargo run --release -p ecomap-bench --bin fault_injection -- --seconds 20`

use clap::Parser;
use ecomap::config::parse_ron;
use ecomap::config::policy::Policy;
use ecomap::config::rt::RtConfig;
use ecomap::config::workload::Workload;
use ecomap::report::RunReport;
use ecomap::request::Outcome;
use ecomap_actors::faults::{Fault, FaultInjector, ScheduledFault};
use ecomap_actors::rt::allowed_cores;
use ecomap_actors::runtime::Runtime;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// Seconds per run (2..=600).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(2..=600))]
    seconds: u64,
    /// When each fault is armed, seconds after the first release.
    #[arg(long, default_value_t = 5.0)]
    at: f64,
}

fn load() -> Result<(Workload, RtConfig, Policy), String> {
    let w = Workload::load(Path::new("workloads/robot.ron")).map_err(|e| e.to_string())?;
    let rt = RtConfig::load(Path::new("rt-config/host.ron")).map_err(|e| e.to_string())?;
    let names: Vec<&str> = w.tenants.iter().map(|t| t.name.as_str()).collect();
    rt.validate(Path::new("rt-config/host.ron"), &allowed_cores(), &names)
        .map_err(|e| e.to_string())?;
    let mut policy = Policy::load(Path::new("policies/edf.ron")).map_err(|e| e.to_string())?;
    let governed: Policy = parse_ron(
        r#"(name: "edf", carbon: Fixed(gco2_per_kwh: 300.0),
            governor: (rule: Fixed(cap_w: 40.0), max_staleness: "1h", fallback_cap_w: 15.0))"#,
        Path::new("fault_injection"),
        "policy",
    )
    .map_err(|e| e.to_string())?;
    policy.carbon = governed.carbon;
    policy.governor = governed.governor;
    Ok((w, rt, policy))
}

fn count(r: &RunReport, o: Outcome) -> u64 {
    r.tenants.iter().map(|t| t.counts.get(o)).sum()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (workload, rt, policy) = match load() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let names: Vec<String> = rt.workers.iter().map(|w| w.name.clone()).collect();
    let first = names[0].clone();
    let last = names[names.len() - 1].clone();
    let cases: Vec<(String, Option<Fault>)> = vec![
        ("none".into(), None),
        (
            format!("worker-panic:{first}"),
            Some(Fault::WorkerPanic(first.clone())),
        ),
        (
            format!("pass-panic:{last}"),
            Some(Fault::PassPanic(last.clone())),
        ),
        ("control-plane-panic".into(), Some(Fault::ControlPlanePanic)),
        (
            "telemetry-stall:3s".into(),
            Some(Fault::TelemetryStall(Duration::from_secs(3))),
        ),
        ("telemetry-panic".into(), Some(Fault::TelemetryPanic)),
    ];
    println!(
        "| fault (at {} s of {} s) | submitted | on time | late | expired | rejected | shed | failed | conserved | degraded | incident |",
        args.at, args.seconds
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|");
    let mut all_conserved = true;
    for (label, fault) in cases {
        eprintln!("fault {label}…");
        let mut runtime =
            match Runtime::start_with_faults(&workload, &rt, &policy, FaultInjector::new(&names)) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
        if let Some(f) = fault {
            let scheduled = ScheduledFault {
                fault: f,
                at: Duration::from_secs_f64(args.at),
            };
            if let Err(e) = runtime.schedule_faults(vec![scheduled]) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
        let served = runtime.run_load(Duration::from_secs(args.seconds), 1.0);
        let r = runtime.shutdown();
        if let Err(e) = served {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
        all_conserved &= r.is_conserved();
        let incident = r
            .incidents
            .iter()
            .filter(|i| !i.what.starts_with("admission"))
            .map(|i| format!("{:.2} s: {}", i.at_s, i.what))
            .collect::<Vec<_>>()
            .join("; ");
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.tenants.iter().map(|t| t.counts.submitted).sum::<u64>(),
            count(&r, Outcome::OnTime),
            count(&r, Outcome::Late),
            count(&r, Outcome::Expired),
            count(&r, Outcome::Rejected),
            count(&r, Outcome::Shed),
            count(&r, Outcome::Failed),
            if r.is_conserved() { "yes" } else { "NO" },
            if r.is_degraded() { "yes" } else { "no" },
            if incident.is_empty() {
                "—".into()
            } else {
                incident
            }
        );
    }
    // A worker whose model load panics: start-up fails, and how fast.
    let faults = FaultInjector::new(&names);
    let _ = faults.arm(&Fault::LoadPanic(last.clone()));
    let t0 = Instant::now();
    match Runtime::start_with_faults(&workload, &rt, &policy, faults) {
        Ok(r) => {
            let _ = r.shutdown();
            eprintln!("error: start-up succeeded despite a load panic");
            return ExitCode::from(1);
        }
        Err(e) => println!(
            "\nload-panic:{last}: start-up failed after {:.2} s with: {e}",
            t0.elapsed().as_secs_f64()
        ),
    }
    if all_conserved {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
