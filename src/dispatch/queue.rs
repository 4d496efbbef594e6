//! The dispatch queue: which queued request runs next.
//!
//! All requests admitted by the tenant queues sit in one binary heap ordered
//! by absolute deadline (EDF), ties broken by tenant priority and then by
//! arrival order, so push and pop are O(log n). A FIFO order (by release time)
//! is available as a baseline for experiments.
//!
//! Expiry is explicit: [`DispatchQueue::drain_expired`] removes every request
//! whose deadline is not after `now`. Because the heap is deadline-ordered,
//! those are exactly the requests at its top, so expiry costs O(log n) per
//! expired request and nothing otherwise.

use crate::request::Request;
use crate::time::Timestamp;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// How the dispatch queue orders requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum QueueOrder {
    /// Earliest absolute deadline first (EDF).
    EarliestDeadline,
    /// Earliest release first (FIFO across tenants); a baseline.
    Fifo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    key: Timestamp,
    priority: Reverse<u8>,
    seq: u64,
    request: Request,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.key, self.priority, self.seq).cmp(&(other.key, other.priority, other.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A priority queue of admitted requests.
#[derive(Debug)]
pub struct DispatchQueue {
    order: QueueOrder,
    heap: BinaryHeap<Reverse<Entry>>,
    next_seq: u64,
    skipped: Vec<Entry>,
}

impl DispatchQueue {
    /// An empty queue with the given order.
    pub fn new(order: QueueOrder) -> Self {
        DispatchQueue {
            order,
            heap: BinaryHeap::new(),
            next_seq: 0,
            skipped: Vec::new(),
        }
    }

    /// An empty queue with room for `capacity` requests without reallocating.
    pub fn with_capacity(order: QueueOrder, capacity: usize) -> Self {
        let mut q = Self::new(order);
        q.heap.reserve(capacity);
        q
    }

    /// The order this queue uses.
    pub fn order(&self) -> QueueOrder {
        self.order
    }

    /// Number of queued requests.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no request is queued.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Queue a request. O(log n).
    pub fn push(&mut self, request: Request) {
        let key = match self.order {
            QueueOrder::EarliestDeadline => request.deadline,
            QueueOrder::Fifo => request.release,
        };
        let entry = Entry {
            key,
            priority: Reverse(request.priority),
            seq: self.next_seq,
            request,
        };
        self.next_seq += 1;
        self.heap.push(Reverse(entry));
    }

    /// The earliest deadline among queued requests (in EDF order this is the
    /// head's deadline), if any.
    pub fn earliest_deadline(&self) -> Option<Timestamp> {
        match self.order {
            QueueOrder::EarliestDeadline => self.heap.peek().map(|e| e.0.request.deadline),
            QueueOrder::Fifo => self.heap.iter().map(|e| e.0.request.deadline).min(),
        }
    }

    /// Remove every request whose deadline is at or before `now` (it can no
    /// longer finish in time, so it must not start) and hand each to `expired`.
    /// Returns how many were removed.
    pub fn drain_expired(&mut self, now: Timestamp, mut expired: impl FnMut(Request)) -> usize {
        let mut n = 0;
        match self.order {
            QueueOrder::EarliestDeadline => {
                while let Some(Reverse(head)) = self.heap.peek() {
                    if head.request.deadline > now {
                        break;
                    }
                    let Reverse(e) = self.heap.pop().expect("peeked entry exists");
                    expired(e.request);
                    n += 1;
                }
            }
            QueueOrder::Fifo => {
                // FIFO order is not deadline order: scan. FIFO is a baseline
                // for experiments, not the production path.
                let (dead, live): (Vec<_>, Vec<_>) = std::mem::take(&mut self.heap)
                    .into_iter()
                    .partition(|e| e.0.request.deadline <= now);
                self.heap = live.into_iter().collect();
                for e in dead {
                    expired(e.0.request);
                    n += 1;
                }
            }
        }
        n
    }

    /// Remove every request for which `doomed` is true, handing each to
    /// `removed` in queue order; the rest keep their places. Returns how
    /// many were removed. A scan: for the rare end of a tenant whose
    /// every worker failed, not the per-request path.
    pub fn drain_where(
        &mut self,
        mut doomed: impl FnMut(&Request) -> bool,
        mut removed: impl FnMut(Request),
    ) -> usize {
        let (dead, live): (Vec<_>, Vec<_>) = std::mem::take(&mut self.heap)
            .into_iter()
            .partition(|e| doomed(&e.0.request));
        self.heap = live.into_iter().collect();
        let mut dead: Vec<Entry> = dead.into_iter().map(|e| e.0).collect();
        dead.sort();
        let n = dead.len();
        for e in dead {
            removed(e.request);
        }
        n
    }

    /// Pop the first request (in queue order) for which `eligible` is true —
    /// e.g. "some free worker holds this tenant's model". Requests passed over
    /// stay queued in their places. O(log n) when the head is eligible, which
    /// is always the case when every worker can serve every tenant.
    pub fn pop_eligible(&mut self, mut eligible: impl FnMut(&Request) -> bool) -> Option<Request> {
        let mut found = None;
        while let Some(Reverse(e)) = self.heap.pop() {
            if eligible(&e.request) {
                found = Some(e.request);
                break;
            }
            self.skipped.push(e);
        }
        for e in self.skipped.drain(..) {
            self.heap.push(Reverse(e));
        }
        found
    }

    /// Remove and return every queued request (e.g. at shutdown), in queue order.
    pub fn drain_all(&mut self) -> Vec<Request> {
        let mut v: Vec<Entry> = std::mem::take(&mut self.heap)
            .into_iter()
            .map(|e| e.0)
            .collect();
        v.sort();
        v.into_iter().map(|e| e.request).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::TenantId;
    use std::time::Duration;

    fn req(id: u64, tenant: u16, release_ms: u64, deadline_ms: u64, prio: u8) -> Request {
        Request::new(
            id,
            TenantId(tenant),
            Timestamp::from_nanos(release_ms * 1_000_000),
            Duration::from_millis(deadline_ms),
            prio,
        )
    }

    #[test]
    fn edf_pops_in_deadline_order_with_priority_then_fifo_ties() {
        let mut q = DispatchQueue::new(QueueOrder::EarliestDeadline);
        q.push(req(1, 0, 0, 50, 0));
        q.push(req(2, 1, 0, 20, 0));
        q.push(req(3, 2, 10, 10, 0)); // deadline 20, same as 2, later seq
        q.push(req(4, 3, 5, 15, 9)); // deadline 20, higher priority
        q.push(req(5, 0, 0, 5, 0));
        let order: Vec<u64> = std::iter::from_fn(|| q.pop_eligible(|_| true))
            .map(|r| r.id)
            .collect();
        assert_eq!(order, vec![5, 4, 2, 3, 1]);
    }

    #[test]
    fn fifo_pops_in_release_order() {
        let mut q = DispatchQueue::new(QueueOrder::Fifo);
        q.push(req(1, 0, 3, 1, 0));
        q.push(req(2, 0, 1, 100, 0));
        q.push(req(3, 0, 2, 50, 0));
        let order: Vec<u64> = std::iter::from_fn(|| q.pop_eligible(|_| true))
            .map(|r| r.id)
            .collect();
        assert_eq!(order, vec![2, 3, 1]);
        assert_eq!(q.order(), QueueOrder::Fifo);
    }

    #[test]
    fn expired_requests_are_removed_and_reported() {
        for order in [QueueOrder::EarliestDeadline, QueueOrder::Fifo] {
            let mut q = DispatchQueue::new(order);
            q.push(req(1, 0, 0, 10, 0));
            q.push(req(2, 0, 0, 20, 0));
            q.push(req(3, 0, 0, 30, 0));
            let mut gone = Vec::new();
            let n = q.drain_expired(Timestamp::from_nanos(20_000_000), |r| gone.push(r.id));
            gone.sort();
            assert_eq!((n, gone), (2, vec![1, 2]), "{order:?}");
            assert_eq!(q.len(), 1);
            assert_eq!(
                q.earliest_deadline(),
                Some(Timestamp::from_nanos(30_000_000))
            );
        }
    }

    #[test]
    fn ineligible_requests_keep_their_place() {
        let mut q = DispatchQueue::new(QueueOrder::EarliestDeadline);
        q.push(req(1, 0, 0, 10, 0));
        q.push(req(2, 1, 0, 20, 0));
        q.push(req(3, 0, 0, 30, 0));
        // Only tenant 1 can be served now.
        assert_eq!(
            q.pop_eligible(|r| r.tenant == TenantId(1)).map(|r| r.id),
            Some(2)
        );
        assert_eq!(q.pop_eligible(|r| r.tenant == TenantId(7)), None);
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop_eligible(|_| true).map(|r| r.id), Some(1));
        assert_eq!(
            q.drain_all().iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![3]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn many_requests_come_out_sorted() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut q = DispatchQueue::with_capacity(QueueOrder::EarliestDeadline, 1000);
        for id in 0..1000 {
            q.push(req(
                id,
                0,
                rng.random_range(0..1000),
                rng.random_range(1..1000),
                0,
            ));
        }
        let mut last = Timestamp::ZERO;
        while let Some(r) = q.pop_eligible(|_| true) {
            assert!(r.deadline >= last);
            last = r.deadline;
        }
    }
}
