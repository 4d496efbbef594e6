//! Real-time set-up of threads: CPU pinning, scheduling class, memory locking.
//!
//! Each data-plane thread calls [`apply`] first thing with its
//! [`ThreadSpec`]. What the OS refuses (EPERM for SCHED_FIFO without
//! CAP_SYS_NICE, a core outside the process's cpuset) is not fatal: the
//! thread keeps running with what it has, a warning names the thread and
//! what was refused — once per distinct refusal — and the refusal is kept in
//! [`RtNotes`] for the run report.

use ecomap::config::rt::{SchedSpec, ThreadSpec};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// Warnings about real-time settings the OS refused, for the run report.
#[derive(Debug, Clone, Default)]
pub struct RtNotes(Arc<Mutex<BTreeSet<String>>>);

impl RtNotes {
    /// Record a refusal; logs it the first time it is seen.
    pub fn warn(&self, message: String) {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !set.contains(&message) {
            tracing::warn!("{message}");
            set.insert(message);
        }
    }

    /// Every distinct refusal, sorted.
    pub fn to_vec(&self) -> Vec<String> {
        let set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.iter().cloned().collect()
    }
}

/// What a thread actually got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Pinned to this core, if pinning was asked for and succeeded.
    pub core: Option<usize>,
    /// Whether the requested real-time class was granted.
    pub realtime: bool,
}

/// The cores this process may run on (its affinity mask: a cpuset or
/// `taskset` can leave out any of the machine's), for validating rt-configs.
/// The process's — its main thread's, whose thread id is the process id —
/// not the calling thread's, which may itself be pinned to one core; else
/// the calling thread's, else `0..n`.
pub fn allowed_cores() -> Vec<usize> {
    main_thread_affinity()
        .or_else(|| {
            core_affinity::get_core_ids()
                .map(|ids| ids.iter().map(|c| c.id).collect::<Vec<_>>())
                .filter(|ids| !ids.is_empty())
        })
        .unwrap_or_else(|| {
            (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
        })
}

/// `sched_getaffinity` of the process's main thread.
fn main_thread_affinity() -> Option<Vec<usize>> {
    // SAFETY: an all-zero `cpu_set_t` is a valid (empty) CPU set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `getpid` has no preconditions; `set` is a valid, writable
    // `cpu_set_t` of the size passed, for the call's duration.
    let rc = unsafe {
        libc::sched_getaffinity(
            libc::getpid(),
            std::mem::size_of::<libc::cpu_set_t>(),
            &mut set,
        )
    };
    if rc != 0 {
        return None;
    }
    let cores: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `set` is initialised and `c` is below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect();
    (!cores.is_empty()).then_some(cores)
}

/// How many cores this process may run on.
pub fn available_cores() -> usize {
    allowed_cores().len()
}

/// Pin and schedule the calling thread as `spec` says. `thread` names it in
/// warnings.
pub fn apply(thread: &str, spec: &ThreadSpec, notes: &RtNotes) -> Applied {
    let mut applied = Applied {
        core: None,
        realtime: false,
    };
    if let Some(core) = spec.core {
        if core >= libc::CPU_SETSIZE as usize {
            // core_affinity would index past the kernel's CPU set and panic.
            notes.warn(format!(
                "thread '{thread}': core {core} is beyond the largest CPU index Linux supports \
                 ({}); it runs unpinned",
                libc::CPU_SETSIZE - 1
            ));
        } else if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            applied.core = Some(core);
        } else {
            notes.warn(format!(
                "thread '{thread}': pinning to core {core} was refused ({}); it runs unpinned",
                std::io::Error::last_os_error()
            ));
        }
    }
    let (policy, priority, label) = match spec.sched {
        SchedSpec::Other => return applied,
        SchedSpec::Fifo { priority } => (libc::SCHED_FIFO, priority, "SCHED_FIFO"),
        SchedSpec::RoundRobin { priority } => (libc::SCHED_RR, priority, "SCHED_RR"),
    };
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `sched_setscheduler` reads the `sched_param` we pass by
    // pointer and only for the duration of the call; pid 0 means the calling
    // thread, so no other thread's state is touched.
    let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if rc == 0 {
        applied.realtime = true;
        APPLIED_SCHED.set(Some((policy, priority)));
    } else {
        let err = std::io::Error::last_os_error();
        let why = if err.raw_os_error() == Some(libc::EPERM) {
            " — the process lacks CAP_SYS_NICE or an RLIMIT_RTPRIO high enough; run as root, \
             grant `setcap cap_sys_nice+ep`, or raise `ulimit -r`"
        } else {
            ""
        };
        notes.warn(format!(
            "thread '{thread}': {label} priority {priority} was refused ({err}){why}; it runs \
             as SCHED_OTHER"
        ));
    }
    applied
}

thread_local! {
    /// The class `apply` gave this thread, so `at_least_priority` (on every
    /// submission) need not ask the kernel on ecomap's own threads, such as
    /// the load generators. Other threads are asked each time: their class
    /// may change behind ecomap's back.
    static APPLIED_SCHED: std::cell::Cell<Option<(i32, i32)>> = const { std::cell::Cell::new(None) };
}

/// Lock all current and future pages of the process in memory, so page
/// faults do not add latency. A refusal is recorded, not fatal.
pub fn lock_memory(notes: &RtNotes) -> bool {
    // SAFETY: `mlockall` takes only flags and changes the paging of this
    // process; it has no memory-safety preconditions.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if rc == 0 {
        true
    } else {
        notes.warn(format!(
            "mlockall was refused ({}); memory stays pageable (raise `ulimit -l` or run as root)",
            std::io::Error::last_os_error()
        ));
        false
    }
}

/// A held PM QoS request on the CPUs' wake-up latency; the kernel drops
/// it when this is dropped (the file closes).
#[derive(Debug)]
pub struct WakeLatencyHold {
    _file: std::fs::File,
    /// The latency asked for, µs.
    pub us: u32,
}

/// Ask the kernel to keep the CPUs' wake-up latency at or below `us`
/// microseconds for as long as the returned hold lives
/// (`/dev/cpu_dma_latency`, the PM QoS interface cyclictest uses). A
/// refusal is recorded, not fatal: the run goes on with the kernel's idle
/// policy.
pub fn hold_wake_latency(us: u32, notes: &RtNotes) -> Option<WakeLatencyHold> {
    use std::io::Write as _;
    const PATH: &str = "/dev/cpu_dma_latency";
    let value = i32::try_from(us).unwrap_or(i32::MAX);
    let held = std::fs::OpenOptions::new()
        .write(true)
        .open(PATH)
        // The interface takes the value as a binary 32-bit integer.
        .and_then(|mut f| f.write_all(&value.to_ne_bytes()).map(|()| f));
    match held {
        Ok(file) => Some(WakeLatencyHold { _file: file, us }),
        Err(e) => {
            notes.warn(format!(
                "cpu_dma_latency_us: {us} µs could not be requested through {PATH} ({e}); \
                 idle cores keep the kernel's idle states (run as root, or drop the setting)"
            ));
            None
        }
    }
}

/// The calling thread's scheduling policy and priority as the kernel sees them.
pub fn current_sched() -> (i32, i32) {
    // SAFETY: pid 0 is the calling thread; `sched_getscheduler` has no
    // pointer arguments.
    let policy = unsafe { libc::sched_getscheduler(0) };
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid, writable `sched_param` for the call's duration.
    unsafe { libc::sched_getparam(0, &mut param) };
    (policy, param.sched_priority)
}

/// Run `f` with the calling thread at real-time priority `floor` or above:
/// a thread already at SCHED_FIFO/SCHED_RR `floor` or higher runs it as it
/// is; any other is raised to SCHED_FIFO `floor` for the call and put back
/// after (policy, priority and the reset-on-fork flag as they were). `Err`
/// (nothing run) if the kernel refuses the raise.
///
/// This is how a thread below the data plane's workers (an application
/// thread, an HTTP handler) sends on a channel they receive from: at the
/// workers' priority no worker can preempt it between claiming a slot and
/// filling it, so none can spin on a half-finished send.
pub fn at_least_priority<R>(floor: i32, f: impl FnOnce() -> R) -> Result<R, String> {
    let (policy, priority) = APPLIED_SCHED.get().unwrap_or_else(current_sched);
    let class = policy & !libc::SCHED_RESET_ON_FORK;
    if (class == libc::SCHED_FIFO || class == libc::SCHED_RR) && priority >= floor {
        return Ok(f());
    }
    let raised = libc::sched_param {
        sched_priority: floor,
    };
    // SAFETY: pid 0 is the calling thread; `raised` is a valid sched_param
    // for the call's duration.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raised) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // Put the thread back even if `f` panics.
    struct Restore(i32, i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            let old = libc::sched_param {
                sched_priority: self.1,
            };
            // SAFETY: as above; restoring the policy the thread had (which
            // it was allowed to hold) cannot be refused for lack of rights.
            let rc = unsafe { libc::sched_setscheduler(0, self.0, &old) };
            debug_assert_eq!(rc, 0, "restoring a thread's own policy");
        }
    }
    let _restore = Restore(policy, priority);
    Ok(f())
}

/// The cores the calling thread may run on.
pub fn current_affinity() -> Vec<usize> {
    // SAFETY: an all-zero `cpu_set_t` is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid and writable and its size is passed; pid 0 is
    // the calling thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `i` is below CPU_SETSIZE, the set's capacity.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// The kernel's current wake-up latency limit, µs (reading the PM QoS
    /// device gives the aggregate of every request held).
    fn current_wake_latency_us() -> Option<i32> {
        use std::io::Read as _;
        let mut buf = [0u8; 4];
        let mut f = std::fs::File::open("/dev/cpu_dma_latency").ok()?;
        f.read_exact(&mut buf).ok()?;
        Some(i32::from_ne_bytes(buf))
    }

    #[test]
    fn a_wake_latency_request_holds_while_kept_or_is_a_warning() {
        let notes = RtNotes::default();
        match hold_wake_latency(7, &notes) {
            Some(hold) => {
                assert_eq!(hold.us, 7);
                // The aggregate is the tightest request: ours or tighter.
                let now = current_wake_latency_us().expect("readable while writable");
                assert!(now <= 7, "limit {now} µs while a 7 µs request is held");
                assert!(notes.to_vec().is_empty());
            }
            None => {
                assert!(!is_root() || !std::path::Path::new("/dev/cpu_dma_latency").exists());
                let said = notes.to_vec();
                assert!(
                    said.iter().any(|m| m.contains("cpu_dma_latency_us: 7 µs")),
                    "{said:?}"
                );
            }
        }
    }

    #[test]
    fn a_low_priority_caller_is_raised_for_the_call_and_put_back() {
        let before = current_sched();
        let inside = std::thread::spawn(move || {
            let r = at_least_priority(10, current_sched);
            (r, current_sched())
        })
        .join()
        .unwrap();
        if is_root() {
            let (during, after) = inside;
            assert_eq!(during.unwrap(), (libc::SCHED_FIFO, 10));
            assert_eq!(after, before, "put back as it was");
        } else {
            assert!(inside.0.is_err(), "refused without the right");
        }
    }

    #[test]
    fn fifo_and_pinning_really_take_effect() {
        let notes = RtNotes::default();
        // The first core this process may use (a cpuset may leave out 0).
        let core = allowed_cores()[0];
        let spec = ThreadSpec {
            core: Some(core),
            sched: SchedSpec::Fifo { priority: 10 },
        };
        let n = notes.clone();
        let (applied, sched, cores) = std::thread::spawn(move || {
            let a = apply("test-fifo", &spec, &n);
            (a, current_sched(), current_affinity())
        })
        .join()
        .unwrap();
        assert_eq!(applied.core, Some(core));
        assert_eq!(cores, vec![core]);
        if is_root() {
            // The development machines and CI run as root: SCHED_FIFO must work.
            assert!(applied.realtime, "{:?}", notes.to_vec());
            assert_eq!(sched, (libc::SCHED_FIFO, 10));
        } else {
            assert!(!applied.realtime);
            assert!(notes.to_vec()[0].contains("test-fifo"));
        }
    }

    #[test]
    fn refused_settings_warn_once_and_fall_back() {
        let notes = RtNotes::default();
        let n = notes.clone();
        let absent = ThreadSpec {
            core: Some(1000),
            sched: SchedSpec::Other,
        };
        let impossible = ThreadSpec {
            core: Some(100_000),
            sched: SchedSpec::Other,
        };
        let (a, b) = std::thread::spawn(move || {
            let a = apply("pinned-nowhere", &absent, &n);
            apply("pinned-nowhere", &absent, &n);
            (a, apply("pinned-nowhere", &impossible, &n))
        })
        .join()
        .unwrap();
        assert_eq!((a.core, b.core), (None, None));
        let v = notes.to_vec();
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v
            .iter()
            .any(|m| m.contains("'pinned-nowhere'") && m.contains("pinning to core 1000")));
        assert!(
            v.iter().any(|m| m.contains("core 100000 is beyond")),
            "{v:?}"
        );
    }

    #[test]
    fn the_allowed_cores_are_the_processs_not_a_pinned_threads() {
        let all = allowed_cores();
        assert!(!all.is_empty());
        // A thread pinned to one core still sees the process's cores.
        let first = all[0];
        let seen = std::thread::spawn(move || {
            core_affinity::set_for_current(core_affinity::CoreId { id: first });
            allowed_cores()
        })
        .join()
        .unwrap();
        assert_eq!(seen, all);
    }

    #[test]
    fn round_robin_is_granted_to_root() {
        let notes = RtNotes::default();
        let n = notes.clone();
        let spec = ThreadSpec {
            core: None,
            sched: SchedSpec::RoundRobin { priority: 5 },
        };
        let (a, sched) = std::thread::spawn(move || (apply("rr", &spec, &n), current_sched()))
            .join()
            .unwrap();
        if is_root() {
            assert!(a.realtime);
            assert_eq!(sched, (libc::SCHED_RR, 5));
        } else {
            assert!(!a.realtime);
            assert!(
                notes.to_vec()[0].contains("SCHED_RR"),
                "{:?}",
                notes.to_vec()
            );
        }
    }
}
