//! The run report: what happened to every request, per tenant and per worker.

use crate::accounting::{render_table, TenantAccount};
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
        if !self.is_conserved() {
            out.push_str("\nWARNING: outcome counts do not add up to submissions\n");
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
}
