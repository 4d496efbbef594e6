//! Fault injection through the real threaded runtime: a worker that panics
//! (holding a job, in a forward pass, at load, again and again), a control
//! plane that dies, a telemetry sink that stalls or dies. After each, every
//! submitted request is still in exactly one counted outcome, and the
//! report says what happened.
//!
//! Workers run SCHED_OTHER and unpinned here, with synthetic models and
//! generous deadlines, so the assertions hold on a loaded machine: they are
//! about counting and recovery, not about timing.

use ecomap::config::parse_ron;
use ecomap::config::policy::Policy;
use ecomap::config::rt::RtConfig;
use ecomap::config::workload::Workload;
use ecomap::report::RunReport;
use ecomap::request::Outcome;
use ecomap_actors::faults::{Fault, FaultInjector, ScheduledFault};
use ecomap_actors::runtime::{Runtime, StartError};
use std::path::Path;
use std::time::{Duration, Instant};

mod common;

// One runtime at a time: they share the machine's two cores.
use common::serial;

fn workload(rate_hz: f64) -> Workload {
    let w: Workload = parse_ron(
        &format!(
            r#"(seed: 3, tenants: [
                (name: "cam", model: Synthetic(service: "1ms"),
                 arrival: Periodic(rate_hz: {rate_hz}), deadline: "500ms", capacity: 64),
                (name: "lidar", model: Synthetic(service: "1ms"),
                 arrival: Poisson(rate_hz: {rate_hz}), deadline: "500ms", capacity: 64),
            ])"#
        ),
        Path::new("w.ron"),
        "workload",
    )
    .unwrap();
    w.validate(Path::new("w.ron")).unwrap();
    w
}

use common::xavier_table as table;

fn rt(extra: &str) -> RtConfig {
    parse_ron(
        &format!(
            r#"({extra}
                workers: [(name: "w0"), (name: "w1")])"#
        ),
        Path::new("rt.ron"),
        "rt",
    )
    .unwrap()
}

fn injector() -> FaultInjector {
    FaultInjector::new(&["w0".into(), "w1".into()])
}

fn at(fault: Fault, ms: u64) -> ScheduledFault {
    ScheduledFault {
        fault,
        at: Duration::from_millis(ms),
    }
}

/// Serve `w` for `secs` with `faults` scheduled; the report.
fn run_with(
    w: &Workload,
    rt: &RtConfig,
    p: &Policy,
    faults: Vec<ScheduledFault>,
    secs: f64,
) -> RunReport {
    let mut r = Runtime::start_with_faults(w, rt, p, injector()).unwrap();
    r.schedule_faults(faults).unwrap();
    r.run_load(Duration::from_secs_f64(secs), 1.0).unwrap();
    r.shutdown()
}

fn total(r: &RunReport, o: Outcome) -> u64 {
    r.tenants.iter().map(|t| t.counts.get(o)).sum()
}

fn assert_conserved(r: &RunReport) {
    for t in &r.tenants {
        assert!(
            t.counts.is_conserved() && t.counts.submitted > 0,
            "{}: {:?}",
            t.name,
            t.counts
        );
    }
}

fn incident<'a>(r: &'a RunReport, needle: &str) -> &'a ecomap::report::Incident {
    r.incidents
        .iter()
        .find(|i| i.what.contains(needle))
        .unwrap_or_else(|| panic!("no incident with {needle:?}: {:?}", r.incidents))
}

#[test]
fn a_worker_that_panics_holding_a_job_is_restarted_and_its_job_counted_failed() {
    let _s = serial();
    let r = run_with(
        &workload(100.0),
        &rt(""),
        &Policy::edf("edf"),
        vec![at(Fault::WorkerPanic("w0".into()), 300)],
        1.5,
    );
    assert_conserved(&r);
    assert_eq!(total(&r, Outcome::Failed), 1, "exactly the job it held");
    let i = incident(&r, "worker 'w0' panicked");
    assert!(!i.degrades && i.what.contains("restarted"), "{i:?}");
    assert!(!r.is_degraded());
    // Both workers served; nearly everything on time.
    let served: u64 = total(&r, Outcome::OnTime) + total(&r, Outcome::Late);
    let submitted: u64 = r.tenants.iter().map(|t| t.counts.submitted).sum();
    assert!(
        served + 1 >= submitted * 95 / 100,
        "{:?}",
        r.tenants[0].counts
    );
}

#[test]
fn a_forward_pass_that_panics_fails_its_request_and_the_worker_reloads() {
    let _s = serial();
    let r = run_with(
        &workload(100.0),
        &rt(""),
        &Policy::edf("edf"),
        vec![at(Fault::PassPanic("w1".into()), 300)],
        1.5,
    );
    assert_conserved(&r);
    assert_eq!(total(&r, Outcome::Failed), 1);
    let i = incident(&r, "worker 'w1' panicked");
    assert!(
        i.what.contains("forward pass") && i.what.contains("reloaded"),
        "{i:?}"
    );
    assert!(!r.is_degraded());
}

#[test]
fn a_worker_that_keeps_panicking_stays_out_and_the_other_serves_on() {
    let _s = serial();
    let faults = (0..=ecomap_actors::accelerator_worker::MAX_RESTARTS)
        .map(|k| at(Fault::WorkerPanic("w0".into()), 200 + 150 * u64::from(k)))
        .collect();
    let r = run_with(&workload(100.0), &rt(""), &Policy::edf("edf"), faults, 1.5);
    assert_conserved(&r);
    let restarts = ecomap_actors::accelerator_worker::MAX_RESTARTS;
    assert_eq!(total(&r, Outcome::Failed), u64::from(restarts) + 1);
    let i = incident(&r, "stays out of the run");
    assert!(i.degrades);
    assert!(r.is_degraded());
    // w1 holds every tenant: the run goes on without w0.
    let on_time = total(&r, Outcome::OnTime);
    assert!(on_time > 200, "{:?}", r.tenants[0].counts);
}

/// The only worker holding a tenant's model stays out for good: that
/// tenant's callers are answered at once — refused (`NoWorker`, counted
/// rejected) — instead of waiting for the run's end, while the other
/// tenant is served on by its own worker.
#[test]
fn a_tenant_whose_only_worker_stays_out_refuses_at_once_and_the_other_serves_on() {
    let _s = serial();
    let rt: RtConfig = parse_ron(
        r#"(workers: [(name: "w0", tenants: Some(["cam"])), (name: "w1", tenants: Some(["lidar"]))])"#,
        Path::new("rt.ron"),
        "rt",
    )
    .unwrap();
    let faults: Vec<_> = (0..=ecomap_actors::accelerator_worker::MAX_RESTARTS)
        .map(|k| at(Fault::WorkerPanic("w0".into()), 200 + 150 * u64::from(k)))
        .collect();
    let mut r =
        Runtime::start_with_faults(&workload(100.0), &rt, &Policy::edf("edf"), injector()).unwrap();
    r.schedule_faults(faults).unwrap();
    r.run_load(Duration::from_secs_f64(1.5), 1.0).unwrap();
    // w0 is out by now (its last panic at 650 ms): a caller's request to
    // its tenant is refused at once, not left waiting.
    let cam = r.queue(0).clone();
    let x = ecomap::tensor::TensorData::from_f32(vec![1], &[1.0]).unwrap();
    let t0 = Instant::now();
    let e = cam.submit_input(x, None).unwrap_err();
    assert!(
        matches!(e, ecomap_actors::tenant_queue::SubmitError::NoWorker { .. }),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("no worker holding its model is left"),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(1));
    drop(cam);
    let report = r.shutdown();
    assert_conserved(&report);
    let cam = &report.tenants[0].counts;
    assert!(
        cam.rejected > 50,
        "the generator's later requests refused: {cam:?}"
    );
    let lidar = &report.tenants[1].counts;
    assert_eq!(lidar.failed + lidar.rejected, 0, "{lidar:?}");
    assert!(lidar.on_time > 100, "{lidar:?}");
    assert!(report.is_degraded());
}

#[test]
fn a_worker_that_panics_while_loading_fails_start_up_without_hanging() {
    let _s = serial();
    let faults = injector();
    faults.arm(&Fault::LoadPanic("w1".into())).unwrap();
    let t0 = Instant::now();
    let e = Runtime::start_with_faults(&workload(10.0), &rt(""), &Policy::edf("edf"), faults)
        .err()
        .expect("start-up fails");
    assert!(t0.elapsed() < Duration::from_secs(20));
    assert!(
        matches!(&e, StartError::ModelLoad { worker, .. } if worker == "w1"),
        "{e}"
    );
    assert!(e.to_string().contains("panicked"), "{e}");
}

#[test]
fn a_control_plane_that_dies_leaves_the_device_at_the_fallback_cap_and_says_so() {
    let _s = serial();
    let rt = rt(&format!(
        r#"platform: Some(Emulated(device: "{}")),"#,
        table().display()
    ));
    let policy: Policy = parse_ron(
        r#"(name: "capped", carbon: Fixed(gco2_per_kwh: 100.0),
            governor: (rule: Fixed(cap_w: 40.0), max_staleness: "1h", fallback_cap_w: 15.0))"#,
        Path::new("p.ron"),
        "policy",
    )
    .unwrap();
    let r = run_with(
        &workload(50.0),
        &rt,
        &policy,
        vec![at(Fault::ControlPlanePanic, 300)],
        2.0,
    );
    assert_conserved(&r);
    assert!(r.is_degraded());
    let i = incident(&r, "control plane failed: the power governor panicked");
    assert!(i.what.contains("fallback cap 15 W"), "{i:?}");
    let e = r.energy.as_ref().expect("metered");
    let last = e.cap_changes.last().expect("caps applied");
    assert_eq!(last.1, 15.0, "{:?}", e.cap_changes);
    // The meter kept running: energy covers the whole run.
    assert!(e.ledger.energy_j > 0.0);
    assert!(
        e.ledger.elapsed >= Duration::from_millis(1800),
        "{:?}",
        e.ledger.elapsed
    );
    assert!(r.render().contains("DEGRADED"));
}

#[test]
fn a_hung_control_plane_is_replaced_by_the_watchdog_which_keeps_metering_a_jetson() {
    let _s = serial();
    // A fake Xavier sysfs tree: 7.5 W on the rails, read-only control.
    let dir = tempfile::tempdir().unwrap();
    let platform = ecomap_actors::platform::jetson::read_only_fixture(dir.path()).unwrap();
    let rt = rt(&format!("platform: Some({platform}),"));
    let policy: Policy = parse_ron(
        r#"(name: "metered", carbon: Fixed(gco2_per_kwh: 100.0))"#,
        Path::new("p.ron"),
        "policy",
    )
    .unwrap();
    // The governor's and meter's thread blocks for 12 s from 0.3 s: past
    // the watchdog's 10 s the run is degraded, and the watchdog meters.
    let mut run = Runtime::start_with_faults(&workload(20.0), &rt, &policy, injector()).unwrap();
    run.schedule_faults(vec![at(
        Fault::ControlPlaneStall(Duration::from_secs(12)),
        300,
    )])
    .unwrap();
    run.run_load(Duration::from_secs_f64(13.5), 1.0).unwrap();
    let (r, timeline) = run.shutdown_with_timeline();
    // A row the watchdog metered: after it declared the failure (10 s
    // into the stall) and before the thread came back (12.3 s).
    assert!(
        timeline.iter().any(|row| row.t_s > 10.0 && row.t_s < 12.2),
        "{:?}",
        timeline.iter().map(|row| row.t_s).collect::<Vec<_>>()
    );
    assert_conserved(&r);
    assert!(r.is_degraded());
    incident(
        &r,
        "control plane failed: the power governor has not ticked",
    );
    let e = r.energy.as_ref().expect("metered");
    assert!(e.power_measured, "the rails are a sensor");
    // Energy covers the stall: nothing was lost while the thread hung.
    let l = &e.ledger;
    assert!(l.elapsed >= Duration::from_secs(12), "{l:?}");
    assert!((l.mean_power_w() - 7.5).abs() < 1e-6, "{l:?}");
}

#[test]
fn a_stalled_telemetry_sink_costs_latency_samples_never_a_dispatch() {
    let _s = serial();
    // A 64-slot channel and a 1.5 s stall at 2 x 200 requests/s: the
    // channel fills in a fraction of a second. Workers must keep serving
    // (dropping samples, not waiting) and every outcome is still counted.
    let r = run_with(
        &workload(200.0),
        &rt("telemetry_capacity: 64,"),
        &Policy::edf("edf"),
        vec![at(Fault::TelemetryStall(Duration::from_millis(1500)), 200)],
        2.5,
    );
    assert_conserved(&r);
    let submitted: u64 = r.tenants.iter().map(|t| t.counts.submitted).sum();
    let on_time = total(&r, Outcome::OnTime);
    assert!(
        on_time * 100 >= submitted * 95,
        "served on time through the stall: {on_time} of {submitted}"
    );
    let i = incident(&r, "telemetry fell behind");
    assert!(!i.degrades, "{i:?}");
    let sampled: u64 = r.tenants.iter().map(|t| t.end_to_end.len()).sum();
    assert!(sampled < on_time, "samples were dropped, counts were not");
}

#[test]
fn a_dead_telemetry_sink_leaves_exact_counts_and_a_degraded_report() {
    let _s = serial();
    let r = run_with(
        &workload(100.0),
        &rt(""),
        &Policy::edf("edf"),
        vec![at(Fault::TelemetryPanic, 300)],
        1.0,
    );
    assert_conserved(&r);
    assert!(
        total(&r, Outcome::OnTime) > 100,
        "not zeros: {:?}",
        r.tenants[0].counts
    );
    assert!(incident(&r, "telemetry sink died").degrades);
}

/// An ordinary (SCHED_OTHER) caller submitting to SCHED_FIFO workers is
/// raised to their priority for the send — no worker can preempt it
/// mid-send and spin — and put back after. Where real-time scheduling is
/// not allowed, the workers are not SCHED_FIFO either, and nothing is
/// raised.
#[test]
fn an_ordinary_thread_may_submit_to_real_time_workers() {
    let _s = serial();
    let rt: RtConfig = parse_ron(
        r#"(load_generator: (sched: Fifo(priority: 70)),
            workers: [(name: "w0", sched: Fifo(priority: 40)), (name: "w1", sched: Fifo(priority: 40))])"#,
        Path::new("rt.ron"),
        "rt",
    )
    .unwrap();
    let w = workload(10.0);
    let r = Runtime::start(&w, &rt, &Policy::edf("edf")).unwrap();
    let submitter = std::thread::spawn({
        let q = r.queue(0).clone();
        move || {
            let before = ecomap_actors::rt::current_sched();
            let results: Vec<_> = (0..50)
                .map(|_| {
                    std::thread::sleep(Duration::from_millis(2));
                    q.submit()
                })
                .collect();
            (before, ecomap_actors::rt::current_sched(), results)
        }
    })
    .join()
    .unwrap();
    let (before, after, results) = submitter;
    assert_eq!(before.0 & !libc::SCHED_RESET_ON_FORK, libc::SCHED_OTHER);
    assert_eq!(after, before, "put back after each send");
    assert!(
        results.iter().all(|r| r.is_ok()),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    let report = r.shutdown();
    assert!(report.is_conserved());
    assert_eq!(report.tenants[0].counts.on_time, 50);
}
