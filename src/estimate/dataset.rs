//! The profile dataset: one row per tenant of a measured (or modelled)
//! co-located run, written by `ecomap profile` and read by the estimator's
//! trainer.
//!
//! A *configuration* is a set of tenants served together at one power
//! mode; its rows share `config`. Every row says where its numbers come
//! from (`source`: `measured` service times on this host, or `modelled`
//! by the simulator's device model), and power is labelled separately
//! (`power_source`), because on the development host service is measured
//! but power is the emulated platform's model.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One tenant of one profiled configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ProfileRow {
    /// Configuration number; rows of one configuration ran together.
    pub config: u32,
    /// Device the configuration ran on (its description's name).
    pub device: String,
    /// Power mode name.
    pub mode: String,
    /// The mode's GPU, DLA and CPU clocks as fractions of the device's
    /// reference (fastest) mode.
    pub mode_gpu_frac: f64,
    /// See `mode_gpu_frac`.
    pub mode_dla_frac: f64,
    /// See `mode_gpu_frac`.
    pub mode_cpu_frac: f64,
    /// libtorch intra-op threads per worker.
    pub threads: u32,
    /// Tenants in the configuration.
    pub n_tenants: u32,
    /// Tenant name within the configuration.
    pub tenant: String,
    /// Model variant (a name in `rt-config/model-descriptors.csv`).
    pub variant: String,
    /// Execution unit (worker) the tenant was mapped to.
    pub unit: String,
    /// Its index among the device's units.
    pub unit_index: u32,
    /// Its kind: `gpu`, `dla` or `cpu`.
    pub unit_kind: String,
    /// Offered arrival rate, requests/s.
    pub rate_hz: f64,
    /// Requests served in the measuring window.
    pub served: u64,
    /// Median service time (start to finish), milliseconds.
    pub service_p50_ms: f64,
    /// 95th-percentile service time, milliseconds.
    pub service_p95_ms: f64,
    /// Fraction of the window this tenant kept its unit busy.
    pub tenant_util: f64,
    /// Fraction of the window its unit was busy (all its tenants).
    pub unit_util: f64,
    /// Mean device power over the window, watts.
    pub power_w: f64,
    /// `measured` or `modelled` (service times).
    pub source: String,
    /// `measured` or `modelled` (power).
    pub power_source: String,
    /// Length of the measuring window, seconds.
    pub window_s: f64,
}

/// A dataset that cannot be used, with the line to fix.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file cannot be opened or read.
    #[error("cannot read profile dataset {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O or CSV error.
        source: csv::Error,
    },
    /// A row is malformed or has an impossible value.
    #[error("{path}, line {line}: {message}; fix or delete the row (the columns are documented in docs/configuration.md, \"Profile datasets\")")]
    BadRow {
        /// The file.
        path: PathBuf,
        /// 1-based line in the file (the header is line 1).
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// No rows.
    #[error("{path}: no rows; run `ecomap profile` to produce a dataset")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The rows of one configuration disagree on what they share.
    #[error("{path}, line {line}: configuration {config} {message}")]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// Line of the disagreeing row.
        line: u64,
        /// Configuration number.
        config: u32,
        /// What disagrees.
        message: String,
    },
}

fn round(x: f64, decimals: i32) -> f64 {
    let k = 10f64.powi(decimals);
    (x * k).round() / k
}

impl ProfileRow {
    /// The row with its numbers rounded to what the measurement resolves
    /// (microseconds, milliwatts, 1e-4 of a fraction), for compact files.
    pub fn rounded(mut self) -> ProfileRow {
        self.mode_gpu_frac = round(self.mode_gpu_frac, 4);
        self.mode_dla_frac = round(self.mode_dla_frac, 4);
        self.mode_cpu_frac = round(self.mode_cpu_frac, 4);
        self.rate_hz = round(self.rate_hz, 4);
        self.service_p50_ms = round(self.service_p50_ms, 3);
        self.service_p95_ms = round(self.service_p95_ms, 3);
        self.tenant_util = round(self.tenant_util, 4);
        self.unit_util = round(self.unit_util, 4);
        self.power_w = round(self.power_w, 3);
        self.window_s = round(self.window_s, 3);
        self
    }

    /// What is impossible about this row, if anything.
    fn problem(&self) -> Option<String> {
        let positive = [
            ("rate_hz", self.rate_hz),
            ("service_p50_ms", self.service_p50_ms),
            ("service_p95_ms", self.service_p95_ms),
            ("window_s", self.window_s),
            ("power_w", self.power_w),
            ("mode_gpu_frac", self.mode_gpu_frac),
            ("mode_dla_frac", self.mode_dla_frac),
            ("mode_cpu_frac", self.mode_cpu_frac),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Some(format!("{name} must be a positive number, got {v}"));
            }
        }
        for (name, v) in [
            ("tenant_util", self.tenant_util),
            ("unit_util", self.unit_util),
        ] {
            if !(v.is_finite() && (0.0..=1.5).contains(&v)) {
                return Some(format!("{name} must be a fraction in 0..=1.5, got {v}"));
            }
        }
        if self.service_p95_ms < self.service_p50_ms {
            return Some(format!(
                "service_p95_ms ({}) is below service_p50_ms ({})",
                self.service_p95_ms, self.service_p50_ms
            ));
        }
        if self.unit_index as usize >= super::MAX_UNITS {
            return Some(format!(
                "unit_index {} is beyond the {} units a token can name",
                self.unit_index,
                super::MAX_UNITS
            ));
        }
        if self.threads == 0 || self.n_tenants == 0 {
            return Some("threads and n_tenants must be at least 1".into());
        }
        if !["gpu", "dla", "cpu"].contains(&self.unit_kind.as_str()) {
            return Some(format!(
                "unit_kind must be gpu, dla or cpu, got '{}'",
                self.unit_kind
            ));
        }
        for (name, v) in [
            ("source", &self.source),
            ("power_source", &self.power_source),
        ] {
            if v != "measured" && v != "modelled" {
                return Some(format!("{name} must be measured or modelled, got '{v}'"));
            }
        }
        None
    }
}

/// Read and check a profile dataset. Every row of a configuration must
/// agree on the mode, threads and tenant count, and the count must match.
pub fn read_profile(path: &Path) -> Result<Vec<ProfileRow>, DatasetError> {
    let read_err = |source| DatasetError::Read {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read(path).map_err(|e| read_err(csv::Error::from(e)))?;
    let mut reader = csv::Reader::from_reader(text.as_slice());
    let headers = reader.headers().map_err(read_err)?.clone();
    let mut rows = Vec::new();
    let mut lines = Vec::new();
    // The line a record starts on, counted from its byte offset: csv's own
    // position counts the blank lines it skipped before a record as part of
    // it. Counted incrementally, so the whole read stays linear.
    let (mut counted_to, mut line_at) = (0usize, 1u64);
    let mut line_of = |byte: usize| -> u64 {
        let mut k = byte.clamp(counted_to, text.len());
        while k < text.len() && (text[k] == b'\n' || text[k] == b'\r') {
            k += 1;
        }
        line_at += text[counted_to..k].iter().filter(|&&b| b == b'\n').count() as u64;
        counted_to = k;
        line_at
    };
    for record in reader.records() {
        let bad = |line: u64, message: String| DatasetError::BadRow {
            path: path.to_path_buf(),
            line,
            message,
        };
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                // No position: the line after the last one read.
                let line = line_of(e.position().map_or(0, |p| p.byte() as usize));
                return Err(bad(line, e.to_string()));
            }
        };
        // The record's own line (blank lines and quoted newlines counted).
        let line = line_of(record.position().map_or(0, |p| p.byte() as usize));
        let row: ProfileRow = record.deserialize(Some(&headers)).map_err(|e| {
            bad(
                line,
                match e.kind() {
                    csv::ErrorKind::Deserialize { err, .. } => format!(
                        "column {}: {}",
                        err.field().map_or("?".into(), |f| (f + 1).to_string()),
                        err.kind()
                    ),
                    _ => e.to_string(),
                },
            )
        })?;
        if let Some(message) = row.problem() {
            return Err(bad(line, message));
        }
        rows.push(row);
        lines.push(line);
    }
    if rows.is_empty() {
        return Err(DatasetError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut seen: BTreeMap<u32, (usize, u32)> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        let entry = seen.entry(r.config).or_insert((i, 0));
        entry.1 += 1;
        let first = &rows[entry.0];
        let inconsistent = |message: &str| DatasetError::Inconsistent {
            path: path.to_path_buf(),
            line: lines[i],
            config: r.config,
            message: message.into(),
        };
        if first.mode != r.mode || first.threads != r.threads || first.device != r.device {
            return Err(inconsistent(
                "mixes devices, modes or thread counts; one configuration runs at one of each",
            ));
        }
        if first.n_tenants != r.n_tenants {
            return Err(inconsistent("rows disagree on n_tenants"));
        }
        // One run: one device power, one mode's clocks, one window. The
        // trainer reads them from the first row; a disagreeing row would
        // be silently ignored.
        let shared = [
            ("power_w", first.power_w, r.power_w),
            ("mode_gpu_frac", first.mode_gpu_frac, r.mode_gpu_frac),
            ("mode_dla_frac", first.mode_dla_frac, r.mode_dla_frac),
            ("mode_cpu_frac", first.mode_cpu_frac, r.mode_cpu_frac),
            ("window_s", first.window_s, r.window_s),
        ];
        if let Some((name, a, b)) = shared.into_iter().find(|(_, a, b)| a != b) {
            return Err(inconsistent(&format!(
                "rows disagree on {name} ({a} and {b}); a configuration is one run, with one \
                 value of it"
            )));
        }
    }
    for (config, (first, count)) in seen {
        if rows[first].n_tenants != count {
            return Err(DatasetError::Inconsistent {
                path: path.to_path_buf(),
                line: lines[first],
                config,
                message: format!(
                    "says n_tenants = {} but has {count} row(s)",
                    rows[first].n_tenants
                ),
            });
        }
    }
    Ok(rows)
}

/// Group rows by configuration, in configuration order.
pub fn configurations(rows: &[ProfileRow]) -> Vec<Vec<&ProfileRow>> {
    let mut by: BTreeMap<u32, Vec<&ProfileRow>> = BTreeMap::new();
    for r in rows {
        by.entry(r.config).or_default().push(r);
    }
    by.into_values().collect()
}

/// Write rows as CSV (with the header).
pub fn write_profile(path: &Path, rows: &[ProfileRow]) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_path(path)?;
    for r in rows {
        w.serialize(r)?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn row(config: u32, n: u32, tenant: &str) -> ProfileRow {
        ProfileRow {
            config,
            device: "host".into(),
            mode: "MAXN".into(),
            mode_gpu_frac: 1.0,
            mode_dla_frac: 1.0,
            mode_cpu_frac: 1.0,
            threads: 1,
            n_tenants: n,
            tenant: tenant.into(),
            variant: "resnet18".into(),
            unit: "cpu0".into(),
            unit_index: 0,
            unit_kind: "cpu".into(),
            rate_hz: 5.0,
            served: 10,
            service_p50_ms: 60.0,
            service_p95_ms: 70.0,
            tenant_util: 0.3,
            unit_util: 0.3,
            power_w: 12.0,
            source: "measured".into(),
            power_source: "modelled".into(),
            window_s: 2.0,
        }
    }

    fn write(rows: &[ProfileRow]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        write_profile(f.path(), rows).unwrap();
        f
    }

    #[test]
    fn round_trips() {
        let rows = vec![row(0, 2, "a"), row(0, 2, "b"), row(1, 1, "a")];
        let f = write(&rows);
        assert_eq!(read_profile(f.path()).unwrap(), rows);
        assert_eq!(configurations(&rows).len(), 2);
    }

    #[test]
    fn bad_value_names_its_line_and_column() {
        let mut bad = row(1, 1, "a");
        bad.service_p50_ms = -3.0;
        let f = write(&[row(0, 1, "a"), bad]);
        let e = read_profile(f.path()).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("service_p50_ms"), "{e}");
    }

    #[test]
    fn unparsable_field_names_its_line() {
        let f = write(&[row(0, 1, "a")]);
        let mut text = std::fs::read_to_string(f.path()).unwrap();
        text.push_str("1,host,MAXN,1,1,1,one,1,a,resnet18,cpu0,0,cpu,5,10,60,70,0.3,0.3,12,measured,modelled,2\n");
        let mut g = tempfile::NamedTempFile::new().unwrap();
        g.write_all(text.as_bytes()).unwrap();
        let e = read_profile(g.path()).unwrap_err();
        assert!(matches!(e, DatasetError::BadRow { line: 3, .. }), "{e}");
        assert!(e.to_string().contains("column 7"), "{e}");
    }

    #[test]
    fn a_blank_line_does_not_shift_the_reported_line() {
        let f = write(&[row(0, 1, "a")]);
        let mut text = std::fs::read_to_string(f.path()).unwrap();
        text.push('\n');
        let mut bad = row(1, 1, "a");
        bad.rate_hz = 0.0;
        let g = write(&[bad]);
        text.push_str(
            std::fs::read_to_string(g.path())
                .unwrap()
                .lines()
                .nth(1)
                .unwrap(),
        );
        text.push('\n');
        let mut h = tempfile::NamedTempFile::new().unwrap();
        h.write_all(text.as_bytes()).unwrap();
        let e = read_profile(h.path()).unwrap_err();
        assert!(matches!(e, DatasetError::BadRow { line: 4, .. }), "{e}");
    }

    #[test]
    fn tenant_count_must_match_rows() {
        let f = write(&[row(0, 2, "a")]);
        let e = read_profile(f.path()).unwrap_err().to_string();
        assert!(e.contains("n_tenants = 2 but has 1 row"), "{e}");
    }

    #[test]
    fn the_rows_of_a_configuration_share_its_power_clocks_and_window() {
        let mut other = row(0, 2, "b");
        other.power_w = 20.0;
        let f = write(&[row(0, 2, "a"), other]);
        let e = read_profile(f.path()).unwrap_err();
        assert!(
            matches!(
                e,
                DatasetError::Inconsistent {
                    line: 3,
                    config: 0,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("power_w (12 and 20)"), "{e}");
        let mut other = row(0, 2, "b");
        other.mode_cpu_frac = 0.5;
        let f = write(&[row(0, 2, "a"), other]);
        let e = read_profile(f.path()).unwrap_err().to_string();
        assert!(e.contains("mode_cpu_frac"), "{e}");
    }

    #[test]
    fn empty_is_an_error() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "").unwrap();
        assert!(read_profile(f.path()).is_err());
    }
}
