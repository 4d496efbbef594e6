//! The control plane: carbon monitor, power governor and energy meter on an
//! actix system of their own thread, beside the real-time data plane.
//!
//! ```text
//! CarbonMonitor ──CarbonReading──► PowerGovernor ──set_cap──► Platform backend
//!                                        │ PowerCell (atomic store)     ▲ read_power
//!                                        ▼                              │
//!                                  EdfDispatcher ──Job{throttle}──►  EnergyMeter ◄── worker busy counters
//! ```
//!
//! [`ControlPlan::prepare`] does everything that can fail on bad input (load
//! the trace, open the platform, read the token) before any work starts.
//!
//! **If the control plane dies** (an actor panics — actix then drops it —
//! or the governor stops ticking for [`HANG_AFTER`]), a watchdog thread
//! outside the actix system notices, puts the device at the policy's
//! fallback cap (published to the data plane as usual), takes over the
//! energy meter's sampling if the meter is gone, and records a degrading
//! incident: the report says so and `ecomap run` exits with status 3. The
//! data plane never depended on the control plane to serve, only to be
//! told the cap.

use crate::accelerator_worker::BusyCounters;
use crate::carbon_http::ProviderClient;
use crate::carbon_monitor::{CarbonMonitor, MonitorSource};
use crate::clock::RunClock;
use crate::dataplane::power_cell::PowerCell;
use crate::energy_meter::{EnergyMeter, Meter, TimelineRow};
use crate::faults::FaultInjector;
use crate::incidents::IncidentLog;
use crate::platform::{AppliedCap, Platform};
use crate::power_governor::PowerGovernor;
use crate::rt::RtNotes;
use crate::tenant_queue::TenantCounters;
use actix::prelude::*;
use ecomap::carbon::CarbonTrace;
use ecomap::config::policy::{CarbonSource, Policy};
use ecomap::config::rt::RtConfig;
use ecomap::config::rt::ThreadSpec;
use ecomap::energy::pricing::{IntensityLog, IntensityReading, PricedSpan};
use ecomap::governor::Governor;
use ecomap::report::EnergyReport;
use ecomap::time::Timestamp;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// A governor that has not ticked (every 50 ms) for this long is taken for
/// hung. Generous: a SCHED_OTHER control plane beside saturated SCHED_FIFO
/// workers gets only the kernel's real-time throttling slack (5% of each
/// second by default), and must not be declared dead for being starved.
pub const HANG_AFTER: Duration = Duration::from_secs(10);

/// How long the energy meter holds its first interval open for the carbon
/// source's first reading, which then prices the run from its start (a
/// trace's comes within milliseconds; an HTTP source's first poll may take
/// its timeout, and a run's first seconds without one are unpriced).
pub const FIRST_READING_GRACE: Duration = Duration::from_secs(2);

/// How often the watchdog looks.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// State the control-plane actors share.
pub struct ControlShared {
    platform: Mutex<Box<dyn Platform>>,
    state: Mutex<SharedState>,
    /// The governor's last tick, nanoseconds on the run clock.
    beat_ns: AtomicU64,
    /// Set by the watchdog when it declares the control plane failed: the
    /// governor (if it comes back) then leaves the fallback cap alone.
    failed: AtomicBool,
}

struct SharedState {
    /// The readings in force since the meter last sampled, each priced as
    /// stale past [`ControlPlan::pricing_staleness`] of age.
    intensity: IntensityLog,
    cap_w: f64,
    level: String,
    cap_changes: Vec<(f64, f64, String, String)>,
    staleness_events: u32,
    notes: Vec<String>,
}

impl ControlShared {
    /// Shared state with no reading yet, its first meter interval opening
    /// at `start`.
    pub(crate) fn new(
        platform: Box<dyn Platform>,
        pricing_staleness: Duration,
        start: Timestamp,
    ) -> Self {
        ControlShared {
            platform: Mutex::new(platform),
            state: Mutex::new(SharedState {
                intensity: IntensityLog::new(pricing_staleness, start),
                cap_w: 0.0,
                level: String::new(),
                cap_changes: Vec::new(),
                staleness_events: 0,
                notes: Vec::new(),
            }),
            beat_ns: AtomicU64::new(start.since_epoch().as_nanos() as u64),
            failed: AtomicBool::new(false),
        }
    }

    fn state(&self) -> MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The platform backend (locked).
    pub fn platform(&self) -> MutexGuard<'_, Box<dyn Platform>> {
        self.platform.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The platform backend if no one holds it (a hung governor may: the
    /// watchdog must not wait for it).
    pub fn try_platform(&self) -> Option<MutexGuard<'_, Box<dyn Platform>>> {
        match self.platform.try_lock() {
            Ok(p) => Some(p),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Whether the watchdog declared the control plane failed.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The governor's sign of life, once per tick.
    pub fn beat(&self, now: Timestamp) {
        self.beat_ns
            .store(now.since_epoch().as_nanos() as u64, Ordering::Relaxed);
    }

    /// Record the intensity in force from `now`: its value, whether its
    /// source marked it stale, and when it was observed.
    pub fn set_intensity(&self, now: Timestamp, gco2: f64, stale: bool, observed: Timestamp) {
        self.state().intensity.set(
            now,
            IntensityReading {
                gco2_per_kwh: gco2,
                observed,
                source_stale: stale,
            },
        );
    }

    /// Price the meter's interval ending at `now` at the readings in force
    /// over it, and open the next.
    pub fn price_interval(&self, now: Timestamp) -> Vec<PricedSpan> {
        self.state().intensity.close(now)
    }

    /// Whether the meter should hold its first interval open for the
    /// carbon source's first reading (see [`FIRST_READING_GRACE`]).
    pub fn awaits_first_reading(&self, now: Timestamp) -> bool {
        self.state()
            .intensity
            .awaits_first_reading(now, FIRST_READING_GRACE)
    }

    /// Record an applied cap.
    pub fn record_cap(&self, now: Timestamp, applied: &AppliedCap, reason: String) {
        let mut s = self.state();
        s.cap_w = applied.cap_w;
        s.level = applied.level.clone();
        s.cap_changes.push((
            now.since_epoch().as_secs_f64(),
            applied.cap_w,
            applied.level.clone(),
            reason,
        ));
    }

    /// Count a fallback to the stale cap.
    pub fn note_staleness(&self) {
        self.state().staleness_events += 1;
    }

    /// Keep a warning for the report.
    pub fn note(&self, msg: String) {
        let mut s = self.state();
        if s.notes.len() < 50 && !s.notes.contains(&msg) {
            s.notes.push(msg);
        }
    }

    /// What is in force at `now`, read at once. The reading is judged
    /// stale here, by its age, not by the governor: a policy without a
    /// governor section, or a governor that has died, still gets it right.
    pub fn snapshot(&self, now: Timestamp) -> InForce {
        let s = self.state();
        let in_force = s.intensity.in_force(now);
        InForce {
            intensity: in_force.map(|(g, _)| g),
            intensity_stale: in_force.is_some_and(|(_, stale)| stale),
            cap_w: s.cap_w,
            level: s.level.clone(),
        }
    }
}

/// The intensity, cap and device level in force at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct InForce {
    /// The last intensity read (gCO2eq/kWh), if any.
    pub intensity: Option<f64>,
    /// Whether that reading is stale: marked so by its source, or older
    /// than [`ControlPlan::pricing_staleness`].
    pub intensity_stale: bool,
    /// The cap in force (watts).
    pub cap_w: f64,
    /// The device level's name.
    pub level: String,
}

/// A control plane ready to start: inputs checked, platform opened.
pub struct ControlPlan {
    source: Option<MonitorSource>,
    source_name: String,
    governor: Option<Governor>,
    max_staleness: Duration,
    /// Past this age the reading in force prices energy as an estimate:
    /// the governor's `max_staleness`; without a governor section, three
    /// poll periods of an HTTP source (at least a poll plus one failing
    /// cycle of retries), [`HANG_AFTER`] for a trace (re-read every tick:
    /// older means the readings stopped), never for a fixed intensity. A
    /// reading its source marks stale (a held-over trace row) is stale at
    /// any age.
    pub pricing_staleness: Duration,
    /// The cap the device falls back to if the control plane dies.
    fallback_cap_w: Option<f64>,
    platform: Box<dyn Platform>,
    /// The mapping planner, when the policy plans (set by the runtime,
    /// which knows the workload).
    pub planning: Option<(
        crate::controlplane::planning::RuntimePlanning,
        crate::dataplane::plan_cell::PlanCell,
    )>,
}

impl ControlPlan {
    /// Check and load what the policy and rt-config ask for. `None` when no
    /// platform is configured (no power control, no energy accounting).
    pub fn prepare(policy: &Policy, rt: &RtConfig) -> Result<Option<ControlPlan>, String> {
        let (source, source_name) = match &policy.carbon {
            None => (None, "none (carbon not tracked)".to_string()),
            Some(CarbonSource::Fixed { gco2_per_kwh }) => (
                Some(MonitorSource::Fixed(*gco2_per_kwh)),
                format!("fixed {gco2_per_kwh} gCO2/kWh"),
            ),
            Some(CarbonSource::Trace {
                path,
                speedup,
                start_offset,
            }) => {
                let trace = CarbonTrace::load(path).map_err(|e| e.to_string())?;
                if *start_offset > trace.span() {
                    return Err(format!(
                        "carbon trace {}: start_offset {} is past its last row ({} after its \
                         first); use an offset of at most that",
                        path.display(),
                        humantime::format_duration(*start_offset),
                        humantime::format_duration(trace.span())
                    ));
                }
                for w in &trace.warnings {
                    tracing::warn!("carbon trace: {w}");
                }
                let name = format!(
                    "trace {} ({:?}, {} rows, {} stale; ×{speedup} from +{})",
                    path.display(),
                    trace.format,
                    trace.samples.len(),
                    trace.samples.iter().filter(|s| s.stale).count(),
                    humantime::format_duration(*start_offset)
                );
                (
                    Some(MonitorSource::Trace {
                        trace,
                        speedup: *speedup,
                        start_offset: *start_offset,
                    }),
                    name,
                )
            }
            Some(CarbonSource::Http {
                provider,
                base_url,
                poll,
                timeout,
            }) => {
                let client = ProviderClient::new(provider.clone(), base_url.as_deref(), *timeout)
                    .map_err(|e| e.to_string())?;
                let name = format!("http {}", client.url());
                (
                    Some(MonitorSource::Http {
                        client,
                        poll: *poll,
                        // Set below, with the pricing's staleness.
                        max_age: Duration::MAX,
                    }),
                    name,
                )
            }
        };
        let Some(spec) = &rt.platform else {
            if source.is_some() || policy.governor.is_some() {
                return Err(
                    "the policy tracks carbon or governs power, but the rt-config has no \
                     `platform` to cap or meter; add one, e.g. \
                     `platform: Emulated(device: \"devices/xavier.ron\")`"
                        .into(),
                );
            }
            return Ok(None);
        };
        let platform = crate::platform::from_spec(spec, std::path::Path::new(""))?;
        let (governor, max_staleness) = match &policy.governor {
            Some(g) => (Some(Governor::new(g.clone())), g.max_staleness),
            None => (None, Duration::MAX),
        };
        // Pricing judges a reading as the governor does where there is one.
        // Without one: an HTTP reading is stale once three poll periods —
        // and at least one whole failing cycle of the poller (three tries
        // of `timeout`, 0.5 + 1 s of back-off between them) past a poll —
        // have brought nothing newer; a trace is re-read every monitor
        // tick, so a reading older than the watchdog's HANG_AFTER means
        // the readings stopped (a dead governor, through which they
        // reach the meter); a fixed intensity never goes stale.
        let pricing_staleness = match (&policy.governor, &policy.carbon) {
            (Some(g), _) => g.max_staleness,
            (None, Some(CarbonSource::Http { poll, timeout, .. })) => {
                // Saturating: a poll of centuries is odd, not a panic.
                poll.saturating_mul(3).max(
                    poll.saturating_add(timeout.saturating_mul(3))
                        .saturating_add(Duration::from_millis(1500)),
                )
            }
            (None, Some(CarbonSource::Trace { .. })) => HANG_AFTER,
            (None, _) => Duration::MAX,
        };
        let mut source = source;
        if let Some(MonitorSource::Http { max_age, .. }) = &mut source {
            *max_age = pricing_staleness;
        }
        Ok(Some(ControlPlan {
            source,
            source_name,
            governor,
            max_staleness,
            pricing_staleness,
            fallback_cap_w: policy.governor.as_ref().map(|g| g.fallback_cap_w),
            platform,
            planning: None,
        }))
    }
}

/// A read-only view of the control plane's state, for `/metrics`.
#[derive(Clone)]
pub struct ControlView {
    shared: Arc<ControlShared>,
    meter: Arc<Mutex<Meter>>,
}

impl std::fmt::Debug for ControlView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlView")
    }
}

/// The control plane's state at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlSnapshot {
    /// Cap in force, watts.
    pub cap_w: f64,
    /// The mode's level name.
    pub level: String,
    /// Intensity in force, gCO2eq/kWh.
    pub intensity: Option<f64>,
    /// Average power over the last meter interval, watts.
    pub power_w: f64,
    /// Whether power is read from a sensor (else modelled).
    pub power_measured: bool,
    /// Energy so far, joules.
    pub energy_j: f64,
    /// Carbon so far, grams CO2eq.
    pub carbon_g: f64,
}

impl ControlView {
    /// The state now.
    pub fn snapshot(&self) -> ControlSnapshot {
        // The meter's lock, then the state's: the order the meter takes
        // them in while sampling.
        let m = self.meter.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.shared.snapshot(m.last_sample());
        ControlSnapshot {
            cap_w: now.cap_w,
            level: now.level,
            intensity: now.intensity,
            power_w: m.timeline.last().map_or(0.0, |r| r.power_w),
            power_measured: m.measured.unwrap_or(false),
            energy_j: m.ledger.energy_j,
            carbon_g: m.ledger.carbon_g,
        }
    }
}

/// What the control plane is wired to.
pub struct ControlLinks {
    /// Where the governor publishes the cap and throttle.
    pub power: PowerCell,
    /// The workers' busy time (for the energy meter).
    pub busy: Arc<BusyCounters>,
    /// The tenants' counters (queue depths for the timeline).
    pub queues: Vec<Arc<TenantCounters>>,
    /// The run's clock.
    pub clock: RunClock,
    /// Energy meter sampling interval.
    pub meter_interval: Duration,
    /// The control-plane thread's placement (rt-config `control_plane`).
    pub thread: ThreadSpec,
    /// Where refused real-time settings are noted.
    pub notes: RtNotes,
    /// Fault hooks.
    pub faults: FaultInjector,
    /// Where a failure is recorded.
    pub incidents: IncidentLog,
}

/// A running control plane.
pub struct ControlPlane {
    system: actix::System,
    thread: JoinHandle<()>,
    shared: Arc<ControlShared>,
    meter: Arc<Mutex<Meter>>,
    source_name: String,
    /// The platform's name, read at start: at the end a hung governor may
    /// hold the platform, and the report must not wait for it.
    platform_name: String,
    /// Where the end records a meter it could not read.
    incidents: IncidentLog,
    clock: RunClock,
    watchdog: JoinHandle<()>,
    stopping: Arc<AtomicBool>,
}

/// The actors the watchdog watches.
struct Watched {
    governor: Addr<PowerGovernor>,
    meter: Addr<EnergyMeter>,
}

/// What the control plane produced.
pub struct ControlOutcome {
    /// For the run report.
    pub report: EnergyReport,
    /// One row per meter interval.
    pub timeline: Vec<TimelineRow>,
}

impl ControlPlane {
    /// Start the actors on their own thread, and the watchdog beside it.
    pub fn start(plan: ControlPlan, links: ControlLinks) -> Result<ControlPlane, String> {
        let ControlLinks {
            power,
            busy,
            queues,
            clock,
            meter_interval,
            thread: thread_spec,
            notes,
            faults,
            incidents,
        } = links;
        // The meter's first interval and the pricing log's open together.
        let start = clock.now();
        let shared = Arc::new(ControlShared::new(
            plan.platform,
            plan.pricing_staleness,
            start,
        ));
        // The platform's energy baseline is now, not when it was opened
        // (before the models loaded).
        if let Err(e) = shared.platform().start_metering() {
            shared.note(format!("the energy meter could not take its baseline: {e}"));
        }
        let meter = Arc::new(Mutex::new(Meter::new(shared.clone(), busy, queues, start)));
        let (sys_tx, sys_rx) = crossbeam_channel::bounded(1);
        let (sh, me) = (shared.clone(), meter.clone());
        let (source, governor, max_staleness) = (plan.source, plan.governor, plan.max_staleness);
        let planning = plan.planning;
        let gov_power = power.clone();
        let thread = std::thread::Builder::new()
            .name("control-plane".into())
            .spawn(move || {
                crate::rt::apply("control-plane", &thread_spec, &notes);
                let runner = actix::System::new();
                runner.block_on(async move {
                    let mut gov = PowerGovernor::new(
                        governor,
                        max_staleness,
                        sh.clone(),
                        gov_power,
                        clock,
                        Duration::from_millis(50),
                    )
                    .with_faults(faults)
                    .with_meter(me.clone());
                    if let Some((planning, cell)) = planning {
                        let for_actor = planning.clone();
                        let addr = crate::controlplane::estimator_actor::EstimatorActor::start(
                            move || crate::controlplane::planning::make_estimator(&for_actor),
                        );
                        gov = gov.with_planner(crate::power_governor::GovernorPlanner::new(
                            addr, planning, cell,
                        ));
                    }
                    let gov = gov.start();
                    if let Some(src) = source {
                        CarbonMonitor::new(
                            src,
                            gov.clone().recipient(),
                            clock,
                            Duration::from_millis(50),
                            sh.clone(),
                        )
                        .start();
                    }
                    let meter = EnergyMeter::new(me, clock, meter_interval).start();
                    let _ = sys_tx.send((
                        actix::System::current(),
                        Watched {
                            governor: gov,
                            meter,
                        },
                    ));
                });
                let _ = runner.run();
            })
            .map_err(|e| format!("cannot start the control-plane thread: {e}"))?;
        let (system, watched) = sys_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "the control plane did not start within 10 s".to_string())?;
        let stopping = Arc::new(AtomicBool::new(false));
        let end_incidents = incidents.clone();
        let watchdog = {
            let (shared, meter, stopping) = (shared.clone(), meter.clone(), stopping.clone());
            let fallback = plan.fallback_cap_w;
            std::thread::Builder::new()
                .name("cp-watchdog".into())
                .spawn(move || {
                    watch(
                        watched,
                        &shared,
                        &meter,
                        &stopping,
                        &power,
                        fallback,
                        clock,
                        meter_interval,
                        &incidents,
                    )
                })
                .map_err(|e| format!("cannot start the control-plane watchdog: {e}"))?
        };
        let platform_name = shared.platform().name();
        Ok(ControlPlane {
            system,
            thread,
            shared,
            meter,
            source_name: plan.source_name,
            platform_name,
            incidents: end_incidents,
            clock,
            watchdog,
            stopping,
        })
    }

    /// A view of its state, for `/metrics`.
    pub fn view(&self) -> ControlView {
        ControlView {
            shared: self.shared.clone(),
            meter: self.meter.clone(),
        }
    }

    /// Stop the actors, account the last partial interval, and report.
    pub fn stop(self) -> ControlOutcome {
        self.stopping.store(true, Ordering::Release);
        let _ = self.watchdog.join();
        self.system.stop();
        // A hung control plane must not hang the shutdown: wait a bounded
        // time, then leave its thread behind (the process exits anyway).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !self.thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        } else {
            self.shared.note(
                "the control-plane thread did not stop within 5 s (hung); left behind".into(),
            );
        }
        // A hung governor or meter thread may hold the meter (a power read
        // that never returns): wait a bounded time for it too, then report
        // without the energy rather than hang.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut meter = loop {
            match self.meter.try_lock() {
                Ok(m) => break Some(m),
                Err(std::sync::TryLockError::Poisoned(p)) => break Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(std::sync::TryLockError::WouldBlock) => break None,
            }
        };
        match meter.as_mut() {
            Some(m) => m.finish(self.clock.now()),
            None => {
                // The ledger below is then empty: the report's energy and
                // carbon read 0, which the incident (degrading: exit 3) and
                // the note say are missing, not measured.
                let what = "the energy meter was held by a hung thread at the end: the run's \
                            energy and carbon are missing from the report (they read 0)";
                self.incidents.record(what.into(), true);
                self.shared.note(what.into());
            }
        }
        // Leave the device as the run found it (a Jetson's clocks, a RAPL
        // limit); a hung governor may still hold the platform.
        match self.shared.try_platform() {
            Some(mut platform) => {
                if let Err(e) = platform.restore() {
                    drop(platform);
                    self.shared.note(format!(
                        "the device's power settings could not be put back after the run: {e}"
                    ));
                }
            }
            None => self.shared.note(
                "the device's power settings were not put back after the run: a hung \
                 governor holds the platform"
                    .into(),
            ),
        }
        let s = self.shared.state();
        ControlOutcome {
            report: EnergyReport {
                platform: self.platform_name,
                power_measured: meter.as_ref().is_some_and(|m| m.measured.unwrap_or(false)),
                carbon_source: self.source_name,
                ledger: meter.as_ref().map(|m| m.ledger.clone()).unwrap_or_default(),
                cap_changes: s.cap_changes.clone(),
                staleness_events: s.staleness_events,
                notes: s.notes.clone(),
            },
            timeline: meter
                .as_mut()
                .map(|m| std::mem::take(&mut m.timeline))
                .unwrap_or_default(),
        }
    }
}

/// The watchdog: until `stopping`, check that the governor and the meter
/// are alive; on the first failure put the device at `fallback_cap_w`,
/// record the incident, and sample the meter itself if it is gone.
#[allow(clippy::too_many_arguments)] // one call site, each argument distinct
fn watch(
    watched: Watched,
    shared: &ControlShared,
    meter: &Mutex<Meter>,
    stopping: &AtomicBool,
    power: &PowerCell,
    fallback_cap_w: Option<f64>,
    clock: RunClock,
    meter_interval: Duration,
    incidents: &IncidentLog,
) {
    let mut failed = false;
    let mut last_sample = clock.now();
    while !stopping.load(Ordering::Acquire) {
        std::thread::sleep(WATCH_EVERY);
        let now = clock.now();
        let meter_gone = !watched.meter.connected();
        if !failed {
            let beat = Duration::from_nanos(shared.beat_ns.load(Ordering::Relaxed));
            let silent = now.since_epoch().saturating_sub(beat);
            let why = if !watched.governor.connected() {
                Some("the power governor panicked".to_string())
            } else if meter_gone {
                Some("the energy meter panicked".to_string())
            } else if silent > HANG_AFTER {
                Some(format!(
                    "the power governor has not ticked for {:.1} s",
                    silent.as_secs_f64()
                ))
            } else {
                None
            };
            if let Some(why) = why {
                failed = true;
                // Close the meter's interval at the old mode, as the
                // governor does before a change (best effort: a hung thread
                // may hold the meter or the platform).
                if let Some(mut m) = try_meter(meter) {
                    m.try_sample(now);
                }
                let action = fall_back(shared, power, fallback_cap_w, now);
                let note = format!("control plane failed: {why}; {action}");
                shared.note(note.clone());
                incidents.record(note, true);
            }
        }
        // The meter's actor is gone, or (its thread hung) has not sampled
        // for three intervals: energy is still accounted, at the cap now in
        // force. `try_lock`: a hung thread may hold the meter.
        if let Some(mut m) = try_meter(meter) {
            let stalled = now.saturating_since(m.last_sample()) >= meter_interval * 3;
            // `try_sample`: a hung governor may hold the platform, and a
            // watchdog blocked on it (holding the meter) would hang the
            // shutdown and /metrics; the next try covers the interval.
            let metering = meter_gone || (failed && stalled);
            if metering && now.saturating_since(last_sample) >= meter_interval && m.try_sample(now)
            {
                last_sample = now;
            } else if metering {
                // Between reads, as the meter actor's poll timer would (a
                // Jetson's instantaneous rails; a no-op elsewhere).
                m.try_poll(now, meter_interval);
            }
        }
    }
}

/// The meter if no one holds it. A panic while sampling (in the meter
/// actor, or in the governor closing an interval) poisons the lock; the
/// meter's state is whole between samples, so the watchdog goes on
/// metering with it rather than lose the rest of the run's energy.
fn try_meter(meter: &Mutex<Meter>) -> Option<std::sync::MutexGuard<'_, Meter>> {
    match meter.try_lock() {
        Ok(m) => Some(m),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// Put the device at the fallback cap and tell the data plane; what was
/// done, for the report.
fn fall_back(
    shared: &ControlShared,
    power: &PowerCell,
    fallback_cap_w: Option<f64>,
    now: Timestamp,
) -> String {
    // From now on the governor, should it come back, changes nothing.
    shared.failed.store(true, Ordering::Release);
    let Some(cap_w) = fallback_cap_w else {
        return "no governor rule, so no fallback cap: the device stays at the cap in force".into();
    };
    // A hung governor may hold the platform (e.g. stuck in a sysfs write):
    // try for two seconds, never block the watchdog for good.
    let mut platform = None;
    for _ in 0..200 {
        match shared.platform.try_lock() {
            Ok(p) => {
                platform = Some(p);
                break;
            }
            Err(std::sync::TryLockError::Poisoned(p)) => {
                platform = Some(p.into_inner());
                break;
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                std::thread::sleep(Duration::from_millis(10))
            }
        }
    }
    let Some(mut platform) = platform else {
        return format!(
            "the fallback cap {cap_w} W could not be applied: the platform is held by the hung \
             governor"
        );
    };
    // Set and published under the platform's lock, as the governor does.
    let result = platform.set_cap(cap_w);
    if let Ok(applied) = &result {
        crate::power_governor::publish(power, applied, platform.throttles_workers());
        shared.record_cap(now, applied, "control plane failed: fallback cap".into());
    }
    drop(platform);
    match result {
        Ok(applied) => {
            format!(
                "the data plane runs on at the fallback cap {} W ({}) for the rest of the run \
                 (the governor, should it come back, changes nothing)",
                applied.cap_w, applied.level
            )
        }
        Err(e) => format!("the fallback cap {cap_w} W could not be applied ({e})"),
    }
}

/// Write timeline rows as CSV: time, intensity, cap, level, power,
/// utilisation, and one queue-depth column per tenant.
pub fn write_timeline(
    path: &std::path::Path,
    rows: &[TimelineRow],
    tenant_names: &[String],
) -> Result<(), String> {
    let err =
        |e: &dyn std::fmt::Display| format!("{}: cannot write the timeline: {e}", path.display());
    let mut w = csv::Writer::from_path(path).map_err(|e| err(&e))?;
    let mut header: Vec<String> = [
        "t_s",
        "gco2_per_kwh",
        "cap_w",
        "level",
        "power_w",
        "utilisation",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(tenant_names.iter().map(|n| format!("queue_{n}")));
    header.extend(tenant_names.iter().map(|n| format!("variant_{n}")));
    w.write_record(&header).map_err(|e| err(&e))?;
    for r in rows {
        let mut rec = vec![
            format!("{:.3}", r.t_s),
            r.gco2_per_kwh.map_or(String::new(), |g| format!("{g:.2}")),
            format!("{}", r.cap_w),
            r.level.clone(),
            format!("{:.3}", r.power_w),
            format!("{:.4}", r.utilisation),
        ];
        rec.extend(r.queue_depths.iter().map(|d| d.to_string()));
        rec.extend(r.variants.iter().map(|v| v.to_string()));
        w.write_record(&rec).map_err(|e| err(&e))?;
    }
    w.flush().map_err(|e| err(&e))
}
