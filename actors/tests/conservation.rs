//! Conservation under overload: every submitted request ends in exactly one
//! counted outcome, per tenant, through the real threaded runtime.

mod common;

use ecomap::config::parse_ron;
use ecomap::config::policy::Policy;
use ecomap::config::rt::RtConfig;
use ecomap::config::workload::Workload;
use ecomap::dispatch::QueueOrder;
use ecomap_actors::runtime::Runtime;
use std::path::Path;
use std::time::Duration;

// The tests pin real-time workers to the same cores; run one at a time, or
// one test's overload makes another's deadlines miss.
use common::serial;

const WORKLOAD: &str = r#"(
    seed: 11,
    tenants: [
        (name: "detector", model: Synthetic(service: "4ms"),
         arrival: Periodic(rate_hz: 100.0, jitter: "1ms"), deadline: "20ms", capacity: 4, priority: 2),
        (name: "segmenter", model: Synthetic(service: "10ms"),
         arrival: Poisson(rate_hz: 40.0), deadline: "60ms", capacity: 3),
        (name: "classifier", model: Synthetic(service: "20ms"),
         arrival: Periodic(rate_hz: 10.0), deadline: "100ms", capacity: 2),
    ],
)"#;

// Offered work at load factor 1: 0.4 + 0.4 + 0.2 = 1.0 core-second per
// second on 2 workers (50% utilisation). Load factor 4 offers 4.0
// core-seconds per second to 2 cores: a 2x overload, so queues fill,
// requests expire and get rejected.
const RT: &str = r#"(
    load_generator: (sched: Fifo(priority: 70)),
    telemetry: (sched: Fifo(priority: 5)),
    workers: [
        (name: "w0", core: Some(0), sched: Fifo(priority: 50)),
        (name: "w1", core: Some(1), sched: Fifo(priority: 50)),
    ],
)"#;

// The same, but each worker holds only some tenants' models: the detector
// on w0, the rest on w1. Requests a step pulls in for the other worker reach
// it through its doorbell.
const RT_SPLIT: &str = r#"(
    load_generator: (sched: Fifo(priority: 70)),
    telemetry: (sched: Fifo(priority: 5)),
    workers: [
        (name: "w0", core: Some(0), sched: Fifo(priority: 50), tenants: Some(["detector"])),
        (name: "w1", core: Some(1), sched: Fifo(priority: 50),
         tenants: Some(["segmenter", "classifier"])),
    ],
)"#;

fn run(order: QueueOrder, load_factor: f64) -> ecomap::report::RunReport {
    run_on(RT, order, load_factor)
}

fn run_on(rt: &str, order: QueueOrder, load_factor: f64) -> ecomap::report::RunReport {
    let _cores = serial();
    let w: Workload = parse_ron(WORKLOAD, Path::new("w.ron"), "workload").unwrap();
    w.validate(Path::new("w.ron")).unwrap();
    let mut rt: RtConfig = parse_ron(rt, Path::new("rt.ron"), "rt").unwrap();
    // The RON's cores 0 and 1 stand for the first two this process may
    // use; with one, the second worker runs unpinned.
    for (i, w) in rt.workers.iter_mut().enumerate() {
        w.core = (i == 0 || common::two_cores()).then(|| common::core(i));
    }
    let policy = Policy {
        queue_order: order,
        ..Policy::edf(&format!("{order:?}"))
    };
    let mut runtime = Runtime::start(&w, &rt, &policy).unwrap();
    runtime
        .run_load(Duration::from_secs(3), load_factor)
        .unwrap();
    runtime.shutdown()
}

#[test]
fn overload_conserves_every_request_per_tenant() {
    // 2x more work than the two workers can do.
    let report = run(QueueOrder::EarliestDeadline, 4.0);
    for t in &report.tenants {
        let c = t.counts;
        assert!(c.submitted > 0, "{}: nothing submitted", t.name);
        assert!(c.is_conserved(), "{}: {c:?}", t.name);
        assert_eq!(c.failed, 0);
    }
    let total = |f: fn(&ecomap::accounting::OutcomeCounts) -> u64| -> u64 {
        report.tenants.iter().map(|t| f(&t.counts)).sum()
    };
    assert!(
        total(|c| c.rejected) > 0,
        "overload must reject: {}",
        report.render()
    );
    assert!(total(|c| c.on_time) > 0);
    assert!(report.is_conserved());
    // Where /proc/stat has a steal column (Linux), the report gives the
    // share of the serving window's CPU time the hypervisor stole.
    if ecomap_actors::platform::cpu_steal::CpuTimes::read().is_some() {
        let steal = report.cpu_steal.expect("a steal share on Linux");
        assert!((0.0..=1.0).contains(&steal), "{steal}");
        assert!(report.render().contains("host: "), "{}", report.render());
    }
}

#[test]
fn fifo_baseline_also_conserves() {
    let report = run(QueueOrder::Fifo, 2.0);
    assert!(report.is_conserved(), "{}", report.render());
    assert!(report.tenants.iter().all(|t| t.counts.submitted > 0));
}

#[test]
fn split_workers_serve_their_own_tenants_on_time_and_conserve_under_overload() {
    // At load factor 1 the detector alone uses 40% of w0, and the other two
    // 60% of w1: a request that waited for a worker that was asleep (a lost
    // wake-up) would show as late or expired.
    let report = run_on(RT_SPLIT, QueueOrder::EarliestDeadline, 1.0);
    assert!(report.is_conserved(), "{}", report.render());
    let detector = &report.tenants[0].counts;
    for t in &report.tenants {
        let c = t.counts;
        assert!(c.submitted > 0 && c.failed == 0, "{}: {c:?}", t.name);
    }
    // Punctuality means something only where the workers and generator got
    // SCHED_FIFO (as root): then a CPU hog cannot delay them, and a miss is
    // the runtime's. Without it, a loaded machine decides.
    let realtime = report.rt_notes.iter().all(|n| !n.contains("refused"));
    if realtime {
        assert_eq!(detector.on_time, detector.submitted, "{}", report.render());
        for t in &report.tenants {
            let c = t.counts;
            assert!(
                c.on_time as f64 >= 0.9 * c.submitted as f64,
                "{}: {c:?}\n{}",
                t.name,
                report.render()
            );
        }
    } else {
        eprintln!(
            "no real-time classes granted: punctuality not asserted\n{:?}",
            report.rt_notes
        );
    }
    // Each worker served only its own tenants.
    assert_eq!(report.workers[0].served, detector.on_time + detector.late);
    let report = run_on(RT_SPLIT, QueueOrder::EarliestDeadline, 3.0);
    assert!(report.is_conserved(), "{}", report.render());
    assert!(report.tenants.iter().all(|t| t.counts.failed == 0));
}
