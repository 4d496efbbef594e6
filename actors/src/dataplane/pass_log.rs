//! `PassLog`: `ecomap run --pass-log FILE` — one CSV row per forward pass
//! ([`ecomap::pass_log::PassRecord`]), written by the telemetry sink off
//! the data path, so the simulator can replay the service a run measured
//! (`ecomap simulate --service-replay FILE`).
//!
//! Rows stream through a buffered writer: memory stays flat however long
//! the run. A write error stops the log (the run goes on) and is reported
//! when it closes; a pass whose telemetry sample was dropped under
//! pressure (counted in the report) has no row.

use ecomap::pass_log::PassRecord;
use ecomap::request::Completion;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// An open pass log.
#[derive(Debug)]
pub struct PassLog {
    writer: csv::Writer<BufWriter<File>>,
    path: PathBuf,
    rows: u64,
    /// The first write error; nothing is written after it.
    error: Option<String>,
}

impl PassLog {
    /// Create (or truncate) the log at `path`.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = File::create(path)?;
        Ok(PassLog {
            writer: csv::Writer::from_writer(BufWriter::new(file)),
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
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    /// Flush and close: the rows written, or what went wrong.
    pub(crate) fn finish(mut self) -> Result<u64, String> {
        if let Err(e) = self.writer.flush() {
            self.error.get_or_insert(e.to_string());
        }
        match self.error {
            None => Ok(self.rows),
            Some(e) => Err(format!(
                "{}: the pass log stopped after {} row(s): {e}",
                self.path.display(),
                self.rows
            )),
        }
    }

    /// Where it is written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
