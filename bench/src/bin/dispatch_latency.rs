//! Dispatch latency of ecomap's data plane against the machine's own
//! wake-up latency floor (cyclictest), with and without a CPU hog.
//!
//! Workload: synthetic 1 ms jobs, Poisson arrivals from two tenants, 70%
//! utilisation of two workers pinned to cores 0 and 1. Four configurations:
//! {SCHED_OTHER, SCHED_FIFO} x {idle, a SCHED_OTHER hog spinning on both
//! cores}. Reported per configuration:
//! - dispatch latency: from the moment a request could start (its release,
//!   or its worker's previous finish if later) to its worker starting it —
//!   the runtime's own overhead (queue hand-off, dispatch step, worker
//!   wake-ups), free of queueing behind other requests;
//! - of which, woken: requests released while their worker was free, so it
//!   had to be woken — the path cyclictest's one timer wake-up compares to
//!   most directly (the rest start the moment a worker finishes);
//! - release to start: the same plus queueing (for context).
//!
//! cyclictest (Debian package rt-tests) runs in the same process's shadow:
//! same cores, same hog, SCHED_FIFO priority 80, 1 ms interval.
//!
//! Run: `cargo run --release -p ecomap-bench --bin dispatch_latency -- --seconds 10`

use clap::Parser;
use ecomap::accounting::LatencyHistogram;
use ecomap::config::policy::Policy;
use ecomap::config::rt::{RtConfig, SchedSpec, ThreadSpec, WorkerSpec};
use ecomap::config::{parse_ron, workload::Workload};
use ecomap::hgrm::percentile_distribution;
use ecomap_actors::runtime::Runtime;
use ecomap_bench::{median, parse_cyclictest_histogram, summary_us, CpuHog};
use hdrhistogram::Histogram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Parser, Debug)]
struct Args {
    /// Seconds of load per configuration (and of cyclictest per case).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Utilisation of the two workers by the offered load, in (0, 1).
    #[arg(long, default_value_t = 0.7)]
    utilisation: f64,
    /// Extra paired runs (ecomap SCHED_FIFO, then cyclictest, both under the
    /// hog) for the target's ratio, reported each and as a median.
    #[arg(long, default_value_t = 3)]
    pairs: usize,
    /// Folder for the results table and .hgrm files.
    #[arg(long, default_value = "out/bench")]
    out: PathBuf,
}

fn workload(utilisation: f64) -> Workload {
    // Two tenants; total rate = utilisation * 2 workers / 1 ms.
    let per_tenant = utilisation * 2.0 * 1000.0 / 2.0;
    let text = format!(
        r#"(seed: 5, tenants: [
            (name: "a", model: Synthetic(service: "1ms"), arrival: Poisson(rate_hz: {per_tenant}),
             deadline: "50ms", capacity: 256),
            (name: "b", model: Synthetic(service: "1ms"), arrival: Poisson(rate_hz: {per_tenant}),
             deadline: "50ms", capacity: 256),
        ])"#
    );
    parse_ron(&text, Path::new("bench-workload"), "workload").expect("bench workload parses")
}

fn rt_config(fifo: bool) -> RtConfig {
    let sched = |p: i32| {
        if fifo {
            SchedSpec::Fifo { priority: p }
        } else {
            SchedSpec::Other
        }
    };
    RtConfig {
        // No mlockall: this binary maps libtorch and its CUDA libraries (GBs);
        // locking them all takes minutes and measures nothing about dispatch.
        lock_memory: false,
        intra_op_threads: 1,
        cpu_dma_latency_us: None,
        load_generator: ThreadSpec {
            core: None,
            sched: sched(70),
        },
        dispatcher: None,
        telemetry: ThreadSpec {
            core: None,
            sched: sched(5),
        },
        workers: (0..2)
            .map(|c| WorkerSpec {
                name: format!("cpu{c}"),
                core: Some(c),
                sched: sched(60),
                device: Default::default(),
                tenants: None,
            })
            .collect(),
        platform: None,
        memory_budget_mb: None,
        telemetry_capacity: ecomap::config::rt::DEFAULT_TELEMETRY_CAPACITY,
        control_plane: ThreadSpec::default(),
        server: ThreadSpec::default(),
    }
}

struct Row {
    name: String,
    dispatch: Histogram<u64>,
    woken: Option<Histogram<u64>>,
    release_to_start: Option<Histogram<u64>>,
    notes: String,
}

fn run_ecomap(
    fifo: bool,
    seconds: u64,
    utilisation: f64,
) -> (Histogram<u64>, Histogram<u64>, Histogram<u64>, String) {
    let policy = Policy::edf("edf");
    let mut rt = Runtime::start(&workload(utilisation), &rt_config(fifo), &policy)
        .expect("synthetic runtime starts");
    rt.run_load(Duration::from_secs(seconds), 1.0)
        .expect("load generators run");
    let report = rt.shutdown();
    assert!(report.is_conserved(), "{}", report.render());
    let mut dispatch = LatencyHistogram::default();
    let mut woken = LatencyHistogram::default();
    let mut queue = LatencyHistogram::default();
    let mut served = 0;
    let mut missed = 0;
    for t in &report.tenants {
        dispatch.merge(&t.dispatch);
        woken.merge(&t.dispatch_woken);
        queue.merge(&t.queueing);
        served += t.counts.on_time + t.counts.late;
        missed += t.counts.submitted - t.counts.on_time;
    }
    let util: f64 = report
        .workers
        .iter()
        .map(|w| w.busy.as_secs_f64())
        .sum::<f64>()
        / (2.0 * report.duration.as_secs_f64());
    let notes = format!(
        "{served} served, {missed} not on time, utilisation {:.0}%{}",
        100.0 * util,
        if report.rt_notes.is_empty() {
            String::new()
        } else {
            format!("; refused: {}", report.rt_notes.join(" | "))
        }
    );
    (
        dispatch.histogram().clone(),
        woken.histogram().clone(),
        queue.histogram().clone(),
        notes,
    )
}

fn run_cyclictest(seconds: u64) -> Result<Histogram<u64>, String> {
    let loops = (seconds * 1000).to_string();
    let out = Command::new("cyclictest")
        .args([
            "-m", "-q", "-p", "80", "-t", "2", "-a", "0,1", "-i", "1000", "-h", "20000", "-l",
        ])
        .arg(&loops)
        .output()
        .map_err(|e| {
            format!(
                "cannot run cyclictest ({e}); install it with `apt-get install rt-tests` \
                 (Debian/Ubuntu) to get the wake-up latency floor"
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "cyclictest failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse_cyclictest_histogram(&String::from_utf8_lossy(&out.stdout))
}

fn main() {
    let args = Args::parse();
    if !(args.utilisation > 0.0 && args.utilisation < 1.0) {
        eprintln!(
            "--utilisation {} is out of range: give a fraction in (0, 1), e.g. 0.7",
            args.utilisation
        );
        std::process::exit(2);
    }
    std::fs::create_dir_all(&args.out).expect("create output folder");
    let cores = ecomap_actors::rt::available_cores();
    if cores < 2 {
        eprintln!("dispatch_latency needs 2 cores; this machine has {cores}");
        std::process::exit(2);
    }
    let mut rows = Vec::new();
    for hog in [false, true] {
        let _hog = hog.then(|| CpuHog::start(&[0, 1]));
        for fifo in [false, true] {
            let name = format!(
                "ecomap {} / {}",
                if fifo { "SCHED_FIFO" } else { "SCHED_OTHER" },
                if hog { "hog on cores 0,1" } else { "idle" }
            );
            eprintln!("running {name} for {} s…", args.seconds);
            let (dispatch, woken, queue, notes) = run_ecomap(fifo, args.seconds, args.utilisation);
            rows.push(Row {
                name,
                dispatch,
                woken: Some(woken),
                release_to_start: Some(queue),
                notes,
            });
        }
        let name = format!(
            "cyclictest SCHED_FIFO 80 / {}",
            if hog { "hog on cores 0,1" } else { "idle" }
        );
        eprintln!("running {name} for {} s…", args.seconds);
        match run_cyclictest(args.seconds) {
            Ok(h) => rows.push(Row {
                name,
                dispatch: h,
                woken: None,
                release_to_start: None,
                notes: "timer wake-up latency, 2 threads, 1 ms interval".into(),
            }),
            Err(e) => eprintln!("{e}"),
        }
    }

    let mut table = String::from(
        "| configuration | dispatch p50 µs | p99 µs | p99.9 µs | max µs | woken: share / p50 / p99 µs | release→start p50 / p99 µs | notes |\n\
         |---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in &rows {
        let [p50, p99, p999, max] = summary_us(&r.dispatch);
        let rts = r
            .release_to_start
            .as_ref()
            .map(|h| {
                let s = summary_us(h);
                format!("{} / {}", s[0], s[1])
            })
            .unwrap_or_else(|| "-".into());
        let woken = r
            .woken
            .as_ref()
            .map(|h| {
                let s = summary_us(h);
                format!(
                    "{:.0}% / {} / {}",
                    100.0 * h.len() as f64 / r.dispatch.len().max(1) as f64,
                    s[0],
                    s[1]
                )
            })
            .unwrap_or_else(|| "-".into());
        table.push_str(&format!(
            "| {} | {p50} | {p99} | {p999} | {max} | {woken} | {rts} | {} |\n",
            r.name, r.notes
        ));
        let file = r
            .name
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            .to_lowercase();
        let _ = std::fs::write(
            args.out.join(format!("dispatch_{file}.hgrm")),
            percentile_distribution(&r.dispatch, 1.0, 5),
        );
    }
    let fifo_hog = rows
        .iter()
        .find(|r| r.name == "ecomap SCHED_FIFO / hog on cores 0,1");
    let cyc_hog = rows
        .iter()
        .find(|r| r.name == "cyclictest SCHED_FIFO 80 / hog on cores 0,1");
    let p99 = |h: &Histogram<u64>| h.value_at_quantile(0.99) as f64;
    let mut ratios = Vec::new();
    let mut woken_ratios = Vec::new();
    if let (Some(e), Some(c), Some(w)) =
        (fifo_hog, cyc_hog, fifo_hog.and_then(|r| r.woken.as_ref()))
    {
        ratios.push(p99(&e.dispatch) / p99(&c.dispatch).max(1.0));
        woken_ratios.push(p99(w) / p99(&c.dispatch).max(1.0));
    }
    if !ratios.is_empty() && args.pairs > 0 {
        let _hog = CpuHog::start(&[0, 1]);
        for i in 0..args.pairs {
            eprintln!("paired run {}/{} under the hog…", i + 1, args.pairs);
            let (dispatch, woken, _, _) = run_ecomap(true, args.seconds, args.utilisation);
            match run_cyclictest(args.seconds) {
                Ok(c) => {
                    ratios.push(p99(&dispatch) / p99(&c).max(1.0));
                    woken_ratios.push(p99(&woken) / p99(&c).max(1.0));
                }
                Err(e) => eprintln!("{e}"),
            }
        }
    }
    if !ratios.is_empty() {
        let show = |v: &[f64]| {
            v.iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        table.push_str(&format!(
            "\nSCHED_FIFO under the hog, ecomap p99 / cyclictest p99, {} paired runs (the table's first):\n\
             - all dispatches: {} → median {:.2} (target ≤ 1.5)\n\
             - woken dispatches only: {} → median {:.2}\n",
            ratios.len(),
            show(&ratios),
            median(&mut ratios),
            show(&woken_ratios),
            median(&mut woken_ratios),
        ));
    }
    println!("{table}");
    std::fs::write(args.out.join("dispatch_latency.md"), &table).expect("write results");
}
