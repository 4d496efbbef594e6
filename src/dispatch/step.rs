//! The dispatch step: a pure state machine that decides, each time an
//! execution unit is free, what it runs next.
//!
//! Everything the EDF dispatcher decides lives here, with time passed in:
//! the runtime (`ecomap_actors::edf_dispatcher`, which adds channels, the
//! clock and a lock) and the simulator ([`crate::sim`]) drive the very same
//! code. One [`DispatchCore::step`] on behalf of free unit `u`:
//! 1. records `u`'s finished job (for the quality controller), or queues the
//!    request `u` was woken with;
//! 2. drops (as `expired`) every queued request whose deadline has come
//!    (`deadline <= now`) — it can no longer finish in time, so it must not
//!    start;
//! 3. pops the earliest-deadline request `u` can serve and chooses its model
//!    variant (quality controller); with feasibility shedding on for its
//!    tenant, a request whose predicted finish (now + the variant's recent
//!    service at the unit's current speed) is past its deadline is dropped
//!    as `shed` instead, and the next one considered — serving it would
//!    only make the requests behind it late too (Clockwork's lesson);
//! 4. lists every *other* idle unit that now has work (or must notice that
//!    every tenant closed), so the caller wakes it;
//! 5. tells `u` to run the job, wait, or exit (every tenant closed and
//!    nothing left that `u` can serve).
//!
//! The step performs no I/O: expiries and wake-ups are returned in
//! [`StepEffects`] for the caller to carry out — in the runtime after the
//! dispatcher's lock is dropped, so no thread ever blocks on a channel while
//! holding it.
//!
//! ```
//! use ecomap::dispatch::{DispatchCore, Next, QueueOrder, StepEffects, StepEvent};
//! use ecomap::request::{Request, TenantId};
//! use ecomap::time::Timestamp;
//! use std::time::Duration;
//!
//! // One tenant, one unit that serves it.
//! let mut core = DispatchCore::new(QueueOrder::EarliestDeadline, 1, vec![vec![true]]);
//! let mut fx = StepEffects::default();
//! let now = Timestamp::ZERO;
//! assert!(matches!(core.step(0, StepEvent::Woke, now, &mut fx), Next::Wait));
//! let r = Request::new(0, TenantId(0), now, Duration::from_millis(33), 0);
//! match core.step(0, StepEvent::Received(r), now, &mut fx) {
//!     Next::Run(job) => assert_eq!(job.request.id, 0),
//!     other => panic!("expected a job, got {other:?}"),
//! }
//! ```

use super::queue::{DispatchQueue, QueueOrder};
use crate::quality::{QualityController, ServiceEstimate, Swap};
use crate::request::Request;
use crate::time::Timestamp;
use std::time::Duration;

/// A request handed to a unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Job {
    /// The request.
    pub request: Request,
    /// When the step handed it over.
    pub dispatched: Timestamp,
    /// The unit's slowdown at the current power mode (≥ 1; 1 at full speed).
    /// The emulated platform stretches the pass by it; the quality
    /// controller divides it out of measured service times.
    pub throttle: f64,
    /// Which variant of the tenant's family to run (0 = heaviest).
    pub variant: usize,
    /// How much longer than on the fastest unit holding its tenant the
    /// variant runs on this unit at the same mode (≥ 1; 1 where every
    /// unit is alike). Not a stretch the worker applies — the unit is
    /// simply that slow — but divided out of the measured service with
    /// the throttle, so one estimate serves every unit.
    pub unit_cost: f64,
}

/// What a unit reports about the job it just finished.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobDone {
    /// Tenant of the request it finished.
    pub tenant: usize,
    /// Variant that served it.
    pub variant: usize,
    /// Its service time (throttle included).
    pub service: Duration,
    /// The throttle it ran under.
    pub throttle: f64,
    /// The job's [`Job::unit_cost`].
    pub unit_cost: f64,
    /// Whether it finished after its deadline or failed
    /// ([`crate::request::Outcome::is_miss`]).
    pub missed: bool,
    /// Whether the pass produced outputs (a failed one's time is not
    /// recorded as the model's service time).
    pub served: bool,
}

/// Why a unit runs a dispatch step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepEvent {
    /// It starts serving, or was woken (doorbell), or a queue closed.
    Woke,
    /// It finished a job and is free.
    Finished(JobDone),
    /// It was woken by (and took) this admitted request.
    Received(Request),
}

/// What the unit does after a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Run this job.
    Run(Job),
    /// Nothing for it: sleep until a request or a wake-up arrives.
    Wait,
    /// Every tenant is closed and nothing is left for it: end.
    Exit,
}

/// Side effects of a step, for the caller to carry out. Reuse one value
/// across steps: the step clears it first, so it allocates only while the
/// buffers grow.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StepEffects {
    /// Requests dropped because their deadline passed before they started.
    pub expired: Vec<Request>,
    /// Requests dropped because they were predicted to finish too late.
    pub shed: Vec<Request>,
    /// Other idle units to wake: they have work, or must notice the end.
    pub wake: Vec<usize>,
    /// Requests of a tenant whose every unit holding its models is out for
    /// good ([`DispatchCore::unit_retired`]): none can ever start, so they
    /// end (failed) now rather than wait for the run's end.
    pub unservable: Vec<Request>,
}

impl StepEffects {
    fn clear(&mut self) {
        self.expired.clear();
        self.shed.clear();
        self.wake.clear();
        self.unservable.clear();
    }
}

/// Counts kept by the step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DispatchStats {
    /// Requests handed to units.
    pub dispatched: u64,
    /// Requests dropped because their deadline passed before they started.
    pub expired: u64,
    /// Requests shed: predicted to finish past their deadline.
    pub shed: u64,
    /// Steps run.
    pub steps: u64,
    /// Wake-ups asked for (another unit woken by a step).
    pub wakes: u64,
    /// Largest number of requests queued at once.
    pub max_queued: usize,
    /// Requests ended because no unit holding their model was left
    /// ([`StepEffects::unservable`]).
    pub unservable: u64,
    /// Model swaps decided, in order.
    pub swaps: Vec<Swap>,
}

#[derive(Debug, Clone)]
struct UnitSlot {
    /// `serves[t]`: whether the unit takes tenant `t`'s requests now.
    serves: Vec<bool>,
    /// `holds[t]`: whether the unit holds tenant `t`'s models (as built;
    /// a remap only moves a tenant among the units that hold it).
    holds: Vec<bool>,
    /// Waiting for work (it ran a step that gave it none, or has not yet
    /// taken the job its last step was about to give it).
    idle: bool,
    /// Exited or lost; never picked again (until restored, if lost).
    gone: bool,
    /// Lost (its thread died), as opposed to exited: it may be restored.
    lost: bool,
    /// Lost for good: it will not be restored.
    retired: bool,
    /// Slowdown at the current power mode.
    throttle: f64,
    /// `cost[t][v]`: tenant `t`'s variant `v` here relative to the fastest
    /// unit that holds the tenant (missing: 1).
    cost: Vec<Vec<f64>>,
}

impl UnitSlot {
    fn cost(&self, t: usize, v: usize) -> f64 {
        self.cost
            .get(t)
            .and_then(|c| c.get(v))
            .copied()
            .unwrap_or(1.0)
    }

    /// How much slower than the full-speed estimate tenant `t`'s variant
    /// `v` runs here now.
    fn scale(&self, t: usize, v: usize) -> f64 {
        self.throttle.max(1.0) * self.cost(t, v)
    }
}

/// The dispatcher's state: the deadline heap, per-tenant counts, the units'
/// idle set and the quality controller.
#[derive(Debug)]
pub struct DispatchCore {
    queue: DispatchQueue,
    /// `queued[t]`: tenant `t`'s requests in the heap.
    queued: Vec<usize>,
    open: Vec<bool>,
    open_count: usize,
    units: Vec<UnitSlot>,
    quality: Option<QualityController>,
    /// `shed[t]`: whether tenant `t`'s hopeless requests are shed.
    shed: Vec<bool>,
    /// `service[t][v]`: full-speed service estimate of tenant `t`'s variant
    /// `v`, for shedding (kept whether or not a quality controller runs).
    service: Vec<Vec<ServiceEstimate>>,
    /// `orphaned[t]`: every unit holding tenant `t`'s models is out for good.
    orphaned: Vec<bool>,
    /// Whether any tenant is orphaned (the step's check, kept cheap).
    any_orphaned: bool,
    stats: DispatchStats,
}

/// Recent samples kept per variant for the shedding estimate.
const SHED_WINDOW: usize = 20;
/// Weight of a new sample in the shedding estimate's moving average.
const SHED_ALPHA: f64 = 0.2;
/// The estimate's tail: a request is shed when even a typical-to-slow pass
/// (max of the moving average and this percentile) cannot make it.
const SHED_QUANTILE: f64 = 0.5;

impl DispatchCore {
    /// A core for `tenants` tenants and one unit per entry of `serves`
    /// (`serves[u][t]`: unit `u` holds tenant `t`'s model). Units start
    /// neither idle nor busy: each runs a [`StepEvent::Woke`] step first.
    pub fn new(order: QueueOrder, tenants: usize, serves: Vec<Vec<bool>>) -> Self {
        debug_assert!(serves.iter().all(|s| s.len() == tenants));
        DispatchCore {
            queue: DispatchQueue::with_capacity(order, 64),
            queued: vec![0; tenants],
            open: vec![true; tenants],
            open_count: tenants,
            units: serves
                .into_iter()
                .map(|serves| UnitSlot {
                    holds: serves.clone(),
                    serves,
                    idle: false,
                    gone: false,
                    lost: false,
                    retired: false,
                    throttle: 1.0,
                    cost: Vec::new(),
                })
                .collect(),
            quality: None,
            shed: vec![false; tenants],
            service: vec![Vec::new(); tenants],
            orphaned: vec![false; tenants],
            any_orphaned: false,
            stats: DispatchStats::default(),
        }
    }

    /// Shed the hopeless requests of the tenants marked in `mask` (one
    /// entry per tenant).
    pub fn set_shedding(&mut self, mask: Vec<bool>) {
        debug_assert_eq!(mask.len(), self.shed.len());
        self.shed = mask;
    }

    /// Seed the shedding estimate of tenant `t`'s variant `v` with a
    /// full-speed service time (e.g. a warm-up pass, or the device model).
    pub fn seed_service(&mut self, t: usize, v: usize, full_speed: Duration) {
        self.record_service(t, v, full_speed.as_secs_f64());
    }

    fn record_service(&mut self, t: usize, v: usize, secs: f64) {
        let per_variant = &mut self.service[t];
        if per_variant.len() <= v {
            per_variant.resize_with(v + 1, ServiceEstimate::default);
        }
        per_variant[v].record(secs, SHED_ALPHA, SHED_WINDOW);
    }

    /// Pick each request's model variant with `controller` from now on.
    pub fn set_quality(&mut self, controller: QualityController) {
        self.quality = Some(controller);
    }

    /// The quality controller, if any.
    pub fn quality(&self) -> Option<&QualityController> {
        self.quality.as_ref()
    }

    /// The quality controller, mutably (e.g. to pin variants from a plan).
    pub fn quality_mut(&mut self) -> Option<&mut QualityController> {
        self.quality.as_mut()
    }

    /// Set unit `u`'s slowdown at the power mode now in force (≥ 1).
    pub fn set_throttle(&mut self, u: usize, throttle: f64) {
        debug_assert!(throttle.is_finite() && throttle > 0.0);
        self.units[u].throttle = throttle;
    }

    /// Set unit `u`'s cost of running tenant `t`'s variants, relative to
    /// the fastest unit that holds the tenant at the same mode
    /// (`relative[v] ≥ 1`; unset, 1: every unit alike). Service estimates
    /// are kept at the fastest unit's full speed, so a tenant moved between
    /// a GPU and a DLA core is predicted right from its first request
    /// there.
    pub fn set_relative_cost(&mut self, u: usize, t: usize, relative: Vec<f64>) {
        debug_assert!(relative.iter().all(|c| c.is_finite() && *c >= 1.0));
        let cost = &mut self.units[u].cost;
        if cost.len() <= t {
            cost.resize_with(t + 1, Vec::new);
        }
        cost[t] = relative;
    }

    /// Set every unit's slowdown (a device whose units all slow alike).
    pub fn set_throttle_all(&mut self, throttle: f64) {
        for u in 0..self.units.len() {
            self.set_throttle(u, throttle);
        }
    }

    /// Counts so far.
    pub fn stats(&self) -> &DispatchStats {
        &self.stats
    }

    /// Whether unit `u` is idle (waiting for work).
    pub fn is_idle(&self, u: usize) -> bool {
        self.units[u].idle
    }

    /// Whether unit `u` holds tenant `t`'s model and is still serving.
    pub fn serves(&self, u: usize, t: usize) -> bool {
        let unit = &self.units[u];
        !unit.gone && unit.serves[t]
    }

    /// Tenant `t`'s requests queued in the heap.
    pub fn queued(&self, t: usize) -> usize {
        self.queued[t]
    }

    /// The first idle unit that serves tenant `t`, if any: the one to hand a
    /// newly admitted request of `t` to.
    pub fn idle_unit_for(&self, t: usize) -> Option<usize> {
        self.units
            .iter()
            .position(|u| u.idle && !u.gone && u.serves[t])
    }

    /// Queue an admitted request (one that was not handed to a unit
    /// directly). A request released before its tenant closed may arrive
    /// after [`DispatchCore::close`] (a unit took it from the channel while
    /// another saw the channel close): it is served like any other.
    pub fn admit(&mut self, r: Request) {
        let t = r.tenant.index();
        self.queued[t] += 1;
        self.queue.push(r);
        self.stats.max_queued = self.stats.max_queued.max(self.queue.len());
    }

    /// Tenant `t` will submit nothing more.
    pub fn close(&mut self, t: usize) {
        if std::mem::replace(&mut self.open[t], false) {
            self.open_count -= 1;
        }
    }

    /// Whether every tenant is closed.
    pub fn all_closed(&self) -> bool {
        self.open_count == 0
    }

    /// One dispatch step on behalf of free unit `u` at `now` (see the module
    /// documentation). Expiries and wake-ups land in `fx`.
    pub fn step(
        &mut self,
        u: usize,
        event: StepEvent,
        now: Timestamp,
        fx: &mut StepEffects,
    ) -> Next {
        debug_assert!(
            !self.units[u].gone,
            "a unit that exited or was lost never steps"
        );
        fx.clear();
        self.stats.steps += 1;
        match event {
            StepEvent::Woke => {}
            StepEvent::Finished(done) => {
                debug_assert!(!self.units[u].idle, "only a busy unit finishes a job");
                debug_assert!(done.unit_cost.is_finite() && done.unit_cost >= 1.0);
                let scale = done.throttle.max(1.0) * done.unit_cost;
                // A failed pass is a miss, but its time (a backend that
                // gave up at once) is no estimate of the model's.
                if done.served {
                    self.record_service(
                        done.tenant,
                        done.variant,
                        done.service.as_secs_f64() / scale,
                    );
                }
                match &mut self.quality {
                    Some(q) if done.served => {
                        q.record(done.tenant, done.variant, done.service, scale, done.missed)
                    }
                    Some(q) => q.record_failure(done.tenant, done.variant),
                    None => {}
                }
            }
            StepEvent::Received(r) => self.admit(r),
        }
        self.units[u].idle = true;
        self.expire(now, fx);
        self.take_unservable(fx);
        let job = self.take_for(u, now, fx);
        if job.is_some() {
            self.units[u].idle = false;
        }
        self.wake_idle_units(u, fx);
        match job {
            Some(job) => Next::Run(job),
            None if self.open_count == 0 && !self.has_work_for(u) => {
                let unit = &mut self.units[u];
                unit.gone = true;
                unit.idle = false;
                // A request another unit already took off a channel of a
                // tenant only this one served must still find a server.
                self.restore_stranded();
                Next::Exit
            }
            None => Next::Wait,
        }
    }

    /// Number of units.
    pub fn units(&self) -> usize {
        self.units.len()
    }

    /// Move tenant `t` to the units `to[u]` says (between requests: a job
    /// already running finishes where it is; queued requests wait for the
    /// new units). `fx.wake` lists the live units that now serve `t`, so an
    /// idle one takes its queued work. Every unit named must hold the
    /// tenant's variants — the caller checks that before planning a move.
    pub fn remap(&mut self, t: usize, to: &[bool], fx: &mut StepEffects) {
        fx.clear();
        debug_assert_eq!(to.len(), self.units.len(), "one flag per unit");
        debug_assert!(
            to.iter()
                .zip(&self.units)
                .any(|(&on, unit)| on && !unit.gone),
            "a remapped tenant keeps at least one live unit, or its requests strand"
        );
        for (u, &on) in to.iter().enumerate() {
            let unit = &mut self.units[u];
            if unit.gone {
                continue;
            }
            // Never onto a unit without the tenant's models.
            unit.serves[t] = on && unit.holds[t];
            if unit.serves[t] {
                // Counted when the caller delivers it, like any wake-up.
                fx.wake.push(u);
            }
        }
        self.restore_stranded();
    }

    /// Apply a plan, between requests: each tenant's planned variant
    /// (given `variants` and a quality controller to hold them; the
    /// controller may step down from it later) and, given `units`, the one
    /// unit `units[t]` names — where that unit holds the tenant's models and
    /// is alive; otherwise the tenant stays where it is. Returns, per
    /// tenant, the unit it now runs on alone (`None`: not moved); `fx.wake`
    /// lists the units that now serve a moved tenant. The runtime's
    /// dispatcher and the simulator apply plans only through here.
    pub fn apply_plan(
        &mut self,
        variants: Option<&[usize]>,
        units: Option<&[usize]>,
        now: Timestamp,
        fx: &mut StepEffects,
    ) -> Vec<Option<usize>> {
        if let (Some(vs), Some(q)) = (variants, self.quality.as_mut()) {
            debug_assert_eq!(vs.len(), self.queued.len(), "one variant per tenant");
            for (t, &v) in vs.iter().enumerate() {
                q.set_active(t, v, now);
            }
        }
        let mut moved = vec![None; self.queued.len()];
        let mut wake = Vec::new();
        if let Some(us) = units {
            debug_assert_eq!(us.len(), self.queued.len(), "one unit per tenant");
            let n = self.units.len();
            for (t, &u) in us.iter().enumerate() {
                // Never onto a unit without the tenant's models, nor a
                // dead one: its requests would strand.
                if !self.units.get(u).is_some_and(|x| x.holds[t] && !x.gone) {
                    continue;
                }
                let to: Vec<bool> = (0..n).map(|w| w == u).collect();
                self.remap(t, &to, fx);
                wake.extend_from_slice(&fx.wake);
                moved[t] = Some(u);
            }
        }
        fx.clear();
        // In tenant order, repeats kept: the simulator turns each into a
        // wake event, and an unchanged sequence keeps its runs identical.
        fx.wake = wake;
        moved
    }

    /// A tenant that no live unit takes any more (a remap onto units that
    /// do not hold it, or its planned units exited or were lost) goes back
    /// to every live unit that holds its models, so no request is stranded.
    /// Called where a unit's set changes (remap, exit, loss), not per step.
    fn restore_stranded(&mut self) {
        for t in 0..self.queued.len() {
            if self.units.iter().any(|u| !u.gone && u.serves[t]) {
                continue;
            }
            for unit in self.units.iter_mut().filter(|u| !u.gone && u.holds[t]) {
                unit.serves[t] = true;
            }
        }
    }

    /// Unit `u` is gone for good (its thread died): never pick it again;
    /// `fx.wake` lists the live units, which may now have to exit.
    pub fn unit_lost(&mut self, u: usize, fx: &mut StepEffects) {
        fx.clear();
        let unit = &mut self.units[u];
        debug_assert!(!unit.gone, "only a live unit is lost");
        unit.gone = true;
        unit.lost = true;
        unit.idle = false;
        unit.serves.iter_mut().for_each(|s| *s = false);
        self.restore_stranded();
        self.push_wake_all(fx);
    }

    /// Lost unit `u` is back (its worker was restarted and reloaded its
    /// models): it serves every tenant it holds again — a planner moves
    /// them at its next plan — and runs a [`StepEvent::Woke`] step next,
    /// which takes the work that waited for it.
    pub fn unit_restored(&mut self, u: usize) {
        let unit = &mut self.units[u];
        debug_assert!(unit.gone && unit.lost, "only a lost unit is restored");
        debug_assert!(!unit.retired, "a unit out for good is not restored");
        unit.gone = false;
        unit.lost = false;
        unit.idle = false;
        unit.serves.clone_from(&unit.holds);
    }

    /// Whether unit `u` was lost and not (yet) restored.
    pub fn is_lost(&self, u: usize) -> bool {
        self.units[u].lost
    }

    /// Lost unit `u` will not be restored (its worker gave up after its
    /// restarts). A tenant no other unit holds is then orphaned: its
    /// queued requests land in `fx.unservable`, and so do any it is sent
    /// later, at the step that admits them.
    pub fn unit_retired(&mut self, u: usize, fx: &mut StepEffects) {
        fx.clear();
        debug_assert!(self.units[u].lost, "only a lost unit is retired");
        self.units[u].retired = true;
        for t in 0..self.orphaned.len() {
            self.orphaned[t] = !self.units.iter().any(|unit| !unit.retired && unit.holds[t]);
        }
        self.any_orphaned = self.orphaned.iter().any(|&o| o);
        self.take_unservable(fx);
    }

    /// Whether every unit holding tenant `t`'s models is out for good.
    pub fn is_orphaned(&self, t: usize) -> bool {
        self.orphaned[t]
    }

    /// Add to `fx.unservable` the queued requests of orphaned tenants (e.g.
    /// just admitted from their channels), as every step does.
    pub fn take_unservable(&mut self, fx: &mut StepEffects) {
        // Cheap on the per-request path: the scan runs only while an
        // orphaned tenant has requests queued.
        if !self.any_orphaned
            || !self
                .orphaned
                .iter()
                .zip(&self.queued)
                .any(|(&o, &n)| o && n > 0)
        {
            return;
        }
        let DispatchCore {
            queue,
            queued,
            orphaned,
            stats,
            ..
        } = self;
        queue.drain_where(
            |r| orphaned[r.tenant.index()],
            |r| {
                let t = r.tenant.index();
                debug_assert!(queued[t] > 0);
                queued[t] -= 1;
                stats.unservable += 1;
                fx.unservable.push(r);
            },
        );
    }

    /// Set `fx` to wake every live unit (e.g. after the tenants closed, so
    /// sleeping units notice).
    pub fn wake_all(&mut self, fx: &mut StepEffects) {
        fx.clear();
        self.push_wake_all(fx);
    }

    fn push_wake_all(&mut self, fx: &mut StepEffects) {
        for i in 0..self.units.len() {
            if !self.units[i].gone {
                fx.wake.push(i);
                self.stats.wakes += 1;
            }
        }
    }

    /// End of the run: whatever is still queued (requests no live unit
    /// could take), and the counts.
    pub fn finish(mut self) -> (Vec<Request>, DispatchStats) {
        let left = self.queue.drain_all();
        if let Some(q) = self.quality.take() {
            self.stats.swaps = q.swaps;
        }
        (left, self.stats)
    }

    fn has_work_for(&self, u: usize) -> bool {
        let unit = &self.units[u];
        !unit.gone
            && self
                .queued
                .iter()
                .zip(&unit.serves)
                .any(|(&n, &served)| served && n > 0)
    }

    fn wake_idle_units(&mut self, caller: usize, fx: &mut StepEffects) {
        for i in 0..self.units.len() {
            let w = &self.units[i];
            if i == caller || !w.idle || w.gone {
                continue;
            }
            if self.open_count == 0 || self.has_work_for(i) {
                fx.wake.push(i);
                self.stats.wakes += 1;
            }
        }
    }

    fn expire(&mut self, now: Timestamp, fx: &mut StepEffects) {
        let DispatchCore {
            queue,
            queued,
            quality,
            stats,
            ..
        } = self;
        queue.drain_expired(now, |r| {
            let t = r.tenant.index();
            if let Some(q) = quality.as_mut() {
                q.record_miss(t, r.release);
            }
            debug_assert!(queued[t] > 0);
            queued[t] -= 1;
            stats.expired += 1;
            fx.expired.push(r);
        });
    }

    /// Pop the earliest-deadline request unit `u` can serve and make it a
    /// job, shedding on the way the ones predicted to finish too late.
    fn take_for(&mut self, u: usize, now: Timestamp, fx: &mut StepEffects) -> Option<Job> {
        loop {
            let serves = &self.units[u].serves;
            let request = self.queue.pop_eligible(|r| serves[r.tenant.index()])?;
            let t = request.tenant.index();
            debug_assert!(self.queued[t] > 0);
            self.queued[t] -= 1;
            let unit = &self.units[u];
            let throttle = unit.throttle;
            // The quality controller may degrade first: shed only what even
            // the variant it chose cannot serve in time.
            let variant = match &mut self.quality {
                Some(q) => q.choose_on(t, now, request.release, request.deadline, |v| {
                    unit.scale(t, v)
                }),
                None => 0,
            };
            let unit_cost = unit.cost(t, variant);
            if self.shed[t] && self.hopeless(&request, variant, unit.scale(t, variant), now) {
                if let Some(q) = &mut self.quality {
                    q.record_miss(t, request.release);
                }
                self.stats.shed += 1;
                fx.shed.push(request);
                continue;
            }
            self.stats.dispatched += 1;
            return Some(Job {
                request,
                dispatched: now,
                throttle,
                variant,
                unit_cost,
            });
        }
    }

    /// Whether `r`, started now as `variant` on a unit `scale` times slower
    /// than full speed, is predicted to finish past its deadline. Unknown
    /// service: not hopeless.
    fn hopeless(&self, r: &Request, variant: usize, scale: f64, now: Timestamp) -> bool {
        let Some(full_speed) = self.service[r.tenant.index()]
            .get(variant)
            .and_then(|e| e.predict(SHED_QUANTILE))
        else {
            return false;
        };
        let finish = now + Duration::from_secs_f64(full_speed * scale);
        finish > r.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::TenantId;

    fn ms(x: u64) -> Timestamp {
        Timestamp::from_nanos(x * 1_000_000)
    }

    fn req(id: u64, tenant: u16, release_ms: u64, deadline_ms: u64) -> Request {
        Request::new(
            id,
            TenantId(tenant),
            ms(release_ms),
            Duration::from_millis(deadline_ms),
            0,
        )
    }

    fn done(tenant: usize) -> StepEvent {
        StepEvent::Finished(JobDone {
            tenant,
            variant: 0,
            service: Duration::from_millis(1),
            throttle: 1.0,
            unit_cost: 1.0,
            missed: false,
            served: true,
        })
    }

    fn run(next: Next) -> Job {
        match next {
            Next::Run(j) => j,
            other => panic!("expected a job, got {other:?}"),
        }
    }

    #[test]
    fn a_free_unit_takes_the_earliest_deadline_and_exits_when_all_close() {
        let mut c = DispatchCore::new(QueueOrder::EarliestDeadline, 2, vec![vec![true, true]]);
        let mut fx = StepEffects::default();
        assert_eq!(c.step(0, StepEvent::Woke, ms(0), &mut fx), Next::Wait);
        assert!(c.is_idle(0));
        assert_eq!(c.idle_unit_for(1), Some(0));
        let j = run(c.step(0, StepEvent::Received(req(1, 0, 0, 500)), ms(0), &mut fx));
        assert_eq!(j.request.id, 1);
        assert!(!c.is_idle(0));
        // Queued while busy: the later, shorter deadline goes first.
        c.admit(req(2, 0, 1, 500));
        c.admit(req(3, 1, 2, 50));
        assert_eq!(run(c.step(0, done(0), ms(3), &mut fx)).request.id, 3);
        assert_eq!(run(c.step(0, done(1), ms(4), &mut fx)).request.id, 2);
        assert_eq!(c.step(0, done(0), ms(5), &mut fx), Next::Wait);
        c.close(0);
        assert_eq!(c.step(0, StepEvent::Woke, ms(6), &mut fx), Next::Wait);
        c.close(1);
        c.close(1); // idempotent
        assert!(c.all_closed());
        assert_eq!(c.step(0, StepEvent::Woke, ms(7), &mut fx), Next::Exit);
        let (left, stats) = c.finish();
        assert!(left.is_empty());
        assert_eq!((stats.dispatched, stats.expired, stats.steps), (3, 0, 7));
    }

    #[test]
    fn requests_past_their_deadline_expire_instead_of_starting() {
        let mut c = DispatchCore::new(QueueOrder::EarliestDeadline, 1, vec![vec![true]]);
        let mut fx = StepEffects::default();
        run(c.step(0, StepEvent::Received(req(1, 0, 0, 10)), ms(0), &mut fx));
        c.admit(req(2, 0, 1, 5)); // deadline 6 ms
        c.admit(req(3, 0, 2, 50)); // deadline 52 ms
        let j = run(c.step(0, done(0), ms(6), &mut fx));
        assert_eq!(j.request.id, 3, "the expired request never starts");
        assert_eq!(fx.expired.iter().map(|r| r.id).collect::<Vec<_>>(), vec![2]);
        assert_eq!(c.stats().expired, 1);
        assert_eq!(c.queued(0), 0);
        // The effects are cleared by the next step.
        assert_eq!(c.step(0, done(0), ms(7), &mut fx), Next::Wait);
        assert!(fx.expired.is_empty());
    }

    #[test]
    fn only_a_unit_holding_the_model_gets_a_request_and_idle_ones_are_woken() {
        // Unit 0 serves tenant a only, unit 1 tenant b only.
        let mut c = DispatchCore::new(
            QueueOrder::EarliestDeadline,
            2,
            vec![vec![true, false], vec![false, true]],
        );
        let mut fx = StepEffects::default();
        assert_eq!(c.step(0, StepEvent::Woke, ms(0), &mut fx), Next::Wait);
        let j = run(c.step(1, StepEvent::Received(req(1, 1, 0, 100)), ms(0), &mut fx));
        assert_eq!(j.request.tenant, TenantId(1));
        // Another b waits for unit 1 even though unit 0 is idle, and unit 0
        // is not woken for it.
        c.admit(req(2, 1, 1, 100));
        assert_eq!(c.step(0, StepEvent::Woke, ms(1), &mut fx), Next::Wait);
        assert!(fx.wake.is_empty());
        assert_eq!(c.idle_unit_for(1), None);
        // An a queued while unit 1 steps: unit 1 takes its b and wakes unit 0.
        c.admit(req(3, 0, 2, 100));
        let j = run(c.step(1, done(1), ms(2), &mut fx));
        assert_eq!(j.request.id, 2);
        assert_eq!(fx.wake, vec![0]);
        assert_eq!(
            run(c.step(0, StepEvent::Woke, ms(2), &mut fx)).request.id,
            3
        );
        assert_eq!(c.stats().wakes, 1);
    }

    #[test]
    fn a_remap_between_requests_loses_nothing() {
        // Both units hold tenant 0; it starts on unit 0 only. Two requests:
        // one running, one queued.
        let mut c = DispatchCore::new(
            QueueOrder::EarliestDeadline,
            1,
            vec![vec![true], vec![true]],
        );
        let mut fx = StepEffects::default();
        c.remap(0, &[true, false], &mut fx);
        assert!(c.serves(0, 0) && !c.serves(1, 0));
        assert_eq!(c.step(1, StepEvent::Woke, ms(0), &mut fx), Next::Wait);
        let j = run(c.step(0, StepEvent::Received(req(1, 0, 0, 100)), ms(0), &mut fx));
        assert_eq!(j.request.id, 1);
        c.admit(req(2, 0, 1, 100));
        // Move it to unit 1: the idle unit 1 is woken and takes the queued
        // request; the running one finishes on unit 0, which then idles.
        c.remap(0, &[false, true], &mut fx);
        assert_eq!(fx.wake, vec![1]);
        assert_eq!(
            run(c.step(1, StepEvent::Woke, ms(1), &mut fx)).request.id,
            2
        );
        assert_eq!(c.step(0, done(0), ms(2), &mut fx), Next::Wait);
        assert!(!c.serves(0, 0) && c.serves(1, 0));
        c.admit(req(3, 0, 3, 100));
        assert_eq!(c.step(0, StepEvent::Woke, ms(3), &mut fx), Next::Wait);
        assert_eq!(run(c.step(1, done(0), ms(4), &mut fx)).request.id, 3);
        assert_eq!(c.stats().dispatched, 3);
        c.close(0);
        assert_eq!(c.step(1, done(0), ms(5), &mut fx), Next::Exit);
        let (left, _) = c.finish();
        assert!(left.is_empty());
    }

    #[test]
    fn a_plan_moves_each_tenant_only_onto_a_live_unit_that_holds_it() {
        // Three units. Tenant 0 is held by units 0 and 1, tenant 1 by all
        // three, tenant 2 by unit 2 only; unit 1 is lost.
        let mut c = DispatchCore::new(
            QueueOrder::EarliestDeadline,
            3,
            vec![
                vec![true, true, false],
                vec![true, true, false],
                vec![false, true, true],
            ],
        );
        let mut fx = StepEffects::default();
        c.unit_lost(1, &mut fx);
        // Tenant 0 planned onto the lost unit 1, tenant 1 onto unit 2,
        // tenant 2 onto unit 0, which does not hold it.
        let moved = c.apply_plan(None, Some(&[1, 2, 0]), ms(0), &mut fx);
        assert_eq!(moved, vec![None, Some(2), None]);
        assert!(c.serves(0, 0), "tenant 0 stays where it was");
        assert!(
            !c.serves(0, 1) && c.serves(2, 1),
            "tenant 1 moved alone to unit 2"
        );
        assert!(
            c.serves(2, 2) && !c.serves(0, 2),
            "tenant 2 stays on unit 2"
        );
        assert_eq!(fx.wake, vec![2]);
    }

    #[test]
    fn a_request_left_by_a_remap_is_served_by_a_unit_that_holds_the_model() {
        // Both units hold tenant 0; it is moved to unit 1, which then exits
        // (all tenants closed, nothing for it). A request unit 0 had already
        // taken off the tenant's channel is queued afterwards: unit 0 serves
        // it rather than leave it stranded.
        let mut c = DispatchCore::new(
            QueueOrder::EarliestDeadline,
            1,
            vec![vec![true], vec![true]],
        );
        let mut fx = StepEffects::default();
        c.remap(0, &[false, true], &mut fx);
        assert!(!c.serves(0, 0));
        c.close(0);
        assert_eq!(c.step(1, StepEvent::Woke, ms(0), &mut fx), Next::Exit);
        let j = run(c.step(0, StepEvent::Received(req(7, 0, 0, 100)), ms(1), &mut fx));
        assert_eq!(j.request.id, 7);
        assert_eq!(c.step(0, done(0), ms(2), &mut fx), Next::Exit);
        // And a remap onto a unit without the model is refused.
        let mut c = DispatchCore::new(
            QueueOrder::EarliestDeadline,
            1,
            vec![vec![true], vec![false]],
        );
        c.remap(0, &[false, true], &mut fx);
        assert!(!c.serves(1, 0));
        assert!(c.serves(0, 0), "never left with no unit at all");
    }

    #[test]
    fn a_lost_unit_is_never_picked_and_its_leftovers_are_returned() {
        let mut c = DispatchCore::new(
            QueueOrder::EarliestDeadline,
            2,
            vec![vec![true, false], vec![false, true]],
        );
        let mut fx = StepEffects::default();
        assert_eq!(c.step(0, StepEvent::Woke, ms(0), &mut fx), Next::Wait);
        run(c.step(1, StepEvent::Received(req(1, 1, 0, 100)), ms(0), &mut fx));
        c.admit(req(2, 1, 1, 100));
        c.unit_lost(1, &mut fx);
        assert_eq!(fx.wake, vec![0]);
        assert!(!c.serves(1, 1));
        c.close(0);
        c.close(1);
        // Unit 0 cannot serve b: it exits, and b's request is left over.
        assert_eq!(c.step(0, StepEvent::Woke, ms(2), &mut fx), Next::Exit);
        let (left, _) = c.finish();
        assert_eq!(left.iter().map(|r| r.id).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn a_tenant_whose_every_holder_is_out_for_good_ends_its_requests_as_unservable() {
        let mut c = DispatchCore::new(
            QueueOrder::EarliestDeadline,
            2,
            vec![vec![true, false], vec![false, true]],
        );
        let mut fx = StepEffects::default();
        assert_eq!(c.step(0, StepEvent::Woke, ms(0), &mut fx), Next::Wait);
        assert_eq!(c.step(1, StepEvent::Woke, ms(0), &mut fx), Next::Wait);
        c.unit_lost(1, &mut fx);
        c.admit(req(1, 1, 0, 100));
        c.admit(req(2, 1, 0, 50));
        c.admit(req(3, 0, 0, 100));
        // Lost, maybe coming back: tenant 1's requests wait for it.
        assert!(!c.is_orphaned(1));
        run(c.step(0, StepEvent::Woke, ms(1), &mut fx));
        assert!(fx.unservable.is_empty());
        // Out for good: they end now, in deadline order; tenant 0 is not
        // touched.
        c.unit_retired(1, &mut fx);
        assert!(c.is_orphaned(1) && !c.is_orphaned(0));
        let ids: Vec<u64> = fx.unservable.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![2, 1]);
        assert_eq!((c.queued(1), c.stats().unservable), (0, 2));
        // One admitted later ends at the next step.
        c.admit(req(4, 1, 2, 100));
        c.admit(req(5, 0, 2, 100));
        let job = run(c.step(0, StepEvent::Woke, ms(2), &mut fx));
        assert_eq!(job.request.id, 5);
        assert_eq!(
            fx.unservable.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![4]
        );
        assert_eq!(c.stats().unservable, 3);
    }

    #[test]
    fn a_restored_unit_serves_what_waited_for_it() {
        let mut c = DispatchCore::new(
            QueueOrder::EarliestDeadline,
            2,
            vec![vec![true, true], vec![false, true]],
        );
        let mut fx = StepEffects::default();
        assert_eq!(c.step(0, StepEvent::Woke, ms(0), &mut fx), Next::Wait);
        assert_eq!(c.step(1, StepEvent::Woke, ms(0), &mut fx), Next::Wait);
        c.unit_lost(0, &mut fx);
        assert!(c.is_lost(0));
        // Tenant 0 has no other holder: its request waits; tenant 1's goes
        // to unit 1 meanwhile.
        c.admit(req(1, 0, 0, 100));
        c.admit(req(2, 1, 0, 100));
        let job = run(c.step(1, StepEvent::Woke, ms(1), &mut fx));
        assert_eq!(job.request.id, 2);
        c.unit_restored(0);
        assert!(!c.is_lost(0));
        assert!(c.serves(0, 0) && c.serves(0, 1));
        let job = run(c.step(0, StepEvent::Woke, ms(2), &mut fx));
        assert_eq!(job.request.id, 1);
    }

    #[test]
    fn closing_wakes_idle_units_so_they_can_exit() {
        let mut c = DispatchCore::new(
            QueueOrder::EarliestDeadline,
            1,
            vec![vec![true], vec![true]],
        );
        let mut fx = StepEffects::default();
        assert_eq!(c.step(0, StepEvent::Woke, ms(0), &mut fx), Next::Wait);
        assert_eq!(c.step(1, StepEvent::Woke, ms(0), &mut fx), Next::Wait);
        c.close(0);
        assert_eq!(c.step(1, StepEvent::Woke, ms(1), &mut fx), Next::Exit);
        assert_eq!(fx.wake, vec![0], "the other idle unit must notice the end");
        assert_eq!(c.step(0, StepEvent::Woke, ms(1), &mut fx), Next::Exit);
    }

    #[test]
    fn the_job_carries_the_units_throttle() {
        let mut c = DispatchCore::new(
            QueueOrder::EarliestDeadline,
            1,
            vec![vec![true], vec![true]],
        );
        c.set_throttle(1, 2.5);
        let mut fx = StepEffects::default();
        let j = run(c.step(1, StepEvent::Received(req(1, 0, 0, 100)), ms(0), &mut fx));
        assert_eq!(j.throttle, 2.5);
        c.set_throttle_all(1.0);
        c.admit(req(2, 0, 0, 100));
        let j = run(c.step(1, done(0), ms(1), &mut fx));
        assert_eq!(j.throttle, 1.0);
    }

    #[test]
    fn shedding_drops_what_cannot_finish_in_time_and_serves_the_rest() {
        for shedding in [true, false] {
            let mut c = DispatchCore::new(QueueOrder::EarliestDeadline, 1, vec![vec![true]]);
            c.set_shedding(vec![shedding]);
            c.seed_service(0, 0, Duration::from_millis(10));
            let mut fx = StepEffects::default();
            run(c.step(0, StepEvent::Received(req(1, 0, 0, 100)), ms(0), &mut fx));
            c.admit(req(2, 0, 1, 14)); // deadline 15 ms
            c.admit(req(3, 0, 2, 60)); // deadline 62 ms
                                       // At 10 ms a 10 ms pass would end at 20 > 15: hopeless.
            let j = run(c.step(0, done(0), ms(10), &mut fx));
            if shedding {
                assert_eq!(j.request.id, 3);
                assert_eq!(fx.shed.iter().map(|r| r.id).collect::<Vec<_>>(), vec![2]);
                assert_eq!((c.stats().shed, c.queued(0)), (1, 0));
            } else {
                assert_eq!(j.request.id, 2, "without shedding EDF serves it, late");
                assert!(fx.shed.is_empty());
            }
        }
    }

    #[test]
    fn shedding_follows_the_units_speed_and_waits_for_an_estimate() {
        let mut c = DispatchCore::new(QueueOrder::EarliestDeadline, 1, vec![vec![true]]);
        c.set_shedding(vec![true]);
        let mut fx = StepEffects::default();
        // No estimate yet: nothing is shed.
        run(c.step(0, StepEvent::Received(req(1, 0, 0, 1)), ms(0), &mut fx));
        // The finished pass took 8 ms at throttle 2: 4 ms at full speed.
        c.set_throttle(0, 2.0);
        c.admit(req(2, 0, 8, 9)); // deadline 17 ms; 8 ms at throttle 2 ends at 16
        let done_slow = StepEvent::Finished(JobDone {
            tenant: 0,
            variant: 0,
            service: Duration::from_millis(8),
            throttle: 2.0,
            unit_cost: 1.0,
            missed: true,
            served: true,
        });
        assert_eq!(run(c.step(0, done_slow, ms(8), &mut fx)).request.id, 2);
        // At throttle 3 a pass takes 12 ms: started at 9 ms it would end at
        // 21 ms, past the 19 ms deadline.
        c.set_throttle(0, 3.0);
        c.admit(req(3, 0, 9, 10));
        assert_eq!(c.step(0, done(0), ms(9), &mut fx), Next::Wait);
        assert_eq!(fx.shed.len(), 1);
    }

    #[test]
    fn a_failed_pass_does_not_teach_the_step_how_fast_the_model_is() {
        let mut c = DispatchCore::new(QueueOrder::EarliestDeadline, 1, vec![vec![true]]);
        c.set_shedding(vec![true]);
        let mut fx = StepEffects::default();
        run(c.step(0, StepEvent::Received(req(1, 0, 0, 20)), ms(0), &mut fx));
        c.admit(req(2, 0, 4, 20));
        let served = |service: Duration, served: bool| {
            StepEvent::Finished(JobDone {
                tenant: 0,
                variant: 0,
                service,
                throttle: 1.0,
                unit_cost: 1.0,
                missed: !served,
                served,
            })
        };
        // A real 8 ms pass, then a backend that gives up in a microsecond,
        // many times: the estimate stays at 8 ms.
        run(c.step(0, served(ms(8).since_epoch(), true), ms(8), &mut fx));
        for k in 0..30 {
            c.admit(req(10 + k, 0, 8, 1000));
            run(c.step(0, served(Duration::from_micros(1), false), ms(8), &mut fx));
        }
        // 8 ms cannot fit a 5 ms budget: shed.
        c.admit(req(99, 0, 8, 5));
        assert_eq!(
            c.step(0, served(Duration::from_micros(1), false), ms(8), &mut fx),
            Next::Wait
        );
        assert_eq!(fx.shed.len(), 1, "{fx:?}");
    }

    #[test]
    fn a_tenant_moved_to_a_slower_unit_is_predicted_at_that_units_speed() {
        // Unit 1 (say a DLA core) runs tenant 0's only variant twice as
        // long as unit 0 (the GPU) at the same mode.
        let mut c = DispatchCore::new(QueueOrder::EarliestDeadline, 1, vec![vec![true]; 2]);
        c.set_relative_cost(1, 0, vec![2.0]);
        c.set_shedding(vec![true]);
        let mut fx = StepEffects::default();
        assert_eq!(c.step(1, StepEvent::Woke, ms(0), &mut fx), Next::Wait);
        let j = run(c.step(0, StepEvent::Received(req(1, 0, 0, 10)), ms(0), &mut fx));
        assert_eq!(j.unit_cost, 1.0);
        // 4 ms on the GPU: 4 ms at full speed on the tenant's fastest unit.
        let on_gpu = |service_ms| {
            StepEvent::Finished(JobDone {
                tenant: 0,
                variant: 0,
                service: Duration::from_millis(service_ms),
                throttle: 1.0,
                unit_cost: 1.0,
                missed: false,
                served: true,
            })
        };
        assert_eq!(c.step(0, on_gpu(4), ms(4), &mut fx), Next::Wait);
        c.remap(0, &[false, true], &mut fx);
        // 6 ms left: 4 ms would make it on the GPU, 8 ms on the DLA does not.
        c.admit(req(2, 0, 4, 6));
        assert_eq!(c.step(1, StepEvent::Woke, ms(4), &mut fx), Next::Wait);
        assert_eq!(
            fx.shed.len(),
            1,
            "predicted at the DLA's 8 ms, not the GPU's 4"
        );
        // 10 ms left: it runs there, and says how slow the unit is.
        c.admit(req(3, 0, 5, 10));
        let j = run(c.step(1, StepEvent::Woke, ms(5), &mut fx));
        assert_eq!(j.unit_cost, 2.0);
        // Its 10 ms pass there (throttle 1) is 5 ms at the GPU's speed: back
        // on the GPU, 6 ms left is enough.
        let on_dla = StepEvent::Finished(JobDone {
            tenant: 0,
            variant: 0,
            service: Duration::from_millis(10),
            throttle: 1.0,
            unit_cost: j.unit_cost,
            missed: false,
            served: true,
        });
        assert_eq!(c.step(1, on_dla, ms(15), &mut fx), Next::Wait);
        c.remap(0, &[true, false], &mut fx);
        c.admit(req(4, 0, 15, 6));
        let j = run(c.step(0, StepEvent::Woke, ms(15), &mut fx));
        assert_eq!((j.request.id, j.unit_cost), (4, 1.0));
        assert!(fx.shed.is_empty());
    }

    #[test]
    fn the_quality_controller_degrades_before_anything_is_shed() {
        use crate::quality::QualityPolicy;
        let mut c = DispatchCore::new(QueueOrder::EarliestDeadline, 1, vec![vec![true]]);
        let mut q = QualityController::new(
            QualityPolicy {
                enabled: true,
                miss_rate_threshold: 0.5,
                upgrade_after: Duration::from_secs(10),
                ..QualityPolicy::disabled()
            },
            &[2],
            &[Duration::from_millis(20)],
        );
        q.seed_estimate(0, 0, Duration::from_millis(10));
        q.seed_estimate(0, 1, Duration::from_millis(2));
        c.set_quality(q);
        c.set_shedding(vec![true]);
        c.seed_service(0, 0, Duration::from_millis(10));
        c.seed_service(0, 1, Duration::from_millis(2));
        let mut fx = StepEffects::default();
        // 5 ms left: the heavy variant cannot make it, the light one can.
        let j = run(c.step(0, StepEvent::Received(req(1, 0, 0, 5)), ms(0), &mut fx));
        assert!(fx.shed.is_empty());
        assert_eq!(j.variant, 1, "served by the light variant, not shed");
    }
}
