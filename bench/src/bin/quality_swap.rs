//! Mixed-quality models under a power-cap drop, with and without swapping.
//!
//! The cap schedule comes from a crafted carbon trace (clean → dirty →
//! clean) replayed at one trace hour per run second through the
//! `policies/ecomap-power.ron` governor bands with `policies/reactive.ron`'s
//! quality controller: 40 W (MAXN) for 10 s, 15 W (MODE_15W, 1.69x slower,
//! emulated GPU of rt-config/devices/xavier.ron; `--dirty-gco2 600` gives
//! 10 W, 2.03x) for 20 s, 40 W for 10 s. The same workload
//! (`workloads/robot-mixed.ron`) and schedule run twice, with the policy's
//! `quality` section enabled and disabled. Reported per tenant: miss rate
//! (late + expired + rejected over submitted), mean published top-1
//! accuracy of served requests, swaps, how long after the cap drop the
//! first degrade came, and how long after the cap rise full quality returned.
//!
//! Run from the repository root:
//! `cargo run --release -p ecomap-bench --bin quality_swap`

use clap::Parser;
use ecomap::config::policy::{CarbonSource, Policy};
use ecomap::config::rt::RtConfig;
use ecomap::config::workload::Workload;
use ecomap::report::RunReport;
use ecomap_actors::rt::allowed_cores;
use ecomap_actors::runtime::Runtime;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser, Debug)]
struct Args {
    /// Seconds per phase (clean, dirty is twice this, clean), 1..=150 (the
    /// crafted trace is one hour per second and fits in January).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=150))]
    phase_s: u64,
    /// Intensity of the dirty phase (gCO2/kWh): 400 selects the 15 W band
    /// of policies/ecomap-power.ron's governor (which this bench uses), 600
    /// the 10 W band.
    #[arg(long, default_value_t = 400.0)]
    dirty_gco2: f64,
    /// Folder for the results table.
    #[arg(long, default_value = "out/bench")]
    out: PathBuf,
}

fn trace(dir: &Path, phase_h: u64, dirty: f64) -> PathBuf {
    let mut csv = String::from("timestamp,gco2_per_kwh\n");
    for h in 0..(4 * phase_h + 2) {
        let g = if (phase_h..3 * phase_h).contains(&h) {
            dirty
        } else {
            100.0
        };
        csv.push_str(&format!(
            "2024-01-{:02}T{:02}:00:00Z,{g}\n",
            1 + h / 24,
            h % 24
        ));
    }
    let p = dir.join("cap-schedule.csv");
    std::fs::write(&p, csv).expect("write trace");
    p
}

fn run(workload: &Workload, rt: &RtConfig, policy: &Policy, secs: u64) -> RunReport {
    let mut r = Runtime::start(workload, rt, policy).expect("runtime starts");
    r.run_load(Duration::from_secs(secs), 1.0)
        .expect("load runs");
    r.shutdown()
}

fn main() {
    let args = Args::parse();
    if !(args.dirty_gco2.is_finite() && args.dirty_gco2 >= 0.0) {
        eprintln!(
            "--dirty-gco2 {} is not an intensity: give gCO2/kWh ≥ 0, e.g. 400",
            args.dirty_gco2
        );
        std::process::exit(2);
    }
    std::fs::create_dir_all(&args.out).expect("create output folder");
    let workload = Workload::load(Path::new("workloads/robot-mixed.ron")).expect("workload");
    let rt = RtConfig::load(Path::new("rt-config/host.ron")).expect("rt-config");
    let names: Vec<&str> = workload.tenants.iter().map(|t| t.name.as_str()).collect();
    rt.validate(Path::new("rt-config/host.ron"), &allowed_cores(), &names)
        .expect("rt-config valid here");
    let mut policy = Policy::load(Path::new("policies/reactive.ron")).expect("policy");
    // A cap *drop* from MAXN needs bands that use MAXN when clean; ecomap's
    // own bands never leave 15 W / 10 W on the calibrated device model.
    policy.governor = Policy::load(Path::new("policies/ecomap-power.ron"))
        .expect("policy")
        .governor;
    let dir = std::env::temp_dir().join(format!("ecomap-quality-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    policy.carbon = Some(CarbonSource::Trace {
        path: trace(&dir, args.phase_s, args.dirty_gco2),
        speedup: 3600.0,
        start_offset: Duration::ZERO,
    });
    let total = 4 * args.phase_s;
    let (drop_s, rise_s) = (args.phase_s as f64, 3.0 * args.phase_s as f64);
    let mut table = String::from(
        "| swapping | tenant | submitted | miss rate | mean top-1 of served | swaps | first degrade after cap drop | full quality again after cap rise |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut carbon = Vec::new();
    for enabled in [true, false] {
        if let Some(q) = policy.quality.as_mut() {
            q.enabled = enabled;
        }
        eprintln!(
            "swapping {}: {total} s…",
            if enabled { "on" } else { "off" }
        );
        let report = run(&workload, &rt, &policy, total);
        assert!(report.is_conserved(), "{}", report.render());
        let q = report
            .quality
            .clone()
            .expect("families give a quality report");
        // Swaps are stamped on the runtime's clock; the trace (and so the
        // cap schedule) starts ~0.1 s before the first release.
        let origin = report.load_start.since_epoch().as_secs_f64() - 0.1;
        let (drop_s, rise_s) = (origin + drop_s, origin + rise_s);
        for (t, acc) in report.tenants.iter().enumerate() {
            let c = acc.counts;
            let miss = 1.0 - c.on_time as f64 / c.submitted.max(1) as f64;
            let mine: Vec<_> = q.swaps.iter().filter(|s| s.tenant == t).collect();
            let first_degrade = mine
                .iter()
                .find(|s| s.to > s.from && s.at.since_epoch().as_secs_f64() >= drop_s)
                .map(|s| s.at.since_epoch().as_secs_f64() - drop_s);
            let back = mine
                .iter()
                .rev()
                .find(|s| s.to == 0 && s.at.since_epoch().as_secs_f64() >= rise_s)
                .map(|s| s.at.since_epoch().as_secs_f64() - rise_s);
            let fmt = |x: Option<f64>| x.map_or("-".to_string(), |s| format!("{s:.2} s"));
            table.push_str(&format!(
                "| {} | {} | {} | {:.2}% | {} | {} | {} | {} |\n",
                if enabled { "on" } else { "off" },
                acc.name,
                c.submitted,
                100.0 * miss,
                q.mean_accuracy(t, &acc.served_by_variant)
                    .map_or("-".into(), |a| format!("{a:.2}%")),
                mine.len(),
                fmt(first_degrade),
                fmt(back),
            ));
        }
        if let Some(e) = &report.energy {
            carbon.push((enabled, e.ledger.carbon_g, e.ledger.energy_j));
        }
        println!("{}", report.render());
    }
    table.push_str("\n| swapping | energy J (modelled) | carbon g |\n|---|---:|---:|\n");
    for (enabled, g, j) in carbon {
        table.push_str(&format!(
            "| {} | {j:.1} | {g:.5} |\n",
            if enabled { "on" } else { "off" }
        ));
    }
    println!("{table}");
    std::fs::write(args.out.join("quality_swap.md"), &table).expect("write results");
    let _ = std::fs::remove_dir_all(&dir);
}
