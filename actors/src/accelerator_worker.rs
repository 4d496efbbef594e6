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
use crossbeam_channel::{Receiver, Sender};
use ecomap::request::Completion;
use ecomap::time::Timestamp;
use std::panic::AssertUnwindSafe;

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
    ) -> Self {
        AcceleratorWorker {
            index,
            name,
            models,
            jobs,
            idle_tx,
            telemetry,
            clock,
            failures_logged: 0,
        }
    }

    /// Serve jobs until the dispatcher closes the job channel.
    pub fn run(mut self) {
        let mut free_since = Timestamp::ZERO;
        while let Ok(job) = self.jobs.recv() {
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
