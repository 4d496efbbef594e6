//! `AdmissionSlots`: how many of a tenant's requests are admitted and not
//! yet started, taken by any number of submitters without a lock and given
//! back by the dispatcher when a request leaves the queue.
//!
//! A submitter adds itself first and asks the rule with the count it found;
//! refused, it takes itself off again. So the slots held never exceed what
//! the rule allows, whatever the interleaving — for a monotone rule (one
//! that admits at `n` held admits at fewer), as the core's capacity is. While a refused submitter
//! is taking itself off, the count reads one high: another submitter may be
//! refused then although a slot is about to be free — a refusal the caller
//! sees and counts, never an admission past the bound. The rule is the
//! core's (`ecomap::dispatch::admission::admits`); this type only keeps the
//! count.
//!
//! At the end of a run the dispatcher [`close`](AdmissionSlots::close)s the
//! slots: from then on every take is refused, and a submitter that took its
//! slot before the close still holds it until the dispatcher has received
//! its request and given the slot back. A refused submitter keeps its
//! increment, too, for as long as it holds the [`Refusal`] — while it counts
//! the refusal. So the dispatcher, waiting for
//! [`held`](AdmissionSlots::held) to reach zero while it drains the
//! channel, receives every request that was admitted — none is left in the
//! channel to be dropped with it, uncounted — and outlasts every refusal
//! being counted: the counts it then reads add up.
//!
//! ```
//! use ecomap_sync::admission::AdmissionSlots;
//!
//! let slots = AdmissionSlots::new();
//! let admits = |waiting: usize| waiting < 2; // a capacity of 2
//! assert!(slots.try_take(admits).is_ok());
//! assert!(slots.try_take(admits).is_ok());
//! let refused = slots.try_take(admits).unwrap_err(); // full
//! assert!(!refused.closed());
//! drop(refused); // counted by the caller; now taken off
//! assert_eq!(slots.held(), 2);
//! slots.give_back();
//! assert!(slots.try_take(admits).is_ok());
//! ```

use crate::sync::{AtomicUsize, Ordering};

/// The top bit of the count: set once by [`AdmissionSlots::close`]. A
/// count never comes near it (one per admitted request or submitter in
/// flight), so the bit and the count share one word and one atomic
/// step decides both.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// A refused take. Its increment stays in the count until it is dropped,
/// so a closer waiting for the count to reach zero waits for the refusal
/// to be counted too.
#[derive(Debug)]
#[must_use = "a refusal is counted, then dropped"]
pub struct Refusal<'a> {
    slots: &'a AdmissionSlots,
    closed: bool,
}

impl Refusal<'_> {
    /// Whether the slots were closed (the run has ended) rather than full.
    pub fn closed(&self) -> bool {
        self.closed
    }
}

impl Drop for Refusal<'_> {
    fn drop(&mut self) {
        let before = self.slots.count.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(
            before & !CLOSED > 0,
            "the refusal's increment is still counted"
        );
    }
}

/// A tenant's admission count. Not shared by itself: it lives in a
/// structure the submitters and the dispatcher share (an `Arc`).
#[derive(Debug, Default)]
pub struct AdmissionSlots {
    /// Slots held, plus refused submitters not yet taken off; `CLOSED`
    /// once closed.
    count: AtomicUsize,
}

impl AdmissionSlots {
    /// No slot held.
    pub fn new() -> Self {
        Self::default()
    }

    /// Take a slot if the slots are open and `admits(held)` says a request
    /// may join a queue that holds `held` admitted requests; else a
    /// [`Refusal`] that says whether the slots were closed. Count the
    /// refusal before dropping it.
    pub fn try_take(&self, admits: impl FnOnce(usize) -> bool) -> Result<(), Refusal<'_>> {
        // One step both counts us and reads the closed bit: a take ordered
        // after the close sees it, one ordered before is counted by the
        // time the closer reads `held`.
        let found = self.count.fetch_add(1, Ordering::AcqRel);
        if found & CLOSED == 0 && admits(found) {
            return Ok(());
        }
        Err(Refusal {
            slots: self,
            closed: found & CLOSED != 0,
        })
    }

    /// A refusal decided before the rule is asked (e.g. an input the model
    /// does not take), held like a refused take while it is counted:
    /// [`Refusal::closed`] says whether the slots were already closed.
    pub fn refuse(&self) -> Refusal<'_> {
        let found = self.count.fetch_add(1, Ordering::AcqRel);
        Refusal {
            slots: self,
            closed: found & CLOSED != 0,
        }
    }

    /// Give back a slot taken by [`try_take`](Self::try_take) (the request
    /// was dispatched, expired, shed, failed, or never sent).
    pub fn give_back(&self) {
        let before = self.count.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before & !CLOSED > 0, "a slot given back was taken");
    }

    /// Refuse every take from now on. Slots already taken stay held until
    /// given back. Idempotent.
    pub fn close(&self) {
        self.count.fetch_or(CLOSED, Ordering::AcqRel);
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.count.load(Ordering::Acquire) & CLOSED != 0
    }

    /// Slots held now (admitted, not yet started). May read one high per
    /// submitter being refused at this instant.
    pub fn held(&self) -> usize {
        self.count.load(Ordering::Acquire) & !CLOSED
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_leaves_the_count_as_it_was() {
        let slots = AdmissionSlots::new();
        assert!(slots.try_take(|w| w < 1).is_ok());
        let refused = slots.try_take(|w| w < 1).unwrap_err();
        assert_eq!(slots.held(), 2, "held while it is counted");
        drop(refused);
        assert!(slots.try_take(|w| w < 1).is_err());
        assert_eq!(slots.held(), 1);
        slots.give_back();
        assert_eq!(slots.held(), 0);
    }

    #[test]
    fn a_close_refuses_new_takes_and_keeps_those_held() {
        let slots = AdmissionSlots::new();
        assert!(slots.try_take(|w| w < 4).is_ok());
        assert!(!slots.is_closed());
        assert!(!slots.refuse().closed());
        slots.close();
        slots.close();
        assert!(slots.is_closed());
        let refused = slots.try_take(|w| w < 4).unwrap_err();
        assert!(refused.closed(), "closed: refused whatever the rule says");
        drop(refused);
        assert!(slots.refuse().closed());
        assert_eq!(
            slots.held(),
            1,
            "the slot taken before the close is still held"
        );
        slots.give_back();
        assert_eq!(slots.held(), 0);
        assert!(slots.is_closed());
    }

    #[test]
    fn concurrent_submitters_never_hold_more_than_the_rule_allows() {
        // A stress test on real threads; tests/loom.rs checks every
        // interleaving of a smaller case.
        const CAPACITY: usize = 3;
        let slots = std::sync::Arc::new(AdmissionSlots::new());
        let holders = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (slots, holders) = (slots.clone(), holders.clone());
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        if slots.try_take(|w| w < CAPACITY).is_ok() {
                            let now = holders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            assert!(now < CAPACITY, "{} holders", now + 1);
                            holders.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                            slots.give_back();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(slots.held(), 0);
    }
}
