//! The EDF dispatcher's step, driven by hand-played workers: order, expiry,
//! eligibility, doorbells and the end of a run.

use crossbeam_channel::{bounded, Receiver};
use ecomap::arrival::ArrivalProcess;
use ecomap::config::workload::TenantSpec;
use ecomap::dispatch::QueueOrder;
use ecomap::model::ModelSpec;
use ecomap::request::{Outcome, TenantId};
use ecomap_actors::clock::RunClock;
use ecomap_actors::edf_dispatcher::{
    EdfDispatcher, Job, Next, WorkerDone, WorkerEvent, WorkerSlot,
};
use ecomap_actors::tenant_queue::{tenant_queue, Submission, TenantQueue};
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
        units: None,
        shed: None,
        movable_to: None,
        accuracy_floor: None,
        resolved: Vec::new(),
    }
}

struct Rig {
    queues: Vec<TenantQueue>,
    /// What a sleeping worker listens on: clones of the queues' receivers.
    requests: Vec<Receiver<Submission>>,
    doorbells: Vec<Receiver<()>>,
    dispatcher: EdfDispatcher,
}

/// A dispatcher over `tenants` and workers whose `serves` masks are given;
/// the test plays the workers.
fn rig(tenants: &[TenantSpec], serves: &[Vec<bool>]) -> Rig {
    let clock = RunClock::start();
    let (mut queues, mut receivers, mut requests) = (Vec::new(), Vec::new(), Vec::new());
    for (i, t) in tenants.iter().enumerate() {
        let (q, r) = tenant_queue(TenantId(i as u16), t, clock);
        queues.push(q);
        requests.push(r.rx.clone());
        receivers.push(r);
    }
    let (mut slots, mut doorbells) = (Vec::new(), Vec::new());
    for s in serves {
        let (tx, rx) = bounded(1);
        slots.push(WorkerSlot::new(tx, s.clone()));
        doorbells.push(rx);
    }
    let dispatcher = EdfDispatcher::new(QueueOrder::EarliestDeadline, receivers, slots, clock);
    Rig {
        queues,
        requests,
        doorbells,
        dispatcher,
    }
}

/// A worker finished a request of tenant 0 on time.
fn done() -> WorkerEvent {
    WorkerEvent::Finished(WorkerDone {
        tenant: 0,
        variant: 0,
        service: Duration::from_millis(1),
        throttle: 1.0,
        unit_cost: 1.0,
        missed: false,
        served: true,
    })
}

fn job(next: Next) -> Job {
    match next {
        Next::Run(job) => job,
        other => panic!("expected a job, got {other:?}"),
    }
}

fn rang(doorbell: &Receiver<()>) -> bool {
    doorbell.try_recv().is_ok()
}

#[test]
fn a_free_worker_takes_the_earliest_deadline_and_the_end_drains() {
    let mut r = rig(
        &[tenant("slow", 60_000), tenant("fast", 30_000)],
        &[vec![true, true]],
    );
    assert!(matches!(
        r.dispatcher.next_job(0, WorkerEvent::Woke),
        Next::Wait
    ));
    // The idle worker takes the first request at once.
    let first = r.queues[0].submit().unwrap();
    assert_eq!(
        job(r.dispatcher.next_job(0, WorkerEvent::Woke)).request.id,
        first.id
    );
    // While it is busy, a long- and a short-deadline request queue up; the
    // worker takes the short one when it finishes, without any wake-up.
    let slow = r.queues[0].submit().unwrap();
    let fast = r.queues[1].submit().unwrap();
    let j = job(r.dispatcher.next_job(0, done()));
    assert_eq!((j.request.tenant, j.request.id), (TenantId(1), fast.id));
    assert_eq!(r.queues[1].waiting(), 0);
    let j = job(r.dispatcher.next_job(0, done()));
    assert_eq!((j.request.tenant, j.request.id), (TenantId(0), slow.id));
    assert!(matches!(r.dispatcher.next_job(0, done()), Next::Wait));
    // Closed queues and nothing left: the worker is told to end.
    let Rig {
        queues,
        mut dispatcher,
        ..
    } = r;
    drop(queues);
    assert!(matches!(
        dispatcher.next_job(0, WorkerEvent::Woke),
        Next::Exit
    ));
    let stats = dispatcher.finish();
    assert_eq!((stats.dispatched, stats.expired, stats.unserved), (3, 0, 0));
}

#[test]
fn a_request_a_worker_was_woken_with_joins_the_deadline_order() {
    let mut r = rig(
        &[tenant("slow", 60_000), tenant("fast", 30_000)],
        &[vec![true, true]],
    );
    // The worker was woken by (and took) the slow request from its queue,
    // but a faster one was admitted meanwhile: EDF still holds.
    let slow = r.queues[0].submit().unwrap();
    let taken = r.requests[0].try_recv().unwrap().request;
    assert_eq!(taken.id, slow.id);
    let fast = r.queues[1].submit().unwrap();
    let j = job(r.dispatcher.next_job(0, WorkerEvent::Received(taken)));
    assert_eq!(j.request.id, fast.id);
    let j = job(r.dispatcher.next_job(0, done()));
    assert_eq!(j.request.id, slow.id);
}

#[test]
fn requests_whose_deadline_passes_while_queued_expire_and_are_counted() {
    // The run clock is real: only the request meant to expire has a short
    // deadline (the caller's), so a loaded machine cannot expire the other.
    let mut r = rig(&[tenant("t", 60_000)], &[vec![true]]);
    r.queues[0].submit().unwrap();
    job(r.dispatcher.next_job(0, WorkerEvent::Woke));
    let input = ecomap::tensor::TensorData::from_f32(vec![1], &[0.0]).unwrap();
    let doomed = r.queues[0]
        .submit_input(input, Some(Duration::from_millis(5)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(15));
    assert_eq!(r.queues[0].waiting(), 1);
    assert!(
        matches!(r.dispatcher.next_job(0, done()), Next::Wait),
        "an expired request never starts"
    );
    assert_eq!(r.queues[0].counters().outcome(Outcome::Expired), 1);
    assert_eq!(
        doomed.wait().outcome,
        Outcome::Expired,
        "its caller hears it"
    );
    // Its queue slot is free again.
    assert_eq!(r.queues[0].waiting(), 0);
    assert_eq!(r.dispatcher.stats().expired, 1);
}

/// Tenants a and b; worker 0 serves only a, worker 1 only b. Worker 0 has
/// started and, with nothing to do, sleeps; worker 1 has not run a step yet.
fn split_rig() -> Rig {
    let mut r = rig(
        &[tenant("a", 60_000), tenant("b", 60_000)],
        &[vec![true, false], vec![false, true]],
    );
    assert!(matches!(
        r.dispatcher.next_job(0, WorkerEvent::Woke),
        Next::Wait
    ));
    r
}

#[test]
fn a_request_goes_only_to_a_worker_that_holds_its_model_and_wakes_it() {
    let mut r = split_rig();
    r.queues[1].submit().unwrap();
    let j = job(r.dispatcher.next_job(1, WorkerEvent::Woke));
    assert_eq!(j.request.tenant, TenantId(1));
    // Worker 1 is now busy; another request of b waits for it even if
    // worker 0, idle, runs a step — and worker 0 is not woken for it.
    r.queues[1].submit().unwrap();
    assert!(matches!(
        r.dispatcher.next_job(0, WorkerEvent::Woke),
        Next::Wait
    ));
    assert!(!rang(&r.doorbells[0]) && !rang(&r.doorbells[1]));
    // A request of a, pulled in by worker 1's next step, is for worker 0,
    // which is asleep: worker 1's step rings it.
    r.queues[0].submit().unwrap();
    let j = job(r.dispatcher.next_job(1, done()));
    assert_eq!(j.request.tenant, TenantId(1));
    assert!(
        rang(&r.doorbells[0]),
        "the idle worker that serves a is woken"
    );
    assert!(!rang(&r.doorbells[1]));
    assert_eq!(
        job(r.dispatcher.next_job(0, WorkerEvent::Woke))
            .request
            .tenant,
        TenantId(0)
    );
}

#[test]
fn the_workers_out_are_published_for_the_planner() {
    let r = split_rig();
    let lost = ecomap_actors::dataplane::lost_units::LostUnits::new();
    let mut d = r.dispatcher.with_lost_units(lost.clone());
    d.worker_lost(1);
    assert_eq!(lost.mask(), 0b10);
    d.worker_lost(0);
    assert_eq!(lost.mask(), 0b11);
    d.worker_restored(1);
    assert_eq!(lost.mask(), 0b01);
    // A worker lost and restored between two looks still counts as a
    // change (the dispatcher re-mapped its tenants meanwhile).
    d.worker_restored(0);
    assert_eq!((lost.mask(), lost.changes()), (0, 4));
}

#[test]
fn closing_the_queues_wakes_sleeping_workers_and_leftovers_are_counted_failed() {
    // Worker 1 alone serves tenant b, and is lost with a request of b queued.
    let mut r = split_rig();
    r.queues[1].submit().unwrap();
    job(r.dispatcher.next_job(1, WorkerEvent::Woke));
    r.queues[1].submit().unwrap();
    r.dispatcher.worker_lost(1);
    assert!(rang(&r.doorbells[0]));
    let Rig {
        queues,
        mut dispatcher,
        doorbells,
        ..
    } = r;
    let counters = queues[1].counters().clone();
    drop(queues);
    // Worker 0 steps (its doorbell rang): everything is closed and nothing
    // is for it, so it ends.
    assert!(matches!(
        dispatcher.next_job(0, WorkerEvent::Woke),
        Next::Exit
    ));
    assert!(!rang(&doorbells[0]));
    let stats = dispatcher.finish();
    assert_eq!(stats.unserved, 1);
    assert_eq!(counters.outcome(Outcome::Failed), 1, "counted failed");
}

#[test]
fn a_request_taken_from_a_queue_that_then_closed_is_still_served() {
    // Worker 0 takes a request from the channel; the sender goes away
    // before worker 0's step, and another step has seen the channel close.
    let r = rig(&[tenant("t", 60_000)], &[vec![true], vec![true]]);
    let Rig {
        queues,
        requests,
        mut dispatcher,
        ..
    } = r;
    let sent = queues[0].submit().unwrap();
    let taken = requests[0].try_recv().unwrap().request;
    drop(queues);
    assert!(matches!(
        dispatcher.next_job(1, WorkerEvent::Woke),
        Next::Exit
    ));
    let j = job(dispatcher.next_job(0, WorkerEvent::Received(taken)));
    assert_eq!(j.request.id, sent.id);
    assert!(matches!(dispatcher.next_job(0, done()), Next::Exit));
    let stats = dispatcher.finish();
    assert_eq!((stats.dispatched, stats.unserved), (1, 0));
}

#[test]
fn a_caller_still_sending_at_the_end_gets_one_counted_outcome_per_request() {
    // The tenant's only worker is lost; the caller keeps its handle and
    // keeps submitting while the run ends. Every request it sent is
    // answered exactly once: failed (queued, or caught in flight by the
    // end's drain) or rejected as full (before the end) — none dropped
    // with the channel, uncounted. After the end it is refused as closed,
    // uncounted: the run's counts are final.
    let mut r = rig(&[tenant("t", 60_000)], &[vec![true]]);
    r.dispatcher.worker_lost(0);
    let Rig {
        mut queues,
        requests,
        dispatcher,
        ..
    } = r;
    drop(requests);
    let handle = queues.pop().unwrap();
    let counters = handle.counters().clone();
    let queued = handle.submit().unwrap();
    let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let caller = {
        let ended = ended.clone();
        std::thread::spawn(move || {
            let (mut sent, mut closed) = (0u64, 0u64);
            loop {
                // Read before the submit: a refusal as full decided before
                // the end must not end the loop.
                let after_the_end = ended.load(std::sync::atomic::Ordering::SeqCst);
                match handle.submit() {
                    Ok(_) => sent += 1,
                    Err(ecomap_actors::tenant_queue::SubmitError::Closed { .. }) => {
                        closed += 1;
                        break;
                    }
                    // The queue's capacity (8): the dispatcher gives slots
                    // back only at the end. Still full after the end: a slot
                    // leaked with a request dropped uncounted.
                    Err(ecomap_actors::tenant_queue::SubmitError::QueueFull { .. }) => {
                        if after_the_end {
                            break;
                        }
                        std::thread::yield_now()
                    }
                    Err(e) => panic!("unexpected refusal: {e}"),
                }
            }
            (sent, closed)
        })
    };
    // Let the caller fill the queue before the end, some of the time.
    std::thread::sleep(Duration::from_millis(2));
    let stats = dispatcher.finish();
    // The counts as the report reads them, the caller still running: they
    // add up, and nothing it does after the end changes them.
    let at_end = counters.snapshot();
    ended.store(true, std::sync::atomic::Ordering::SeqCst);
    let (sent, closed) = caller.join().unwrap();
    assert!(at_end.is_conserved(), "one outcome per request: {at_end:?}");
    let counts = counters.snapshot();
    assert_eq!(counts, at_end, "the counts were final at the end");
    assert_eq!(
        stats.unserved,
        sent + 1,
        "request {queued:?} and every one sent failed"
    );
    assert_eq!(counters.outcome(Outcome::Failed), sent + 1);
    assert_eq!(closed, 1, "the caller learns the runtime closed");
    assert_eq!(counters.waiting.held(), 0, "every slot given back");
}
