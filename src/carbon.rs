//! Grid carbon-intensity traces.
//!
//! Reads the three formats real traces come in, with the `csv` crate and
//! `chrono` for timestamps:
//! - Electricity Maps exports: `Datetime (UTC)` and
//!   `Carbon Intensity gCO₂eq/kWh (direct)` (the ASCII spelling `gCO2eq` is
//!   accepted too);
//! - the EIA-derived format: `timestamp` and `avg_CI`;
//! - plain: `timestamp` and `gco2_per_kwh`.
//!
//! Fatal problems (unreadable file, unknown header, no usable row,
//! timestamps that go backwards, a negative intensity) are errors naming the
//! file and line. An empty or malformed row is a warning with its line; the
//! last good value is held for it and marked stale, so the trace keeps its
//! hourly grid and a replay knows which hours were filled in.

use chrono::{DateTime, NaiveDateTime, Utc};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The column layout of a trace file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceFormat {
    /// Electricity Maps export.
    ElectricityMaps,
    /// EIA-derived (`timestamp`, `avg_CI`).
    Eia,
    /// `timestamp,gco2_per_kwh`.
    Plain,
}

/// One hour (or whatever the trace's step is) of intensity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceSample {
    /// Start of the interval, UTC.
    pub at: DateTime<Utc>,
    /// Grid carbon intensity, gCO2eq/kWh.
    pub gco2_per_kwh: f64,
    /// True when the row was empty or malformed and the previous value is
    /// held — or, from [`CarbonTrace::sample_at`], when the row is held
    /// over a gap in the trace's rows or past its end.
    pub stale: bool,
    /// How long the row stays current (`None`: until the next row, or for
    /// ever for the only row). Set for a row followed by a gap — the next
    /// row comes more than 1.5 times the local spacing later — and for the
    /// last row: the local spacing; held longer, the row is stale.
    pub lasts: Option<Duration>,
}

/// A trace could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("{}: cannot read the carbon trace: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The header matches none of the supported formats.
    #[error(
        "{}: unknown carbon-trace header {header:?}; expected one of: Electricity Maps \
         (`Datetime (UTC)`, `Carbon Intensity gCO₂eq/kWh (direct)`), EIA (`timestamp`, `avg_CI`), \
         or plain (`timestamp`, `gco2_per_kwh`)",
        path.display()
    )]
    UnknownHeader {
        /// The file.
        path: PathBuf,
        /// The header found.
        header: Vec<String>,
    },
    /// No row had a usable value.
    #[error(
        "{}: the carbon trace has no usable rows: {rows} row(s) after the header, none with both a \
         valid timestamp and a finite intensity ≥ 0{}",
        path.display(),
        if first.is_empty() { String::new() } else { format!("; first: {}", first.join("; ")) }
    )]
    NoRows {
        /// The file.
        path: PathBuf,
        /// Rows after the header.
        rows: usize,
        /// What was wrong with the first few of them.
        first: Vec<String>,
    },
    /// A blank first line (or nothing at all).
    #[error("{}: the header line is blank (or the file is empty); a carbon trace is a CSV with a header (e.g. timestamp,gco2_per_kwh) and hourly rows", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A timestamp is not after the one before it.
    #[error(
        "{}:{line}: timestamp {at} is not after the previous row's {previous}; traces must be \
         in increasing time order",
        path.display()
    )]
    NonMonotonic {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// This row's time.
        at: DateTime<Utc>,
        /// The previous row's time.
        previous: DateTime<Utc>,
    },
    /// An intensity below zero.
    #[error("{}:{line}: negative carbon intensity {value} gCO2eq/kWh; intensities are ≥ 0", path.display())]
    Negative {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// The value.
        value: f64,
    },
}

/// A parsed trace.
#[derive(Debug, Clone)]
pub struct CarbonTrace {
    /// Where it came from.
    pub path: PathBuf,
    /// Its layout.
    pub format: TraceFormat,
    /// Samples in time order (stale ones included).
    pub samples: Vec<TraceSample>,
    /// Warnings about empty or malformed rows (`file:line: …`).
    pub warnings: Vec<String>,
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%:z") {
        return Some(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    None
}

impl CarbonTrace {
    /// Read a trace file.
    pub fn load(path: &Path) -> Result<CarbonTrace, TraceError> {
        let file = std::fs::File::open(path).map_err(|source| TraceError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(file, path)
    }

    /// Parse a trace from any reader; `path` is used in messages.
    pub fn parse<R: std::io::Read>(reader: R, path: &Path) -> Result<CarbonTrace, TraceError> {
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(reader);
        let header: Vec<String> = rdr
            .headers()
            .map_err(|e| TraceError::Read {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
            })?
            .iter()
            .map(str::to_string)
            .collect();
        if header.iter().all(String::is_empty) {
            return Err(TraceError::Empty {
                path: path.to_path_buf(),
            });
        }
        let col = |names: &[&str]| header.iter().position(|h| names.contains(&h.as_str()));
        let (format, t_col, v_col) = if let (Some(t), Some(v)) = (
            col(&["Datetime (UTC)"]),
            col(&[
                "Carbon Intensity gCO₂eq/kWh (direct)",
                "Carbon Intensity gCO2eq/kWh (direct)",
            ]),
        ) {
            (TraceFormat::ElectricityMaps, t, v)
        } else if let (Some(t), Some(v)) = (col(&["timestamp"]), col(&["avg_CI"])) {
            (TraceFormat::Eia, t, v)
        } else if let (Some(0), Some(v)) = (col(&[""]), col(&["avg_CI"])) {
            // The EIA-derived file of one region (WAAT) was written with an
            // unnamed index column where the others say `timestamp`.
            (TraceFormat::Eia, 0, v)
        } else if let (Some(t), Some(v)) = (col(&["timestamp"]), col(&["gco2_per_kwh"])) {
            (TraceFormat::Plain, t, v)
        } else {
            return Err(TraceError::UnknownHeader {
                path: path.to_path_buf(),
                header,
            });
        };
        let mut samples: Vec<TraceSample> = Vec::new();
        let mut warnings = Vec::new();
        let mut last_good: Option<f64> = None;
        let mut rows = 0;
        for (i, record) in rdr.records().enumerate() {
            rows += 1;
            let line = record
                .as_ref()
                .ok()
                .and_then(|r| r.position().map(|p| p.line()))
                .unwrap_or(i as u64 + 2);
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    warnings.push(format!(
                        "{}:{line}: unreadable row ({e}); skipped",
                        path.display()
                    ));
                    continue;
                }
            };
            let Some(at) = record.get(t_col).and_then(parse_time) else {
                warnings.push(format!(
                    "{}:{line}: no valid timestamp ({:?}); row skipped",
                    path.display(),
                    record.get(t_col).unwrap_or("")
                ));
                continue;
            };
            if let Some(prev) = samples.last() {
                if at <= prev.at {
                    return Err(TraceError::NonMonotonic {
                        path: path.to_path_buf(),
                        line,
                        at,
                        previous: prev.at,
                    });
                }
            }
            let raw = record.get(v_col).unwrap_or("");
            // What is wrong with a value that is not a number, for warnings.
            let why = if record.len() <= v_col {
                format!(
                    "short row ({} of {} fields, no intensity)",
                    record.len(),
                    header.len()
                )
            } else if raw.is_empty() {
                "empty intensity \"\"".to_string()
            } else {
                format!("malformed intensity {raw:?}")
            };
            match raw.parse::<f64>() {
                Ok(v) if v.is_finite() && v < 0.0 => {
                    return Err(TraceError::Negative {
                        path: path.to_path_buf(),
                        line,
                        value: v,
                    })
                }
                Ok(v) if v.is_finite() => {
                    last_good = Some(v);
                    samples.push(TraceSample {
                        at,
                        gco2_per_kwh: v,
                        stale: false,
                        lasts: None,
                    });
                }
                _ => match last_good {
                    Some(v) => {
                        warnings.push(format!(
                            "{}:{line}: {why} at {at}; holding the last good value \
                             {v} gCO2eq/kWh (marked stale)",
                            path.display(),
                        ));
                        samples.push(TraceSample {
                            at,
                            gco2_per_kwh: v,
                            stale: true,
                            lasts: None,
                        });
                    }
                    None => warnings.push(format!(
                        "{}:{line}: {why} before any good value; row skipped",
                        path.display(),
                    )),
                },
            }
        }
        if samples.is_empty() {
            // The warnings die with the error: carry the first few.
            let prefix = format!("{}:", path.display());
            return Err(TraceError::NoRows {
                path: path.to_path_buf(),
                rows,
                first: warnings
                    .iter()
                    .take(3)
                    .map(|w| w.strip_prefix(&prefix).unwrap_or(w).to_string())
                    .collect(),
            });
        }
        let gaps = mark_gaps(&mut samples);
        if let Some((count, from, to)) = gaps {
            warnings.push(format!(
                "{}: {count} gap(s) in the rows (the first from {from} to {to}): the row before \
                 each is held over it, marked stale past its usual spacing",
                path.display(),
            ));
        }
        Ok(CarbonTrace {
            path: path.to_path_buf(),
            format,
            samples,
            warnings,
        })
    }

    /// Time from the first sample to the last.
    pub fn span(&self) -> Duration {
        let first = self.samples[0].at;
        let last = self.samples[self.samples.len() - 1].at;
        (last - first).to_std().unwrap_or(Duration::ZERO)
    }

    /// The sample in force `offset` after the first sample (a step function;
    /// past the end the last sample holds). A sample held past how long it
    /// [`lasts`](TraceSample::lasts) — over a gap in the rows, or past the
    /// last row — comes back marked stale.
    pub fn sample_at(&self, offset: Duration) -> TraceSample {
        let last = self.samples[self.samples.len() - 1];
        // Past the representable range the last sample holds, as past the end.
        let t = chrono::Duration::from_std(offset)
            .ok()
            .and_then(|d| self.samples[0].at.checked_add_signed(d));
        let Some(t) = t else {
            return TraceSample {
                stale: last.stale || last.lasts.is_some(),
                ..last
            };
        };
        let i = self.samples.partition_point(|s| s.at <= t);
        let sample = self.samples[i.saturating_sub(1)];
        let held = (t - sample.at).to_std().unwrap_or(Duration::ZERO);
        TraceSample {
            stale: sample.stale || sample.lasts.is_some_and(|d| held >= d),
            ..sample
        }
    }

    /// Mean intensity over all samples.
    pub fn mean(&self) -> f64 {
        self.samples.iter().map(|s| s.gco2_per_kwh).sum::<f64>() / self.samples.len() as f64
    }
}

/// Set how long each row lasts where that is not "until the next row":
/// a row followed by a gap (the next row more than 1.5 times the local
/// spacing away — the longer of the two neighbouring spacings, so that a
/// trace going from 15-minute to hourly rows has no gap) lasts the local
/// spacing, and so does the last row (the spacing before it). Rows a few
/// seconds late are no gap either. Two gaps either side of a single row
/// read as a change of resolution and are not marked. The number of gaps
/// and the first one's ends, if any.
fn mark_gaps(samples: &mut [TraceSample]) -> Option<(usize, DateTime<Utc>, DateTime<Utc>)> {
    let spacing: Vec<Duration> = samples
        .windows(2)
        .map(|w| (w[1].at - w[0].at).to_std().unwrap_or(Duration::ZERO))
        .collect();
    let mut gaps = 0;
    let mut first = None;
    for (i, &here) in spacing.iter().enumerate() {
        let neighbours = [i.checked_sub(1), Some(i + 1)]
            .into_iter()
            .flatten()
            .filter_map(|j| spacing.get(j).copied());
        let Some(local) = neighbours.max() else {
            continue; // two rows: nothing to compare with
        };
        if here.as_secs_f64() > 1.5 * local.as_secs_f64() {
            samples[i].lasts = Some(local);
            gaps += 1;
            first.get_or_insert((samples[i].at, samples[i + 1].at));
        }
    }
    // The last row lasts the spacing before it — the local spacing where
    // that was a gap (it would otherwise hold for the whole gap's length).
    if let Some(&before) = spacing.last() {
        let n = samples.len();
        samples[n - 1].lasts = Some(samples[n - 2].lasts.unwrap_or(before));
    }
    first.map(|(from, to)| (gaps, from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CarbonTrace, TraceError> {
        CarbonTrace::parse(text.as_bytes(), Path::new("t.csv"))
    }

    #[test]
    fn reads_all_three_formats() {
        let em = parse(
            "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (LCA)\n\
             2023-01-01 00:00:00,Great Britain,Great Britain,GB,62.55,91.44\n\
             2023-01-01 01:00:00,Great Britain,Great Britain,GB,65.09,94.66\n",
        )
        .unwrap();
        assert_eq!(em.format, TraceFormat::ElectricityMaps);
        assert_eq!(em.samples[1].gco2_per_kwh, 65.09);
        let eia = parse(
            "timestamp,WND,avg_CI\n2022-01-01 00:00:00+00:00,3130.0,222.29\n2022-01-01 01:00:00+00:00,1,260.9\n",
        )
        .unwrap();
        assert_eq!(eia.format, TraceFormat::Eia);
        assert_eq!(eia.span(), Duration::from_secs(3600));
        let plain =
            parse("timestamp,gco2_per_kwh\n2024-05-01T00:00:00Z,100\n2024-05-01T01:00:00Z,300\n")
                .unwrap();
        assert_eq!(plain.format, TraceFormat::Plain);
        assert_eq!(
            plain.sample_at(Duration::from_secs(1800)).gco2_per_kwh,
            100.0
        );
        assert_eq!(
            plain.sample_at(Duration::from_secs(3600)).gco2_per_kwh,
            300.0
        );
        assert_eq!(
            plain.sample_at(Duration::from_secs(99_999)).gco2_per_kwh,
            300.0
        );
        assert_eq!(plain.mean(), 200.0);
    }

    #[test]
    fn empty_rows_hold_the_last_value_and_warn_with_the_line() {
        let t = parse(
            "timestamp,WND,avg_CI\n2022-01-01 00:00:00+00:00,1,200\n2022-01-01 01:00:00+00:00,,\n\
             2022-01-01 02:00:00+00:00,1,abc\n2022-01-01 03:00:00+00:00,1,250\n",
        )
        .unwrap();
        assert_eq!(t.samples.len(), 4);
        assert!(t.samples[1].stale && t.samples[2].stale && !t.samples[3].stale);
        assert_eq!(t.samples[2].gco2_per_kwh, 200.0);
        assert_eq!(t.warnings.len(), 2);
        assert!(
            t.warnings[0].starts_with("t.csv:3: empty intensity"),
            "{:?}",
            t.warnings
        );
        assert!(t.warnings[1].starts_with("t.csv:4: malformed intensity \"abc\""));
    }

    #[test]
    fn a_row_held_over_missing_rows_or_past_the_end_is_stale() {
        // Hours 2 and 3 are missing: hour 1's row is held over them.
        let t = parse(
            "timestamp,gco2_per_kwh\n2023-01-01 00:00:00,100\n2023-01-01 01:00:00,200\n\
             2023-01-01 04:00:00,300\n2023-01-01 05:00:00,400\n",
        )
        .unwrap();
        assert!(
            t.warnings[0].contains("1 gap(s) in the rows"),
            "{:?}",
            t.warnings
        );
        let at = |minutes: u64| t.sample_at(Duration::from_secs(minutes * 60));
        assert_eq!((at(90).gco2_per_kwh, at(90).stale), (200.0, false));
        assert_eq!((at(120).gco2_per_kwh, at(120).stale), (200.0, true));
        assert_eq!((at(239).gco2_per_kwh, at(239).stale), (200.0, true));
        assert_eq!((at(240).gco2_per_kwh, at(240).stale), (300.0, false));
        // The last row lasts one spacing, then it is an old reading.
        assert!(!at(5 * 60 + 59).stale);
        assert_eq!((at(6 * 60).gco2_per_kwh, at(6 * 60).stale), (400.0, true));
        assert!(t.sample_at(Duration::MAX).stale);
        // A last row after a gap lasts the local spacing, not the gap.
        let t = parse(
            "timestamp,gco2_per_kwh\n2023-01-01 00:00:00,100\n2023-01-01 01:00:00,200\n\
             2023-01-01 02:00:00,300\n2023-01-01 03:00:00,400\n2023-01-01 08:00:00,500\n",
        )
        .unwrap();
        let at = |minutes: u64| t.sample_at(Duration::from_secs(minutes * 60));
        assert_eq!(
            (at(8 * 60 + 59).gco2_per_kwh, at(8 * 60 + 59).stale),
            (500.0, false)
        );
        assert_eq!(
            (at(9 * 60 + 1).gco2_per_kwh, at(9 * 60 + 1).stale),
            (500.0, true)
        );
        // A single row holds for ever.
        let one = parse("timestamp,gco2_per_kwh\n2023-01-01 00:00:00,100\n").unwrap();
        assert!(!one.sample_at(Duration::from_secs(1 << 30)).stale);
    }

    #[test]
    fn late_rows_and_a_change_of_resolution_are_no_gap() {
        // A row 5 s late, then the trace goes from 15-minute to hourly rows.
        let t = parse(
            "timestamp,gco2_per_kwh\n2023-01-01 00:00:00,1\n2023-01-01 00:15:05,2\n\
             2023-01-01 00:30:00,3\n2023-01-01 00:45:00,4\n2023-01-01 01:00:00,5\n\
             2023-01-01 02:00:00,6\n2023-01-01 03:00:00,7\n2023-01-01 04:00:00,8\n",
        )
        .unwrap();
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        for minutes in [15, 16, 59, 60, 90, 150, 239] {
            let s = t.sample_at(Duration::from_secs(minutes * 60));
            assert!(!s.stale, "at {minutes} min: {s:?}");
        }
    }

    #[test]
    fn fatal_problems_name_file_and_line() {
        let e = parse("time,value\n2022-01-01 00:00:00,1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown carbon-trace header") && e.contains("avg_CI"),
            "{e}"
        );
        // Offsets past what the calendar can hold saturate to the last row.
        let two = parse("timestamp,gco2_per_kwh\n2023-01-01 00:00:00,1\n2023-01-01 01:00:00,2\n")
            .unwrap();
        assert_eq!(two.sample_at(Duration::MAX).gco2_per_kwh, 2.0);
        let unnamed = parse(",WND,avg_CI\n2022-01-01 00:00:00+00:00,107.0,57.88\n").unwrap();
        assert_eq!(unnamed.format, TraceFormat::Eia);
        assert_eq!(unnamed.samples[0].gco2_per_kwh, 57.88);
        let e = parse("timestamp,avg_CI\n").unwrap_err().to_string();
        assert!(e.contains("no usable rows"), "{e}");
        let e = parse("timestamp,avg_CI\n2022-01-01 00:00:00+00:00,,\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no usable rows: 1 row(s)"), "{e}");
        assert!(e.contains("first: 2: empty intensity"), "{e}");
        let e = parse("").unwrap_err().to_string();
        assert!(e.contains("the header line is blank"), "{e}");
        // A row cut short says so (and is held over like an empty value).
        let t = parse("timestamp,WND,avg_CI\n2022-01-01 00:00:00+00:00,1,5\n2022-01-01 01:00:00+00:00,garbage\n")
            .unwrap();
        assert!(t.samples[1].stale, "{:?}", t.samples);
        assert!(
            t.warnings[0].contains("short row (2 of 3 fields"),
            "{:?}",
            t.warnings
        );
        let e =
            parse("timestamp,avg_CI\n2022-01-01 01:00:00+00:00,1\n2022-01-01 00:00:00+00:00,2\n")
                .unwrap_err()
                .to_string();
        assert!(
            e.starts_with("t.csv:3: timestamp") && e.contains("increasing"),
            "{e}"
        );
        let e = parse("timestamp,gco2_per_kwh\n2022-01-01T00:00:00Z,-5\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.csv:2: negative carbon intensity -5"),
            "{e}"
        );
        let e = CarbonTrace::load(Path::new("/nonexistent.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent.csv: cannot read"), "{e}");
    }

    #[test]
    fn reads_the_shared_real_traces() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/carbon");
        // CI and every development checkout have ../shared beside the
        // repository; a test that skipped without it would pass unchecked.
        assert!(
            root.is_dir(),
            "{} is missing: check out ../shared beside the repository",
            root.display()
        );
        let ciso = CarbonTrace::load(&root.join("eia_2022/CISO_2022_hourly_avgCI.csv")).unwrap();
        assert_eq!(ciso.format, TraceFormat::Eia);
        assert_eq!(ciso.samples.len(), 8760);
        // The README: CISO has 3 empty rows.
        assert_eq!(ciso.samples.iter().filter(|s| s.stale).count(), 3);
        assert_eq!(ciso.warnings.len(), 3);
        let gb = CarbonTrace::load(&root.join("electricitymaps_2023/GB_2023_hourly.csv")).unwrap();
        assert_eq!(gb.format, TraceFormat::ElectricityMaps);
        assert_eq!(gb.samples.len(), 8760);
        assert_eq!(gb.samples[0].gco2_per_kwh, 62.55);
        assert!(gb.warnings.is_empty());
    }
}
