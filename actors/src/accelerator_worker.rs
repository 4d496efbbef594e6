//! `AcceleratorWorker`: one execution unit running real inference.
//!
//! A worker owns the loaded models of the tenants it serves (loaded on its
//! own pinned thread, before serving starts), takes one [`Job`] at a time
//! from its 1-slot channel, runs the forward pass, tells the dispatcher it is
//! idle, and reports a [`Completion`] to telemetry. A backend error or a
//! panic inside a forward pass becomes a `failed` outcome; the worker lives on.

use crate::backend::LoadedModel;
use crate::clock::RunClock;
use crate::edf_dispatcher::Job;
use crate::telemetry::TelemetryEvent;
use crate::tenant_queue::TenantCounters;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use ecomap::request::Completion;
use ecomap::time::Timestamp;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a worker that has just finished polls for its next job before
/// parking, when a request it could serve is already waiting. The
/// dispatcher's answer is then microseconds away; polling saves the
/// worker's wake-up, and nothing is polled when no work is pending, so an
/// idle device stays idle.
const HANDOFF_POLL: Duration = Duration::from_micros(50);

/// The worker actor.
pub struct AcceleratorWorker {
    index: usize,
    name: String,
    /// `models[t]`: tenant `t`'s model, if this worker serves it.
    models: Vec<Option<Box<dyn LoadedModel>>>,
    jobs: Receiver<Job>,
    idle_tx: Sender<usize>,
    telemetry: Sender<TelemetryEvent>,
    clock: RunClock,
    /// Admission counters of the tenants this worker serves (to see pending work).
    served_counters: Vec<Arc<TenantCounters>>,
    failures_logged: u32,
}

impl AcceleratorWorker {
    /// A worker with its models loaded.
    pub fn new(
        index: usize,
        name: String,
        models: Vec<Option<Box<dyn LoadedModel>>>,
        jobs: Receiver<Job>,
        idle_tx: Sender<usize>,
        telemetry: Sender<TelemetryEvent>,
        clock: RunClock,
        served_counters: Vec<Arc<TenantCounters>>,
    ) -> Self {
        AcceleratorWorker {
            index,
            name,
            models,
            jobs,
            idle_tx,
            telemetry,
            clock,
            served_counters,
            failures_logged: 0,
        }
    }

    fn work_pending(&self) -> bool {
        self.served_counters
            .iter()
            .any(|c| c.waiting.load(Ordering::Acquire) > 0)
    }

    /// The next job: polled briefly when work is pending, else parked for.
    fn next_job(&self) -> Option<Job> {
        if self.work_pending() {
            let until = Instant::now() + HANDOFF_POLL;
            loop {
                match self.jobs.try_recv() {
                    Ok(job) => return Some(job),
                    Err(TryRecvError::Disconnected) => return None,
                    Err(TryRecvError::Empty) if Instant::now() >= until => break,
                    Err(TryRecvError::Empty) => std::hint::spin_loop(),
                }
            }
        }
        self.jobs.recv().ok()
    }

    /// Serve jobs until the dispatcher closes the job channel.
    pub fn run(mut self) {
        let mut free_since = Timestamp::ZERO;
        while let Some(job) = self.next_job() {
            let started = self.clock.now();
            let succeeded = self.serve(&job);
            let finished = self.clock.now();
            // Idle first: the dispatcher can hand over the next job while we
            // report this one.
            let _ = self.idle_tx.send(self.index);
            let completion = Completion {
                request: job.request,
                worker: self.index,
                dispatched: job.dispatched,
                eligible: job.request.release.max(free_since),
                started,
                finished,
                succeeded,
            };
            free_since = finished;
            let _ = self.telemetry.send(TelemetryEvent::Completed(completion));
        }
    }

    fn serve(&mut self, job: &Job) -> bool {
        let t = job.request.tenant.index();
        let Some(Some(model)) = self.models.get_mut(t) else {
            self.log_failure(format!(
                "worker '{}' got a request of tenant #{t} whose model it does not hold",
                self.name
            ));
            return false;
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| model.run())) {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                self.log_failure(format!("worker '{}': {e}", self.name));
                false
            }
            Err(_) => {
                self.log_failure(format!(
                    "worker '{}': the backend panicked during a forward pass",
                    self.name
                ));
                false
            }
        }
    }

    fn log_failure(&mut self, message: String) {
        // Failures are counted per request; log only the first few so a
        // broken model does not flood the log.
        if self.failures_logged < 5 {
            tracing::warn!("{message} (request counted as failed)");
            self.failures_logged += 1;
        }
    }
}
