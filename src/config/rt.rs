//! Real-time configuration: which threads run where, and how.
//!
//! ```ron
//! (
//!     lock_memory: false,
//!     intra_op_threads: 1,
//!     load_generator: (core: None, sched: Fifo(priority: 70)),
//!     telemetry: (sched: Fifo(priority: 10)),
//!     workers: [
//!         (name: "cpu0", core: Some(0), sched: Fifo(priority: 60)),
//!         (name: "cpu1", core: Some(1), sched: Fifo(priority: 60)),
//!     ],
//! )
//! ```

use super::{load_ron, ConfigError};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A Linux scheduling class for one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub enum SchedSpec {
    /// SCHED_OTHER, the default time-sharing class.
    #[default]
    Other,
    /// SCHED_FIFO at a priority 1..=99 (higher preempts lower).
    Fifo {
        /// 1..=99.
        priority: i32,
    },
    /// SCHED_RR at a priority 1..=99.
    RoundRobin {
        /// 1..=99.
        priority: i32,
    },
}

impl SchedSpec {
    /// The priority the kernel orders by: 0 for SCHED_OTHER, else 1..=99.
    pub fn rank(&self) -> i32 {
        match self {
            SchedSpec::Other => 0,
            SchedSpec::Fifo { priority } | SchedSpec::RoundRobin { priority } => *priority,
        }
    }

    fn describe(&self) -> String {
        match self {
            SchedSpec::Other => "SCHED_OTHER".into(),
            SchedSpec::Fifo { priority } => format!("SCHED_FIFO {priority}"),
            SchedSpec::RoundRobin { priority } => format!("SCHED_RR {priority}"),
        }
    }

    fn validate(&self) -> Result<(), String> {
        match self {
            SchedSpec::Other => Ok(()),
            SchedSpec::Fifo { priority } | SchedSpec::RoundRobin { priority } => {
                if (1..=99).contains(priority) {
                    Ok(())
                } else {
                    Err(format!(
                        "real-time priority {priority} is out of range; use 1..=99"
                    ))
                }
            }
        }
    }
}

/// Placement and scheduling of one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadSpec {
    /// CPU core to pin to (0-based), or `None` to let the OS place it.
    #[serde(default)]
    pub core: Option<usize>,
    /// Scheduling class.
    #[serde(default)]
    pub sched: SchedSpec,
}

/// Where a worker runs its models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum DeviceSpec {
    /// The CPU (libtorch's CPU kernels).
    #[default]
    Cpu,
    /// CUDA device N (the Xavier's integrated GPU is CUDA device 0).
    Cuda(usize),
}

/// One accelerator worker: an execution unit with its own thread.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSpec {
    /// Name in reports, e.g. "cpu0", "gpu".
    pub name: String,
    /// CPU core of the worker's thread.
    #[serde(default)]
    pub core: Option<usize>,
    /// Scheduling class of the worker's thread.
    #[serde(default)]
    pub sched: SchedSpec,
    /// Where inference runs.
    #[serde(default)]
    pub device: DeviceSpec,
    /// Tenants whose models this worker loads and serves; `None` means all.
    #[serde(default)]
    pub tenants: Option<Vec<String>>,
}

/// One nvpmodel mode a Jetson cap can select.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NvpMode {
    /// `nvpmodel -m` id.
    pub id: u32,
    /// The mode's power budget (watts).
    pub budget_w: f64,
    /// Expected forward-pass slowdown relative to the fastest mode.
    pub slowdown: f64,
}

/// One clock-cap level of a Jetson.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClockLevel {
    /// The cap this level fits (watts).
    pub cap_w: f64,
    /// GPU devfreq `max_freq` (Hz).
    pub gpu_max_hz: u64,
    /// CPU `scaling_max_freq` (kHz).
    pub cpu_max_khz: u64,
    /// CPUs kept online (cpu0 always is).
    pub cpus_online: usize,
    /// Expected forward-pass slowdown relative to the fastest level.
    pub slowdown: f64,
}

/// How a Jetson's cap is applied.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub enum JetsonControl {
    /// Switch nvpmodel modes: the mode with the largest budget at or under the cap.
    Nvpmodel {
        /// The nvpmodel program.
        #[serde(default = "nvpmodel")]
        binary: String,
        /// Modes to choose from.
        modes: Vec<NvpMode>,
    },
    /// Cap clocks directly through sysfs.
    Clocks {
        /// Levels to choose from.
        levels: Vec<ClockLevel>,
        /// Number of CPUs (cpu0..cpuN-1) to manage.
        cpus: usize,
    },
    /// Read power only; never change the device.
    ReadOnly,
}

fn nvpmodel() -> String {
    "nvpmodel".into()
}

impl JetsonControl {
    /// Check the modes or levels: a cap must have something to select, and
    /// every figure must be one a cap can be compared with or a worker
    /// slowed by. The place (`modes[2].slowdown`) and the problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let positive = |place: String, what: &str, x: f64| {
            if x.is_finite() && x > 0.0 {
                Ok(())
            } else {
                Err((
                    place,
                    format!("{what} must be a positive number of watts, not {x}"),
                ))
            }
        };
        let slowdown = |place: String, x: f64| {
            if x.is_finite() && x >= 1.0 {
                Ok(())
            } else {
                Err((
                    place,
                    format!(
                        "slowdown is relative to the fastest mode, so at least 1.0 (1.0 for \
                         the fastest), not {x}"
                    ),
                ))
            }
        };
        match self {
            JetsonControl::Nvpmodel { modes, .. } => {
                if modes.is_empty() {
                    return Err((
                        "control.modes".into(),
                        "no modes: list the nvpmodel modes a cap may select, e.g. \
                         [(id: 0, budget_w: 40.0, slowdown: 1.0)]"
                            .into(),
                    ));
                }
                for (i, m) in modes.iter().enumerate() {
                    positive(
                        format!("control.modes[{i}].budget_w"),
                        "budget_w",
                        m.budget_w,
                    )?;
                    slowdown(format!("control.modes[{i}].slowdown"), m.slowdown)?;
                }
            }
            JetsonControl::Clocks { levels, cpus } => {
                if levels.is_empty() {
                    return Err((
                        "control.levels".into(),
                        "no levels: list the clock levels a cap may select".into(),
                    ));
                }
                if *cpus == 0 {
                    return Err(("control.cpus".into(), "cpus must be at least 1".into()));
                }
                for (i, l) in levels.iter().enumerate() {
                    positive(format!("control.levels[{i}].cap_w"), "cap_w", l.cap_w)?;
                    slowdown(format!("control.levels[{i}].slowdown"), l.slowdown)?;
                    if l.gpu_max_hz == 0 || l.cpu_max_khz == 0 {
                        return Err((
                            format!("control.levels[{i}]"),
                            "gpu_max_hz and cpu_max_khz must be positive clock frequencies".into(),
                        ));
                    }
                    if l.cpus_online == 0 || l.cpus_online > *cpus {
                        return Err((
                            format!("control.levels[{i}].cpus_online"),
                            format!(
                                "cpus_online must be between 1 (cpu0 stays online) and cpus \
                                 ({cpus}), not {}",
                                l.cpus_online
                            ),
                        ));
                    }
                }
            }
            JetsonControl::ReadOnly => {}
        }
        Ok(())
    }
}

fn sysfs_root() -> PathBuf {
    PathBuf::from("/")
}

/// A Jetson AGX Xavier.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JetsonSpec {
    /// Root under which `/sys/...` is found ("/" on the device; a fixture in tests).
    #[serde(default = "sysfs_root")]
    pub sysfs_root: PathBuf,
    /// How caps are applied.
    pub control: JetsonControl,
}

/// The device whose power ecomap controls and measures.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub enum PlatformSpec {
    /// A virtual device (the simulator's device model): a device
    /// description file, relative to the rt-config's folder. Caps select its
    /// modes; workers are throttled to the slowdown of the unit they stand
    /// for (`emulated_unit`); power is modelled.
    Emulated {
        /// The description, e.g. "devices/xavier.ron".
        device: PathBuf,
    },
    /// A real Jetson.
    Jetson(JetsonSpec),
    /// Linux powercap / Intel RAPL.
    Rapl {
        /// The zone folder, e.g. "/sys/class/powercap/intel-rapl:0".
        zone: String,
    },
}

/// A real-time configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RtConfig {
    /// Lock all current and future memory (`mlockall`) so page faults do not
    /// add latency.
    #[serde(default)]
    pub lock_memory: bool,
    /// Hold the CPUs' wake-up latency to at most this many microseconds while
    /// the runtime runs (a PM QoS request through `/dev/cpu_dma_latency`, as
    /// cyclictest makes by default): idle cores then stay in shallow idle
    /// states, so a thread woken on one — a worker for a new request, an
    /// HTTP thread for a finished one — runs at once. `Some(0)` keeps them
    /// polling: the lowest latency and the most idle power (on a Jetson,
    /// the cores' deep idle states are off). `None` (default): the
    /// kernel's own choice.
    #[serde(default)]
    pub cpu_dma_latency_us: Option<u32>,
    /// libtorch intra-op threads (process-wide). 1 keeps each worker on its core.
    #[serde(default = "one")]
    pub intra_op_threads: usize,
    /// The threads that release the workload's requests (one per tenant).
    #[serde(default)]
    pub load_generator: ThreadSpec,
    /// Not a setting any more: the EDF dispatcher has no thread of its own
    /// (the worker that becomes free runs it). Accepted only so that an
    /// older file gets an explanation instead of a bare "unknown field".
    #[serde(default)]
    pub dispatcher: Option<ThreadSpec>,
    /// The telemetry (latency histogram) thread.
    #[serde(default)]
    pub telemetry: ThreadSpec,
    /// Completions the telemetry channel holds while the sink is behind;
    /// beyond it latency samples are dropped and counted (outcome counts
    /// stay exact), never waited for. 16..=16777216.
    #[serde(default = "telemetry_capacity")]
    pub telemetry_capacity: usize,
    /// The HTTP server's worker threads (`ecomap serve`): they submit
    /// clients' requests to the workers, so like the load generators they
    /// may run above them (checked like a load generator), and a request is
    /// taken in while the workers are busy.
    #[serde(default)]
    pub server: ThreadSpec,
    /// The control-plane thread (the actix system: carbon monitor, power
    /// governor, energy meter, estimator). It sends the data plane nothing
    /// through a channel (the power state and the plan are published in
    /// atomics), so any class is safe; SCHED_OTHER by default.
    #[serde(default)]
    pub control_plane: ThreadSpec,
    /// The accelerator workers.
    pub workers: Vec<WorkerSpec>,
    /// The device's power control and sensing; `None`: no power capping or
    /// energy accounting.
    #[serde(default)]
    pub platform: Option<PlatformSpec>,
    /// Most megabytes of model parameters one worker may hold (all variants
    /// of all its tenants); `None`: no limit.
    #[serde(default)]
    pub memory_budget_mb: Option<f64>,
}

fn one() -> usize {
    1
}

/// Default [`RtConfig::telemetry_capacity`]: about half a minute of
/// completions at 2 kHz.
pub const DEFAULT_TELEMETRY_CAPACITY: usize = 1 << 16;

/// The most intra-op threads a worker may ask libtorch for.
pub const MAX_INTRA_OP_THREADS: usize = 256;

fn telemetry_capacity() -> usize {
    DEFAULT_TELEMETRY_CAPACITY
}

impl RtConfig {
    /// Read and parse a real-time configuration file (validate it separately
    /// with [`RtConfig::validate`], which needs the machine's core count).
    pub fn load(path: &Path) -> Result<RtConfig, ConfigError> {
        let mut c: RtConfig = load_ron(path, "rt-config")?;
        if let Some(PlatformSpec::Emulated { device: table }) = &mut c.platform {
            if table.is_relative() {
                *table = path.parent().unwrap_or(Path::new(".")).join(&*table);
            }
        }
        Ok(c)
    }

    /// Check every value against the cores this process may run on
    /// (`allowed_cores`: its affinity mask, which a cpuset or `taskset`
    /// may make smaller than the machine, and not always `0..n`) and the
    /// workload's tenant names.
    pub fn validate(
        &self,
        path: &Path,
        allowed_cores: &[usize],
        tenant_names: &[&str],
    ) -> Result<(), ConfigError> {
        let core_check = |place: String, t: &ThreadSpec| -> Result<(), ConfigError> {
            if let Some(c) = t.core {
                if !allowed_cores.contains(&c) {
                    return Err(ConfigError::invalid(
                        path,
                        format!("{place}.core"),
                        format!(
                            "core {c} is not one this process may run on: this machine lets it \
                             use {} core(s), {allowed_cores:?}; pick one of those or use None \
                             (a pin the kernel refuses would leave the thread unpinned, and \
                             the channel checks below assume the pins hold)",
                            allowed_cores.len()
                        ),
                    ));
                }
            }
            t.sched
                .validate()
                .map_err(|m| ConfigError::invalid(path, format!("{place}.sched"), m))
        };
        if self.dispatcher.is_some() {
            return Err(ConfigError::invalid(
                path,
                "dispatcher",
                "there is no dispatcher thread to place any more: the EDF dispatcher runs on \
                 whichever worker becomes free, so a request reaches a worker in one wake-up \
                 (docs/architecture.md); delete the `dispatcher` line",
            ));
        }
        if let Some(PlatformSpec::Jetson(j)) = &self.platform {
            j.control.validate().map_err(|(place, m)| {
                ConfigError::invalid(path, format!("platform.Jetson.{place}"), m)
            })?;
        }
        core_check("load_generator".into(), &self.load_generator)?;
        core_check("telemetry".into(), &self.telemetry)?;
        core_check("control_plane".into(), &self.control_plane)?;
        core_check("server".into(), &self.server)?;
        if !(16..=1 << 24).contains(&self.telemetry_capacity) {
            return Err(ConfigError::invalid(
                path,
                "telemetry_capacity",
                format!(
                    "{} is out of range; use 16..=16777216 (default {DEFAULT_TELEMETRY_CAPACITY})",
                    self.telemetry_capacity
                ),
            ));
        }
        // libtorch creates that many threads per worker: a typo of
        // thousands would abort the process in the OpenMP runtime.
        if !(1..=MAX_INTRA_OP_THREADS).contains(&self.intra_op_threads) {
            return Err(ConfigError::invalid(
                path,
                "intra_op_threads",
                format!(
                    "{} is out of range; use 1..={MAX_INTRA_OP_THREADS} (one per core the \
                     worker may use is the usual choice)",
                    self.intra_op_threads
                ),
            ));
        }
        if let Some(mb) = self.memory_budget_mb {
            if !(mb.is_finite() && mb > 0.0) {
                return Err(ConfigError::invalid(
                    path,
                    "memory_budget_mb",
                    format!(
                        "{mb} is not a budget: give a positive number of megabytes per \
                         worker, e.g. Some(512.0), or None for no limit"
                    ),
                ));
            }
        }
        if self.workers.is_empty() {
            return Err(ConfigError::invalid(
                path,
                "workers",
                "no workers: add at least one (name, core, sched)",
            ));
        }
        let mut names = HashSet::new();
        let mut served = HashSet::new();
        for (i, w) in self.workers.iter().enumerate() {
            let place = format!("workers[{i}] \"{}\"", w.name);
            if !names.insert(w.name.as_str()) {
                return Err(ConfigError::invalid(
                    path,
                    place,
                    "two workers share this name",
                ));
            }
            core_check(
                place.clone(),
                &ThreadSpec {
                    core: w.core,
                    sched: w.sched,
                },
            )?;
            match &w.tenants {
                None => served.extend(tenant_names.iter().copied()),
                Some(list) => {
                    for t in list {
                        if !tenant_names.contains(&t.as_str()) {
                            return Err(ConfigError::invalid(
                                path,
                                format!("{place}.tenants"),
                                format!(
                                    "no tenant named {t:?} in the workload; tenants are {tenant_names:?}"
                                ),
                            ));
                        }
                        served.insert(t.as_str());
                    }
                }
            }
        }
        self.check_channel_priorities(path)?;
        if let Some(t) = tenant_names.iter().find(|t| !served.contains(*t)) {
            return Err(ConfigError::invalid(
                path,
                "workers",
                format!(
                    "no worker serves tenant {t:?}; add it to a worker's `tenants` or set \
                     `tenants: None` on one"
                ),
            ));
        }
        Ok(())
    }

    /// Refuse priority orders that can livelock the data plane.
    ///
    /// crossbeam's channels are lock-free, not wait-free: a receiver that
    /// finds a write in progress spins until the writer finishes it. Under
    /// SCHED_FIFO, a receiver with a higher priority than its sender that
    /// wakes on the sender's core preempts it mid-write and then spins
    /// forever, because the sender never runs again on that core. So along
    /// every channel, the receiver's priority must not exceed the sender's
    /// unless the two are pinned to different cores. (Seen for real: a
    /// dispatcher thread at 80 spinning on a worker at 60 preempted inside
    /// `send`.)
    ///
    /// Every thread that touches a data-plane channel, and why the check
    /// below covers it:
    /// - load generators → workers (requests): checked here;
    /// - workers → telemetry (completions) and worker → worker (doorbells):
    ///   checked here;
    /// - any other caller of `TenantQueue::submit` (an application thread,
    ///   an HTTP handler): no config to check, so `submit` raises a caller
    ///   below the receiving workers' priority to it for the send, at run
    ///   time;
    /// - the main thread: sends nothing — it wakes the workers at shutdown
    ///   by dropping their stop channel (a disconnection is one atomic
    ///   store, with nothing half-written to spin on);
    /// - the control plane: sends nothing — the power state and the plan
    ///   reach the workers through atomics (`PowerCell`, `PlanCell`) that a
    ///   reader never waits on;
    /// - telemetry: receives only (and workers never fill its channel: see
    ///   `TelemetrySender`).
    fn check_channel_priorities(&self, path: &Path) -> Result<(), ConfigError> {
        struct End {
            name: String,
            spec: ThreadSpec,
        }
        let share_core = |a: &ThreadSpec, b: &ThreadSpec| match (a.core, b.core) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        };
        let generator = End {
            name: "load_generator".into(),
            spec: self.load_generator,
        };
        let telemetry = End {
            name: "telemetry".into(),
            spec: self.telemetry,
        };
        let server = End {
            name: "server".into(),
            spec: self.server,
        };
        let workers: Vec<End> = self
            .workers
            .iter()
            .map(|w| End {
                name: format!("worker '{}'", w.name),
                spec: ThreadSpec {
                    core: w.core,
                    sched: w.sched,
                },
            })
            .collect();
        // (sender, receiver, what flows)
        let mut channels: Vec<(&End, &End, &str)> = Vec::new();
        for (i, w) in workers.iter().enumerate() {
            channels.push((&generator, w, "requests"));
            // A server below the workers is raised for each send (see
            // `TenantQueue::submit`); one configured above them needs no
            // raising, and one between is fine too: only a receiver above
            // its sender can spin, and the check below covers that.
            if server.spec.sched.rank() > 0 {
                channels.push((&server, w, "clients' requests"));
            }
            channels.push((w, &telemetry, "completions"));
            for (j, other) in workers.iter().enumerate() {
                if i != j {
                    channels.push((other, w, "doorbell rings"));
                }
            }
        }
        for (tx, rx, what) in channels {
            if rx.spec.sched.rank() > tx.spec.sched.rank() && share_core(&tx.spec, &rx.spec) {
                return Err(ConfigError::invalid(
                    path,
                    rx.name.clone(),
                    format!(
                        "{} ({}) receives {what} from {} ({}) and may run on the same core: \
                         a higher-priority receiver can preempt its sender in the middle of a \
                         channel write and then spin forever waiting for it (the channels are \
                         lock-free, not wait-free). Give {} a priority at most {}'s, or pin the \
                         two to different cores",
                        rx.name,
                        rx.spec.sched.describe(),
                        tx.name,
                        tx.spec.sched.describe(),
                        rx.name,
                        tx.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether worker `w` serves tenant `name`.
    pub fn worker_serves(&self, w: usize, name: &str) -> bool {
        match &self.workers[w].tenants {
            None => true,
            Some(list) => list.iter().any(|t| t == name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_ron;

    const GOOD: &str = r#"(
        load_generator: (sched: Fifo(priority: 90)),
        workers: [
            (name: "a", core: Some(1), sched: Fifo(priority: 60)),
            (name: "b", core: Some(0), tenants: Some(["cam"])),
        ],
    )"#;

    fn check(text: &str, cores: usize) -> Result<RtConfig, String> {
        let p = Path::new("rt.ron");
        let c: RtConfig = parse_ron(text, p, "rt-config").map_err(|e| e.to_string())?;
        let allowed: Vec<usize> = (0..cores).collect();
        c.validate(p, &allowed, &["cam", "cls"])
            .map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = check(GOOD, 2).unwrap();
        assert_eq!(c.intra_op_threads, 1);
        assert!(!c.lock_memory);
        assert_eq!(c.telemetry, ThreadSpec::default());
        assert_eq!(c.workers[0].device, DeviceSpec::Cpu);
        assert!(c.worker_serves(0, "cls") && !c.worker_serves(1, "cls"));
    }

    #[test]
    fn priority_inversions_along_channels_are_refused() {
        // A real-time worker fed by a SCHED_OTHER load generator.
        let e = check(
            &GOOD.replace("load_generator: (sched: Fifo(priority: 90)),", ""),
            2,
        )
        .unwrap_err();
        assert!(
            e.contains(
                "worker 'a' (SCHED_FIFO 60) receives requests from load_generator (SCHED_OTHER)"
            ),
            "{e}"
        );
        assert!(
            e.contains("spin forever") && e.contains("different cores"),
            "{e}"
        );
        // Two workers on one core: the real-time one receives the other's doorbell rings.
        let e = check(&GOOD.replace("core: Some(0)", "core: Some(1)"), 2).unwrap_err();
        assert!(
            e.contains("worker 'a' (SCHED_FIFO 60) receives doorbell rings from worker 'b'"),
            "{e}"
        );
        // Telemetry above the workers that send it completions.
        let e = check(
            &GOOD.replace(
                "workers:",
                "telemetry: (sched: Fifo(priority: 70)), workers:",
            ),
            2,
        )
        .unwrap_err();
        assert!(
            e.contains("telemetry (SCHED_FIFO 70) receives completions from worker 'a'"),
            "{e}"
        );
        // Equal priorities everywhere are fine.
        let flat = r#"(load_generator: (sched: Fifo(priority: 50)),
            telemetry: (sched: Fifo(priority: 5)),
            workers: [(name: "a", core: Some(0), sched: Fifo(priority: 50)),
                      (name: "b", core: Some(0), sched: Fifo(priority: 50))])"#;
        check(flat, 2).unwrap();
    }

    #[test]
    fn a_dispatcher_thread_setting_is_explained_not_ignored() {
        let e = check(
            &GOOD.replace("workers:", "dispatcher: (core: Some(0)), workers:"),
            2,
        )
        .unwrap_err();
        assert!(
            e.contains("dispatcher") && e.contains("runs on whichever worker becomes free"),
            "{e}"
        );
        assert!(e.contains("delete the `dispatcher` line"), "{e}");
    }

    #[test]
    fn a_jetson_whose_caps_could_select_nothing_is_refused() {
        let with = |control: &str| {
            check(
                &format!(
                    r#"(platform: Some(Jetson((control: {control}))), workers: [(name: "a")])"#
                ),
                2,
            )
        };
        assert!(with("ReadOnly").is_ok());
        assert!(with("Nvpmodel(modes: [(id: 0, budget_w: 30.0, slowdown: 1.0)])").is_ok());
        for (control, needle) in [
            ("Nvpmodel(modes: [])", "control.modes"),
            (
                "Nvpmodel(modes: [(id: 0, budget_w: 30.0, slowdown: 0.0)])",
                "modes[0].slowdown",
            ),
            (
                "Nvpmodel(modes: [(id: 0, budget_w: NaN, slowdown: 1.0)])",
                "modes[0].budget_w",
            ),
            ("Clocks(cpus: 8, levels: [])", "control.levels"),
            (
                "Clocks(cpus: 8, levels: [(cap_w: 30.0, gpu_max_hz: 1, cpu_max_khz: 1, \
                 cpus_online: 9, slowdown: 1.0)])",
                "levels[0].cpus_online",
            ),
        ] {
            let e = with(control).unwrap_err();
            assert!(
                e.contains(needle) && e.contains("platform.Jetson"),
                "{control}: {e}"
            );
        }
    }

    #[test]
    fn missing_core_is_refused_with_the_machine_size() {
        let e = check(GOOD, 1).unwrap_err();
        assert!(
            e.contains("workers[0] \"a\".core") && e.contains("use 1 core(s), [0]"),
            "{e}"
        );
        // A cpuset of cores 1 and 2: core 0 exists but may not be used.
        let p = Path::new("rt.ron");
        let c: RtConfig = parse_ron(GOOD, p, "rt-config").unwrap();
        let e = c
            .validate(p, &[1, 2], &["cam", "cls"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("workers[1] \"b\".core") && e.contains("[1, 2]"),
            "{e}"
        );
    }

    #[test]
    fn bad_priorities_names_and_tenants_are_refused() {
        let e = check(&GOOD.replace("priority: 90", "priority: 100"), 2).unwrap_err();
        assert!(
            e.contains("load_generator.sched") && e.contains("1..=99"),
            "{e}"
        );
        let e = check(&GOOD.replace("\"b\"", "\"a\""), 2).unwrap_err();
        assert!(e.contains("share this name"), "{e}");
        let e = check(&GOOD.replace("[\"cam\"]", "[\"radar\"]"), 2).unwrap_err();
        assert!(e.contains("no tenant named \"radar\""), "{e}");
        let only_cam = GOOD.replace(
            "(name: \"a\", core: Some(1), sched: Fifo(priority: 60)),",
            "",
        );
        let e = check(&only_cam, 2).unwrap_err();
        assert!(e.contains("no worker serves tenant \"cls\""), "{e}");
        let e = check("(workers: [])", 2).unwrap_err();
        assert!(e.contains("no workers"), "{e}");
        let e = check(&GOOD.replace("Fifo(", "Deadline("), 2).unwrap_err();
        assert!(e.contains("rt.ron:") && e.contains("Deadline"), "{e}");
        for bad in ["-5.0", "0.0", "NaN", "inf"] {
            let text = GOOD.replace(
                "    workers: [",
                &format!("    memory_budget_mb: Some({bad}),\n    workers: ["),
            );
            let e = check(&text, 2).unwrap_err();
            assert!(e.contains("memory_budget_mb"), "{bad}: {e}");
        }
        let text = GOOD.replace(
            "    workers: [",
            "    memory_budget_mb: Some(512.0),\n    workers: [",
        );
        assert_eq!(check(&text, 2).unwrap().memory_budget_mb, Some(512.0));
    }
}
