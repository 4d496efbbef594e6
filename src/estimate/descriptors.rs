//! Per-model descriptors: what the estimator knows of a network.
//!
//! Computed from the networks themselves by `scripts/model_descriptors.py`
//! (multiply-accumulates and parameters counted with forward hooks on a
//! real forward pass of the torchvision architecture tch builds), shipped
//! as `rt-config/model-descriptors.csv`.

use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One network at one input size.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelDescriptor {
    /// Variant name, as the catalog and device descriptions use it.
    pub variant: String,
    /// Architecture (held-out splits leave one out).
    pub architecture: String,
    /// Input height and width, pixels.
    pub input_px: f64,
    /// Multiply-accumulates of one forward pass, billions.
    pub gmacs: f64,
    /// Parameters, millions.
    pub mparams: f64,
    /// Convolution and fully connected layers.
    pub layers: f64,
    /// Output elements of those layers, millions (activation traffic).
    pub mactivations: f64,
    /// Share of MACs in dense k×k convolutions (k > 1).
    pub conv_kxk_frac: f64,
    /// Share in 1×1 convolutions.
    pub conv_1x1_frac: f64,
    /// Share in depthwise convolutions.
    pub depthwise_frac: f64,
    /// Share in fully connected layers.
    pub linear_frac: f64,
}

/// A descriptor file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    /// Unreadable or malformed.
    #[error("cannot read model descriptors {path}: {source}; regenerate it with scripts/model_descriptors.py")]
    Read {
        /// The file.
        path: PathBuf,
        /// The CSV error (with its line).
        source: csv::Error,
    },
    /// An impossible value.
    #[error("{path}: variant '{variant}': {message}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// The row's variant.
        variant: String,
        /// What is wrong.
        message: String,
    },
    /// No rows at all.
    #[error(
        "{path}: no rows, so it names no model; regenerate it with scripts/model_descriptors.py"
    )]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// The descriptor table, indexed by variant name.
#[derive(Debug, Clone)]
pub struct Descriptors {
    rows: Vec<ModelDescriptor>,
    by_name: HashMap<String, usize>,
}

impl Descriptors {
    /// Read and check a descriptor CSV.
    pub fn load(path: &Path) -> Result<Descriptors, DescriptorError> {
        let read = |source| DescriptorError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut rows = Vec::new();
        for r in csv::Reader::from_path(path).map_err(read)?.deserialize() {
            let d: ModelDescriptor = r.map_err(read)?;
            let positive = [d.input_px, d.gmacs, d.mparams, d.layers, d.mactivations];
            if positive.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(DescriptorError::Bad {
                    path: path.to_path_buf(),
                    variant: d.variant,
                    message: "input_px, gmacs, mparams, layers and mactivations must be positive"
                        .into(),
                });
            }
            let shares = [
                d.conv_kxk_frac,
                d.conv_1x1_frac,
                d.depthwise_frac,
                d.linear_frac,
            ];
            if shares.iter().any(|v| !(0.0..=1.0).contains(v)) {
                return Err(DescriptorError::Bad {
                    path: path.to_path_buf(),
                    variant: d.variant,
                    message: "conv_kxk_frac, conv_1x1_frac, depthwise_frac and linear_frac are \
                              shares of the model's MACs, in 0..=1"
                        .into(),
                });
            }
            rows.push(d);
        }
        if rows.is_empty() {
            return Err(DescriptorError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Descriptors::new(rows))
    }

    /// A table from rows (later rows win on duplicate names).
    pub fn new(rows: Vec<ModelDescriptor>) -> Descriptors {
        let by_name = rows
            .iter()
            .enumerate()
            .map(|(i, d)| (d.variant.clone(), i))
            .collect();
        Descriptors { rows, by_name }
    }

    /// Index of a variant.
    pub fn index(&self, variant: &str) -> Option<usize> {
        self.by_name.get(variant).copied()
    }

    /// The descriptor at an index.
    pub fn get(&self, index: usize) -> &ModelDescriptor {
        &self.rows[index]
    }

    /// Every descriptor.
    pub fn rows(&self) -> &[ModelDescriptor] {
        &self.rows
    }
}
