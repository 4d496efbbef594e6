//! `PowerGovernor` (actix): sets the device's power cap from the grid's
//! carbon intensity.
//!
//! It feeds each [`CarbonReading`] (and, every tick, the reading's growing
//! age) to the core's [`Governor`] rule, applies what it decides through the
//! [`Platform`](crate::platform::Platform) backend — idempotently, logging each change — and tells the
//! data plane the new cap and throttle through a [`PowerCell`] (one atomic
//! word: no channel a real-time worker could spin on). If the platform refuses a cap (e.g. an unwritable sysfs file),
//! the governor says so once and carries on read-only.

use crate::carbon_monitor::CarbonReading;
use crate::clock::RunClock;
use crate::control_plane::ControlShared;
use crate::controlplane::estimator_actor::{EstimatorActor, PlanFor};
use crate::controlplane::planning::RuntimePlanning;
use crate::dataplane::lost_units::LostUnits;
use crate::dataplane::plan_cell::PlanCell;
use crate::dataplane::power_cell::PowerCell;
use crate::energy_meter::Meter;
use crate::platform::AppliedCap;
use actix::prelude::*;
use ecomap::governor::{CapReason, Governor};
use ecomap::planner::{AccuracyLedger, CarbonPricer, Replan, Replanner};
use ecomap::time::Timestamp;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a plan handed to `apply_plan` came from, and the accuracy-weight
/// level it was found at.
#[derive(Debug, Clone, Copy)]
enum Found {
    /// A search at this level (cache it there).
    Searched(u32),
    /// The `Replanner`'s cache, at this level.
    Reused(u32),
}

/// The power governor actor.
pub struct PowerGovernor {
    rule: Option<Governor>,
    max_staleness: Duration,
    /// When the actor started: the grace for a first reading counts from it.
    started_at: Timestamp,
    shared: Arc<ControlShared>,
    latest: Option<CarbonReading>,
    power: PowerCell,
    clock: RunClock,
    tick: Duration,
    read_only: bool,
    planner: Option<GovernorPlanner>,
    faults: crate::faults::FaultInjector,
    /// The energy meter, whose interval closes before each cap change so
    /// that no interval straddles two modes.
    meter: Option<Arc<Mutex<Meter>>>,
}

/// The mapping planner's state inside the governor.
pub struct GovernorPlanner {
    /// The estimator actor that searches.
    pub addr: Addr<EstimatorActor>,
    /// What to plan.
    pub planning: RuntimePlanning,
    /// Where the chosen variants go (read by the dispatcher).
    pub cell: PlanCell,
    pricer: CarbonPricer,
    ledger: Option<AccuracyLedger>,
    replanner: Replanner<ecomap::planner::Plan>,
    in_flight: bool,
    /// Mode, variants and workers of the plan in force.
    in_force: ecomap::planner::PlanInForce<ecomap::planner::Mapping>,
    /// The problem with every worker in; `planning.problem` is it without
    /// the workers out (`planning.lost_units`) as last seen.
    all_units: ecomap::planner::PlanProblem,
    /// `planning.lost_units.changes()` when the problem was last rebuilt.
    lost_seen: u64,
    /// Bumped when the workers out change: an answer to a search asked
    /// before is dropped (it may place a tenant on a worker now out).
    generation: u64,
}

impl GovernorPlanner {
    /// A planner that asks `addr` and publishes variants to `cell`.
    pub fn new(addr: Addr<EstimatorActor>, planning: RuntimePlanning, cell: PlanCell) -> Self {
        GovernorPlanner {
            replanner: Replanner::new(planning.hysteresis_gco2),
            pricer: CarbonPricer::new(planning.carbon_price),
            ledger: planning.mean_accuracy_lost.map(AccuracyLedger::new),
            addr,
            all_units: planning.problem.clone(),
            lost_seen: 0,
            generation: 0,
            planning,
            cell,
            in_flight: false,
            in_force: ecomap::planner::PlanInForce::new(),
        }
    }
}

impl PowerGovernor {
    /// A governor applying `rule` (none: hold the device at its maximum
    /// cap), publishing to the data plane through `power`.
    pub fn new(
        rule: Option<Governor>,
        max_staleness: Duration,
        shared: Arc<ControlShared>,
        power: PowerCell,
        clock: RunClock,
        tick: Duration,
    ) -> Self {
        PowerGovernor {
            rule,
            max_staleness,
            started_at: clock.now(),
            shared,
            latest: None,
            power,
            clock,
            tick,
            read_only: false,
            planner: None,
            faults: crate::faults::FaultInjector::default(),
            meter: None,
        }
    }

    /// Close `meter`'s interval before each cap change.
    pub fn with_meter(mut self, meter: Arc<Mutex<Meter>>) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Fire the control-plane fault of `faults` when it is armed.
    pub fn with_faults(mut self, faults: crate::faults::FaultInjector) -> Self {
        self.faults = faults;
        self
    }

    /// Choose the cap and variants with the mapping planner instead of a
    /// cap rule.
    pub fn with_planner(mut self, planner: GovernorPlanner) -> Self {
        self.planner = Some(planner);
        self
    }

    /// Ask the estimator actor for a plan when the intensity moved past
    /// the hysteresis since the last one, or the mean accuracy budget's
    /// weight level changed (one request in flight at most).
    fn maybe_plan(&mut self, reading: &CarbonReading, ctx: &mut Context<Self>) {
        let Some(p) = &mut self.planner else {
            return;
        };
        // Every reading moves the trailing mean, also while a search is in
        // flight (the simulator's MappingPlanner prices the same way).
        let grid_hours = reading.grid_time.as_secs_f64() / 3600.0;
        let gco2 = p.pricer.price(reading.gco2_per_kwh, grid_hours);
        if let Some(ledger) = &mut p.ledger {
            ledger.advance(grid_hours);
        }
        // A worker died and stays out (or came back): plan around it from
        // now on, and forget the plans found with it in (each may place a
        // tenant there); a search in flight is answered for the old set
        // and dropped.
        let changes = p.planning.lost_units.changes();
        if changes != p.lost_seen {
            let lost = p.planning.lost_units.mask();
            p.lost_seen = changes;
            p.generation += 1;
            p.planning.problem = p.all_units.without_units(|u| LostUnits::is_out(lost, u));
            p.replanner = Replanner::new(p.planning.hysteresis_gco2);
            // The dispatcher re-mapped the tenants itself: the next plan is
            // published even if it is the one in force before.
            p.in_force = ecomap::planner::PlanInForce::new();
            p.in_flight = false;
            tracing::info!("power governor: workers out changed (mask {lost:#b}); re-planning");
        }
        if p.in_flight {
            return;
        }
        // The simulator's decision (ecomap::planner::Replanner): search past
        // the hysteresis or at a new accuracy weight, reuse the plan found
        // for this intensity bucket and weight.
        let level = p.ledger.as_ref().map_or(0, AccuracyLedger::level);
        let options = match &p.ledger {
            Some(ledger) => ledger.weigh(&p.planning.options),
            None => p.planning.options,
        };
        match p.replanner.on_reading(gco2, level) {
            Replan::Keep => return,
            Replan::Reuse(plan) => {
                self.apply_plan(Ok(Ok(plan)), gco2, Found::Reused(level));
                return;
            }
            Replan::Search => {}
        }
        p.in_flight = true;
        // A search takes tens of milliseconds; an answer this late means the
        // estimator thread is starved or gone: give up and retry later.
        let ask = p
            .addr
            .send(PlanFor {
                problem: p.planning.problem.clone(),
                gco2_per_kwh: gco2,
                options,
            })
            .timeout(Duration::from_secs(5));
        let (generation, asked_with) = (p.generation, p.lost_seen);
        ctx.spawn(ask.into_actor(self).map(move |answer, act, _| {
            let Some(p) = act.planner.as_mut() else {
                return;
            };
            if p.generation != generation {
                return; // asked before the workers out changed: dropped
            }
            if p.planning.lost_units.changes() != asked_with {
                // A worker went out (or came back) during the search: the
                // answer may use it; the next reading plans again.
                p.in_flight = false;
                return;
            }
            act.apply_plan(answer, gco2, Found::Searched(level));
        }));
    }

    fn apply_plan(
        &mut self,
        answer: Result<Result<ecomap::planner::Plan, ecomap::planner::PlanError>, MailboxError>,
        gco2: f64,
        found: Found,
    ) {
        let Some(p) = &mut self.planner else {
            return;
        };
        let level = match found {
            Found::Searched(level) => {
                debug_assert!(p.in_flight, "a search's answer ends the one in flight");
                p.in_flight = false;
                level
            }
            Found::Reused(level) => level,
        };
        match answer {
            Ok(Ok(plan)) => {
                if let Found::Searched(level) = found {
                    p.replanner.record(gco2, level, plan.clone());
                }
                let problem = &p.planning.problem;
                let mode = &problem.modes[plan.mapping.mode].name;
                let cap = p.planning.caps_w[plan.mapping.mode];
                let variants: Vec<&str> = problem
                    .tenants
                    .iter()
                    .zip(&plan.mapping.variants)
                    .map(|(t, &v)| t.variants[v].name.as_str())
                    .collect();
                let why = format!(
                    "plan priced at {gco2:.1} gCO2/kWh: {mode}, variants {variants:?} on workers {:?}, predicted {:.2} W, accuracy {:.2}%, mean response {:.1} ms, worst deadline use {:.0}%, {} candidates",
                    plan.mapping.units,
                    plan.predicted.power_w,
                    plan.accuracy,
                    plan.mean_delay_ms,
                    plan.worst_deadline_fraction * 100.0,
                    plan.evaluated
                ) + if plan.within_accuracy_budget {
                    ""
                } else {
                    " (over the accuracy budget: the search found no mapping within it that meets every deadline)"
                } + &match &p.ledger {
                    Some(l) => format!(
                        "; accuracy weight ×{:.2} (mean lost so far {})",
                        1.0 + f64::from(level) * ecomap::planner::WEIGHT_STEP,
                        l.mean_lost()
                            .map_or("—".to_string(), |m| format!("{m:.2} points"))
                    ),
                    None => String::new(),
                };
                if !p.in_force.changes(&plan.mapping) {
                    // The same plan again: leave the quality controller's
                    // adjustments since the last plan in place. (A search
                    // that confirmed it is worth a line; a cache hit is not.)
                    if matches!(found, Found::Searched(_)) {
                        tracing::info!("planner: unchanged — {why}");
                    } else {
                        tracing::debug!("planner: unchanged — {why}");
                    }
                    return;
                }
                tracing::info!("planner: {why}");
                let mapping = crate::dataplane::plan_cell::PlannedMapping {
                    variants: plan.mapping.variants.clone(),
                    units: plan.mapping.units.clone(),
                };
                // The mode first: variants and workers sized for a mode that
                // is not in force would be the wrong plan.
                if !self.apply(cap, why.clone()) {
                    self.shared.note(format!(
                        "planner: not applied (the cap {cap} W was refused) — {why}"
                    ));
                    return;
                }
                if let Some(p) = &mut self.planner {
                    p.cell.publish(&mapping);
                    p.in_force.applied(plan.mapping.clone());
                    if let Some(ledger) = &mut p.ledger {
                        ledger.set_in_force(plan.accuracy_lost);
                    }
                }
                self.shared.note(why);
            }
            Ok(Err(e)) => {
                let msg = format!(
                    "planner, priced at {gco2:.1} gCO2/kWh: {e}; the plan in force is kept"
                );
                tracing::warn!("{msg}");
                self.shared.note(msg);
            }
            Err(e) => {
                // Not the search's verdict: ask again at the next reading.
                p.replanner.retry();
                let msg = format!("planner: the estimator actor did not answer ({e})");
                tracing::warn!("{msg}");
                self.shared.note(msg);
            }
        }
    }

    fn decide(&mut self) {
        let now = self.clock.now();
        let Some(rule) = &mut self.rule else {
            return;
        };
        // Before the first reading, give the source `max_staleness` to
        // answer, counted from the governor's start (the run's clock starts
        // before the models load, which may take longer than that).
        if self.latest.is_none() && now.saturating_since(self.started_at) < self.max_staleness {
            return;
        }
        let sample = self.latest.map(|r| {
            let age = ecomap::governor::reading_age(r.stale, now.saturating_since(r.observed));
            (r.gco2_per_kwh, age)
        });
        let spells = rule.stale_spells();
        let decision = rule.on_sample(now, sample);
        // Every fall back counts, also one to the cap already in force.
        for _ in spells..rule.stale_spells() {
            self.shared.note_staleness();
        }
        if let Some(d) = decision {
            let reason = match d.reason {
                CapReason::Initial => "initial".to_string(),
                CapReason::Intensity(g) => format!("intensity {g:.1} gCO2/kWh"),
                CapReason::Stale => "intensity stale or missing: fallback cap".to_string(),
            };
            self.apply(d.cap_w, reason);
        }
    }

    /// Apply a cap through the platform and tell the data plane; whether
    /// the cap is in force afterwards.
    pub fn apply(&mut self, cap_w: f64, reason: String) -> bool {
        // Read-only after a refused write; and once the watchdog declared
        // the control plane failed, its fallback cap stays.
        if self.read_only || self.shared.has_failed() {
            return false;
        }
        // Idempotent: the cap in force is not applied (or logged) again.
        if self
            .shared
            .platform()
            .current_cap()
            .is_some_and(|a| a.cap_w == cap_w)
        {
            return true;
        }
        // The interval so far is metered at the mode it ran at (the
        // modelled power reads the mode in force, and a sensor's mean would
        // mix the two); the next opens with the new one.
        let now = self.clock.now();
        if let Some(meter) = &self.meter {
            meter.lock().unwrap_or_else(|p| p.into_inner()).sample(now);
        }
        // The cap is set and published to the data plane under the
        // platform's lock, and only while the control plane stands: the
        // watchdog's fallback takes the same lock, so a governor that comes
        // back from a slow write can never publish over the fallback.
        let result = {
            let mut p = self.shared.platform();
            if self.shared.has_failed() {
                return false;
            }
            let result = p.set_cap(cap_w);
            if let Ok(applied) = &result {
                publish(&self.power, applied, p.throttles_workers());
                tracing::info!(
                    "power governor: cap {cap_w} W ({}, slowdown {:.2}) — {reason}",
                    applied.level,
                    applied.slowdown
                );
                // Recorded under the lock too (platform, then state: the
                // order everything takes them in), so the record of the cap
                // in force cannot land after the fallback's.
                self.shared.record_cap(now, applied, reason);
            }
            result
        };
        match result {
            Ok(_) => true,
            Err(e) => {
                let msg = format!(
                    "cannot apply cap {cap_w} W: {e}; the governor continues read-only (power is \
                     still measured, the cap is no longer changed)"
                );
                tracing::warn!("power governor: {msg}");
                self.shared.note(msg);
                self.read_only = true;
                false
            }
        }
    }
}

/// Tell the data plane a cap applied: the cap, and the throttle the
/// workers emulate it with (1 on a device that slows down by itself).
pub(crate) fn publish(power: &PowerCell, applied: &AppliedCap, throttles: bool) {
    let throttle = if throttles {
        applied.slowdown.max(1.0)
    } else {
        1.0
    };
    power.publish(applied.cap_w, throttle);
}

impl Actor for PowerGovernor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.started_at = self.clock.now();
        // Start uncapped; the rule takes over with the first reading.
        let max = self.shared.platform().max_cap_w();
        if max.is_finite() {
            self.apply(max, "start: uncapped".into());
        }
        ctx.run_interval(self.tick, |act, _| {
            // The watchdog's sign of life, and the fault hook.
            act.shared.beat(act.clock.now());
            act.faults.control_plane_hook();
            act.decide();
        });
    }
}

impl Handler<CarbonReading> for PowerGovernor {
    type Result = ();

    fn handle(&mut self, msg: CarbonReading, ctx: &mut Self::Context) {
        self.latest = Some(msg);
        self.shared
            .set_intensity(msg.observed, msg.gco2_per_kwh, msg.stale, msg.observed);
        self.decide();
        if !msg.stale {
            self.maybe_plan(&msg, ctx);
        }
    }
}
