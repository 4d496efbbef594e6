//! The EDF dispatcher against hand-driven workers: order, expiry, eligibility.

use crossbeam_channel::{bounded, Receiver, Sender};
use ecomap::arrival::ArrivalProcess;
use ecomap::config::workload::TenantSpec;
use ecomap::dispatch::QueueOrder;
use ecomap::model::ModelSpec;
use ecomap::request::TenantId;
use ecomap_actors::clock::RunClock;
use ecomap_actors::edf_dispatcher::{EdfDispatcher, Job, WorkerDone, WorkerSlot};
use ecomap_actors::telemetry::TelemetryEvent;
use ecomap_actors::tenant_queue::{tenant_queue, TenantQueue};
use std::time::Duration;

fn tenant(name: &str, deadline_ms: u64) -> TenantSpec {
    TenantSpec {
        name: name.into(),
        model: ModelSpec::Synthetic {
            service: Duration::from_millis(1),
        },
        arrival: ArrivalProcess::Poisson { rate_hz: 1.0 },
        deadline: Duration::from_millis(deadline_ms),
        capacity: 8,
        priority: 0,
        resolved: Vec::new(),
    }
}

struct Rig {
    queues: Vec<TenantQueue>,
    jobs: Vec<Receiver<Job>>,
    idle: Sender<WorkerDone>,
    telemetry: Receiver<TelemetryEvent>,
    handle: std::thread::JoinHandle<ecomap_actors::edf_dispatcher::DispatcherStats>,
}

/// A dispatcher over `tenants` and workers whose `serves` masks are given;
/// the test plays the workers.
fn rig(tenants: &[TenantSpec], serves: &[Vec<bool>]) -> Rig {
    let clock = RunClock::start();
    let (mut queues, mut receivers) = (Vec::new(), Vec::new());
    for (i, t) in tenants.iter().enumerate() {
        let (q, r) = tenant_queue(TenantId(i as u16), t, clock);
        queues.push(q);
        receivers.push(r);
    }
    let (mut slots, mut jobs) = (Vec::new(), Vec::new());
    for s in serves {
        let (tx, rx) = bounded(1);
        slots.push(WorkerSlot::new(tx, s.clone()));
        jobs.push(rx);
    }
    let (idle, idle_rx) = bounded(serves.len());
    let (tel_tx, telemetry) = bounded(1024);
    let d = EdfDispatcher::new(
        QueueOrder::EarliestDeadline,
        receivers,
        slots,
        idle_rx,
        tel_tx,
        clock,
    );
    let handle = std::thread::spawn(move || d.run());
    Rig {
        queues,
        jobs,
        idle,
        telemetry,
        handle,
    }
}

/// Worker `w` finished a request and is idle again.
fn done(w: usize) -> WorkerDone {
    WorkerDone {
        worker: w,
        tenant: 0,
        variant: 0,
        service: Duration::from_millis(1),
        throttle: 1.0,
        missed: false,
    }
}

fn next_job(rx: &Receiver<Job>) -> Job {
    rx.recv_timeout(Duration::from_secs(5))
        .expect("a job within 5 s")
}

#[test]
fn busy_worker_gets_earliest_deadline_next_and_shutdown_drains() {
    let r = rig(
        &[tenant("slow", 500), tenant("fast", 50)],
        &[vec![true, true]],
    );
    // The idle worker takes the first request at once.
    let first = r.queues[0].submit().unwrap();
    assert_eq!(next_job(&r.jobs[0]).request.id, first.id);
    // While it is busy, a long- and a short-deadline request queue up.
    let slow = r.queues[0].submit().unwrap();
    let fast = r.queues[1].submit().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        r.jobs[0].try_recv().is_err(),
        "worker is busy: nothing dispatched"
    );
    r.idle.send(done(0)).unwrap();
    let j = next_job(&r.jobs[0]);
    assert_eq!((j.request.tenant, j.request.id), (TenantId(1), fast.id));
    r.idle.send(done(0)).unwrap();
    let j = next_job(&r.jobs[0]);
    assert_eq!((j.request.tenant, j.request.id), (TenantId(0), slow.id));
    // Closing the queues with an idle worker ends the dispatcher.
    let Rig {
        queues,
        idle,
        handle,
        ..
    } = r;
    drop(queues);
    idle.send(done(0)).unwrap();
    let stats = handle.join().unwrap();
    assert_eq!(stats.dispatched, 3);
    assert_eq!(stats.expired, 0);
}

#[test]
fn requests_whose_deadline_passes_while_queued_expire_and_are_reported() {
    let r = rig(&[tenant("t", 5)], &[vec![true]]);
    r.queues[0].submit().unwrap();
    next_job(&r.jobs[0]);
    let doomed = r.queues[0].submit().unwrap();
    std::thread::sleep(Duration::from_millis(15));
    assert_eq!(r.queues[0].waiting(), 1);
    r.idle.send(done(0)).unwrap();
    match r.telemetry.recv_timeout(Duration::from_secs(5)).unwrap() {
        TelemetryEvent::Expired(req) => assert_eq!(req.id, doomed.id),
        other => panic!("expected an expiry, got {other:?}"),
    }
    assert!(
        r.jobs[0].try_recv().is_err(),
        "an expired request never starts"
    );
    // Its queue slot is free again.
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(r.queues[0].waiting(), 0);
}

#[test]
fn a_request_goes_only_to_a_worker_that_holds_its_model() {
    // Worker 0 serves only tenant 0, worker 1 only tenant 1.
    let r = rig(
        &[tenant("a", 1000), tenant("b", 1000)],
        &[vec![true, false], vec![false, true]],
    );
    r.queues[1].submit().unwrap();
    assert_eq!(next_job(&r.jobs[1]).request.tenant, TenantId(1));
    // Worker 1 is now busy; another request of b must wait for it even
    // though worker 0 is idle.
    r.queues[1].submit().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(r.jobs[0].try_recv().is_err());
    // A request of a goes to worker 0 while b's waits.
    r.queues[0].submit().unwrap();
    assert_eq!(next_job(&r.jobs[0]).request.tenant, TenantId(0));
    r.idle.send(done(1)).unwrap();
    assert_eq!(next_job(&r.jobs[1]).request.tenant, TenantId(1));
}
