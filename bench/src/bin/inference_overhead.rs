//! The runtime's overhead on real inference: a tenant served by ecomap vs a
//! bare tch loop on the same model, core, scheduling class, thread count and
//! arrival period, interleaved in rounds so machine noise hits both alike.
//!
//! Compared: median of the bare loop's forward-pass latency vs median of
//! ecomap's end-to-end latency (release to finish: queue hand-off, dispatch,
//! forward pass). Target: overhead under 3%.
//!
//! Run: `cargo run --release -p ecomap-bench --bin inference_overhead`

#[cfg(feature = "tch")]
fn main() {
    use clap::Parser;
    use ecomap::config::policy::Policy;
    use ecomap::config::rt::{RtConfig, SchedSpec, ThreadSpec, WorkerSpec};
    use ecomap::config::{parse_ron, workload::Workload};
    use ecomap::model::VisionModel;
    use ecomap_actors::backend::torch::{set_intra_op_threads, VisionNet};
    use ecomap_actors::rt::{apply, RtNotes};
    use ecomap_actors::runtime::Runtime;
    use hdrhistogram::Histogram;
    use std::path::Path;
    use std::time::Instant;

    #[derive(Parser, Debug)]
    struct Args {
        /// Requests per side per round.
        #[arg(long, default_value_t = 60)]
        samples: u64,
        /// Rounds (bare then ecomap, then ecomap then bare, …).
        #[arg(long, default_value_t = 4)]
        rounds: usize,
        /// Folder for the results table.
        #[arg(long, default_value = "out/bench")]
        out: std::path::PathBuf,
    }

    let args = Args::parse();
    std::fs::create_dir_all(&args.out).expect("create output folder");
    set_intra_op_threads(1);
    let thread = ThreadSpec {
        core: Some(0),
        sched: SchedSpec::Fifo { priority: 50 },
    };
    let mut table = String::from(
        "| model | bare tch median ms | ecomap e2e median ms | ecomap service median ms | overhead (e2e vs bare) | dispatch path (e2e − service medians) |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for model in [VisionModel::MobileNetV2, VisionModel::ResNet18] {
        // Period: twice a warm forward pass, so neither side queues.
        let warm = std::thread::spawn(move || {
            apply("warm-up", &thread, &RtNotes::default());
            set_intra_op_threads(1);
            let net = VisionNet::new(model, tch::Device::Cpu);
            for _ in 0..3 {
                drop(net.forward().unwrap());
            }
            let t = Instant::now();
            drop(net.forward().unwrap());
            t.elapsed()
        })
        .join()
        .unwrap();
        let period = warm * 2;
        let mut bare = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut e2e = ecomap::accounting::LatencyHistogram::default();
        let mut service = ecomap::accounting::LatencyHistogram::default();
        for round in 0..args.rounds {
            eprintln!("{model:?}: round {}/{}", round + 1, args.rounds);
            // Bare loop on a thread set up exactly like the worker.
            let samples = args.samples;
            let bare_round = move || {
                std::thread::spawn(move || {
                    apply("bare", &thread, &RtNotes::default());
                    // Per-thread OpenMP setting, exactly as ecomap's workers do.
                    set_intra_op_threads(1);
                    let net = VisionNet::new(model, tch::Device::Cpu);
                    drop(net.forward().unwrap());
                    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                    let start = Instant::now();
                    for i in 0..samples {
                        let next = start + period * i as u32;
                        if let Some(d) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(d);
                        }
                        let t = Instant::now();
                        drop(net.forward().unwrap());
                        h.record(t.elapsed().as_micros() as u64).unwrap();
                    }
                    h
                })
                .join()
                .unwrap()
            };
            // Alternate which side goes first, so order effects cancel.
            if round % 2 == 0 {
                bare.add(bare_round()).unwrap();
            }
            // The same model served by ecomap.
            let w: Workload = parse_ron(
                &format!(
                    r#"(tenants: [(name: "t", model: Vision({model:?}),
                        arrival: Periodic(rate_hz: {}), deadline: "10s", capacity: 4)])"#,
                    1.0 / period.as_secs_f64()
                ),
                Path::new("bench"),
                "workload",
            )
            .unwrap();
            let rt = RtConfig {
                lock_memory: false,
                intra_op_threads: 1,
                load_generator: ThreadSpec {
                    core: Some(1),
                    sched: SchedSpec::Fifo { priority: 70 },
                },
                dispatcher: ThreadSpec {
                    core: Some(1),
                    sched: SchedSpec::Fifo { priority: 50 },
                },
                telemetry: ThreadSpec {
                    core: Some(1),
                    sched: SchedSpec::Fifo { priority: 5 },
                },
                workers: vec![WorkerSpec {
                    name: "cpu0".into(),
                    core: thread.core,
                    sched: thread.sched,
                    device: Default::default(),
                    tenants: None,
                }],
                platform: None,
                memory_budget_mb: None,
            };
            let policy = Policy::edf("edf");
            let mut runtime = Runtime::start(&w, &rt, &policy).unwrap();
            runtime
                .run_load(period * samples as u32 - period / 2, 1.0)
                .unwrap();
            let report = runtime.shutdown();
            e2e.merge(&report.tenants[0].end_to_end);
            service.merge(&report.tenants[0].service);
            if round % 2 == 1 {
                bare.add(bare_round()).unwrap();
            }
        }
        let b = bare.value_at_quantile(0.5) as f64 / 1000.0;
        let e = e2e.quantile_us(0.5).unwrap() as f64 / 1000.0;
        let s = service.quantile_us(0.5).unwrap() as f64 / 1000.0;
        table.push_str(&format!(
            "| {model:?} | {b:.3} | {e:.3} | {s:.3} | {:+.2}% | {:.3} ms ({:.2}%) |\n",
            100.0 * (e - b) / b,
            e - s,
            100.0 * (e - s) / e
        ));
    }
    table.push_str("\nTarget: overhead under 3% of the median.\n");
    println!("{table}");
    std::fs::write(args.out.join("inference_overhead.md"), &table).expect("write results");
}

#[cfg(not(feature = "tch"))]
fn main() {
    eprintln!("inference_overhead needs the `tch` feature (libtorch); build with default features");
    std::process::exit(2);
}
