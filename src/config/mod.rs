//! The RON files ecomap reads, and their validation.
//!
//! - [`workload`]: tenants — model, arrival process, deadline, queue capacity.
//! - [`rt`]: the platform's real-time set-up — workers, cores, scheduling classes.
//! - [`policy`]: the dispatch (and later power and model-quality) policy.
//!
//! Every loader returns a [`ConfigError`] that names the file, the place in
//! it and what to change; nothing here panics on bad input. Unknown fields are
//! errors, not silently ignored, so a typo never turns into a default.

pub mod policy;
pub mod rt;
pub mod workload;

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// What went wrong reading a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the file: {source}\n  hint: check the path and its permissions", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid RON for this kind of file.
    #[error("{}:{line}:{column}: {message}\n  hint: {hint}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the parser expected or found.
        message: String,
        /// How to fix it.
        hint: String,
    },
    /// The file parsed but a value is not acceptable.
    #[error("{}: {place}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where in the file, e.g. `tenants[1] "segmenter".deadline`.
        place: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl ConfigError {
    /// An [`ConfigError::Invalid`] for `path`.
    pub fn invalid(path: &Path, place: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.to_path_buf(),
            place: place.into(),
            message: message.into(),
        }
    }
}

/// Whether `name` can name output files: non-empty, letters, digits, `-`
/// and `_`, without `__` (which joins a trace's and a policy's name in
/// the simulator's file names).
pub fn is_file_safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains("__")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Parse a RON string as `T`; `path` is only used in error messages and
/// `kind` (e.g. "workload") in the hint.
pub fn parse_ron<T: DeserializeOwned>(
    text: &str,
    path: &Path,
    kind: &str,
) -> Result<T, ConfigError> {
    // IMPLICIT_SOME: optional fields may be written without `Some(...)`.
    ron::Options::default()
        .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
        .from_str::<T>(text)
        .map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: e.span.start.line,
            column: e.span.start.col,
            message: e.code.to_string(),
            hint: format!(
                "see docs/configuration.md for the {kind} file format, and the shipped \
                 examples next to this file"
            ),
        })
}

/// Read and parse a RON file as `T`.
pub fn load_ron<T: DeserializeOwned>(path: &Path, kind: &str) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_ron(&text, path, kind)
}
