//! Mixed-quality models: when to swap a tenant's model for a lighter
//! variant of the same family, and when to go back.
//!
//! Pure logic, owned by the dispatcher. Per tenant it keeps, for every
//! variant, an estimate of the forward-pass time *at full speed* (service
//! divided by the throttle it ran under and by the unit's cost relative to
//! the tenant's fastest unit, so estimates survive cap changes and moves
//! between units):
//! an exponentially weighted mean and a high percentile of recent samples,
//! the larger of the two used as the prediction. It also keeps the tenant's
//! recent hit/miss record.
//!
//! - **Degrade** one step when the active variant's predicted finish for the
//!   request being dispatched is past its deadline, or the recent miss rate
//!   is above `miss_rate_threshold`.
//! - **Upgrade** one step after `upgrade_after` of continuous slack: the
//!   heavier variant's prediction plus the tenant's usual wait before
//!   dispatch fits within `slack_fraction` of the deadline, and recent misses
//!   are at most half the threshold.
//! - `min_dwell` since the last swap before an upgrade, and the slack
//!   margin, are the hysteresis that stops flapping; degrades never wait. Swaps apply between requests; every swap is recorded
//!   with its reason.

use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

/// The `quality` section of a policy file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QualityPolicy {
    /// Whether swapping is on (false keeps every tenant on its heaviest variant).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Degrade when more than this share of the recent window missed.
    pub miss_rate_threshold: f64,
    /// Recent requests considered for the miss rate and the percentile.
    #[serde(default = "window")]
    pub window: usize,
    /// Weight of a new sample in the moving average (0..1].
    #[serde(default = "alpha")]
    pub ewma_alpha: f64,
    /// Percentile of recent service times used as the tail prediction (0..1).
    #[serde(default = "tail")]
    pub tail_quantile: f64,
    /// Upgrade only when the heavier variant fits in this share of the deadline.
    #[serde(default = "slack")]
    pub slack_fraction: f64,
    /// Continuous slack needed before an upgrade, e.g. "3s".
    #[serde(with = "humantime_serde")]
    pub upgrade_after: Duration,
    /// Least time between two swaps of a tenant, e.g. "500ms".
    #[serde(default, with = "humantime_serde")]
    pub min_dwell: Duration,
}

fn yes() -> bool {
    true
}
fn window() -> usize {
    50
}
fn alpha() -> f64 {
    0.2
}
fn tail() -> f64 {
    0.9
}
fn slack() -> f64 {
    0.6
}

impl QualityPolicy {
    /// Swapping off: every tenant stays on the variant it is set to (by
    /// [`QualityController::set_active`], e.g. from a planner).
    pub fn disabled() -> Self {
        QualityPolicy {
            enabled: false,
            miss_rate_threshold: 1.0,
            window: window(),
            ewma_alpha: alpha(),
            tail_quantile: tail(),
            slack_fraction: slack(),
            upgrade_after: Duration::ZERO,
            min_dwell: Duration::ZERO,
        }
    }

    /// Check the values.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.miss_rate_threshold) {
            return Err(format!(
                "miss_rate_threshold must be in 0..=1, got {}",
                self.miss_rate_threshold
            ));
        }
        if self.window == 0 {
            return Err("window must be at least 1".into());
        }
        if !(self.ewma_alpha > 0.0 && self.ewma_alpha <= 1.0) {
            return Err(format!(
                "ewma_alpha must be in (0, 1], got {}",
                self.ewma_alpha
            ));
        }
        if !(self.tail_quantile > 0.0 && self.tail_quantile < 1.0) {
            return Err(format!(
                "tail_quantile must be in (0, 1), got {}",
                self.tail_quantile
            ));
        }
        if !(self.slack_fraction > 0.0 && self.slack_fraction <= 1.0) {
            return Err(format!(
                "slack_fraction must be in (0, 1], got {}",
                self.slack_fraction
            ));
        }
        Ok(())
    }
}

/// Service-time estimate of one variant, at full speed.
#[derive(Debug, Clone, Default)]
pub struct ServiceEstimate {
    ewma_s: Option<f64>,
    recent: VecDeque<f64>,
    /// (quantile, prediction) computed since the last sample: a dispatch
    /// asks for the same prediction many times between samples, and the
    /// percentile needs a sort.
    cached: std::cell::Cell<Option<(f64, f64)>>,
}

impl ServiceEstimate {
    /// Add a full-speed service sample (seconds).
    pub fn record(&mut self, secs: f64, alpha: f64, window: usize) {
        self.ewma_s = Some(match self.ewma_s {
            None => secs,
            Some(m) => m + alpha * (secs - m),
        });
        if self.recent.len() == window {
            self.recent.pop_front();
        }
        self.recent.push_back(secs);
        self.cached.set(None);
    }

    /// max(EWMA, tail percentile) in seconds, if anything was measured.
    pub fn predict(&self, q: f64) -> Option<f64> {
        let m = self.ewma_s?;
        if let Some((cq, p)) = self.cached.get() {
            if cq == q {
                return Some(p);
            }
        }
        let mut v: Vec<f64> = self.recent.iter().copied().collect();
        let idx = (((v.len() as f64 - 1.0) * q).round() as usize).min(v.len() - 1);
        let (_, nth, _) = v.select_nth_unstable_by(idx, f64::total_cmp);
        let p = m.max(*nth);
        self.cached.set(Some((q, p)));
        Some(p)
    }
}

/// Why a tenant swapped.
#[derive(Debug, Clone, PartialEq)]
pub enum SwapReason {
    /// Predicted finish past the deadline.
    PredictedMiss {
        /// Predicted service (s), throttle and the unit's relative cost included.
        predicted_s: f64,
        /// Time left to the deadline (s).
        budget_s: f64,
    },
    /// Recent miss rate above the threshold.
    MissRate(f64),
    /// Sustained slack.
    Slack,
    /// A planner chose it.
    Planned,
}

/// One recorded swap.
#[derive(Debug, Clone, PartialEq)]
pub struct Swap {
    /// Run time.
    pub at: Timestamp,
    /// Tenant index.
    pub tenant: usize,
    /// Variant index before.
    pub from: usize,
    /// Variant index after.
    pub to: usize,
    /// Why.
    pub reason: SwapReason,
}

/// One tenant's state.
#[derive(Debug, Clone)]
struct TenantQuality {
    active: usize,
    /// The heaviest variant an upgrade may reach: 0, or the variant a
    /// planner chose (its choice weighed carbon, accuracy and delay; an
    /// upgrade past it would spend what the plan decided not to).
    ceiling: usize,
    estimates: Vec<ServiceEstimate>,
    outcomes: VecDeque<bool>,
    last_swap: Option<Timestamp>,
    slack_since: Option<Timestamp>,
    deadline: Duration,
    /// Moving average of how long requests waited before dispatch (s).
    wait_ewma_s: f64,
}

/// The per-tenant variant controller.
#[derive(Debug, Clone)]
pub struct QualityController {
    policy: QualityPolicy,
    tenants: Vec<TenantQuality>,
    /// Every swap so far.
    pub swaps: Vec<Swap>,
}

impl QualityController {
    /// A controller for tenants with `variants[t]` variants and relative
    /// deadlines `deadlines[t]`; everyone starts on variant 0 (the heaviest).
    pub fn new(policy: QualityPolicy, variants: &[usize], deadlines: &[Duration]) -> Self {
        QualityController {
            tenants: variants
                .iter()
                .zip(deadlines)
                .map(|(&n, &d)| TenantQuality {
                    active: 0,
                    ceiling: 0,
                    estimates: vec![ServiceEstimate::default(); n.max(1)],
                    outcomes: VecDeque::new(),
                    last_swap: None,
                    slack_since: None,
                    deadline: d,
                    wait_ewma_s: 0.0,
                })
                .collect(),
            policy,
            swaps: Vec::new(),
        }
    }

    /// Put tenant `t` on variant `v` (a planner's choice), recording the
    /// swap. Until the next plan, `v` is also the heaviest variant the
    /// controller upgrades back to after stepping down for a deadline.
    pub fn set_active(&mut self, t: usize, v: usize, now: Timestamp) {
        let q = &mut self.tenants[t];
        debug_assert!(v < q.estimates.len(), "variant {v} of tenant {t} exists");
        q.ceiling = v;
        if q.active != v {
            self.swap(t, v, now, SwapReason::Planned);
        }
    }

    /// Put tenant `t` on variant `to` and record why.
    fn swap(&mut self, t: usize, to: usize, now: Timestamp, reason: SwapReason) {
        let q = &mut self.tenants[t];
        let from = std::mem::replace(&mut q.active, to);
        q.last_swap = Some(now);
        q.slack_since = None;
        // The new variant starts with a clean record.
        q.outcomes.clear();
        self.swaps.push(Swap {
            at: now,
            tenant: t,
            from,
            to,
            reason,
        });
    }

    /// The variant tenant `t` uses now.
    pub fn active(&self, t: usize) -> usize {
        self.tenants[t].active
    }

    /// Seed variant `v`'s estimate, e.g. from a warm-up pass at load time.
    pub fn seed_estimate(&mut self, t: usize, v: usize, full_speed: Duration) {
        let p = &self.policy;
        if let Some(e) = self.tenants[t].estimates.get_mut(v) {
            e.record(full_speed.as_secs_f64(), p.ewma_alpha, p.window);
        }
    }

    /// Record a finished request of tenant `t` served by variant `v`:
    /// its service time, how much slower than full speed it ran (`scale`:
    /// the throttle, times the unit's relative cost where units differ;
    /// see [`QualityController::choose_on`]), and whether it missed. The
    /// outcome counts toward the miss rate only if `v` is still the active
    /// variant: a job the previous variant started before a swap says
    /// nothing of the new one, which starts with a clean record.
    pub fn record(&mut self, t: usize, v: usize, service: Duration, scale: f64, missed: bool) {
        let p = &self.policy;
        if let Some(e) = self.tenants[t].estimates.get_mut(v) {
            e.record(
                service.as_secs_f64() / scale.max(1.0),
                p.ewma_alpha,
                p.window,
            );
        }
        if v == self.tenants[t].active {
            self.push_outcome(t, missed);
        }
    }

    /// Record a pass of tenant `t` on variant `v` that failed: a miss (if
    /// `v` is active), but no service time — how soon a backend gave up
    /// says nothing of how long the model takes.
    pub fn record_failure(&mut self, t: usize, v: usize) {
        if v == self.tenants[t].active {
            self.push_outcome(t, true);
        }
    }

    /// Count a request released at `released` that never ran (expired, or
    /// shed) as a miss — unless it was released before the last swap: the
    /// backlog the previous variant left says nothing of the new one.
    pub fn record_miss(&mut self, t: usize, released: Timestamp) {
        if self.tenants[t].last_swap.is_none_or(|s| released >= s) {
            self.push_outcome(t, true);
        }
    }

    fn push_outcome(&mut self, t: usize, missed: bool) {
        let w = self.policy.window;
        let q = &mut self.tenants[t];
        if q.outcomes.len() == w {
            q.outcomes.pop_front();
        }
        q.outcomes.push_back(missed);
        debug_assert!(q.outcomes.len() <= w);
    }

    fn miss_rate(&self, t: usize) -> f64 {
        let o = &self.tenants[t].outcomes;
        if o.is_empty() {
            0.0
        } else {
            o.iter().filter(|m| **m).count() as f64 / o.len() as f64
        }
    }

    /// Decide tenant `t`'s variant for a request being dispatched `now`
    /// with absolute deadline `deadline` (the tenant's own: it was released
    /// one tenant deadline before), under `throttle` (the slowdown in
    /// force), on a unit that runs every variant at full speed. Returns the
    /// variant to use.
    pub fn choose(
        &mut self,
        t: usize,
        now: Timestamp,
        deadline: Timestamp,
        throttle: f64,
    ) -> usize {
        let released = deadline - self.tenants[t].deadline;
        self.choose_on(t, now, released, deadline, |_| throttle.max(1.0))
    }

    /// [`QualityController::choose`] on a unit whose speed differs per
    /// variant: `scale(v)` is how much longer than its full-speed estimate
    /// variant `v` takes there (the mode's slowdown times the unit's cost
    /// relative to the fastest unit that holds the tenant; ≥ 1). A DLA core
    /// runs a network about twice as long as the GPU: an estimate learnt on
    /// one unit then predicts the other from the first request on. The
    /// request was `released` then, and must finish by `deadline` (which a
    /// caller may have set tighter than the tenant's).
    pub fn choose_on(
        &mut self,
        t: usize,
        now: Timestamp,
        released: Timestamp,
        deadline: Timestamp,
        scale: impl Fn(usize) -> f64,
    ) -> usize {
        if !self.policy.enabled {
            return self.tenants[t].active;
        }
        if let Some((to, reason)) = self.decide(t, now, released, deadline, scale) {
            self.swap(t, to, now, reason);
        }
        self.tenants[t].active
    }

    /// The swap to make now, if any.
    fn decide(
        &mut self,
        t: usize,
        now: Timestamp,
        released: Timestamp,
        deadline: Timestamp,
        scale: impl Fn(usize) -> f64,
    ) -> Option<(usize, SwapReason)> {
        let miss_rate = self.miss_rate(t);
        let p = &self.policy;
        let q = &mut self.tenants[t];
        let budget = deadline.saturating_since(now).as_secs_f64();
        // Time this request already waited (not the tenant's deadline less
        // the budget: a caller's tighter deadline is no wait).
        let waited = now.saturating_since(released).as_secs_f64();
        q.wait_ewma_s += p.ewma_alpha * (waited - q.wait_ewma_s);
        let predict = |v: usize| {
            q.estimates[v]
                .predict(p.tail_quantile)
                .map(|s| s * scale(v).max(1.0))
        };
        // Degrade? No dwell: stepping down is what keeps deadlines, and it
        // cannot oscillate by itself (only upgrades wait out `min_dwell`).
        if q.active + 1 < q.estimates.len() {
            match predict(q.active) {
                Some(s) if s > budget => {
                    let reason = SwapReason::PredictedMiss {
                        predicted_s: s,
                        budget_s: budget,
                    };
                    return Some((q.active + 1, reason));
                }
                _ if miss_rate > p.miss_rate_threshold => {
                    return Some((q.active + 1, SwapReason::MissRate(miss_rate)));
                }
                _ => {}
            }
        }
        // Upgrade? The heavier variant must fit, after the usual wait, in a
        // fraction of the deadline — the margin that stops flapping — and
        // not be heavier than a plan allows.
        if q.active <= q.ceiling {
            return None;
        }
        let fits = predict(q.active - 1)
            .is_some_and(|s| s + q.wait_ewma_s <= p.slack_fraction * q.deadline.as_secs_f64())
            && miss_rate <= p.miss_rate_threshold / 2.0;
        if !fits {
            q.slack_since = None;
            return None;
        }
        let since = *q.slack_since.get_or_insert(now);
        let dwelt = q
            .last_swap
            .is_none_or(|s| now.saturating_since(s) >= p.min_dwell);
        (now.saturating_since(since) >= p.upgrade_after && dwelt)
            .then_some((q.active - 1, SwapReason::Slack))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> QualityPolicy {
        QualityPolicy {
            enabled: true,
            miss_rate_threshold: 0.05,
            window: 20,
            ewma_alpha: 0.2,
            tail_quantile: 0.9,
            slack_fraction: 0.6,
            upgrade_after: Duration::from_secs(2),
            min_dwell: Duration::from_millis(500),
        }
    }

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_nanos(ms * 1_000_000)
    }

    /// Heavy 60 ms, light 20 ms, deadline 100 ms.
    fn controller(p: QualityPolicy) -> QualityController {
        let mut c = QualityController::new(p, &[2], &[ms(100)]);
        c.seed_estimate(0, 0, ms(60));
        c.seed_estimate(0, 1, ms(20));
        c
    }

    #[test]
    fn degrades_when_the_cap_makes_the_deadline_unreachable_and_recovers_after_slack() {
        let mut c = controller(policy());
        // Full speed: 60 ms fits 100 ms.
        assert_eq!(c.choose(0, at(0), at(100), 1.0), 0);
        // Throttle 2.5 (10 W): 150 ms predicted > 100 ms budget.
        assert_eq!(c.choose(0, at(1000), at(1100), 2.5), 1);
        assert!(matches!(
            c.swaps[0].reason,
            SwapReason::PredictedMiss { .. }
        ));
        // Back at full speed: 60 ms ≤ 0.6 × 100 ms, but only after 2 s of slack.
        let mut t = 1600;
        while t < 3500 {
            assert_eq!(c.choose(0, at(t), at(t + 100), 1.0), 1, "at {t}");
            t += 100;
        }
        assert_eq!(c.choose(0, at(3700), at(3800), 1.0), 0);
        assert_eq!(c.swaps.len(), 2);
        assert_eq!(c.swaps[1].reason, SwapReason::Slack);
    }

    #[test]
    fn a_high_miss_rate_degrades_even_when_predictions_look_fine() {
        let mut c = controller(policy());
        for _ in 0..10 {
            c.record(0, 0, ms(50), 1.0, true);
        }
        assert_eq!(c.choose(0, at(0), at(100), 1.0), 1);
        assert!(matches!(c.swaps[0].reason, SwapReason::MissRate(r) if r == 1.0));
    }

    #[test]
    fn what_the_previous_variant_left_behind_does_not_step_the_new_one_down() {
        // Three variants: 60, 30, 20 ms; deadline 100 ms.
        let mut c = QualityController::new(policy(), &[3], &[ms(100)]);
        for (v, s) in [60, 30, 20].into_iter().enumerate() {
            c.seed_estimate(0, v, ms(s));
        }
        // Throttle 2: the heavy variant's 120 ms misses; step to 1 (60 ms).
        assert_eq!(c.choose(0, at(1000), at(1100), 2.0), 1);
        // A job variant 0 started before the swap finishes late; a request
        // released before the swap expires; one released after it is shed
        // by another path later — only the last is variant 1's doing.
        c.record(0, 0, ms(120), 2.0, true);
        c.record_miss(0, at(900));
        assert_eq!(c.choose(0, at(1010), at(1110), 2.0), 1, "no second step");
        c.record_miss(0, at(1005));
        assert_eq!(
            c.choose(0, at(1020), at(1120), 2.0),
            2,
            "variant 1's own miss counts"
        );
        assert!(matches!(c.swaps[1].reason, SwapReason::MissRate(r) if r == 1.0));
    }

    #[test]
    fn a_callers_tighter_deadline_is_not_taken_for_waiting() {
        let mut c = controller(policy());
        // Released and dispatched at once, due in 70 ms of the tenant's
        // 100: it waited nothing.
        for i in 0..50 {
            c.choose_on(0, at(i * 10), at(i * 10), at(i * 10 + 70), |_| 1.0);
        }
        assert_eq!(c.tenants[0].wait_ewma_s, 0.0);
        // Dispatched 30 ms after release: it waited 30 ms.
        c.choose_on(0, at(1030), at(1000), at(1070), |_| 1.0);
        assert!(c.tenants[0].wait_ewma_s > 0.0);
    }

    #[test]
    fn a_failed_pass_is_a_miss_but_not_a_service_time() {
        let mut c = controller(policy());
        // A backend that gives up in 1 µs, again and again: the 60 ms
        // estimate stays, and the misses step the tenant down.
        for _ in 0..10 {
            c.record_failure(0, 0);
        }
        assert_eq!(c.choose(0, at(0), at(100), 1.0), 1);
        assert!(matches!(c.swaps[0].reason, SwapReason::MissRate(r) if r == 1.0));
        let heavy = c.tenants[0].estimates[0].predict(0.9).unwrap();
        assert!((heavy - 0.060).abs() < 1e-9, "{heavy}");
    }

    #[test]
    fn noisy_latencies_near_the_edge_do_not_flap() {
        let mut c = controller(policy());
        // Cap at 1.6x: heavy predicted ~96 ms of a 100 ms budget: fits, no swap;
        // noise pushes some samples over, the miss rate stays under 5%.
        let mut swaps_seen = 0;
        for i in 0..400u64 {
            let noise = [0u64, 3, 6, 1, 8, 2][(i % 6) as usize];
            let service = ms(55 + noise);
            let missed = i % 40 == 0;
            c.record(0, c.active(0), service.mul_f64(1.6), 1.6, missed);
            c.choose(
                0,
                at(i * 33),
                at(i * 33 + 100),
                if i < 200 { 1.6 } else { 1.0 },
            );
            swaps_seen = c.swaps.len();
        }
        assert!(swaps_seen <= 2, "{:?}", c.swaps);
    }

    #[test]
    fn a_family_of_one_never_degrades_and_disabled_never_swaps() {
        let mut c = QualityController::new(policy(), &[1], &[ms(10)]);
        c.seed_estimate(0, 0, ms(50));
        for _ in 0..30 {
            c.record(0, 0, ms(50), 1.0, true);
        }
        assert_eq!(c.choose(0, at(0), at(10), 3.0), 0);
        assert!(c.swaps.is_empty());
        let mut p = policy();
        p.enabled = false;
        let mut c = controller(p);
        assert_eq!(c.choose(0, at(0), at(100), 5.0), 0);
        assert!(c.swaps.is_empty());
    }

    #[test]
    fn a_planned_variant_is_the_ceiling_of_upgrades() {
        // Three variants: 60, 30, 20 ms; deadline 100 ms; the plan says 1.
        let mut c = QualityController::new(policy(), &[3], &[ms(100)]);
        for (v, s) in [60, 30, 20].into_iter().enumerate() {
            c.seed_estimate(0, v, ms(s));
        }
        c.set_active(0, 1, at(0));
        assert_eq!(
            c.swaps.last().map(|s| s.reason.clone()),
            Some(SwapReason::Planned)
        );
        // Under a heavy throttle it steps down for the deadline…
        assert_eq!(c.choose(0, at(1000), at(1100), 4.0), 2);
        // …and with slack comes back up to the plan's variant, not past it:
        // the heaviest (60 ms) would fit the slack rule too.
        for t in (2000..20_000).step_by(100) {
            c.choose(0, at(t), at(t + 100), 1.0);
        }
        assert_eq!(c.active(0), 1);
        assert_eq!(
            c.swaps.last().map(|s| s.reason.clone()),
            Some(SwapReason::Slack)
        );
        // A plan for the heaviest lifts the ceiling.
        c.set_active(0, 0, at(30_000));
        assert_eq!(c.active(0), 0);
    }

    #[test]
    fn each_variant_is_predicted_at_its_own_cost_on_the_unit() {
        // Heavy 60 ms and light 20 ms at the fastest unit's full speed; on
        // this unit the heavy one runs 2x as long, the light one 1.5x.
        let mut c = controller(policy());
        let scale = |v: usize| [2.0, 1.5][v];
        // 120 ms predicted for the heavy variant > 100 ms: degrade.
        assert_eq!(c.choose_on(0, at(0), at(0), at(100), scale), 1);
        // A 30 ms pass of the light one there is 20 ms at full speed: the
        // estimate stays where it was, and on a full-speed unit the heavy
        // one would have fitted.
        for _ in 0..50 {
            c.record(0, 1, ms(30), scale(1), false);
        }
        let light = c.tenants[0].estimates[1].predict(0.9).unwrap();
        assert!((light - 0.020).abs() < 1e-9, "{light}");
        let mut c = controller(policy());
        assert_eq!(c.choose_on(0, at(0), at(0), at(100), |_| 1.0), 0);
    }

    #[test]
    fn estimates_are_normalised_by_the_throttle() {
        let mut c = controller(policy());
        for _ in 0..50 {
            c.record(0, 0, ms(150), 2.5, false); // 60 ms at full speed
        }
        // At full speed the heavy variant still fits: no swap.
        assert_eq!(c.choose(0, at(0), at(100), 1.0), 0);
        let mut bad = policy();
        bad.window = 0;
        assert!(bad.validate().is_err());
        assert!(policy().validate().is_ok());
    }
}
