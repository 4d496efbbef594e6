//! Tickets: what a caller that hands the runtime an input gets back.
//!
//! [`crate::tenant_queue::TenantQueue::submit_input`] admits the caller's
//! input tensor and returns a [`Ticket`] at once (or the reason it was
//! refused). The ticket resolves exactly once, to an [`Answer`]: the
//! model's outputs with the request's timings, or the outcome that
//! prevented them (`expired`, `shed`, `failed`). Wait for it blocking
//! ([`Ticket::wait`]), poll it ([`Ticket::try_answer`], which hands the
//! ticket back until the answer is there), or `.await` it from async code
//! (the HTTP server does).
//!
//! The answer travels on a one-shot channel whose send never waits for the
//! receiver. Waking a caller parked in an async runtime takes that
//! runtime's queue lock and an unpark briefly on the worker's thread (a
//! bounded wait, with no spinning); a blocking caller is woken by a futex.

use ecomap::request::{Outcome, Request};
use ecomap::tensor::TensorData;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;

/// How a served request spent its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// Release (submission) to the start of the forward pass.
    pub queueing: Duration,
    /// The forward pass.
    pub service: Duration,
    /// Release to the end of the forward pass.
    pub end_to_end: Duration,
}

/// What a ticket resolves to.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The request (id, tenant, release, absolute deadline).
    pub request: Request,
    /// How it ended: `on_time` or `late` with outputs; `expired`, `shed`
    /// or `failed` without.
    pub outcome: Outcome,
    /// The model's outputs (served requests only).
    pub outputs: Vec<TensorData>,
    /// Which variant of the tenant's model served it (0 = heaviest).
    pub variant: Option<usize>,
    /// Timings (served requests only).
    pub timings: Option<Timings>,
    /// Why it failed (`failed` only).
    pub error: Option<String>,
}

impl Answer {
    /// An answer without outputs: the request ended in `outcome` before
    /// (or instead of) being served.
    pub fn unserved(request: Request, outcome: Outcome, error: Option<String>) -> Self {
        Answer {
            request,
            outcome,
            outputs: Vec::new(),
            variant: None,
            timings: None,
            error,
        }
    }

    /// Whether the model ran and produced outputs.
    pub fn is_served(&self) -> bool {
        matches!(self.outcome, Outcome::OnTime | Outcome::Late)
    }
}

/// The caller's input and the way back to it: travels with the request
/// through the data plane and is resolved exactly once.
#[derive(Debug)]
pub struct Work {
    /// The caller's input (shared bytes: no copy on the way).
    pub input: TensorData,
    reply: oneshot::Sender<Answer>,
}

impl Work {
    /// Send `answer` to the ticket, without waiting for the caller; a caller
    /// that dropped its ticket simply does not hear it (the outcome is
    /// counted regardless).
    pub fn resolve(self, answer: Answer) {
        let _ = self.reply.send(answer);
    }
}

/// The caller's side: resolves to the request's [`Answer`].
#[derive(Debug)]
pub struct Ticket {
    request: Request,
    rx: oneshot::Receiver<Answer>,
}

/// A ticket and the work that resolves it, for `request`.
pub fn ticket(request: Request, input: TensorData) -> (Ticket, Work) {
    let (reply, rx) = oneshot::channel();
    (Ticket { request, rx }, Work { input, reply })
}

impl Ticket {
    /// The admitted request (id, release, absolute deadline).
    pub fn request(&self) -> Request {
        self.request
    }

    /// Block until the answer comes. Do not call from inside an async
    /// runtime (`.await` the ticket there).
    pub fn wait(self) -> Answer {
        let request = self.request;
        self.rx.blocking_recv().unwrap_or_else(|_| lost(request))
    }

    /// The answer if it has come, else the ticket back to try again later
    /// (the answer can be taken only once, so the ticket is spent by it).
    ///
    /// ```
    /// # use ecomap_actors::dataplane::ticket::{ticket, Answer};
    /// # use ecomap::request::{Outcome, Request, TenantId};
    /// # use ecomap::tensor::TensorData;
    /// # use ecomap::time::Timestamp;
    /// # use std::time::Duration;
    /// # let request = Request::new(1, TenantId(0), Timestamp::ZERO, Duration::from_millis(50), 0);
    /// # let input = TensorData::from_f32(vec![1], &[0.0]).unwrap();
    /// let (ticket, work) = ticket(request, input);
    /// let ticket = ticket.try_answer().expect_err("not answered yet");
    /// work.resolve(Answer::unserved(request, Outcome::Expired, None));
    /// assert_eq!(ticket.try_answer().unwrap().outcome, Outcome::Expired);
    /// ```
    pub fn try_answer(mut self) -> Result<Answer, Ticket> {
        match self.rx.try_recv() {
            Ok(a) => Ok(a),
            Err(oneshot::error::TryRecvError::Empty) => Err(self),
            Err(oneshot::error::TryRecvError::Closed) => Ok(lost(self.request)),
        }
    }
}

/// As every future, a ticket must not be polled again once it is ready.
impl Future for Ticket {
    type Output = Answer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let request = self.request;
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| lost(request)))
    }
}

/// The runtime dropped a work item without resolving it: a bug (every
/// path resolves it), reported as `failed` — and logged — rather than a
/// hang or a panic in the caller's thread.
fn lost(request: Request) -> Answer {
    tracing::error!("request {request:?}: its work was dropped unresolved (a bug)");
    Answer::unserved(
        request,
        Outcome::Failed,
        Some("the runtime dropped the request without an answer (a bug; please report)".into()),
    )
}
