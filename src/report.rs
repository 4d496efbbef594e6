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

/// Everything a run produced.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Policy name.
    pub policy: String,
    /// Wall time from the first release to the end of the drain.
    pub duration: Duration,
    /// Per-tenant accounts, in workload order.
    pub tenants: Vec<TenantAccount>,
    /// Per-worker busy time.
    pub workers: Vec<WorkerAccount>,
    /// Real-time settings the OS refused (empty when everything was granted).
    pub rt_notes: Vec<String>,
    /// Energy and carbon, when a platform and a carbon source were configured.
    pub energy: Option<EnergyReport>,
}

impl RunReport {
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
            let _ = writeln!(
                out,
                "worker {:<10} served {:>7}  busy {:>8.3} s  utilisation {:>5.1}%",
                w.name,
                w.served,
                w.busy.as_secs_f64(),
                100.0 * util
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
        if !self.is_conserved() {
            out.push_str("\nWARNING: outcome counts do not add up to submissions\n");
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
            tenants: vec![t],
            workers: vec![WorkerAccount {
                name: "cpu0".into(),
                served: 3,
                busy: Duration::from_secs(1),
            }],
            rt_notes: vec!["thread 'x': SCHED_FIFO refused".into()],
            energy: None,
        };
        assert!(r.is_conserved());
        let text = r.render();
        assert!(text.contains("utilisation  50.0%"), "{text}");
        assert!(text.contains("SCHED_FIFO refused"));
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
    }
}
