//! Policy files: how ecomap decides.
//!
//! ```ron
//! (
//!     name: "edf",
//!     queue_order: EarliestDeadline,
//! )
//! ```

use super::{load_ron, ConfigError};
use crate::dispatch::QueueOrder;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A policy file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Name in reports.
    pub name: String,
    /// Dispatch order of queued requests.
    #[serde(default = "edf")]
    pub queue_order: QueueOrder,
}

fn edf() -> QueueOrder {
    QueueOrder::EarliestDeadline
}

impl Policy {
    /// Read and validate a policy file.
    pub fn load(path: &Path) -> Result<Policy, ConfigError> {
        let p: Policy = load_ron(path, "policy")?;
        if p.name.trim().is_empty() {
            return Err(ConfigError::invalid(path, "name", "name must not be empty"));
        }
        Ok(p)
    }
}
