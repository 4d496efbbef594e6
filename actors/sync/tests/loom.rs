//! Model checks of the data plane's lock-free protocols: loom runs each
//! closure under every interleaving of its threads (and the weak-memory
//! outcomes it models), so an assertion here holds in all of them, not
//! just in the ones a stress test happens to hit.
//!
//! Run: `RUSTFLAGS="--cfg loom -C debug-assertions" cargo test -p ecomap-sync
//! --release --target-dir target/loom --test loom` (scripts/test.sh does;
//! debug assertions on, so the protocols' `debug_assert!`s are checked in
//! every interleaving too).
#![cfg(loom)]

use ecomap_sync::admission::AdmissionSlots;
use ecomap_sync::plan_cell::{PlanCell, PlannedMapping};
use ecomap_sync::power_cell::{PowerCell, Published};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Publication `k` puts `k` in every field, so a torn read shows as a mix.
fn plan(k: usize, tenants: usize) -> PlannedMapping {
    PlannedMapping {
        variants: vec![k; tenants],
        units: vec![k; tenants],
    }
}

#[test]
fn a_plan_is_read_whole_and_as_the_generation_says() {
    loom::model(|| {
        let cell = PlanCell::new(2);
        let writer = cell.clone();
        let w = thread::spawn(move || {
            writer.publish(&plan(1, 2));
            writer.publish(&plan(2, 2));
        });
        // The dispatcher's reads, as at its steps: each takes only a plan
        // newer than the last it took.
        let mut seen = 0;
        for _ in 0..2 {
            if let Some((g, p)) = cell.newer_than(seen) {
                assert!(g > seen && g % 2 == 0, "generation {g} after {seen}");
                // Generation 2k is the k-th publication, whole.
                assert_eq!(p, plan(g as usize / 2, 2), "generation {g}");
                seen = g;
            }
        }
        w.join().unwrap();
        // Once the writer is done, the last plan is there to be read.
        assert_eq!(cell.newer_than(0), Some((4, plan(2, 2))));
    });
}

#[test]
fn a_power_state_is_read_as_a_published_pair() {
    loom::model(|| {
        let cell = PowerCell::new();
        let writer = cell.clone();
        let w = thread::spawn(move || {
            writer.publish(15.0, 1.5);
            writer.publish(40.0, 1.0);
        });
        let first = Published {
            cap_w: 15.0,
            throttle: 1.5,
        };
        let second = Published {
            cap_w: 40.0,
            throttle: 1.0,
        };
        let a = cell.latest();
        let b = cell.latest();
        for read in [a, b] {
            assert!(read.is_none() || read == Some(first) || read == Some(second));
        }
        // A reader never goes back in time: once it saw the second, it
        // does not see the first again.
        assert!(!(a == Some(second) && b == Some(first)));
        w.join().unwrap();
        assert_eq!(cell.latest(), Some(second));
    });
}

#[test]
fn admission_never_holds_more_slots_than_the_capacity() {
    // Two submitters race for one slot while the dispatcher gives back a
    // slot taken before them.
    const CAPACITY: usize = 1;
    loom::model(|| {
        let slots = Arc::new(AdmissionSlots::new());
        assert!(slots.try_take(|w| w < CAPACITY).is_ok());
        // Slots held for real: asserted below the capacity by every holder.
        let holders = Arc::new(AtomicUsize::new(1));
        let admitted = Arc::new(AtomicUsize::new(0));
        let submitters: Vec<_> = (0..2)
            .map(|_| {
                let (slots, holders, admitted) = (slots.clone(), holders.clone(), admitted.clone());
                thread::spawn(move || {
                    if slots.try_take(|w| w < CAPACITY).is_ok() {
                        let before = holders.fetch_add(1, Ordering::SeqCst);
                        assert!(before < CAPACITY, "{} slots held", before + 1);
                        admitted.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        // The dispatcher: the first request leaves the queue.
        holders.fetch_sub(1, Ordering::SeqCst);
        slots.give_back();
        for s in submitters {
            s.join().unwrap();
        }
        // Every admitted request still holds its slot, no more, no less.
        let admitted = admitted.load(Ordering::SeqCst);
        assert!(admitted <= CAPACITY);
        assert_eq!(slots.held(), admitted);
    });
}

#[test]
fn a_close_leaves_no_admitted_request_undrained_and_every_refusal_counted() {
    // A submitter races the end of the run, with a capacity of 1 and one
    // slot already held: it is admitted (after the give-back) or refused
    // as full (counted) or as closed (not counted: the run is over). The
    // dispatcher gives back the held slot, closes the slots, then drains
    // the channel (here a count of requests sent) until no slot is held.
    // Whatever the interleaving, every request admitted was drained,
    // nothing is left behind, and every refusal as full was counted
    // before the dispatcher read the counts.
    loom::model(|| {
        let slots = Arc::new(AdmissionSlots::new());
        assert!(slots.try_take(|w| w < 1).is_ok());
        let channel = Arc::new(AtomicUsize::new(0));
        let refused_full = Arc::new(AtomicUsize::new(0));
        let submitter = {
            let (slots, channel, refused_full) =
                (slots.clone(), channel.clone(), refused_full.clone());
            thread::spawn(move || match slots.try_take(|w| w < 1) {
                Ok(()) => {
                    channel.fetch_add(1, Ordering::SeqCst);
                    1
                }
                Err(refusal) => {
                    if !refusal.closed() {
                        refused_full.fetch_add(1, Ordering::SeqCst);
                    }
                    0
                }
            })
        };
        slots.give_back();
        slots.close();
        let mut drained = 0;
        while slots.held() > 0 {
            let received = channel.swap(0, Ordering::SeqCst);
            for _ in 0..received {
                slots.give_back();
            }
            drained += received;
            if received == 0 {
                thread::yield_now();
            }
        }
        // What the dispatcher reads for the report, before the join.
        let counted_full = refused_full.load(Ordering::SeqCst);
        let sent = submitter.join().unwrap();
        assert_eq!(drained, sent, "every admitted request was drained");
        assert_eq!(channel.load(Ordering::SeqCst), 0, "nothing left behind");
        assert_eq!(
            counted_full,
            refused_full.load(Ordering::SeqCst),
            "a refusal as full was counted before the drain ended"
        );
        assert!(slots.try_take(|_| true).unwrap_err().closed());
    });
}
