//! `PassLog`: `ecomap run --pass-log FILE` — one CSV row per forward pass
//! ([`ecomap::pass_log::PassRecord`]), written by the telemetry sink off
//! the data path, so the simulator can replay the service a run measured
//! (`ecomap simulate --service-replay FILE`).
//!
//! Rows stream through the CSV writer's buffer: memory stays flat however
//! long the run. A write error stops the log (the run goes on) and is
//! reported when it closes; a pass whose telemetry sample was dropped under
//! pressure (counted in the report), or that finished after the telemetry
//! sink died, has no row.

use ecomap::pass_log::PassRecord;
use ecomap::request::Completion;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Why the pass log is incomplete.
#[derive(Debug, thiserror::Error)]
#[error("{}: the pass log stopped after {rows} row(s): {error}", path.display())]
pub struct PassLogWriteError {
    /// The file.
    pub path: PathBuf,
    /// Rows written before the error.
    pub rows: u64,
    /// The write error (shown in the message, so not also a `source`).
    pub error: csv::Error,
}

/// An open pass log.
#[derive(Debug)]
pub struct PassLog {
    writer: csv::Writer<File>,
    path: PathBuf,
    rows: u64,
    /// The first write error; nothing is written after it.
    error: Option<csv::Error>,
}

impl PassLog {
    /// Create (or truncate) the log at `path`.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(PassLog {
            writer: csv::Writer::from_writer(File::create(path)?),
            path: path.to_path_buf(),
            rows: 0,
            error: None,
        })
    }

    /// Write the row of one pass (telemetry's thread).
    pub(crate) fn record(&mut self, c: &Completion, tenant: &str, worker: &str) {
        if self.error.is_some() {
            return;
        }
        match self
            .writer
            .serialize(PassRecord::from_completion(c, tenant, worker))
        {
            Ok(()) => self.rows += 1,
            Err(e) => self.error = Some(e),
        }
    }

    /// Flush and close: the rows written, or what went wrong.
    pub(crate) fn finish(mut self) -> Result<u64, PassLogWriteError> {
        if let Err(e) = self.writer.flush() {
            self.error.get_or_insert(e.into());
        }
        match self.error {
            None => Ok(self.rows),
            Some(error) => Err(PassLogWriteError {
                path: self.path,
                rows: self.rows,
                error,
            }),
        }
    }
}
