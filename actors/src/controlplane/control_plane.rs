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

use crate::accelerator_worker::BusyCounters;
use crate::carbon_http::ProviderClient;
use crate::carbon_monitor::{CarbonMonitor, MonitorSource};
use crate::clock::RunClock;
use crate::dataplane::power_cell::PowerCell;
use crate::energy_meter::{EnergyMeter, Meter, TimelineRow};
use crate::platform::{AppliedCap, Platform};
use crate::power_governor::PowerGovernor;
use crate::tenant_queue::TenantCounters;
use actix::prelude::*;
use ecomap::carbon::CarbonTrace;
use ecomap::config::policy::{CarbonSource, Policy};
use ecomap::config::rt::RtConfig;
use ecomap::governor::Governor;
use ecomap::report::EnergyReport;
use ecomap::time::Timestamp;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// State the control-plane actors share.
pub struct ControlShared {
    platform: Mutex<Box<dyn Platform>>,
    state: Mutex<SharedState>,
}

#[derive(Default)]
struct SharedState {
    intensity: Option<f64>,
    cap_w: f64,
    level: String,
    cap_changes: Vec<(f64, f64, String, String)>,
    staleness_events: u32,
    notes: Vec<String>,
}

impl ControlShared {
    fn state(&self) -> MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The platform backend (locked).
    pub fn platform(&self) -> MutexGuard<'_, Box<dyn Platform>> {
        self.platform.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record the intensity in force.
    pub fn set_intensity(&self, gco2: f64, _stale: bool) {
        self.state().intensity = Some(gco2);
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

    /// (intensity, cap, level) in force.
    pub fn snapshot(&self) -> (Option<f64>, f64, String) {
        let s = self.state();
        (s.intensity, s.cap_w, s.level.clone())
    }
}

/// A control plane ready to start: inputs checked, platform opened.
pub struct ControlPlan {
    source: Option<MonitorSource>,
    source_name: String,
    governor: Option<Governor>,
    max_staleness: Duration,
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
                let client = ProviderClient::new(provider.clone(), base_url.as_deref(), *timeout)?;
                let name = format!("http {}", client.url());
                (
                    Some(MonitorSource::Http {
                        client,
                        poll: *poll,
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
        Ok(Some(ControlPlan {
            source,
            source_name,
            governor,
            max_staleness,
            platform,
            planning: None,
        }))
    }
}

/// A running control plane.
pub struct ControlPlane {
    system: actix::System,
    thread: JoinHandle<()>,
    shared: Arc<ControlShared>,
    meter: Arc<Mutex<Meter>>,
    source_name: String,
    clock: RunClock,
}

/// What the control plane produced.
pub struct ControlOutcome {
    /// For the run report.
    pub report: EnergyReport,
    /// One row per meter interval.
    pub timeline: Vec<TimelineRow>,
}

impl ControlPlane {
    /// Start the actors on their own thread.
    pub fn start(
        plan: ControlPlan,
        power: PowerCell,
        busy: Arc<BusyCounters>,
        queues: Vec<Arc<TenantCounters>>,
        clock: RunClock,
        meter_interval: Duration,
    ) -> Result<ControlPlane, String> {
        let shared = Arc::new(ControlShared {
            platform: Mutex::new(plan.platform),
            state: Mutex::new(SharedState::default()),
        });
        let meter = Arc::new(Mutex::new(Meter::new(
            shared.clone(),
            busy,
            queues,
            clock.now(),
        )));
        let (sys_tx, sys_rx) = crossbeam_channel::bounded(1);
        let (sh, me) = (shared.clone(), meter.clone());
        let (source, governor, max_staleness) = (plan.source, plan.governor, plan.max_staleness);
        let planning = plan.planning;
        let thread = std::thread::Builder::new()
            .name("control-plane".into())
            .spawn(move || {
                let runner = actix::System::new();
                runner.block_on(async move {
                    let mut gov = PowerGovernor::new(
                        governor,
                        max_staleness,
                        sh.clone(),
                        power,
                        clock,
                        Duration::from_millis(50),
                    );
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
                            gov.recipient(),
                            clock,
                            Duration::from_millis(50),
                            sh.clone(),
                        )
                        .start();
                    }
                    EnergyMeter::new(me, clock, meter_interval).start();
                    let _ = sys_tx.send(actix::System::current());
                });
                let _ = runner.run();
            })
            .map_err(|e| format!("cannot start the control-plane thread: {e}"))?;
        let system = sys_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "the control plane did not start within 10 s".to_string())?;
        Ok(ControlPlane {
            system,
            thread,
            shared,
            meter,
            source_name: plan.source_name,
            clock,
        })
    }

    /// Stop the actors, account the last partial interval, and report.
    pub fn stop(self) -> ControlOutcome {
        self.system.stop();
        let _ = self.thread.join();
        let mut meter = self.meter.lock().unwrap_or_else(|p| p.into_inner());
        meter.sample(self.clock.now());
        let platform = self.shared.platform().name();
        let s = self.shared.state();
        ControlOutcome {
            report: EnergyReport {
                platform,
                power_measured: meter.measured.unwrap_or(false),
                carbon_source: self.source_name,
                ledger: meter.ledger.clone(),
                cap_changes: s.cap_changes.clone(),
                staleness_events: s.staleness_events,
                notes: s.notes.clone(),
            },
            timeline: std::mem::take(&mut meter.timeline),
        }
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
