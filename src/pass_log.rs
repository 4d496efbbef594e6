//! The pass log: one row per forward pass a run made (`ecomap run
//! --pass-log FILE`), and the measured service it replays into the
//! simulator (`ecomap simulate --service-replay FILE`).
//!
//! With the service a run measured, pass by pass and in order, the
//! simulator's queueing, dispatch, shedding and accounting can be checked
//! against the run apart from the device model's prediction of how fast the
//! machine is: the slow stretches of a shared VM, the shape of the service
//! distribution and its correlation from one pass to the next all come
//! along (docs/results.md §6).
//!
//! ```
//! use ecomap::pass_log::ServiceReplay;
//! use std::time::Duration;
//!
//! let log = "tenant,request,worker,variant,release_us,started_us,finished_us,service_us,outcome\n\
//!            cam,0,cpu0,0,0,100,5100,5000,on_time\n\
//!            cam,1,cpu1,0,33000,33050,39050,6000,on_time\n";
//! let replay = ServiceReplay::from_reader(log.as_bytes(), "example", &[("cam", 1)]).unwrap();
//! assert_eq!(
//!     replay.services(0, 0),
//!     &[Duration::from_micros(5000), Duration::from_micros(6000)]
//! );
//! ```

use crate::request::{Completion, Outcome};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
use thiserror::Error;

/// One forward pass, as `ecomap run --pass-log` writes it. Times are
/// microseconds since the run's epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassRecord {
    /// Tenant name.
    pub tenant: String,
    /// Request id (per tenant).
    pub request: u64,
    /// Worker name.
    pub worker: String,
    /// Variant of the tenant's model family that ran (0 = heaviest).
    pub variant: u8,
    /// When the request was released.
    pub release_us: u64,
    /// When the forward pass started.
    pub started_us: u64,
    /// When it ended (emulated throttling included).
    pub finished_us: u64,
    /// The pass's duration (each time is truncated to the µs on its own,
    /// so this may differ from `finished_us - started_us` by 1).
    pub service_us: u64,
    /// `on_time`, `late` or `failed`.
    pub outcome: String,
}

impl PassRecord {
    /// The row for `c`, run for tenant `tenant` on worker `worker`.
    pub fn from_completion(c: &Completion, tenant: &str, worker: &str) -> Self {
        let us = |t: crate::time::Timestamp| t.as_nanos() / 1_000;
        PassRecord {
            tenant: tenant.to_string(),
            request: c.request.id,
            worker: worker.to_string(),
            variant: c.variant,
            release_us: us(c.request.release),
            started_us: us(c.started),
            finished_us: us(c.finished),
            service_us: c.service().as_micros() as u64,
            outcome: c.outcome().name().to_string(),
        }
    }
}

/// What to add to a row error: a parse error is most likely a file that is
/// not a pass log.
fn hint(e: &csv::Error) -> &'static str {
    match e.kind() {
        csv::ErrorKind::Io(_) => "",
        _ => " (expected the columns `ecomap run --pass-log` writes)",
    }
}

/// What is wrong with a pass log.
#[derive(Debug, Error)]
pub enum PassLogError {
    /// It could not be opened.
    #[error("{path}: cannot read the pass log: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A row does not parse.
    #[error("{path}: {source}{}", hint(source))]
    Row {
        /// The file.
        path: String,
        /// Why (with the line).
        source: csv::Error,
    },
    /// A row names a tenant the workload does not have.
    #[error("{path}, line {line}: tenant '{tenant}' is not in the workload ({known}); replay a log of the same workload")]
    UnknownTenant {
        /// The file.
        path: String,
        /// 1-based line.
        line: u64,
        /// The name in the log.
        tenant: String,
        /// The workload's tenants.
        known: String,
    },
    /// A row's outcome is not one a pass can end in.
    #[error("{path}, line {line}: outcome '{outcome}' is not a pass's (on_time, late or failed)")]
    BadOutcome {
        /// The file.
        path: String,
        /// 1-based line.
        line: u64,
        /// The outcome in the log.
        outcome: String,
    },
    /// A row whose times cannot be a pass's.
    #[error("{path}, line {line}: {what}; a pass log from `ecomap run --pass-log` never has this")]
    BadTimes {
        /// The file.
        path: String,
        /// 1-based line.
        line: u64,
        /// What is wrong.
        what: String,
    },
    /// A row names a variant the tenant's model family does not have.
    #[error("{path}, line {line}: tenant '{tenant}' has {variants} variant(s), the log says variant {variant}")]
    BadVariant {
        /// The file.
        path: String,
        /// 1-based line.
        line: u64,
        /// The tenant.
        tenant: String,
        /// The variant in the log.
        variant: u8,
        /// How many the tenant has.
        variants: usize,
    },
    /// No successful pass at all.
    #[error("{path}: no successful forward pass to replay")]
    Empty {
        /// The file.
        path: String,
    },
}

/// How a replayed pass is picked for a simulated one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReplayAlignment {
    /// The tenant's variant's next recorded pass, in start order: keeps
    /// each tenant's sequence, not when its passes ran.
    #[default]
    InOrder,
    /// The tenant's variant's recorded pass that started nearest the same
    /// time into the run (from the log's first release; wrapping around
    /// the log's span, as `InOrder` wraps around its sequence): keeps when
    /// the machine was slow for every tenant at once.
    ByTime,
}

/// The measured service of every successful pass, per tenant and variant,
/// in the order the passes started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceReplay {
    /// `services[t][v]`.
    services: Vec<Vec<Vec<Duration>>>,
    /// `started_us[t][v]`, beside `services`, from the log's first release.
    started_us: Vec<Vec<Vec<u64>>>,
    /// From the first release to the last pass's start, µs (at least 1).
    span_us: u64,
    alignment: ReplayAlignment,
}

impl ServiceReplay {
    /// Read the pass log at `path` for a workload whose tenants are
    /// `(name, number of variants)`, in workload order.
    pub fn read(path: &Path, tenants: &[(&str, usize)]) -> Result<Self, PassLogError> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| PassLogError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::from_reader(std::io::BufReader::new(file), &shown, tenants)
    }

    /// [`ServiceReplay::read`] from any reader; `path` names it in errors.
    pub fn from_reader(
        reader: impl std::io::Read,
        path: &str,
        tenants: &[(&str, usize)],
    ) -> Result<Self, PassLogError> {
        let mut rows: Vec<Vec<Vec<(u64, Duration)>>> =
            tenants.iter().map(|&(_, n)| vec![Vec::new(); n]).collect();
        let mut csv = csv::Reader::from_reader(reader);
        let mut any = false;
        let mut first_release = u64::MAX;
        let mut record = csv::StringRecord::new();
        let headers = csv
            .headers()
            .map_err(|source| PassLogError::Row {
                path: path.to_string(),
                source,
            })?
            .clone();
        loop {
            let row_error = |source| PassLogError::Row {
                path: path.to_string(),
                source,
            };
            if !csv.read_record(&mut record).map_err(row_error)? {
                break;
            }
            let line = record.position().map_or(0, |p| p.line());
            let r: PassRecord = record.deserialize(Some(&headers)).map_err(row_error)?;
            let t = tenants
                .iter()
                .position(|&(name, _)| name == r.tenant)
                .ok_or_else(|| PassLogError::UnknownTenant {
                    path: path.to_string(),
                    line,
                    tenant: r.tenant.clone(),
                    known: tenants
                        .iter()
                        .map(|(n, _)| format!("'{n}'"))
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            let v = usize::from(r.variant);
            if v >= tenants[t].1 {
                return Err(PassLogError::BadVariant {
                    path: path.to_string(),
                    line,
                    tenant: r.tenant,
                    variant: r.variant,
                    variants: tenants[t].1,
                });
            }
            let outcome = [Outcome::OnTime, Outcome::Late, Outcome::Failed]
                .into_iter()
                .find(|o| o.name() == r.outcome)
                .ok_or_else(|| PassLogError::BadOutcome {
                    path: path.to_string(),
                    line,
                    outcome: r.outcome.clone(),
                })?;
            let bad_times = |what: String| PassLogError::BadTimes {
                path: path.to_string(),
                line,
                what,
            };
            if r.started_us < r.release_us {
                return Err(bad_times(format!(
                    "started_us {} is before release_us {}",
                    r.started_us, r.release_us
                )));
            }
            // A failed pass's time is not a service time.
            if outcome != Outcome::Failed {
                if r.service_us == 0 {
                    return Err(bad_times("service_us is 0 for a served pass".into()));
                }
                rows[t][v].push((r.started_us, Duration::from_micros(r.service_us)));
                any = true;
            }
            first_release = first_release.min(r.release_us);
        }
        if !any {
            return Err(PassLogError::Empty {
                path: path.to_string(),
            });
        }
        let mut services = Vec::with_capacity(rows.len());
        let mut started_us = Vec::with_capacity(rows.len());
        let mut span_us = 1;
        for per_variant in rows {
            let (mut s, mut at) = (Vec::new(), Vec::new());
            for mut passes in per_variant {
                // Workers log as they finish; replay in start order.
                passes.sort_by_key(|&(started, _)| started);
                let offsets: Vec<u64> = passes
                    .iter()
                    .map(|&(started, _)| started.saturating_sub(first_release))
                    .collect();
                span_us = span_us.max(offsets.last().map_or(0, |&last| last + 1));
                at.push(offsets);
                s.push(passes.into_iter().map(|(_, d)| d).collect());
            }
            services.push(s);
            started_us.push(at);
        }
        Ok(ServiceReplay {
            services,
            started_us,
            span_us,
            alignment: ReplayAlignment::InOrder,
        })
    }

    /// The same passes, picked as `alignment` says.
    pub fn aligned(mut self, alignment: ReplayAlignment) -> Self {
        self.alignment = alignment;
        self
    }

    /// How passes are picked.
    pub fn alignment(&self) -> ReplayAlignment {
        self.alignment
    }

    /// The recorded pass of tenant `t`'s variant `v` that started nearest
    /// `at` into the run (from its first release; `at` past the log's last
    /// start wraps around to its beginning), the earlier one on a tie;
    /// `None` if the run never served it.
    pub fn nearest(&self, t: usize, v: usize, at: Duration) -> Option<Duration> {
        let starts = self.started_us.get(t)?.get(v)?;
        let at = (at.as_micros() as u64) % self.span_us;
        let i = starts.partition_point(|&s| s < at);
        let before = i.checked_sub(1);
        let pick = match (before, starts.get(i)) {
            (None, None) => return None,
            (Some(b), None) => b,
            (None, Some(_)) => i,
            (Some(b), Some(&after)) => {
                if at - starts[b] <= after - at {
                    b
                } else {
                    i
                }
            }
        };
        Some(self.services[t][v][pick])
    }

    /// Tenant `t`'s variant `v`'s measured services, in start order (empty
    /// if the run never served it).
    pub fn services(&self, t: usize, v: usize) -> &[Duration] {
        self.services
            .get(t)
            .and_then(|s| s.get(v))
            .map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Request, TenantId};
    use crate::time::Timestamp;

    const HEADER: &str =
        "tenant,request,worker,variant,release_us,started_us,finished_us,service_us,outcome\n";

    #[test]
    fn a_completion_round_trips_through_a_row() {
        let r = Request::new(
            7,
            TenantId(0),
            Timestamp::ZERO,
            Duration::from_millis(10),
            0,
        );
        let c = Completion {
            request: r,
            worker: 1,
            dispatched: Timestamp::ZERO,
            eligible: Timestamp::ZERO,
            started: Timestamp::ZERO + Duration::from_micros(250),
            finished: Timestamp::ZERO + Duration::from_micros(12_250),
            succeeded: true,
            variant: 1,
        };
        let row = PassRecord::from_completion(&c, "cam", "cpu1");
        assert_eq!(row.service_us, 12_000);
        assert_eq!(row.outcome, "late");
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize(&row).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert!(text.starts_with(HEADER), "{text}");
        let replay = ServiceReplay::from_reader(text.as_bytes(), "t", &[("cam", 2)]).unwrap();
        assert_eq!(replay.services(0, 1), &[Duration::from_millis(12)]);
        assert!(replay.services(0, 0).is_empty());
    }

    #[test]
    fn passes_replay_in_start_order_and_failures_are_left_out() {
        let log = format!(
            "{HEADER}cam,1,cpu1,0,0,300,900,600,on_time\n\
             cam,0,cpu0,0,0,100,1100,1000,on_time\n\
             cam,2,cpu0,0,0,1200,1300,100,failed\n"
        );
        let replay = ServiceReplay::from_reader(log.as_bytes(), "t", &[("cam", 1)]).unwrap();
        assert_eq!(
            replay.services(0, 0),
            &[Duration::from_micros(1000), Duration::from_micros(600)]
        );
    }

    #[test]
    fn by_time_the_pass_nearest_the_same_moment_of_the_run_is_picked() {
        // Releases start at 1 s into the run's clock; passes start 0.1 s
        // and 0.5 s after that.
        let log = format!(
            "{HEADER}cam,0,cpu0,0,1000000,1100000,1102000,2000,on_time\n\
             cam,1,cpu0,0,1400000,1500000,1509000,9000,on_time\n"
        );
        let replay = ServiceReplay::from_reader(log.as_bytes(), "t", &[("cam", 2)])
            .unwrap()
            .aligned(ReplayAlignment::ByTime);
        assert_eq!(replay.alignment(), ReplayAlignment::ByTime);
        let at = |ms: u64| replay.nearest(0, 0, Duration::from_millis(ms));
        let (fast, slow) = (
            Some(Duration::from_micros(2000)),
            Some(Duration::from_micros(9000)),
        );
        assert_eq!(at(0), fast);
        assert_eq!(at(100), fast, "an exact start");
        assert_eq!(at(300), fast, "a tie goes earlier");
        assert_eq!(at(301), slow);
        assert_eq!(at(500), slow, "the last start");
        // Past the log (its span: 0 to 500 ms) the time wraps around.
        assert_eq!(at(501), fast);
        assert_eq!(at(901), slow);
        assert_eq!(replay.nearest(0, 1, Duration::ZERO), None, "never served");
        assert_eq!(replay.nearest(3, 0, Duration::ZERO), None, "no such tenant");
    }

    #[test]
    fn a_bad_log_says_what_and_where() {
        let tenants = [("cam", 2)];
        let err = |text: &str| {
            ServiceReplay::from_reader(text.as_bytes(), "log.csv", &tenants)
                .unwrap_err()
                .to_string()
        };
        let e = err(&format!("{HEADER}lidar,0,cpu0,0,0,1,2,1,on_time\n"));
        assert!(
            e.contains("line 2") && e.contains("'lidar'") && e.contains("'cam'"),
            "{e}"
        );
        let e = err(&format!("{HEADER}cam,0,cpu0,5,0,1,2,1,on_time\n"));
        assert!(e.contains("2 variant(s)") && e.contains("variant 5"), "{e}");
        let e = err(&format!("{HEADER}cam,zero,cpu0,0,0,1,2,1,on_time\n"));
        assert!(e.starts_with("log.csv:") && e.contains("columns"), "{e}");
        let e = err(HEADER);
        assert!(e.contains("no successful forward pass"), "{e}");
        let e = err(&format!(
            "{HEADER}cam,0,cpu0,0,0,1,2,1,on_time\ncam,1,cpu0,0,0,1,2,1,expired\n"
        ));
        assert!(e.contains("line 3") && e.contains("'expired'"), "{e}");
        let e = err(&format!("{HEADER}cam,0,cpu0,0,0,1,2,0,on_time\n"));
        assert!(e.contains("line 2") && e.contains("service_us is 0"), "{e}");
        let e = err(&format!("{HEADER}cam,0,cpu0,0,9,1,2,1,on_time\n"));
        assert!(e.contains("started_us 1 is before release_us 9"), "{e}");
        let e = ServiceReplay::read(Path::new("/nonexistent/log.csv"), &tenants)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/log.csv"), "{e}");
    }
}
