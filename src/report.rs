//! The run report: what happened to every request, per tenant and per worker.

use crate::accounting::{render_table, LatencyHistogram, TenantAccount};
use crate::energy::{cdp, EnergyLedger};
use crate::hgrm::percentile_distribution;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How busy one worker was.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerAccount {
    /// Worker name from the rt-config.
    pub name: String,
    /// Requests it ran (successfully or not).
    pub served: u64,
    /// Time spent in forward passes.
    pub busy: Duration,
    /// Of `busy`, the time spent asleep emulating a lower clock (an
    /// emulated platform's throttle; zero on real hardware, whose clocks
    /// slow the passes themselves).
    pub throttled: Duration,
}

/// Energy and carbon of a run.
#[derive(Debug, Clone, Default)]
pub struct EnergyReport {
    /// The platform backend.
    pub platform: String,
    /// Whether power was read from a sensor (true) or modelled (false).
    pub power_measured: bool,
    /// Where intensity came from.
    pub carbon_source: String,
    /// The totals and attribution.
    pub ledger: EnergyLedger,
    /// Cap changes applied: (run seconds, watts, level, reason).
    pub cap_changes: Vec<(f64, f64, String, String)>,
    /// Times the governor fell back because intensity was stale or missing.
    pub staleness_events: u32,
    /// Warnings of the control plane (provider errors, refused writes).
    pub notes: Vec<String>,
}

/// Mixed-quality serving: which variants served, and the swaps.
#[derive(Debug, Clone, Default)]
pub struct QualityReport {
    /// Per tenant: each variant's name and published top-1 accuracy.
    pub variants: Vec<Vec<(String, Option<f64>)>>,
    /// Every swap, in order.
    pub swaps: Vec<crate::quality::Swap>,
    /// Per tenant: time spent on each variant.
    pub time_in_variant: Vec<Vec<Duration>>,
}

impl QualityReport {
    /// Per tenant time on each variant, from the swaps between `start` and `end`.
    pub fn time_in_variants(
        variant_counts: &[usize],
        swaps: &[crate::quality::Swap],
        start: crate::time::Timestamp,
        end: crate::time::Timestamp,
    ) -> Vec<Vec<Duration>> {
        variant_counts
            .iter()
            .enumerate()
            .map(|(t, &n)| {
                let mut times = vec![Duration::ZERO; n.max(1)];
                let (mut active, mut since) = (0usize, start);
                for s in swaps.iter().filter(|s| s.tenant == t) {
                    times[active] += s.at.saturating_since(since.max(start));
                    active = s.to;
                    since = s.at;
                }
                times[active] += end.saturating_since(since.max(start));
                times
            })
            .collect()
    }

    /// Mean published top-1 accuracy of the requests tenant `t` served, if
    /// every variant that served has a published figure.
    pub fn mean_accuracy(&self, t: usize, served_by_variant: &[u64]) -> Option<f64> {
        let total: u64 = served_by_variant.iter().sum();
        if total == 0 {
            return None;
        }
        let mut sum = 0.0;
        for (v, &n) in served_by_variant.iter().enumerate() {
            if n > 0 {
                sum += n as f64 * self.variants.get(t)?.get(v)?.1?;
            }
        }
        Some(sum / total as f64)
    }
}

/// Everything a run produced.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Policy name.
    pub policy: String,
    /// Wall time from the first release to the end of the drain.
    pub duration: Duration,
    /// Run time (since the runtime's clock started) of the first release;
    /// swaps and cap changes are stamped on the same clock.
    pub load_start: crate::time::Timestamp,
    /// Per-tenant accounts, in workload order.
    pub tenants: Vec<TenantAccount>,
    /// Per-worker busy time.
    pub workers: Vec<WorkerAccount>,
    /// Real-time settings the OS refused (empty when everything was granted).
    pub rt_notes: Vec<String>,
    /// Energy and carbon, when a platform and a carbon source were configured.
    pub energy: Option<EnergyReport>,
    /// Model variants and swaps, when tenants have model families.
    pub quality: Option<QualityReport>,
    /// What failed during the run and what the runtime did about it, in
    /// order (empty on a clean run).
    pub incidents: Vec<Incident>,
    /// Wall-clock time of the run clock's zero (stamps in `.hlog` files
    /// are relative to it), when the run had one.
    pub clock_zero: Option<std::time::SystemTime>,
    /// The share (0–1) of the machine's CPU time that its hypervisor gave
    /// to other guests while serving (`/proc/stat`'s steal; `None` where
    /// there is none): a shared VM's neighbours, which slow every pass.
    pub cpu_steal: Option<f64>,
}

/// A fault the runtime met during a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// Seconds since the first release.
    pub at_s: f64,
    /// What happened and what was done.
    pub what: String,
    /// Whether the run's results are compromised by it (a control plane
    /// that died, a worker lost for good, latency samples lost): the
    /// command then exits with status 3.
    pub degrades: bool,
}

/// From this share of stolen CPU time on, the report says that it slowed
/// the run: on this project's 2-vCPU VM, in one set of five overloaded
/// runs, the two that lost about 4% met 13–19 points fewer deadlines than
/// the three that lost under 1.3% (docs/results.md §6, session 13).
const STEAL_WORTH_A_WARNING: f64 = 0.02;

impl RunReport {
    /// Whether an incident compromised the run (see [`Incident::degrades`]).
    pub fn is_degraded(&self) -> bool {
        self.incidents.iter().any(|i| i.degrades)
    }

    /// Whether every tenant's submitted count equals the sum of its outcomes.
    pub fn is_conserved(&self) -> bool {
        self.tenants.iter().all(|t| t.counts.is_conserved())
    }

    /// A human-readable report: the per-tenant table, worker utilisation and
    /// real-time notes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "policy {}, {:.1} s; latencies in ms (e2e = release to finish, queue = release to \
             start, service = start to finish)\n",
            self.policy,
            self.duration.as_secs_f64()
        );
        out.push_str(&render_table(&self.tenants));
        out.push('\n');
        for w in &self.workers {
            let util = if self.duration.is_zero() {
                0.0
            } else {
                w.busy.as_secs_f64() / self.duration.as_secs_f64()
            };
            let _ = write!(
                out,
                "worker {:<10} served {:>7}  busy {:>8.3} s  utilisation {:>5.1}%",
                w.name,
                w.served,
                w.busy.as_secs_f64(),
                100.0 * util
            );
            if !w.throttled.is_zero() {
                let _ = write!(
                    out,
                    "  (of it {:.3} s emulated throttle)",
                    w.throttled.as_secs_f64()
                );
            }
            out.push('\n');
        }
        if let Some(steal) = self.cpu_steal {
            let _ = writeln!(
                out,
                "host: {:.2}% of the CPU time stolen by the hypervisor while serving{}",
                100.0 * steal,
                if steal >= STEAL_WORTH_A_WARNING {
                    " (other guests ran on this VM's cores: its passes were slower for it)"
                } else {
                    ""
                }
            );
        }
        if self.rt_notes.is_empty() {
            out.push_str("\nreal-time: every requested pinning and scheduling class was granted\n");
        } else {
            out.push_str("\nreal-time settings refused (the run fell back):\n");
            for n in &self.rt_notes {
                let _ = writeln!(out, "  - {n}");
            }
        }
        if let Some(e) = &self.energy {
            out.push_str(&self.render_energy(e));
        }
        if let Some(q) = &self.quality {
            out.push_str(&self.render_quality(q));
        }
        if !self.incidents.is_empty() {
            out.push_str("\nincidents (every request is still in exactly one outcome):\n");
            for i in &self.incidents {
                let mark = if i.degrades { "DEGRADED " } else { "" };
                let _ = writeln!(out, "  - {:>8.3} s  {mark}{}", i.at_s, i.what);
            }
        }
        if !self.is_conserved() {
            out.push_str("\nWARNING: outcome counts do not add up to submissions\n");
        }
        out
    }

    fn render_quality(&self, q: &QualityReport) -> String {
        let mut out = String::from(
            "\nmodel variants (top-1: the architecture's published accuracy in its family's metric \
             — ImageNet top-1, COCO box mAP or mIoU, as the catalog says)\n",
        );
        for (t, acc) in self.tenants.iter().enumerate() {
            let Some(vars) = q.variants.get(t) else {
                continue;
            };
            let swaps = q.swaps.iter().filter(|s| s.tenant == t).count();
            let mean = q
                .mean_accuracy(t, &acc.served_by_variant)
                .map_or("-".to_string(), |a| format!("{a:.2}%"));
            let _ = writeln!(
                out,
                "  tenant {:<12} swaps {swaps:>3}  mean top-1 of served {mean}",
                acc.name
            );
            for (v, (name, top1)) in vars.iter().enumerate() {
                let served = acc.served_by_variant.get(v).copied().unwrap_or(0);
                let time = q
                    .time_in_variant
                    .get(t)
                    .and_then(|x| x.get(v))
                    .map_or(0.0, |d| d.as_secs_f64());
                let _ = writeln!(
                    out,
                    "    {v}: {name:<16} top-1 {:>7}  served {served:>6}  time {time:>7.1} s",
                    top1.map_or("-".into(), |a| format!("{a:.2}%"))
                );
            }
        }
        if !q.swaps.is_empty() {
            out.push_str("  swaps (run time: tenant from → to, reason):\n");
            for s in &q.swaps {
                let name = |v: usize| {
                    q.variants
                        .get(s.tenant)
                        .and_then(|x| x.get(v))
                        .map_or("?".to_string(), |x| x.0.clone())
                };
                let why = match &s.reason {
                    crate::quality::SwapReason::PredictedMiss {
                        predicted_s,
                        budget_s,
                    } => format!(
                        "predicted {:.1} ms > {:.1} ms to the deadline",
                        predicted_s * 1e3,
                        budget_s * 1e3
                    ),
                    crate::quality::SwapReason::MissRate(r) => {
                        format!("recent miss rate {:.1}%", r * 100.0)
                    }
                    crate::quality::SwapReason::Slack => "sustained slack".to_string(),
                    crate::quality::SwapReason::Planned => "planned".to_string(),
                };
                let _ = writeln!(
                    out,
                    "    {:>8.3} s  {}: {} → {}  ({why})",
                    s.at.since_epoch().as_secs_f64(),
                    self.tenants.get(s.tenant).map_or("?", |t| t.name.as_str()),
                    name(s.from),
                    name(s.to)
                );
            }
        }
        out
    }

    fn render_energy(&self, e: &EnergyReport) -> String {
        let mut out = String::new();
        let l = &e.ledger;
        let kind = if e.power_measured {
            "MEASURED"
        } else {
            "MODELLED"
        };
        let _ = writeln!(
            out,
            "\nenergy and carbon — platform {}; power {kind}; intensity from {}",
            e.platform, e.carbon_source
        );
        let _ = writeln!(
            out,
            "  energy {:.1} J ({kind}), mean power {:.2} W, carbon {:.4} g CO2eq",
            l.energy_j,
            l.mean_power_w(),
            l.carbon_g
        );
        let mut all = LatencyHistogram::default();
        for t in &self.tenants {
            all.merge(&t.end_to_end);
        }
        let mean = |h: &LatencyHistogram| {
            h.mean_us()
                .map_or(Duration::ZERO, |us| Duration::from_secs_f64(us / 1e6))
        };
        if l.unpriced_energy_j > 0.0 && l.unpriced < l.elapsed {
            let _ = writeln!(
                out,
                "  carbon leaves out {:.1} J over {:.1} s before the first intensity reading: \
                 a lower bound",
                l.unpriced_energy_j,
                l.unpriced.as_secs_f64()
            );
        } else if l.unpriced_energy_j > 0.0 {
            let _ = writeln!(
                out,
                "  no intensity was read during the run: its carbon is not counted"
            );
        }
        if !l.stale_priced.is_zero() {
            let _ = writeln!(
                out,
                "  carbon prices {:.1} J over {:.1} s at a stale intensity reading (a source \
                 silent past its staleness limit, or a trace row held over a gap): an \
                 estimate",
                l.stale_priced_energy_j,
                l.stale_priced.as_secs_f64()
            );
        }
        if !l.unmetered.is_zero() {
            let _ = writeln!(
                out,
                "  power could not be read for {:.1} s of the run (an energy counter reset, or \
                 no good reading after failures at the end): energy and carbon leave them out, \
                 lower bounds",
                l.unmetered.as_secs_f64()
            );
        }
        let _ = writeln!(
            out,
            "  CDP (carbon × mean end-to-end latency) {:.6} g·s",
            cdp(l.carbon_g, mean(&all))
        );
        for (t, g) in self.tenants.iter().zip(&l.tenant_carbon_g) {
            let _ = writeln!(
                out,
                "  tenant {:<12} carbon {:.4} g  CDP {:.6} g·s",
                t.name,
                g,
                cdp(*g, mean(&t.end_to_end))
            );
        }
        let _ = writeln!(out, "  idle (unattributed) carbon {:.4} g", l.idle_carbon_g);
        let caps: Vec<String> = l
            .time_at_cap
            .iter()
            .map(|(c, d)| format!("{c} W: {:.1} s", d.as_secs_f64()))
            .collect();
        let _ = writeln!(out, "  time at each cap: {}", caps.join(", "));
        let _ = writeln!(
            out,
            "  cap changes: {}; staleness events: {}",
            e.cap_changes.len(),
            e.staleness_events
        );
        for n in &e.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        out
    }

    /// Write one `.hgrm` file (end-to-end latency, ms) per tenant into `dir`,
    /// plus `<tenant>.queueing.hgrm` and `<tenant>.service.hgrm`. Returns the
    /// paths written.
    pub fn write_hgrm(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        for t in &self.tenants {
            for (suffix, h) in [
                ("", &t.end_to_end),
                (".queueing", &t.queueing),
                (".service", &t.service),
            ] {
                let path = dir.join(format!("{}{suffix}.hgrm", t.name));
                std::fs::write(&path, percentile_distribution(h.histogram(), 1000.0, 5))?;
                written.push(path);
            }
        }
        Ok(written)
    }

    /// Write one HdrHistogram interval log (`<tenant>.hlog`, end-to-end
    /// latency per interval, µs; maxima in ms) per tenant that kept one.
    pub fn write_hlog(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        for t in &self.tenants {
            let Some(log) = &t.intervals else { continue };
            let path = dir.join(format!("{}.hlog", t.name));
            let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
            log.write(
                file,
                &format!(
                    "ecomap: tenant '{}', end-to-end latency (µs) per interval, policy {}",
                    t.name, self.policy
                ),
                self.clock_zero.unwrap_or(std::time::UNIX_EPOCH),
            )?;
            written.push(path);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_renders_and_writes_files() {
        let mut t = TenantAccount::new("cam");
        t.record_submitted();
        t.record_rejected();
        let r = RunReport {
            policy: "edf".into(),
            duration: Duration::from_secs(2),
            load_start: Default::default(),
            tenants: vec![t],
            workers: vec![WorkerAccount {
                name: "cpu0".into(),
                served: 3,
                busy: Duration::from_secs(1),
                throttled: Duration::ZERO,
            }],
            rt_notes: vec!["thread 'x': SCHED_FIFO refused".into()],
            energy: None,
            quality: None,
            incidents: vec![Incident {
                at_s: 1.5,
                what: "worker 'cpu0' panicked; restarted".into(),
                degrades: false,
            }],
            clock_zero: None,
            cpu_steal: Some(0.0412),
        };
        assert!(r.is_conserved());
        assert!(!r.is_degraded());
        let text = r.render();
        assert!(text.contains("utilisation  50.0%"), "{text}");
        assert!(
            text.contains(
                "host: 4.12% of the CPU time stolen by the hypervisor while serving (other guests"
            ),
            "{text}"
        );
        let quiet = RunReport {
            cpu_steal: Some(0.003),
            ..r.clone()
        };
        assert!(
            quiet
                .render()
                .contains("host: 0.30% of the CPU time stolen by the hypervisor while serving\n"),
            "{}",
            quiet.render()
        );
        let bare = RunReport {
            cpu_steal: None,
            ..r.clone()
        };
        assert!(!bare.render().contains("host:"));
        assert!(text.contains("SCHED_FIFO refused"));
        assert!(text.contains("1.500 s  worker 'cpu0' panicked"), "{text}");
        let dir = tempfile::tempdir().unwrap();
        let files = r.write_hgrm(dir.path()).unwrap();
        assert_eq!(files.len(), 3);
        assert!(std::fs::read_to_string(&files[0])
            .unwrap()
            .contains("Total count"));
    }

    #[test]
    fn energy_section_labels_modelled_power_and_gives_cdp() {
        let mut t = TenantAccount::new("cam");
        t.end_to_end.record(Duration::from_millis(100));
        let mut ledger = EnergyLedger::new(1);
        ledger.record(
            Duration::from_secs(100),
            36.0,
            500.0,
            40.0,
            &[Duration::from_secs(1)],
        );
        let r = RunReport {
            policy: "p".into(),
            duration: Duration::from_secs(100),
            tenants: vec![t],
            energy: Some(EnergyReport {
                platform: "emulated".into(),
                power_measured: false,
                carbon_source: "trace".into(),
                ledger,
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = r.render();
        assert!(text.contains("power MODELLED"), "{text}");
        assert!(text.contains("carbon 0.5000 g"), "{text}");
        assert!(
            text.contains("CDP (carbon × mean end-to-end latency) 0.050000 g·s"),
            "{text}"
        );
        assert!(text.contains("40 W: 100.0 s"), "{text}");
        assert!(!text.contains("leaves out"), "{text}");
    }

    /// A 100 s run of one tenant whose energy is `ledger`'s.
    fn energy_report(ledger: EnergyLedger) -> RunReport {
        RunReport {
            policy: "p".into(),
            duration: Duration::from_secs(100),
            tenants: vec![TenantAccount::new("cam")],
            energy: Some(EnergyReport {
                platform: "emulated".into(),
                carbon_source: "http".into(),
                ledger,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn energy_section_says_when_carbon_leaves_out_unpriced_intervals() {
        let mut ledger = EnergyLedger::new(1);
        ledger.record_unpriced(Duration::from_secs(4), 10.0, 40.0, &[Duration::ZERO]);
        ledger.record(
            Duration::from_secs(96),
            10.0,
            500.0,
            40.0,
            &[Duration::ZERO],
        );
        let text = energy_report(ledger).render();
        assert!(
            text.contains("carbon leaves out 40.0 J over 4.0 s before the first intensity reading"),
            "{text}"
        );
        assert!(!text.contains("stale intensity"), "{text}");
    }

    #[test]
    fn energy_section_says_how_much_carbon_rests_on_a_stale_reading() {
        let mut ledger = EnergyLedger::new(1);
        ledger.record(
            Duration::from_secs(90),
            10.0,
            500.0,
            40.0,
            &[Duration::ZERO],
        );
        // The source went down: the last reading prices the rest.
        ledger.record_stale(
            Duration::from_secs(10),
            12.0,
            500.0,
            40.0,
            &[Duration::ZERO],
        );
        assert!((ledger.energy_j - 1020.0).abs() < 1e-9);
        assert!((ledger.carbon_g - 1020.0 / 3.6e6 * 500.0).abs() < 1e-12);
        let text = energy_report(ledger).render();
        assert!(
            text.contains("carbon prices 120.0 J over 10.0 s at a stale intensity reading"),
            "{text}"
        );
        assert!(!text.contains("leaves out"), "{text}");
        assert!(!text.contains("could not be read"), "{text}");
    }

    #[test]
    fn energy_section_says_how_long_power_could_not_be_read() {
        let mut ledger = EnergyLedger::new(1);
        ledger.record(Duration::from_secs(9), 10.0, 500.0, 40.0, &[Duration::ZERO]);
        ledger.record_unmetered(Duration::from_millis(1500));
        let text = energy_report(ledger).render();
        assert!(
            text.contains("power could not be read for 1.5 s of the run"),
            "{text}"
        );
    }
}
