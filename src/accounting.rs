//! Per-tenant accounting: outcome counters and latency histograms.
//!
//! Latencies are recorded in microseconds into HdrHistograms (3 significant
//! digits, 1 µs to 1 h). The counters enforce conservation: `submitted` must
//! equal the sum of the six outcomes (on time, late, expired, rejected, shed,
//! failed) once a run has drained.

use crate::request::{Completion, Outcome, Request};
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::time::Duration;

/// Highest latency a histogram tracks exactly: one hour, in µs. Larger
/// values are clamped to it (and still counted).
pub const MAX_TRACKABLE_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram(Histogram<u64>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram(
            Histogram::new_with_bounds(1, MAX_TRACKABLE_US, 3)
                .expect("static histogram bounds are valid"),
        )
    }
}

impl LatencyHistogram {
    /// Record one latency; values beyond one hour are clamped.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(us.max(1));
    }

    /// Number of recorded values.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value at quantile `q` (0..=1) in µs, or `None` when empty.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        (!self.0.is_empty()).then(|| self.0.value_at_quantile(q))
    }

    /// Mean in µs, or `None` when empty.
    pub fn mean_us(&self) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.mean())
    }

    /// Largest recorded value in µs, or `None` when empty.
    pub fn max_us(&self) -> Option<u64> {
        (!self.0.is_empty()).then(|| self.0.max())
    }

    /// Add all of `other`'s values.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        self.0
            .add(&other.0)
            .expect("histograms with identical bounds always merge");
    }

    /// The underlying histogram, for formats such as `.hgrm`.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.0
    }
}

/// A tenant's latencies over time, for HdrHistogram interval logs
/// (`.hlog`, the format of Java's `HistogramLogWriter`, read by
/// HdrHistogram's log tools and its Python and Go ports): one histogram per
/// interval, each compressed (V2 + deflate, typically well under a
/// kilobyte) as soon as the interval closes, so an hour of one-second
/// intervals stays in a few megabytes.
#[derive(Debug, Clone, Default)]
pub struct IntervalLog {
    interval: Duration,
    /// `(start, compressed histogram)` of each closed interval, in order;
    /// `start` is on the run's clock.
    closed: Vec<(Duration, Vec<u8>)>,
    current: Option<(Duration, LatencyHistogram)>,
}

impl IntervalLog {
    /// A log of `interval`-long histograms (a zero interval is taken as 1 s).
    pub fn new(interval: Duration) -> Self {
        IntervalLog {
            interval: if interval.is_zero() {
                Duration::from_secs(1)
            } else {
                interval
            },
            ..Default::default()
        }
    }

    /// Record `latency` for a request that finished `at` (run clock).
    /// Completions arrive nearly in order; one that belongs to an interval
    /// already closed is counted in the current one.
    pub fn record(&mut self, at: crate::time::Timestamp, latency: Duration) {
        let at = at.since_epoch();
        let start = Duration::from_nanos(
            (at.as_nanos() / self.interval.as_nanos() * self.interval.as_nanos()) as u64,
        );
        if self.current.as_ref().is_some_and(|(s, _)| start > *s) {
            self.close();
        }
        self.current
            .get_or_insert_with(|| (start, LatencyHistogram::default()))
            .1
            .record(latency);
    }

    fn close(&mut self) {
        if let Some((start, h)) = self.current.take() {
            let mut bytes = Vec::new();
            let mut s = hdrhistogram::serialization::V2DeflateSerializer::new();
            if hdrhistogram::serialization::Serializer::serialize(&mut s, &h.0, &mut bytes).is_ok()
            {
                self.closed.push((start, bytes));
            }
        }
    }

    /// Close the interval in progress (at the end of a run).
    pub fn finish(&mut self) {
        self.close();
    }

    /// Number of closed intervals.
    pub fn len(&self) -> usize {
        self.closed.len()
    }

    /// Whether no interval closed.
    pub fn is_empty(&self) -> bool {
        self.closed.is_empty()
    }

    /// Write the log: a header (`#[StartTime: …]` and `#[BaseTime: …]`, both
    /// `clock_zero`, the wall-clock time of the run clock's zero) and one
    /// line per interval — its start in seconds on the run's clock (so
    /// relative to BaseTime), its length, its max in milliseconds, the
    /// histogram (values in µs).
    pub fn write(
        &self,
        out: impl std::io::Write,
        comment: &str,
        clock_zero: std::time::SystemTime,
    ) -> std::io::Result<()> {
        use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
        use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
        let mut out = out;
        let mut serializer = V2DeflateSerializer::new();
        let mut writer = IntervalLogWriterBuilder::new()
            .add_comment(comment)
            .with_start_time(clock_zero)
            .with_base_time(clock_zero)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut out, &mut serializer)?;
        let mut de = Deserializer::new();
        for (start, bytes) in &self.closed {
            let h: Histogram<u64> = de
                .deserialize(&mut bytes.as_slice())
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
            writer
                .write_histogram(&h, *start, self.interval, None)
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        }
        Ok(())
    }
}

/// How many requests of a tenant ended each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    /// Requests offered to the tenant's queue.
    pub submitted: u64,
    /// Finished by the deadline.
    pub on_time: u64,
    /// Finished after the deadline.
    pub late: u64,
    /// Deadline passed before the request could start.
    pub expired: u64,
    /// Refused at admission (queue full).
    pub rejected: u64,
    /// Dropped before starting: predicted to finish past the deadline.
    pub shed: u64,
    /// The backend failed.
    pub failed: u64,
}

impl OutcomeCounts {
    /// Count one outcome.
    pub fn add(&mut self, outcome: Outcome) {
        *self.slot(outcome) += 1;
    }

    /// The count of one outcome.
    pub fn get(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::OnTime => self.on_time,
            Outcome::Late => self.late,
            Outcome::Expired => self.expired,
            Outcome::Rejected => self.rejected,
            Outcome::Shed => self.shed,
            Outcome::Failed => self.failed,
        }
    }

    fn slot(&mut self, outcome: Outcome) -> &mut u64 {
        match outcome {
            Outcome::OnTime => &mut self.on_time,
            Outcome::Late => &mut self.late,
            Outcome::Expired => &mut self.expired,
            Outcome::Rejected => &mut self.rejected,
            Outcome::Shed => &mut self.shed,
            Outcome::Failed => &mut self.failed,
        }
    }

    /// Sum of every outcome.
    pub fn ended(&self) -> u64 {
        Outcome::ALL.iter().map(|&o| self.get(o)).sum()
    }

    /// Whether every submitted request ended in exactly one outcome.
    pub fn is_conserved(&self) -> bool {
        self.ended() == self.submitted
    }

    /// Fraction of ended requests that did not finish on time (late, expired,
    /// rejected, shed or failed), or 0 when none ended.
    pub fn miss_rate(&self) -> f64 {
        let ended = self.ended();
        if ended == 0 {
            0.0
        } else {
            (ended - self.on_time) as f64 / ended as f64
        }
    }
}

/// Everything recorded for one tenant.
#[derive(Debug, Clone, Default)]
pub struct TenantAccount {
    /// Tenant name from the workload file.
    pub name: String,
    /// Outcome counters.
    pub counts: OutcomeCounts,
    /// Release to end of service, for served requests.
    pub end_to_end: LatencyHistogram,
    /// Release to start of service, for served requests.
    pub queueing: LatencyHistogram,
    /// Start to end of service, for served requests.
    pub service: LatencyHistogram,
    /// Eligible to start (see [`Completion::dispatch_latency`]), for served requests.
    pub dispatch: LatencyHistogram,
    /// The part of `dispatch` for requests released while their worker was
    /// free (it had to be woken): the wake-up path, as opposed to a worker
    /// taking queued work the moment it finishes.
    pub dispatch_woken: LatencyHistogram,
    /// `served_by_variant[v]`: requests served (on time or late) by variant `v`.
    pub served_by_variant: Vec<u64>,
    /// End-to-end latency per interval, when enabled
    /// ([`TenantAccount::with_intervals`]).
    pub intervals: Option<IntervalLog>,
}

impl TenantAccount {
    /// An empty account for a tenant.
    pub fn new(name: impl Into<String>) -> Self {
        TenantAccount {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Also keep end-to-end latency per `interval`, for `.hlog` files.
    pub fn with_intervals(mut self, interval: Duration) -> Self {
        self.intervals = Some(IntervalLog::new(interval));
        self
    }

    /// Count a request offered to the tenant.
    pub fn record_submitted(&mut self) {
        self.counts.submitted += 1;
    }

    /// Count a request refused at admission.
    pub fn record_rejected(&mut self) {
        self.counts.add(Outcome::Rejected);
    }

    /// Count a request whose deadline passed before it could start.
    pub fn record_expired(&mut self, _request: &Request) {
        self.counts.add(Outcome::Expired);
    }

    /// Count a request dropped before it started because it was predicted
    /// to finish past its deadline.
    pub fn record_shed(&mut self, _request: &Request) {
        self.counts.add(Outcome::Shed);
    }

    /// Count a request that never ran because no worker could take it
    /// (the workers holding its model died): a `failed` outcome.
    pub fn record_unserved(&mut self, _request: &Request) {
        self.counts.add(Outcome::Failed);
    }

    /// Count a request a worker ran, and record its latencies when it succeeded.
    pub fn record_completion(&mut self, c: &Completion) {
        let outcome = c.outcome();
        self.counts.add(outcome);
        if outcome != Outcome::Failed {
            self.end_to_end.record(c.end_to_end());
            if let Some(log) = &mut self.intervals {
                log.record(c.finished, c.end_to_end());
            }
            self.queueing.record(c.queueing());
            self.service.record(c.service());
            self.dispatch.record(c.dispatch_latency());
            if c.eligible == c.request.release {
                self.dispatch_woken.record(c.dispatch_latency());
            }
            let v = usize::from(c.variant);
            if self.served_by_variant.len() <= v {
                self.served_by_variant.resize(v + 1, 0);
            }
            self.served_by_variant[v] += 1;
        }
    }

    /// Mean end-to-end latency of served requests, if any were served.
    pub fn mean_end_to_end(&self) -> Option<Duration> {
        self.end_to_end
            .mean_us()
            .map(|us| Duration::from_secs_f64(us / 1e6))
    }
}

/// Format a microsecond value as milliseconds with three decimals, or `-`.
pub fn fmt_ms(us: Option<u64>) -> String {
    match us {
        Some(us) => format!("{:.3}", us as f64 / 1000.0),
        None => "-".to_string(),
    }
}

/// A per-tenant outcome and latency table (latencies in ms).
pub fn render_table(accounts: &[TenantAccount]) -> String {
    let mut out = String::new();
    let name_w = accounts
        .iter()
        .map(|a| a.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        out,
        "{:<name_w$} {:>9} {:>9} {:>7} {:>7} {:>8} {:>6} {:>6} | {:<7} {:>9} {:>9} {:>9} {:>9}",
        "tenant",
        "submitted",
        "on_time",
        "late",
        "expired",
        "rejected",
        "shed",
        "failed",
        "ms",
        "p50",
        "p99",
        "p99.9",
        "max"
    );
    for a in accounts {
        let c = &a.counts;
        let rows: [(&str, &LatencyHistogram); 3] = [
            ("e2e", &a.end_to_end),
            ("queue", &a.queueing),
            ("service", &a.service),
        ];
        for (i, (label, h)) in rows.iter().enumerate() {
            if i == 0 {
                let _ = write!(
                    out,
                    "{:<name_w$} {:>9} {:>9} {:>7} {:>7} {:>8} {:>6} {:>6} | ",
                    a.name, c.submitted, c.on_time, c.late, c.expired, c.rejected, c.shed, c.failed
                );
            } else {
                let _ = write!(out, "{:<name_w$} {:>60} | ", "", "");
            }
            let _ = writeln!(
                out,
                "{:<7} {:>9} {:>9} {:>9} {:>9}",
                label,
                fmt_ms(h.quantile_us(0.50)),
                fmt_ms(h.quantile_us(0.99)),
                fmt_ms(h.quantile_us(0.999)),
                fmt_ms(h.max_us()),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_log_holds_each_intervals_latencies_and_reads_back() {
        use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
        let mut log = IntervalLog::new(Duration::from_secs(1));
        let at = |ms: u64| crate::time::Timestamp::ZERO + Duration::from_millis(ms);
        for (t, lat) in [(100, 5), (900, 7), (1_200, 9), (3_500, 11), (3_600, 13)] {
            log.record(at(t), Duration::from_millis(lat));
        }
        log.finish();
        assert_eq!(log.len(), 3, "intervals 0 s, 1 s and 3 s");
        let mut bytes = Vec::new();
        let zero = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        log.write(&mut bytes, "test", zero).unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains("#[BaseTime: 1700000000.000"));
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("#test"), "{text}");
        let mut starts = Vec::new();
        let mut counts = Vec::new();
        for e in IntervalLogIterator::new(&bytes) {
            if let Ok(LogEntry::Interval(h)) = e {
                starts.push(h.start_timestamp().as_secs());
                let raw = base64_decode(h.encoded_histogram());
                let hist: Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
                    .deserialize(&mut raw.as_slice())
                    .unwrap();
                counts.push(hist.len());
            }
        }
        assert_eq!(starts, vec![0, 1, 3]);
        assert_eq!(counts, vec![2, 1, 2]);
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }
    use crate::request::TenantId;
    use crate::time::Timestamp;

    fn completion(start_ms: u64, end_ms: u64, deadline_ms: u64, ok: bool) -> Completion {
        let r = Request::new(
            0,
            TenantId(0),
            Timestamp::ZERO,
            Duration::from_millis(deadline_ms),
            0,
        );
        Completion {
            request: r,
            worker: 0,
            dispatched: Timestamp::from_nanos(start_ms * 1_000_000),
            eligible: Timestamp::from_nanos(start_ms * 1_000_000),
            started: Timestamp::from_nanos(start_ms * 1_000_000),
            finished: Timestamp::from_nanos(end_ms * 1_000_000),
            succeeded: ok,
            variant: 0,
        }
    }

    #[test]
    fn every_outcome_is_counted_once_and_latencies_only_for_served() {
        let mut a = TenantAccount::new("cam");
        for _ in 0..5 {
            a.record_submitted();
        }
        a.record_completion(&completion(1, 5, 10, true));
        a.record_completion(&completion(1, 15, 10, true));
        a.record_completion(&completion(1, 5, 10, false));
        a.record_rejected();
        a.record_expired(&completion(0, 0, 1, true).request);
        a.record_submitted();
        a.record_shed(&completion(0, 0, 1, true).request);
        assert!(a.counts.is_conserved());
        assert_eq!(
            a.counts,
            OutcomeCounts {
                submitted: 6,
                on_time: 1,
                late: 1,
                expired: 1,
                rejected: 1,
                shed: 1,
                failed: 1
            }
        );
        assert_eq!(a.end_to_end.len(), 2);
        assert!((a.counts.miss_rate() - 5.0 / 6.0).abs() < 1e-9);
        let p50 = a.end_to_end.quantile_us(0.5).unwrap();
        assert!((4_990..=5_010).contains(&p50), "{p50}");
        assert_eq!(a.mean_end_to_end().map(|d| d.as_millis()), Some(10));
    }

    #[test]
    fn table_lists_each_tenant_with_three_latency_rows() {
        let mut a = TenantAccount::new("detector");
        a.record_submitted();
        a.record_completion(&completion(2, 20, 30, true));
        let b = TenantAccount::new("idle");
        let t = render_table(&[a, b]);
        assert!(t.contains("detector"));
        assert!(t.contains("20.0"), "{t}");
        assert_eq!(t.lines().count(), 1 + 2 * 3);
        assert!(t
            .lines()
            .any(|l| l.starts_with("idle") && l.contains(" - ")));
    }

    #[test]
    fn huge_latencies_are_clamped_not_lost() {
        let mut h = LatencyHistogram::default();
        h.record(Duration::from_secs(10 * 3600));
        h.record(Duration::ZERO);
        assert_eq!(h.len(), 2);
        let mut g = LatencyHistogram::default();
        g.merge(&h);
        assert_eq!(g.len(), 2);
    }
}
