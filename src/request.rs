//! Requests and what becomes of them.
//!
//! Conservation is the data plane's first invariant: every submitted request
//! ends in exactly one [`Outcome`]. Nothing is dropped without being counted.

use crate::time::Timestamp;
use std::fmt;
use std::time::Duration;

/// Index of a tenant in the workload file (0-based, in file order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(pub u16);

impl TenantId {
    /// The index as `usize`, for indexing per-tenant tables.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// One inference request of one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Unique, increasing per tenant.
    pub id: u64,
    /// Who asked.
    pub tenant: TenantId,
    /// When it was released (submitted to ecomap).
    pub release: Timestamp,
    /// Absolute deadline: release + the tenant's relative deadline.
    pub deadline: Timestamp,
    /// Tenant priority from the workload file; breaks ties between equal deadlines
    /// (higher first).
    pub priority: u8,
}

impl Request {
    /// A request released at `release` with a relative deadline.
    pub fn new(
        id: u64,
        tenant: TenantId,
        release: Timestamp,
        relative_deadline: Duration,
        priority: u8,
    ) -> Self {
        Request {
            id,
            tenant,
            release,
            deadline: release + relative_deadline,
            priority,
        }
    }
}

/// How a request ended. Exactly one per submitted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Served, finished by its deadline.
    OnTime,
    /// Served, finished after its deadline.
    Late,
    /// Admitted, but its deadline passed before it could start; not served.
    Expired,
    /// Refused at submission because the tenant's queue was full.
    Rejected,
    /// Dropped before it started: its predicted finish was past its
    /// deadline (feasibility shedding), so serving it would only have made
    /// later requests late too.
    Shed,
    /// A worker tried to serve it and the inference backend returned an error.
    Failed,
}

impl Outcome {
    /// All outcomes, in report order.
    pub const ALL: [Outcome; 6] = [
        Outcome::OnTime,
        Outcome::Late,
        Outcome::Expired,
        Outcome::Rejected,
        Outcome::Shed,
        Outcome::Failed,
    ];

    /// Position in [`Outcome::ALL`] (for per-outcome arrays).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether this outcome counts against the tenant's deadline record
    /// (anything but `on_time`); the quality controller's miss test.
    pub fn is_miss(self) -> bool {
        self != Outcome::OnTime
    }

    /// Lower-case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::OnTime => "on_time",
            Outcome::Late => "late",
            Outcome::Expired => "expired",
            Outcome::Rejected => "rejected",
            Outcome::Shed => "shed",
            Outcome::Failed => "failed",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A request a worker ran (successfully or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The request.
    pub request: Request,
    /// Index of the worker that ran it.
    pub worker: usize,
    /// When the dispatcher handed it to the worker.
    pub dispatched: Timestamp,
    /// When it could first have started on this worker: the later of its
    /// release and the worker's previous finish. `started - eligible` is the
    /// runtime's own dispatch latency, free of queueing behind other work.
    pub eligible: Timestamp,
    /// When the worker started the forward pass.
    pub started: Timestamp,
    /// When the forward pass ended.
    pub finished: Timestamp,
    /// Whether the backend succeeded.
    pub succeeded: bool,
    /// Which variant of the tenant's model family served it (0 = heaviest).
    pub variant: u8,
}

impl Completion {
    /// The outcome this completion counts as.
    pub fn outcome(&self) -> Outcome {
        if !self.succeeded {
            Outcome::Failed
        } else if self.finished <= self.request.deadline {
            Outcome::OnTime
        } else {
            Outcome::Late
        }
    }

    /// Release to end of service.
    pub fn end_to_end(&self) -> Duration {
        self.finished.saturating_since(self.request.release)
    }

    /// Release to start of service (queueing plus dispatch).
    pub fn queueing(&self) -> Duration {
        self.started.saturating_since(self.request.release)
    }

    /// Eligible to start of service: the runtime's dispatch latency.
    pub fn dispatch_latency(&self) -> Duration {
        self.started.saturating_since(self.eligible)
    }

    /// Start to end of service.
    pub fn service(&self) -> Duration {
        self.finished.saturating_since(self.started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(finished_ms: u64, ok: bool) -> Completion {
        let r = Request::new(
            1,
            TenantId(0),
            Timestamp::ZERO,
            Duration::from_millis(10),
            0,
        );
        Completion {
            request: r,
            worker: 0,
            dispatched: Timestamp::from_nanos(1_000_000),
            eligible: Timestamp::from_nanos(1_500_000),
            started: Timestamp::from_nanos(2_000_000),
            finished: Timestamp::from_nanos(finished_ms * 1_000_000),
            succeeded: ok,
            variant: 0,
        }
    }

    #[test]
    fn outcome_follows_deadline_and_success() {
        assert_eq!(completion(10, true).outcome(), Outcome::OnTime);
        assert_eq!(completion(11, true).outcome(), Outcome::Late);
        assert_eq!(completion(5, false).outcome(), Outcome::Failed);
        let c = completion(7, true);
        assert_eq!(c.queueing(), Duration::from_millis(2));
        assert_eq!(c.service(), Duration::from_millis(5));
        assert_eq!(c.end_to_end(), Duration::from_millis(7));
        assert_eq!(c.dispatch_latency(), Duration::from_micros(500));
    }
}
