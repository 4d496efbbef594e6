//! `EnergyMeter` (actix): turns the device's power into joules and grams.
//!
//! Every interval it reads how long each worker and tenant was busy (the
//! workers' atomic counters), asks the platform for the interval's power
//! (a sensor, or the model fed with the utilisation; a sensor that reads
//! instantaneous power is also polled between reads, see
//! `Platform::poll_power`), takes the intensity and cap in force (the
//! readings the governor received, judged stale by their own age), and
//! records the interval in the core's [`EnergyLedger`] plus one timeline
//! row.

use crate::accelerator_worker::BusyCounters;
use crate::control_plane::ControlShared;
use crate::tenant_queue::TenantCounters;
use actix::prelude::*;
use ecomap::energy::pricing::PricedSpan;
use ecomap::energy::EnergyLedger;
use ecomap::time::Timestamp;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One timeline row (one interval).
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineRow {
    /// Run seconds at the interval's end.
    pub t_s: f64,
    /// Intensity the interval was priced at (gCO2eq/kWh): the time-weighted
    /// mean of the readings in force over its priced part, if any.
    pub gco2_per_kwh: Option<f64>,
    /// Cap in force (watts).
    pub cap_w: f64,
    /// Device level name.
    pub level: String,
    /// Average power over the interval (watts).
    pub power_w: f64,
    /// Share of worker time busy over the interval.
    pub utilisation: f64,
    /// Requests waiting per tenant at the interval's end.
    pub queue_depths: Vec<usize>,
    /// Model variant each tenant is served by at the interval's end.
    pub variants: Vec<usize>,
}

/// The meter's state (shared with the runtime for the final partial interval).
pub struct Meter {
    shared: Arc<ControlShared>,
    busy: Arc<BusyCounters>,
    queues: Vec<Arc<TenantCounters>>,
    last_t: Timestamp,
    last_workers: Vec<Duration>,
    last_tenants: Vec<Duration>,
    /// Busy time counted past an interval's capacity, carried to the next
    /// (a pass ending while the busy time is read may be counted early for
    /// a moment; clamping it would lose that energy).
    busy_carry: Duration,
    /// The run is ending: account what is left, waiting for nothing.
    closing: bool,
    /// The totals.
    pub ledger: EnergyLedger,
    /// One row per interval.
    pub timeline: Vec<TimelineRow>,
    /// Whether power came from a sensor (None until the first reading).
    pub measured: Option<bool>,
    power_errors: u32,
}

impl Meter {
    /// When the meter last sampled (run clock).
    pub fn last_sample(&self) -> Timestamp {
        self.last_t
    }

    /// A meter starting at `start`.
    pub fn new(
        shared: Arc<ControlShared>,
        busy: Arc<BusyCounters>,
        queues: Vec<Arc<TenantCounters>>,
        start: Timestamp,
    ) -> Self {
        let (w, t) = busy.snapshot_at(start);
        let tenants = t.len();
        Meter {
            shared,
            busy,
            queues,
            last_t: start,
            last_workers: w,
            last_tenants: t,
            busy_carry: Duration::ZERO,
            closing: false,
            ledger: EnergyLedger::new(tenants),
            timeline: Vec::new(),
            measured: None,
            power_errors: 0,
        }
    }

    /// Account the interval from the last sample to `now`.
    pub fn sample(&mut self, now: Timestamp) {
        self.sample_with(now, true);
    }

    /// The run's last sample, at `now`: the last interval is accounted
    /// whatever it waits for, and time no good power reading covered (or
    /// that a platform held by a hung governor could not read) is counted
    /// as unmetered.
    pub fn finish(&mut self, now: Timestamp) {
        self.closing = true;
        // Never waits: a hung governor may hold the platform, and the run
        // must still end (what it could not meter is counted below).
        self.try_sample(now);
        let left = now.saturating_since(self.last_t);
        if !left.is_zero() {
            self.ledger.record_unmetered(left);
            self.last_t = now;
        }
    }

    /// [`Meter::sample`] unless someone holds the platform (then nothing
    /// is accounted yet, and the next sample covers the interval): the
    /// watchdog's form, which must never wait on a hung governor.
    /// Whether it sampled.
    pub fn try_sample(&mut self, now: Timestamp) -> bool {
        self.sample_with(now, false)
    }

    /// Take a power sample between reads when the platform wants them
    /// (`Platform::power_poll_interval`), is free, and the next read is
    /// not due within half a poll: the watchdog's form of the meter
    /// actor's poll timer, for when it meters in the actor's place.
    pub fn try_poll(&mut self, now: Timestamp, interval: Duration) {
        if let Some(mut platform) = self.shared.try_platform() {
            let due = platform.power_poll_interval().is_some_and(|every| {
                every < interval && poll_due(now.saturating_since(self.last_t), interval, every)
            });
            if due {
                platform.poll_power();
            }
        }
    }

    fn sample_with(&mut self, now: Timestamp, block: bool) -> bool {
        let dt = now.saturating_since(self.last_t);
        // Nothing yet, or the run's first moments before the first
        // intensity reading (which will price them): the interval stays
        // open.
        if dt.is_zero() || (!self.closing && self.shared.awaits_first_reading(now)) {
            return true;
        }
        let shared = self.shared.clone();
        let Some(mut platform) = (if block {
            Some(shared.platform())
        } else {
            shared.try_platform()
        }) else {
            return false;
        };
        let (w, t) = self.busy.snapshot_at(now);
        let worker_busy: Duration = w
            .iter()
            .zip(&self.last_workers)
            .map(|(a, b)| a.saturating_sub(*b))
            .sum();
        let tenant_busy: Vec<Duration> = t
            .iter()
            .zip(&self.last_tenants)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let capacity = dt.saturating_mul(w.len().max(1) as u32);
        let busy = worker_busy + self.busy_carry;
        let counted = busy.min(capacity);
        let utilisation = counted.as_secs_f64() / capacity.as_secs_f64();
        debug_assert!((0.0..=1.0).contains(&utilisation));
        let reading = platform.read_power(dt, utilisation);
        drop(platform);
        let r = match reading {
            Ok(r) => r,
            // An energy counter that was reset cannot say what the interval
            // drew: it is unmetered (counted, and said in the report), and
            // metering goes on from the counter's new value.
            Err(e @ crate::platform::PlatformError::CounterReset { .. }) => {
                self.ledger.record_unmetered(dt);
                self.shared.note(format!("energy meter: {e}"));
                let _ = self.shared.price_interval(now);
                self.busy_carry = busy - counted;
                self.advance(now, w, t);
                return true;
            }
            Err(e) => {
                // The interval stays open: the next good reading covers it
                // (an energy counter's exactly; a power sensor's at its
                // power then), priced at the readings in force over it.
                self.power_errors += 1;
                if self.power_errors <= 3 {
                    let msg = format!(
                        "power reading failed ({:.1} s since the last good one; the next good \
                         reading covers them): {e}",
                        dt.as_secs_f64()
                    );
                    tracing::warn!("energy meter: {msg}");
                    self.shared.note(msg);
                }
                return true;
            }
        };
        self.busy_carry = busy - counted;
        // Each stretch of the interval is priced at the reading in force
        // over it (a change, or a reading passing its staleness limit,
        // mid-interval splits it); the cap and level are the ones at its
        // end — the governor closes the interval before it changes them.
        let spans = self.shared.price_interval(now);
        let in_force = self.shared.snapshot(now);
        let (cap_w, level) = (in_force.cap_w, in_force.level);
        self.measured = Some(r.measured);
        // A source that has gone down keeps its last reading, the best
        // estimate there is; the ledger counts what it priced so, and the
        // report says so. Before the first reading the report says the
        // carbon total leaves the energy out.
        self.ledger
            .record_spans(r.watts, cap_w, &tenant_busy, &spans);
        self.timeline.push(TimelineRow {
            t_s: now.since_epoch().as_secs_f64(),
            gco2_per_kwh: mean_intensity(&spans),
            cap_w,
            level,
            power_w: r.watts,
            utilisation,
            queue_depths: self.queues.iter().map(|q| q.waiting.held()).collect(),
            variants: self
                .queues
                .iter()
                .map(|q| q.active_variant.load(Ordering::Relaxed))
                .collect(),
        });
        self.advance(now, w, t);
        true
    }

    /// The next interval starts at `now`, from busy totals `w` and `t`.
    fn advance(&mut self, now: Timestamp, w: Vec<Duration>, t: Vec<Duration>) {
        self.last_t = now;
        // Never below an earlier read (see `BusyCounters::snapshot_at`).
        for (last, now) in self.last_workers.iter_mut().zip(w) {
            *last = (*last).max(now);
        }
        for (last, now) in self.last_tenants.iter_mut().zip(t) {
            *last = (*last).max(now);
        }
    }
}

/// The mean intensity over the priced part of an interval, weighted by
/// time (power is one average over the interval, so also by energy): the
/// timeline's intensity, from which the row's carbon is recomputed.
fn mean_intensity(spans: &[PricedSpan]) -> Option<f64> {
    let (weighted, priced) = spans
        .iter()
        .filter_map(|s| Some((s.pricing.gco2_per_kwh()?, s.length.as_secs_f64())))
        .fold((0.0, 0.0), |(w, t), (g, l)| (w + g * l, t + l));
    (priced > 0.0).then(|| weighted / priced)
}

/// The energy meter actor: samples the shared [`Meter`] every interval.
pub struct EnergyMeter {
    meter: Arc<Mutex<Meter>>,
    clock: crate::clock::RunClock,
    interval: Duration,
}

impl EnergyMeter {
    /// An actor sampling `meter` every `interval`.
    pub fn new(
        meter: Arc<Mutex<Meter>>,
        clock: crate::clock::RunClock,
        interval: Duration,
    ) -> Self {
        EnergyMeter {
            meter,
            clock,
            interval,
        }
    }
}

impl Actor for EnergyMeter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A sensor that reads instantaneous power is sampled between the
        // meter's reads too, so an interval is priced at its mean.
        let poll = {
            let m = self.meter.lock().unwrap_or_else(|p| p.into_inner());
            let every = m.shared.platform().power_poll_interval();
            every.filter(|p| *p < self.interval)
        };
        if let Some(every) = poll {
            let interval = self.interval;
            ctx.run_interval(every, move |act, _| {
                let now = act.clock.now();
                let m = act.meter.lock().unwrap_or_else(|p| p.into_inner());
                if poll_due(now.saturating_since(m.last_sample()), interval, every) {
                    m.shared.platform().poll_power();
                }
            });
        }
        ctx.run_interval(self.interval, |act, _| {
            let now = act.clock.now();
            act.meter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sample(now);
        });
    }
}

/// Whether a power poll `since_read` after the meter's last read should
/// sample: not within half a poll of the next read, which takes its own
/// sample at the interval's end. The two timers fire at the same instants
/// (every tenth poll with the read, at 100 ms and 1 s), in either order:
/// without this, a poll just before the read would count that instant
/// twice.
fn poll_due(since_read: Duration, interval: Duration, every: Duration) -> bool {
    since_read + every / 2 < interval
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{AppliedCap, Platform, PlatformError, PowerReading};

    #[test]
    fn a_poll_at_the_reads_instant_is_left_to_the_read() {
        let ms = Duration::from_millis;
        let (interval, every) = (ms(1000), ms(100));
        // Nine polls in between, then the read's own sample: ten in all.
        let due = (1..=10)
            .filter(|k| poll_due(every * *k, interval, every))
            .count();
        assert_eq!(due, 9);
        // A poll right after the read (the other order) opens the next
        // interval.
        assert!(poll_due(Duration::ZERO, interval, every));
        // A late timer, 60 ms before the read, still samples.
        assert!(poll_due(ms(940), interval, every));
    }

    /// A platform drawing 10 W at any load, noting the utilisation it is fed.
    struct TenWatts(Arc<Mutex<Vec<f64>>>);

    impl Platform for TenWatts {
        fn name(&self) -> String {
            "ten watts".into()
        }
        fn set_cap(&mut self, _: f64) -> Result<AppliedCap, PlatformError> {
            unreachable!("the meter never sets a cap")
        }
        fn current_cap(&self) -> Option<&AppliedCap> {
            None
        }
        fn read_power(&mut self, _: Duration, u: f64) -> Result<PowerReading, PlatformError> {
            self.0.lock().unwrap().push(u);
            Ok(PowerReading {
                watts: 10.0,
                measured: true,
            })
        }
        fn max_cap_w(&self) -> f64 {
            f64::INFINITY
        }
    }

    fn ms(x: u64) -> Timestamp {
        Timestamp::from_duration(Duration::from_millis(x))
    }

    /// A meter over one worker on a 10 W platform, and what feeds it.
    struct Rig {
        meter: Meter,
        shared: Arc<ControlShared>,
        busy: Arc<BusyCounters>,
        /// The utilisations the platform was fed.
        fed: Arc<Mutex<Vec<f64>>>,
    }

    /// A [`Rig`] for `tenants` tenants (staleness 5 s), from time 0.
    fn ten_watt_meter(tenants: usize) -> Rig {
        let fed = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(ControlShared::new(
            Box::new(TenWatts(fed.clone())),
            Duration::from_secs(5),
            ms(0),
        ));
        let busy = BusyCounters::new(1, tenants);
        let meter = Meter::new(shared.clone(), busy.clone(), Vec::new(), ms(0));
        Rig {
            meter,
            shared,
            busy,
            fed,
        }
    }

    #[test]
    fn an_interval_is_priced_at_each_reading_for_as_long_as_it_held() {
        let Rig {
            mut meter,
            shared,
            busy,
            fed,
        } = ten_watt_meter(1);
        // A trace at 3600x: hour 0 at 100 g/kWh, hour 1 (from 0.4 s) at 700.
        shared.set_intensity(ms(0), 100.0, false, ms(0));
        shared.set_intensity(ms(400), 700.0, false, ms(400));
        meter.sample(ms(1000));
        // 10 J: 4 at 100 and 6 at 700 g/kWh — not all 10 at 700.
        let want = (4.0 * 100.0 + 6.0 * 700.0) / ecomap::energy::J_PER_KWH;
        assert!(
            (meter.ledger.carbon_g - want).abs() < 1e-15,
            "{:?}",
            meter.ledger
        );
        assert_eq!(meter.timeline[0].gco2_per_kwh, Some(460.0));

        // 1.5 s of busy time in an interval of 0.5 s (a pass that ended as
        // the counters were read, counted early): the 1 s beyond its room
        // is carried into the next interval, not lost.
        busy.workers[0].store(1_500_000_000, std::sync::atomic::Ordering::Relaxed);
        meter.sample(ms(1500));
        meter.sample(ms(2500));
        meter.sample(ms(3500));
        assert_eq!(*fed.lock().unwrap(), vec![0.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn a_long_pass_is_metered_in_the_intervals_it_ran_in() {
        let Rig {
            mut meter,
            shared,
            busy,
            fed,
        } = ten_watt_meter(2);
        shared.set_intensity(ms(0), 100.0, false, ms(0));
        // Tenant 1's pass runs from 0.2 s to 1.5 s: 0.8 s of it in the
        // first interval, 0.5 s in the second — not 1.3 s in the second.
        busy.pass_started(0, 1, ms(200));
        meter.sample(ms(1000));
        busy.pass_finished(0, 1, 1_300_000_000);
        meter.sample(ms(2000));
        meter.sample(ms(3000));
        let fed = fed.lock().unwrap().clone();
        assert_eq!(fed.len(), 3);
        for (got, want) in fed.iter().zip([0.8, 0.5, 0.0]) {
            assert!((got - want).abs() < 1e-9, "{fed:?}");
        }
        // All of it is tenant 1's.
        let l = &meter.ledger;
        assert!(
            l.tenant_energy_j[0] == 0.0 && l.tenant_energy_j[1] > 0.0,
            "{l:?}"
        );
    }
}
