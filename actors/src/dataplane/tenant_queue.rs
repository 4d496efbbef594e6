//! `TenantQueue`: one tenant's bounded admission queue.
//!
//! Submitting stamps the request's release time and absolute deadline and
//! admits it if fewer than `capacity` of the tenant's requests are waiting
//! (admitted but not yet started or expired); otherwise it is rejected with
//! [`SubmitError::QueueFull`] — counted, and the caller knows at once. The
//! queue is a bounded crossbeam channel whose receiving end belongs to the
//! EDF dispatcher, which pulls requests into its deadline heap; the idle
//! workers that serve the tenant sleep on it too, so a submission wakes one
//! of them directly.
//!
//! Two ways in: [`TenantQueue::submit`] (the load generators': no input,
//! the model runs on its own synthetic input, nothing comes back but the
//! count) and [`TenantQueue::submit_input`] (an application's: its input
//! tensor in, a [`Ticket`] out that resolves to the model's outputs), with
//! [`TenantQueue::infer`] as its blocking form.

use crate::clock::RunClock;
use crate::dataplane::admission::AdmissionSlots;
use crate::dataplane::ticket::{self, Answer, Ticket, Work};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use ecomap::accounting::OutcomeCounts;
use ecomap::config::workload::TenantSpec;
use ecomap::request::{Outcome, Request, TenantId};
use ecomap::tensor::{TensorData, TensorError, TensorSpec};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why a submission was refused. The request is counted `rejected`,
/// except when refused as [`SubmitError::Closed`] because the run has ended
/// (its counts are final by then).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The tenant already has `capacity` requests waiting.
    #[error("tenant '{tenant}' queue is full ({capacity} waiting); request rejected")]
    QueueFull {
        /// Tenant name.
        tenant: String,
        /// Its capacity.
        capacity: usize,
    },
    /// The caller runs below the real-time workers that receive from this
    /// queue and could not raise itself for the send (see
    /// [`TenantQueue::submit`]).
    #[error(
        "tenant '{tenant}': the submitting thread runs below the real-time workers (SCHED_FIFO \
         {needed}) and may not raise itself for the send ({reason}); a worker preempting it \
         mid-send would spin forever. Submit from a thread at SCHED_FIFO {needed} or above, or \
         give the process CAP_SYS_NICE (RLIMIT_RTPRIO); request rejected"
    )]
    PriorityInversion {
        /// Tenant name.
        tenant: String,
        /// The priority the sender must run at.
        needed: i32,
        /// Why raising it failed.
        reason: String,
    },
    /// The input is not what the tenant's model takes.
    #[error("tenant '{tenant}': {error}; request rejected")]
    BadInput {
        /// Tenant name.
        tenant: String,
        /// What is wrong with it.
        error: TensorError,
    },
    /// A deadline of zero was asked for.
    #[error("tenant '{tenant}': a request deadline must be positive; request rejected")]
    BadDeadline {
        /// Tenant name.
        tenant: String,
    },
    /// Every worker holding the tenant's models failed for good (after
    /// its restarts): nothing could serve the request (counted `rejected`).
    #[error(
        "tenant '{tenant}': no worker holding its model is left (every one failed for good); \
         request rejected"
    )]
    NoWorker {
        /// Tenant name.
        tenant: String,
    },
    /// The run has ended (not counted), or its dispatcher is gone without
    /// ending it (counted `rejected`).
    #[error("tenant '{tenant}': the runtime is not accepting requests; request refused")]
    Closed {
        /// Tenant name.
        tenant: String,
    },
}

/// Counters shared by a tenant's queue handles, the dispatcher and the
/// workers: the exact outcome counts, kept where each outcome is decided
/// (not by telemetry, which may fall behind or die without a count being
/// lost).
#[derive(Debug, Default)]
pub struct TenantCounters {
    /// Requests admitted and not yet dispatched or expired: the tenant's
    /// admission slots (taken here, given back by the dispatcher).
    pub waiting: AdmissionSlots,
    /// Requests offered.
    pub submitted: AtomicU64,
    /// `outcomes[o.index()]`: requests that ended in outcome `o`.
    outcomes: [AtomicU64; 6],
    /// The model variant the tenant is served by now (0 = heaviest).
    pub active_variant: AtomicUsize,
    /// Set by the dispatcher when every worker holding the tenant's models
    /// is out for good: requests are refused from then on.
    pub no_worker: AtomicBool,
    next_id: AtomicU64,
}

impl TenantCounters {
    /// Count one request's outcome (once per request, where it is decided).
    pub fn count(&self, outcome: Outcome) {
        self.outcomes[outcome.index()].fetch_add(1, Ordering::AcqRel);
    }

    /// Requests that ended in `outcome` so far.
    pub fn outcome(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome.index()].load(Ordering::Acquire)
    }

    /// Every count so far. The outcomes are read before `submitted`: a
    /// request is counted submitted before it can end, so a snapshot taken
    /// while requests flow never shows more ended than submitted.
    pub fn snapshot(&self) -> OutcomeCounts {
        let mut c = OutcomeCounts::default();
        for o in Outcome::ALL {
            let n = self.outcome(o);
            match o {
                Outcome::OnTime => c.on_time = n,
                Outcome::Late => c.late = n,
                Outcome::Expired => c.expired = n,
                Outcome::Rejected => c.rejected = n,
                Outcome::Shed => c.shed = n,
                Outcome::Failed => c.failed = n,
            }
        }
        c.submitted = self.submitted.load(Ordering::Acquire);
        c
    }
}

/// What travels on a tenant's channel: the request, and — when a caller
/// handed in an input and waits for the answer — its [`Work`] (boxed, so
/// requests without one stay small).
#[derive(Debug)]
pub struct Submission {
    /// The request.
    pub request: Request,
    /// The caller's input and ticket, if any.
    pub work: Option<Box<Work>>,
}

/// The submitting side of a tenant's queue. Clone it to submit from several threads.
#[derive(Debug, Clone)]
pub struct TenantQueue {
    tenant: TenantId,
    name: Arc<str>,
    deadline: Duration,
    priority: u8,
    capacity: usize,
    tx: Sender<Submission>,
    /// What `submit_input` accepts (`None`: any tensor).
    input: Option<Arc<TensorSpec>>,
    counters: Arc<TenantCounters>,
    clock: RunClock,
    /// The highest real-time priority among the workers that receive from
    /// this queue: a sender below it raises itself for the send.
    sender_floor: Option<i32>,
}

/// The dispatcher's side of a tenant's queue.
#[derive(Debug)]
pub struct TenantQueueReceiver {
    /// The tenant.
    pub tenant: TenantId,
    /// Incoming admitted requests.
    pub rx: Receiver<Submission>,
    /// Shared counters (the dispatcher decrements `waiting`).
    pub counters: Arc<TenantCounters>,
}

/// Create tenant `id`'s queue from its spec.
pub fn tenant_queue(
    id: TenantId,
    spec: &TenantSpec,
    clock: RunClock,
) -> (TenantQueue, TenantQueueReceiver) {
    let (tx, rx) = crossbeam_channel::bounded(spec.capacity);
    let counters = Arc::new(TenantCounters::default());
    (
        TenantQueue {
            tenant: id,
            name: spec.name.as_str().into(),
            deadline: spec.deadline,
            priority: spec.priority,
            capacity: spec.capacity,
            tx,
            // The first variant that takes a defined input (a Synthetic
            // stand-in takes anything).
            input: spec
                .variants()
                .iter()
                .find_map(|v| v.model.input_spec())
                .map(Arc::new),
            counters: counters.clone(),
            clock,
            sender_floor: None,
        },
        TenantQueueReceiver {
            tenant: id,
            rx,
            counters,
        },
    )
}

impl TenantQueue {
    /// Submit a request released now.
    ///
    /// Any thread may submit. The receiving workers may be SCHED_FIFO
    /// threads, and a crossbeam receiver that preempts its sender between
    /// claiming a slot and filling it spins until the sender runs again —
    /// forever, if they share a core and the sender has the lower priority
    /// (docs/architecture.md, "Priorities and the channels"). So a caller
    /// below the workers' priority (e.g. an ordinary SCHED_OTHER thread)
    /// is raised to it for the send and put back after; if it may not be
    /// raised, the request is refused with
    /// [`SubmitError::PriorityInversion`] rather than risk the livelock.
    pub fn submit(&self) -> Result<Request, SubmitError> {
        self.offer(None, |request| (request, None))
    }

    /// Submit the caller's `input`, released now, optionally with a
    /// `deadline` tighter than the tenant's; returns at once with a
    /// [`Ticket`] that resolves to the model's outputs or to the outcome
    /// that prevented them. The input's bytes are shared, not copied, on
    /// their way to the model. Refused (and counted `rejected`) if the
    /// tenant's queue is full or the input is not what its model takes;
    /// refused, uncounted, once the run has ended. Priorities as for
    /// [`TenantQueue::submit`].
    pub fn submit_input(
        &self,
        input: TensorData,
        deadline: Option<Duration>,
    ) -> Result<Ticket, SubmitError> {
        let refuse = |e: SubmitError| {
            if !self.count_refused() {
                return Err(SubmitError::Closed {
                    tenant: self.name.to_string(),
                });
            }
            Err(e)
        };
        if let Some(spec) = &self.input {
            if let Err(error) = spec.accepts(&input) {
                return refuse(SubmitError::BadInput {
                    tenant: self.name.to_string(),
                    error,
                });
            }
        }
        if deadline.is_some_and(|d| d.is_zero()) {
            return refuse(SubmitError::BadDeadline {
                tenant: self.name.to_string(),
            });
        }
        self.offer(deadline, move |request| {
            let (ticket, work) = ticket::ticket(request, input);
            (ticket, Some(Box::new(work)))
        })
    }

    /// [`TenantQueue::submit_input`], then wait for the answer (blocking;
    /// not from inside an async runtime).
    pub fn infer(
        &self,
        input: TensorData,
        deadline: Option<Duration>,
    ) -> Result<Answer, SubmitError> {
        self.submit_input(input, deadline).map(Ticket::wait)
    }

    /// Count a request for this tenant that was refused before it could be
    /// submitted (e.g. a malformed HTTP body): `submitted` and `rejected`,
    /// so no request a client sent goes uncounted. `false` (nothing
    /// counted) once the run has ended: its counts are final.
    pub fn count_refused(&self) -> bool {
        let refusal = self.counters.waiting.refuse();
        if refusal.closed() {
            return false;
        }
        // Counted while the refusal holds its place in the admission
        // count, so the end of the run waits for both counts.
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        self.counters.count(Outcome::Rejected);
        drop(refusal);
        true
    }

    /// The input `submit_input` accepts (`None`: any tensor).
    pub fn input_spec(&self) -> Option<&TensorSpec> {
        self.input.as_deref()
    }

    /// Admission, then the send: counts the request, stamps it (with the
    /// tighter of `deadline` and the tenant's), and hands it to the
    /// channel with whatever `attach` makes of it.
    ///
    /// Every count is made while this submitter holds its place in the
    /// admission count (a slot, or a refusal), so the end of the run —
    /// which closes admission and waits for that count to reach zero —
    /// reads counts that add up. A request refused because the run has
    /// ended is not counted: the run's counts are final by then.
    fn offer<T>(
        &self,
        deadline: Option<Duration>,
        attach: impl FnOnce(Request) -> (T, Option<Box<Work>>),
    ) -> Result<T, SubmitError> {
        let capacity = self.capacity;
        if let Err(refusal) = self
            .counters
            .waiting
            .try_take(|held| ecomap::dispatch::admission::admits(held, capacity))
        {
            if refusal.closed() {
                return Err(SubmitError::Closed {
                    tenant: self.name.to_string(),
                });
            }
            self.counters.submitted.fetch_add(1, Ordering::Relaxed);
            self.counters.count(Outcome::Rejected);
            drop(refusal);
            return Err(SubmitError::QueueFull {
                tenant: self.name.to_string(),
                capacity: self.capacity,
            });
        }
        // Counted while the slot is held: the dispatcher gives it back only
        // after receiving the request, so before the run's end reads it.
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        if self.counters.no_worker.load(Ordering::Acquire) {
            self.counters.count(Outcome::Rejected);
            self.counters.waiting.give_back();
            return Err(SubmitError::NoWorker {
                tenant: self.name.to_string(),
            });
        }
        let id = self.counters.next_id.fetch_add(1, Ordering::Relaxed);
        let request = Request::new(
            id,
            self.tenant,
            self.clock.now(),
            deadline.map_or(self.deadline, |d| d.min(self.deadline)),
            self.priority,
        );
        let (handle, work) = attach(request);
        let submission = Submission { request, work };
        let sent = match self.sender_floor {
            None => self.tx.try_send(submission),
            Some(floor) => {
                match crate::rt::at_least_priority(floor, || self.tx.try_send(submission)) {
                    Ok(sent) => sent,
                    Err(reason) => {
                        // `submission` (with any work) was never sent: its
                        // ticket, dropped with it, never reaches the caller.
                        // Counted before the slot is given back.
                        self.counters.count(Outcome::Rejected);
                        self.counters.waiting.give_back();
                        return Err(SubmitError::PriorityInversion {
                            tenant: self.name.to_string(),
                            needed: floor,
                            reason,
                        });
                    }
                }
            }
        };
        match sent {
            Ok(()) => Ok(handle),
            Err(e) => {
                self.counters.count(Outcome::Rejected);
                self.counters.waiting.give_back();
                Err(match e {
                    // Cannot happen while `waiting` bounds the channel, but
                    // if it did the request is still counted, not lost.
                    TrySendError::Full(_) => SubmitError::QueueFull {
                        tenant: self.name.to_string(),
                        capacity: self.capacity,
                    },
                    TrySendError::Disconnected(_) => SubmitError::Closed {
                        tenant: self.name.to_string(),
                    },
                })
            }
        }
    }

    /// The tenant.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The tenant's deadline (a request may ask for a tighter one).
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a worker holding the tenant's models is left to serve it:
    /// false once the dispatcher has found every such worker out for good
    /// (its requests are refused with [`SubmitError::NoWorker`] from then
    /// on, so readiness probes must say so too).
    pub fn has_worker(&self) -> bool {
        !self.counters.no_worker.load(Ordering::Acquire)
    }

    /// Requests currently waiting (admitted, not yet started).
    pub fn waiting(&self) -> usize {
        self.counters.waiting.held()
    }

    /// Shared counters.
    pub fn counters(&self) -> &Arc<TenantCounters> {
        &self.counters
    }

    /// Raise callers below real-time priority `floor` (the highest among
    /// the workers receiving from this queue) to it for each send; `None`
    /// when no receiver runs at a real-time priority.
    pub fn set_sender_floor(&mut self, floor: Option<i32>) {
        self.sender_floor = floor;
    }
}

/// A tenant of a 1 ms synthetic model, for tests of what sits on a queue.
#[cfg(test)]
pub(crate) fn synthetic_spec(name: &str, capacity: usize) -> TenantSpec {
    TenantSpec {
        name: name.into(),
        model: ecomap::model::ModelSpec::Synthetic {
            service: Duration::from_millis(1),
        },
        arrival: ecomap::arrival::ArrivalProcess::Poisson { rate_hz: 1.0 },
        deadline: Duration::from_millis(10),
        capacity,
        priority: 3,
        units: None,
        shed: None,
        movable_to: None,
        accuracy_floor: None,
        resolved: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(capacity: usize) -> TenantSpec {
        synthetic_spec("cam", capacity)
    }

    #[test]
    fn a_full_queue_rejects_with_a_typed_error_and_counts_it() {
        let (q, rx) = tenant_queue(TenantId(0), &spec(2), RunClock::start());
        let a = q.submit().unwrap();
        q.submit().unwrap();
        let e = q.submit().unwrap_err();
        assert_eq!(
            e,
            SubmitError::QueueFull {
                tenant: "cam".into(),
                capacity: 2
            }
        );
        assert!(e.to_string().contains("'cam' queue is full"));
        assert_eq!(a.deadline, a.release + Duration::from_millis(10));
        assert_eq!(a.priority, 3);
        assert_eq!(q.waiting(), 2);
        // The dispatcher takes one: room for one more.
        rx.rx.try_recv().unwrap();
        rx.counters.waiting.give_back();
        q.submit().unwrap();
        let c = q.counters();
        assert_eq!(c.submitted.load(Ordering::Relaxed), 4);
        assert_eq!(c.outcome(Outcome::Rejected), 1);
    }

    #[test]
    fn after_the_run_has_ended_a_submission_is_refused_and_not_counted() {
        let (q, _rx) = tenant_queue(TenantId(0), &spec(2), RunClock::start());
        q.counters().waiting.close();
        assert!(matches!(q.submit(), Err(SubmitError::Closed { .. })));
        let input = TensorData::from_f32(vec![1], &[0.0]).unwrap();
        assert!(matches!(
            q.submit_input(input, Some(Duration::ZERO)),
            Err(SubmitError::Closed { .. })
        ));
        assert!(!q.count_refused(), "the run's counts are final");
        let c = q.counters().snapshot();
        assert_eq!((c.submitted, c.rejected), (0, 0));
        assert_eq!(q.waiting(), 0);
    }

    #[test]
    fn a_closed_runtime_rejects_and_counts() {
        let (q, rx) = tenant_queue(TenantId(0), &spec(2), RunClock::start());
        drop(rx);
        assert!(matches!(q.submit(), Err(SubmitError::Closed { .. })));
        assert_eq!(q.counters().outcome(Outcome::Rejected), 1);
        assert_eq!(q.waiting(), 0);
    }
}
