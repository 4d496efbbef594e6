//! Fault injection: make a component fail the way a real bug would, to
//! check that every request still ends in exactly one counted outcome.
//!
//! A [`FaultInjector`] is shared by the runtime's threads. Each fault is a
//! one-shot flag that the component it names checks at one place (a relaxed
//! atomic load when nothing is armed):
//!
//! | fault | where it fires | what the runtime must do |
//! |---|---|---|
//! | `worker-panic:W` | worker `W`'s loop, holding a job, outside the forward pass | count the job `failed`, serve its tenants elsewhere, reload and restart `W` |
//! | `pass-panic:W` | inside `W`'s next forward pass | the same (the model's state is suspect) |
//! | `load-panic:W` | while `W` loads its models at start | fail start-up with an error, never hang |
//! | `control-plane-panic` | the power governor's next tick | data plane to the fallback cap, the report says so, exit status 3 |
//! | `control-plane-stall:D` | the control plane's thread (governor and energy meter), for `D` | past 10 s without a tick the watchdog takes the fallback cap and meters energy in the meter's place; the report says so, exit status 3 |
//! | `telemetry-stall:D` | the telemetry sink, for `D` | no dispatch step waits; samples beyond the channel are dropped and counted, outcome counts stay exact |
//! | `telemetry-panic` | the telemetry sink | outcome counts stay exact, the report says histograms are incomplete, exit status 3 |
//!
//! `ecomap run --inject-fault KIND[@TIME]` arms one at `TIME` after the
//! first release (e.g. `worker-panic:cpu0@5s`); the fault-injection tests
//! (`actors/tests/faults.rs`) arm them through [`crate::runtime::Runtime::faults`].

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The named worker panics in its loop while holding a job.
    WorkerPanic(String),
    /// The named worker's next forward pass panics.
    PassPanic(String),
    /// The named worker panics while loading its models (arm before start).
    LoadPanic(String),
    /// The power governor panics at its next tick.
    ControlPlanePanic,
    /// The power governor's next tick blocks the control plane's thread
    /// (governor and energy meter) for this long: a hang.
    ControlPlaneStall(Duration),
    /// The telemetry sink stops reading for this long.
    TelemetryStall(Duration),
    /// The telemetry sink panics.
    TelemetryPanic,
}

/// A fault and when to arm it, relative to the first release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledFault {
    /// The fault.
    pub fault: Fault,
    /// When to arm it.
    pub at: Duration,
}

/// Why a fault specification does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--inject-fault {given:?}: {why}; expected KIND[@TIME] with KIND one of worker-panic:WORKER, \
     pass-panic:WORKER, load-panic:WORKER, control-plane-panic, control-plane-stall:DURATION, \
     telemetry-stall:DURATION, telemetry-panic (e.g. worker-panic:cpu0@5s)"
)]
pub struct FaultSpecError {
    given: String,
    why: String,
}

impl FromStr for ScheduledFault {
    type Err = FaultSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: String| FaultSpecError {
            given: s.to_string(),
            why,
        };
        let (kind, at) = match s.split_once('@') {
            Some((k, t)) => (
                k,
                Some(
                    humantime::parse_duration(t.trim())
                        .map_err(|e| err(format!("time {t:?}: {e}")))?,
                ),
            ),
            None => (s, None),
        };
        let (name, arg) = match kind.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (kind.trim(), None),
        };
        let worker = |arg: Option<&str>| match arg {
            Some(w) if !w.is_empty() => Ok(w.to_string()),
            _ => Err(err(format!("{name} needs a worker name, e.g. {name}:cpu0"))),
        };
        let fault = match name {
            "worker-panic" => Fault::WorkerPanic(worker(arg)?),
            "pass-panic" => Fault::PassPanic(worker(arg)?),
            "load-panic" => Fault::LoadPanic(worker(arg)?),
            "control-plane-panic" => Fault::ControlPlanePanic,
            "telemetry-panic" => Fault::TelemetryPanic,
            "telemetry-stall" | "control-plane-stall" => {
                let d =
                    arg.ok_or_else(|| err(format!("{name} needs a duration, e.g. {name}:2s")))?;
                let d = humantime::parse_duration(d)
                    .map_err(|e| err(format!("stall duration {d:?}: {e}")))?;
                if d > Duration::from_secs(3600) {
                    return Err(err("a stall of more than an hour".into()));
                }
                if name == "telemetry-stall" {
                    Fault::TelemetryStall(d)
                } else {
                    Fault::ControlPlaneStall(d)
                }
            }
            other => return Err(err(format!("unknown fault {other:?}"))),
        };
        // A model loads before the first release: there is no later time
        // for it to fire at, and a time silently ignored misleads.
        if matches!(fault, Fault::LoadPanic(_)) && at.is_some_and(|t| !t.is_zero()) {
            return Err(err(
                "load-panic fires while the models load, before any time: drop the @TIME".into(),
            ));
        }
        Ok(ScheduledFault {
            fault,
            at: at.unwrap_or(Duration::ZERO),
        })
    }
}

#[derive(Debug, Default)]
struct Flags {
    /// Bit `w`: worker `w` panics holding its next job.
    worker_panic: AtomicU64,
    /// Bit `w`: worker `w`'s next forward pass panics.
    pass_panic: AtomicU64,
    /// Bit `w`: worker `w` panics loading its models.
    load_panic: AtomicU64,
    control_plane_panic: AtomicBool,
    /// Nanoseconds the control plane's thread stalls for (0: none).
    control_plane_stall_ns: AtomicU64,
    telemetry_panic: AtomicBool,
    /// Nanoseconds the telemetry sink stalls for (0: none).
    telemetry_stall_ns: AtomicU64,
}

/// The shared one-shot fault flags; cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct FaultInjector {
    flags: Arc<Flags>,
    /// Worker names, in rt-config order (set by the runtime).
    workers: Arc<[String]>,
}

/// Why a fault cannot be armed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArmError {
    /// The fault names a worker the rt-config lacks.
    #[error("--inject-fault: no worker named '{0}' in the rt-config (workers: {1})")]
    UnknownWorker(String, String),
}

/// Only the first 64 workers can be faulted (one bit each).
const MAX_FAULT_WORKERS: usize = 64;

impl FaultInjector {
    /// An injector for these workers, nothing armed.
    pub fn new(worker_names: &[String]) -> Self {
        FaultInjector {
            flags: Arc::default(),
            workers: worker_names.into(),
        }
    }

    /// Check that `fault` names an existing worker (before any work).
    pub fn validate(&self, fault: &Fault) -> Result<(), ArmError> {
        match fault {
            Fault::WorkerPanic(w) | Fault::PassPanic(w) | Fault::LoadPanic(w) => {
                self.worker_bit(w).map(drop)
            }
            _ => Ok(()),
        }
    }

    fn worker_bit(&self, name: &str) -> Result<u64, ArmError> {
        self.workers
            .iter()
            .position(|w| w == name)
            .filter(|&i| i < MAX_FAULT_WORKERS)
            .map(|i| 1u64 << i)
            .ok_or_else(|| ArmError::UnknownWorker(name.to_string(), self.workers.join(", ")))
    }

    /// Arm `fault`: it fires the next time its component reaches its hook.
    pub fn arm(&self, fault: &Fault) -> Result<(), ArmError> {
        let f = &self.flags;
        match fault {
            Fault::WorkerPanic(w) => f
                .worker_panic
                .fetch_or(self.worker_bit(w)?, Ordering::AcqRel),
            Fault::PassPanic(w) => f.pass_panic.fetch_or(self.worker_bit(w)?, Ordering::AcqRel),
            Fault::LoadPanic(w) => f.load_panic.fetch_or(self.worker_bit(w)?, Ordering::AcqRel),
            Fault::ControlPlanePanic => {
                f.control_plane_panic.store(true, Ordering::Release);
                0
            }
            Fault::TelemetryPanic => {
                f.telemetry_panic.store(true, Ordering::Release);
                0
            }
            Fault::ControlPlaneStall(d) => {
                let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
                f.control_plane_stall_ns.store(ns, Ordering::Release);
                0
            }
            Fault::TelemetryStall(d) => {
                let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
                f.telemetry_stall_ns.store(ns, Ordering::Release);
                0
            }
        };
        tracing::warn!("fault injected: {fault:?}");
        Ok(())
    }

    fn take_bit(word: &AtomicU64, worker: usize) -> bool {
        if worker >= MAX_FAULT_WORKERS || word.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let bit = 1u64 << worker;
        word.fetch_and(!bit, Ordering::AcqRel) & bit != 0
    }

    /// Worker hook, holding a job outside the forward pass: panics if armed.
    pub fn worker_hook(&self, worker: usize) {
        if Self::take_bit(&self.flags.worker_panic, worker) {
            panic!("injected fault: worker #{worker} panics holding a job");
        }
    }

    /// Forward-pass hook: panics if armed.
    pub fn pass_hook(&self, worker: usize) {
        if Self::take_bit(&self.flags.pass_panic, worker) {
            panic!("injected fault: worker #{worker}'s forward pass panics");
        }
    }

    /// Model-load hook: panics if armed.
    pub fn load_hook(&self, worker: usize) {
        if Self::take_bit(&self.flags.load_panic, worker) {
            panic!("injected fault: worker #{worker} panics loading its models");
        }
    }

    /// Control-plane hook: panics if armed.
    pub fn control_plane_hook(&self) {
        let ns = self.flags.control_plane_stall_ns.swap(0, Ordering::AcqRel);
        if ns > 0 {
            std::thread::sleep(Duration::from_nanos(ns));
        }
        if self.flags.control_plane_panic.swap(false, Ordering::AcqRel) {
            panic!("injected fault: the power governor panics");
        }
    }

    /// Telemetry hook: stalls or panics if armed.
    pub fn telemetry_hook(&self) {
        let ns = self.flags.telemetry_stall_ns.swap(0, Ordering::AcqRel);
        if ns > 0 {
            std::thread::sleep(Duration::from_nanos(ns));
        }
        if self.flags.telemetry_panic.swap(false, Ordering::AcqRel) {
            panic!("injected fault: the telemetry sink panics");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_what_is_expected() {
        let f: ScheduledFault = "worker-panic:cpu0@5s".parse().unwrap();
        assert_eq!(f.fault, Fault::WorkerPanic("cpu0".into()));
        assert_eq!(f.at, Duration::from_secs(5));
        let f: ScheduledFault = "telemetry-stall:1500ms".parse().unwrap();
        assert_eq!(f.fault, Fault::TelemetryStall(Duration::from_millis(1500)));
        assert_eq!(f.at, Duration::ZERO);
        let f: ScheduledFault = "control-plane-stall:12s@1s".parse().unwrap();
        assert_eq!(f.fault, Fault::ControlPlaneStall(Duration::from_secs(12)));
        assert_eq!(f.at, Duration::from_secs(1));
        for bad in [
            "",
            "worker-panic",
            "melt@1s",
            "control-plane-panic@soon",
            "telemetry-stall",
            "control-plane-stall",
            "load-panic:cpu0@2s",
        ] {
            let e = bad.parse::<ScheduledFault>().unwrap_err().to_string();
            assert!(e.contains("expected KIND[@TIME]"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_fault_fires_once_and_only_for_its_worker() {
        let inj = FaultInjector::new(&["cpu0".into(), "cpu1".into()]);
        assert!(inj.arm(&Fault::WorkerPanic("gpu".into())).is_err());
        inj.arm(&Fault::WorkerPanic("cpu1".into())).unwrap();
        inj.worker_hook(0); // not armed for cpu0
        let hit = std::panic::catch_unwind(|| inj.worker_hook(1));
        assert!(hit.is_err());
        inj.worker_hook(1); // one shot
    }
}
