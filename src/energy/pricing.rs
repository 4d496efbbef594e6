//! Pricing a meter interval at the intensities that were in force over it.
//!
//! The runtime's energy meter samples power every interval (1 s), but the
//! intensity can change at any moment within one: a trace replayed at
//! 3600× moves to its next hour every second, and a live source can go
//! stale halfway through an interval. Pricing a whole interval at what is
//! in force at its end would charge up to one interval of energy at the
//! next hour's intensity — and which hour won would depend on whether the
//! meter's tick or the monitor's came first. [`IntensityLog`] keeps every
//! reading that took force since the meter last sampled, and splits the
//! interval into [`PricedSpan`]s: one per reading, cut again where a
//! reading's age passes the staleness limit. The meter's average power is
//! then priced span by span
//! ([`EnergyLedger::record_spans`](super::EnergyLedger::record_spans)).
//!
//! ```
//! use ecomap::energy::pricing::{IntensityLog, IntensityReading, Pricing, PricedSpan};
//! use ecomap::time::Timestamp;
//! use std::time::Duration;
//!
//! let s = |x: u64| Timestamp::from_duration(Duration::from_millis(x));
//! // Readings go stale 5 s after they were observed.
//! let mut log = IntensityLog::new(Duration::from_secs(5), s(0));
//! log.set(s(0), IntensityReading { gco2_per_kwh: 200.0, observed: s(0), source_stale: false });
//! log.set(s(400), IntensityReading { gco2_per_kwh: 300.0, observed: s(400), source_stale: false });
//! let spans = log.close(s(1000));
//! assert_eq!(spans, vec![
//!     PricedSpan { length: Duration::from_millis(400), pricing: Pricing::Current(200.0) },
//!     PricedSpan { length: Duration::from_millis(600), pricing: Pricing::Current(300.0) },
//! ]);
//! // The next interval starts with the reading in force.
//! assert_eq!(log.in_force(s(2000)), Some((300.0, false)));
//! ```

use crate::time::Timestamp;
use std::time::Duration;

/// One intensity reading, as the meter prices it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntensityReading {
    /// gCO2eq/kWh.
    pub gco2_per_kwh: f64,
    /// When its source observed it (run clock): its age counts from here.
    pub observed: Timestamp,
    /// Whether its source marked it stale (a trace row held over a gap):
    /// then it is stale at any age.
    pub source_stale: bool,
}

impl IntensityReading {
    /// Whether the reading is stale at `at`: marked so, or older than
    /// `stale_after`.
    pub fn is_stale_at(&self, at: Timestamp, stale_after: Duration) -> bool {
        self.source_stale || at.saturating_since(self.observed) > stale_after
    }

    /// From when it prices as stale ([`Timestamp::MAX`]: never).
    fn stale_from(&self, stale_after: Duration) -> Timestamp {
        if self.source_stale {
            Timestamp::ZERO
        } else {
            self.observed + stale_after
        }
    }
}

/// How one stretch of a meter interval is priced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pricing {
    /// No intensity known yet (before the source's first reading): the
    /// energy counts, its carbon cannot.
    Unpriced,
    /// At a current reading, gCO2eq/kWh.
    Current(f64),
    /// At a stale reading, gCO2eq/kWh: the best estimate there is, and
    /// counted as an estimate.
    Stale(f64),
}

impl Pricing {
    /// The intensity it prices at, if any.
    pub fn gco2_per_kwh(self) -> Option<f64> {
        match self {
            Pricing::Unpriced => None,
            Pricing::Current(g) | Pricing::Stale(g) => Some(g),
        }
    }
}

/// A stretch of a meter interval priced one way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PricedSpan {
    /// How long it lasted.
    pub length: Duration,
    /// How it is priced.
    pub pricing: Pricing,
}

/// The intensity readings that took force since the meter's last sample.
///
/// Invariants (checked in debug builds): the changes are in time order and
/// none is earlier than the open interval's start.
#[derive(Debug, Clone)]
pub struct IntensityLog {
    stale_after: Duration,
    /// Start of the interval not yet priced.
    opened: Timestamp,
    /// The reading in force at `opened`.
    at_open: Option<IntensityReading>,
    /// Readings that took force after `opened`: (from when, reading).
    changes: Vec<(Timestamp, IntensityReading)>,
    /// Whether an interval has been priced yet.
    closed_any: bool,
}

impl IntensityLog {
    /// A log whose readings price as stale past `stale_after` of age
    /// (`Duration::MAX`: never), with its first interval opening at
    /// `start`.
    pub fn new(stale_after: Duration, start: Timestamp) -> Self {
        IntensityLog {
            stale_after,
            opened: start,
            at_open: None,
            changes: Vec::new(),
            closed_any: false,
        }
    }

    /// Whether the first interval is still open, with no reading yet, and
    /// younger than `grace`: the meter then waits for the first reading
    /// rather than price the run's first moments as unknown (the carbon
    /// monitor's first reading comes a few milliseconds after the start).
    pub fn awaits_first_reading(&self, now: Timestamp, grace: Duration) -> bool {
        !self.closed_any && self.latest().is_none() && now.saturating_since(self.opened) < grace
    }

    /// The reading in force now (the last one set).
    pub fn latest(&self) -> Option<IntensityReading> {
        self.changes.last().map(|(_, r)| *r).or(self.at_open)
    }

    /// The intensity in force at `now`, and whether it is stale then.
    pub fn in_force(&self, now: Timestamp) -> Option<(f64, bool)> {
        self.latest()
            .map(|r| (r.gco2_per_kwh, r.is_stale_at(now, self.stale_after)))
    }

    /// Record that `reading` took force at `from`. A reading is never
    /// placed before the open interval or an earlier change (a clock read
    /// on another thread may lag by a few microseconds). The same
    /// intensity seen again while the one in force is still current only
    /// refreshes it: a trace re-read every monitor tick adds no span.
    pub fn set(&mut self, from: Timestamp, reading: IntensityReading) {
        // The first reading, before any interval was priced, prices the
        // run from its start: the moments before it are the monitor
        // starting up, not a time without a source.
        if !self.closed_any && self.latest().is_none() {
            self.at_open = Some(reading);
            return;
        }
        let floor = self.changes.last().map_or(self.opened, |(t, _)| *t);
        let from = from.max(floor);
        let stale_after = self.stale_after;
        let latest = match self.changes.last_mut() {
            Some((_, r)) => Some(r),
            None => self.at_open.as_mut(),
        };
        if let Some(r) = latest {
            let same =
                r.gco2_per_kwh == reading.gco2_per_kwh && r.source_stale == reading.source_stale;
            // Refreshing in place is exact only while the one in force has
            // not yet gone stale: its earlier stretch stays current either
            // way. A stale one is followed by a new span instead.
            if same && !r.is_stale_at(from, stale_after) {
                r.observed = r.observed.max(reading.observed);
                return;
            }
        }
        self.changes.push((from, reading));
        debug_assert!(self.changes.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    /// Price the open interval up to `to` and open the next one there: its
    /// spans in time order, adjacent spans priced alike merged, their
    /// lengths summing to `to − start`. Readings set after `to` (a clock
    /// read on another thread) stay for the next interval.
    pub fn close(&mut self, to: Timestamp) -> Vec<PricedSpan> {
        let mut spans: Vec<PricedSpan> = Vec::new();
        if to <= self.opened {
            return spans;
        }
        let later = self.changes.partition_point(|(t, _)| *t <= to);
        let pending = self.changes.split_off(later);
        let mut start = self.opened;
        let mut reading = self.at_open;
        for (from, r) in std::mem::replace(&mut self.changes, pending) {
            debug_assert!(from >= start, "changes are in time order");
            self.push(&mut spans, start, from, reading);
            start = from;
            reading = Some(r);
        }
        self.push(&mut spans, start, to, reading);
        debug_assert_eq!(
            spans.iter().map(|s| s.length).sum::<Duration>(),
            to.saturating_since(self.opened),
            "the spans cover the interval exactly"
        );
        self.opened = to;
        self.at_open = reading;
        self.closed_any = true;
        spans
    }

    /// Append `[a, b)` priced at `reading`, cut where it turns stale.
    fn push(
        &self,
        spans: &mut Vec<PricedSpan>,
        a: Timestamp,
        b: Timestamp,
        reading: Option<IntensityReading>,
    ) {
        let mut add = |length: Duration, pricing: Pricing| {
            if length.is_zero() {
                return;
            }
            match spans.last_mut() {
                Some(last) if last.pricing == pricing => last.length += length,
                _ => spans.push(PricedSpan { length, pricing }),
            }
        };
        let Some(r) = reading else {
            add(b.saturating_since(a), Pricing::Unpriced);
            return;
        };
        let turns = r.stale_from(self.stale_after).clamp(a, b);
        add(turns.saturating_since(a), Pricing::Current(r.gco2_per_kwh));
        add(b.saturating_since(turns), Pricing::Stale(r.gco2_per_kwh));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Timestamp {
        Timestamp::from_duration(Duration::from_millis(x))
    }

    fn d(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    fn reading(g: f64, observed: u64) -> IntensityReading {
        IntensityReading {
            gco2_per_kwh: g,
            observed: ms(observed),
            source_stale: false,
        }
    }

    fn span(length: u64, pricing: Pricing) -> PricedSpan {
        PricedSpan {
            length: d(length),
            pricing,
        }
    }

    #[test]
    fn an_interval_is_unpriced_until_the_first_reading_and_split_at_each_change() {
        let mut log = IntensityLog::new(d(5000), ms(0));
        // A first interval closed before any reading (the source is slow)
        // is unpriced.
        assert!(log.awaits_first_reading(ms(999), d(1000)));
        assert!(!log.awaits_first_reading(ms(1000), d(1000)));
        assert_eq!(log.close(ms(1000)), vec![span(1000, Pricing::Unpriced)]);
        log.set(ms(1250), reading(100.0, 1250));
        log.set(ms(1700), reading(400.0, 1700));
        assert_eq!(
            log.close(ms(2000)),
            vec![
                span(250, Pricing::Unpriced),
                span(450, Pricing::Current(100.0)),
                span(300, Pricing::Current(400.0)),
            ]
        );
        // The next interval opens with the last reading.
        assert_eq!(
            log.close(ms(3000)),
            vec![span(1000, Pricing::Current(400.0))]
        );
    }

    #[test]
    fn a_first_reading_before_any_close_prices_the_run_from_its_start() {
        // The monitor's first reading comes a few ms after the start.
        let mut log = IntensityLog::new(d(5000), ms(0));
        log.set(ms(30), reading(100.0, 30));
        assert!(!log.awaits_first_reading(ms(40), d(1000)));
        assert_eq!(
            log.close(ms(1000)),
            vec![span(1000, Pricing::Current(100.0))]
        );
    }

    #[test]
    fn a_reading_turns_stale_mid_interval_where_its_age_passes_the_limit() {
        let mut log = IntensityLog::new(d(1500), ms(0));
        log.set(ms(0), reading(300.0, 0));
        assert_eq!(
            log.close(ms(1000)),
            vec![span(1000, Pricing::Current(300.0))]
        );
        assert_eq!(
            log.close(ms(2000)),
            vec![
                span(500, Pricing::Current(300.0)),
                span(500, Pricing::Stale(300.0))
            ]
        );
        assert_eq!(log.in_force(ms(2000)), Some((300.0, true)));
        // The source comes back with the same value: a new, current span.
        log.set(ms(2200), reading(300.0, 2200));
        assert_eq!(
            log.close(ms(3000)),
            vec![
                span(200, Pricing::Stale(300.0)),
                span(800, Pricing::Current(300.0))
            ]
        );
    }

    #[test]
    fn re_reading_the_same_intensity_refreshes_it_without_new_spans() {
        let mut log = IntensityLog::new(d(1000), ms(0));
        for t in (0..3000).step_by(50) {
            log.set(ms(t), reading(250.0, t));
        }
        // One span: each re-read kept the reading current.
        assert_eq!(
            log.close(ms(3000)),
            vec![span(3000, Pricing::Current(250.0))]
        );
    }

    #[test]
    fn a_source_marked_stale_reading_is_stale_from_its_first_moment() {
        let mut log = IntensityLog::new(Duration::MAX, ms(0));
        log.set(ms(100), reading(200.0, 100));
        log.set(
            ms(600),
            IntensityReading {
                source_stale: true,
                ..reading(200.0, 600)
            },
        );
        assert_eq!(
            log.close(ms(1000)),
            vec![
                span(600, Pricing::Current(200.0)),
                span(400, Pricing::Stale(200.0)),
            ]
        );
        // With no limit, a plain reading never goes stale.
        log.set(ms(1000), reading(210.0, 1000));
        assert_eq!(
            log.close(ms(1_000_000)),
            vec![span(999_000, Pricing::Current(210.0))]
        );
    }

    #[test]
    fn a_change_stamped_after_the_close_waits_for_the_next_interval() {
        let mut log = IntensityLog::new(d(5000), ms(0));
        log.set(ms(0), reading(100.0, 0));
        log.set(ms(1003), reading(200.0, 1003));
        assert_eq!(
            log.close(ms(1000)),
            vec![span(1000, Pricing::Current(100.0))]
        );
        assert_eq!(
            log.close(ms(2000)),
            vec![
                span(3, Pricing::Current(100.0)),
                span(997, Pricing::Current(200.0))
            ]
        );
        // One stamped before the open interval counts from its start.
        log.set(ms(1500), reading(300.0, 1500));
        assert_eq!(
            log.close(ms(2500)),
            vec![span(500, Pricing::Current(300.0))]
        );
        // A close at or before the start prices nothing.
        assert!(log.close(ms(2500)).is_empty());
        assert!(log.close(ms(2000)).is_empty());
    }
}
