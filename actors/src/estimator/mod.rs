//! The learned latency and power estimator (libtorch).
//!
//! [`TransformerEstimator`] answers [`MappingQuery`]s in batches with the
//! transformer of [`network`] — trained with libtorch, queried through the
//! same weights in plain Rust ([`fast`]: a libtorch pass over so small a
//! network is mostly per-operator overhead); [`train`] fits it on a
//! profile dataset and
//! evaluates it against the lookup and linear baselines. A trained
//! estimator is two files: `estimator.safetensors` (the weights) and
//! `estimator.ron` (the network's shape, the target normalisation and how
//! it was trained), both written by `ecomap train-estimator`.

pub mod command;
pub mod fast;
pub mod network;
pub mod train;

use ecomap::estimate::descriptors::Descriptors;
use ecomap::estimate::{
    encode_tenant, EstimateError, MappingEstimator, MappingPrediction, MappingQuery, FEATURES,
};
use network::{Network, NetworkShape};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// How a set of weights was trained, and how to read its outputs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EstimatorMeta {
    /// The network's shape.
    pub shape: NetworkShape,
    /// Mean of ln(median service, ms) over the training rows.
    pub p50_mean: f64,
    /// Its standard deviation.
    pub p50_std: f64,
    /// Mean of ln(power, W) over the training configurations.
    pub power_mean: f64,
    /// Its standard deviation.
    pub power_std: f64,
    /// Seed of parameter initialisation, shuffling and the split.
    pub seed: u64,
    /// Architecture held out of training entirely.
    pub heldout_arch: String,
    /// Share of tenant combinations held out of training.
    pub heldout_mix_fraction: f64,
    /// Training epochs.
    pub epochs: usize,
    /// AdamW weight decay (`None` in files from before session 8, which
    /// were trained with 0.05).
    #[serde(default)]
    pub weight_decay: Option<f64>,
    /// Dataset file name it was trained on.
    pub dataset: String,
    /// Device of the dataset.
    pub device: String,
    /// Training configurations (gradient steps and validation together).
    pub train_configs: usize,
    /// Of those, the configurations held out of the gradient steps to pick
    /// the epoch (0: weights from the last epoch; files from before
    /// session 8).
    #[serde(default)]
    pub validation_configs: usize,
    /// How many epochs had run when the kept weights were taken (`None`:
    /// all of them).
    #[serde(default)]
    pub best_epoch: Option<usize>,
    /// Its validation score: the mean of the median-latency and power
    /// MAPEs (%) on the validation configurations.
    #[serde(default)]
    pub validation_mape_pct: Option<f64>,
}

impl EstimatorMeta {
    /// What makes this metadata unusable, if anything (checked before a
    /// network is built from it).
    pub fn problem(&self) -> Option<String> {
        let s = &self.shape;
        if s.features != ecomap::estimate::FEATURES as i64 {
            return Some(format!(
                "shape.features is {}, but this ecomap encodes {} features per tenant; retrain",
                s.features,
                ecomap::estimate::FEATURES
            ));
        }
        if s.width <= 0 || s.heads <= 0 || s.layers < 0 || s.ff_width <= 0 || s.width % s.heads != 0
        {
            return Some(format!(
                "shape {s:?}: width, heads and ff_width must be positive and heads must divide width"
            ));
        }
        // Bounds far above any estimator here (width 32), so a corrupt file
        // cannot make the loader allocate gigabytes before the weights are
        // compared.
        if s.width > 256 || s.ff_width > 1024 || s.layers > 8 {
            return Some(format!(
                "shape {s:?} is implausibly large for this estimator"
            ));
        }
        let finite = [self.p50_mean, self.power_mean]
            .iter()
            .all(|x| x.is_finite())
            && [self.p50_std, self.power_std]
                .iter()
                .all(|x| x.is_finite() && *x > 0.0);
        if !finite {
            return Some(
                "p50_mean, p50_std, power_mean and power_std must be finite, the stds positive"
                    .into(),
            );
        }
        None
    }
}

/// A trained estimator that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum EstimatorError {
    /// The metadata file is missing or malformed.
    #[error("cannot read estimator metadata {path}: {message}; it is written next to the weights by `ecomap train-estimator`")]
    Meta {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The weights file cannot be read.
    #[error("cannot read estimator weights {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: tch::TchError,
    },
    /// The weights do not fit the network the metadata describes.
    #[error("estimator weights {path} do not match the network in its metadata ({shape:?}): {mismatch}; retrain with `ecomap train-estimator`, or use the weights and estimator.ron written together")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The shape the metadata describes.
        shape: NetworkShape,
        /// The first disagreeing tensor.
        mismatch: String,
    },
    /// The weights cannot be written.
    #[error("cannot write {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// The weights and metadata files of an estimator named by `path`: a
/// folder holding `estimator.safetensors`, or the `.safetensors` file.
pub fn weight_files(path: &Path) -> (PathBuf, PathBuf) {
    let weights = if path.extension().is_some_and(|e| e == "safetensors") {
        path.to_path_buf()
    } else {
        path.join("estimator.safetensors")
    };
    (weights.clone(), weights.with_extension("ron"))
}

/// The learned estimator, ready to answer queries on the CPU.
pub struct TransformerEstimator {
    vs: nn::VarStore,
    net: Network,
    meta: EstimatorMeta,
    descriptors: Descriptors,
    /// The weights copied out for queries; built at the first query after
    /// the var store last changed (see [`TransformerEstimator::var_store`]).
    fast: Option<fast::FastNetwork>,
}

impl std::fmt::Debug for TransformerEstimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformerEstimator")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl TransformerEstimator {
    /// A fresh (untrained) estimator; parameters drawn from `meta.seed`.
    pub fn fresh(meta: EstimatorMeta, descriptors: Descriptors) -> Self {
        tch::manual_seed(meta.seed as i64);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut net = Network::new(&vs.root(), &meta.shape);
        net.set_power_norm(meta.power_mean, meta.power_std);
        TransformerEstimator {
            vs,
            net,
            meta,
            descriptors,
            fast: None,
        }
    }

    /// Load weights and metadata written by [`TransformerEstimator::save`].
    pub fn load(path: &Path, descriptors: Descriptors) -> Result<Self, EstimatorError> {
        let (weights, meta_path) = weight_files(path);
        let text = std::fs::read_to_string(&meta_path).map_err(|e| EstimatorError::Meta {
            path: meta_path.clone(),
            message: e.to_string(),
        })?;
        let meta: EstimatorMeta = ron::from_str(&text).map_err(|e| EstimatorError::Meta {
            path: meta_path.clone(),
            message: e.to_string(),
        })?;
        if let Some(problem) = meta.problem() {
            return Err(EstimatorError::Meta {
                path: meta_path,
                message: problem,
            });
        }
        let mut est = TransformerEstimator::fresh(meta, descriptors);
        let stored = Tensor::read_safetensors(&weights).map_err(|source| EstimatorError::Read {
            path: weights.clone(),
            source,
        })?;
        let mismatch = |mismatch: String| EstimatorError::Mismatch {
            path: weights.clone(),
            shape: est.meta.shape,
            mismatch,
        };
        let stored: std::collections::HashMap<String, Tensor> = stored.into_iter().collect();
        let mut vars = est.vs.variables();
        if stored.len() != vars.len() {
            return Err(mismatch(format!(
                "the file has {} tensors, the network {}",
                stored.len(),
                vars.len()
            )));
        }
        let mut names: Vec<_> = vars.keys().cloned().collect();
        names.sort();
        for name in names {
            let var = vars.get_mut(&name).expect("name from the same map");
            let src = stored
                .get(&name)
                .ok_or_else(|| mismatch(format!("tensor '{name}' is missing")))?;
            if src.size() != var.size() {
                return Err(mismatch(format!(
                    "tensor '{name}' is {:?} in the file, {:?} in the network",
                    src.size(),
                    var.size()
                )));
            }
            tch::no_grad(|| var.copy_(&src.to_kind(Kind::Float)));
        }
        // The additive head's normalisation is stored with the weights and
        // described by the metadata: both are written together, so a pair
        // that disagrees was mixed from two trainings and would predict
        // watts on the wrong scale. A NaN fails it too.
        if let Some(norm) = vars.get("power_norm") {
            let stored = Vec::<f32>::try_from(norm.to_kind(Kind::Float))
                .map_err(|e| mismatch(format!("tensor 'power_norm' cannot be read: {e}")))?;
            let described = [
                1.0 / est.meta.power_std,
                -est.meta.power_mean / est.meta.power_std,
            ];
            for (i, (&s, d)) in stored.iter().zip(described).enumerate() {
                let off = (f64::from(s) - d).abs();
                if off.is_nan() || off > 1e-4 * d.abs().max(1.0) {
                    return Err(mismatch(format!(
                        "tensor 'power_norm'[{i}] is {s} in the file, but the metadata's power_mean {} and power_std {} make it {d}",
                        est.meta.power_mean, est.meta.power_std
                    )));
                }
            }
        }
        est.fast = Some(est.copy_weights().map_err(|e| mismatch(e.to_string()))?);
        Ok(est)
    }

    /// Write `estimator.safetensors` and `estimator.ron` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), EstimatorError> {
        let (weights, meta_path) = weight_files(dir);
        let write = |path: &Path, message: String| EstimatorError::Write {
            path: path.to_path_buf(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| write(dir, e.to_string()))?;
        self.vs
            .save(&weights)
            .map_err(|e| write(&weights, e.to_string()))?;
        let text = ron::ser::to_string_pretty(&self.meta, ron::ser::PrettyConfig::default())
            .map_err(|e| write(&meta_path, e.to_string()))?;
        std::fs::write(&meta_path, text + "\n").map_err(|e| write(&meta_path, e.to_string()))
    }

    /// Its metadata.
    pub fn meta(&self) -> &EstimatorMeta {
        &self.meta
    }

    /// The descriptor table its queries index into.
    pub fn descriptors(&self) -> &Descriptors {
        &self.descriptors
    }

    pub(crate) fn network(&self) -> &Network {
        &self.net
    }

    /// The var store, to train: the query path's copy of the weights is
    /// dropped, and made again at the next query.
    pub(crate) fn var_store(&mut self) -> &nn::VarStore {
        self.fast = None;
        &self.vs
    }

    fn copy_weights(&self) -> Result<fast::FastNetwork, fast::FastNetworkError> {
        fast::FastNetwork::from_vars(&self.vs.variables(), &self.meta.shape)
    }

    /// Answer `queries` with libtorch's forward pass of the network (what
    /// training runs); [`MappingEstimator::predict`] gives the same numbers
    /// faster. For checks and benchmarks.
    pub fn predict_libtorch(
        &self,
        queries: &[MappingQuery],
    ) -> Result<Vec<MappingPrediction>, EstimateError> {
        self.check(queries)?;
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let _guard = tch::no_grad_guard();
        let (tokens, mask) = self.batch(queries);
        let out = self.net.forward(&tokens, &mask);
        let to_vec = |t: &Tensor| -> Result<Vec<f32>, EstimateError> {
            Vec::<f32>::try_from(t.flatten(0, -1))
                .map_err(|e| EstimateError::Backend(e.to_string()))
        };
        let p50 = to_vec(&out.p50)?;
        let gap = to_vec(&out.tail_gap)?;
        let power = to_vec(&out.power)?;
        let t = out.p50.size()[1] as usize;
        Ok(queries
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let n = q.tenants.len();
                self.prediction(&p50[i * t..i * t + n], &gap[i * t..i * t + n], power[i])
            })
            .collect())
    }

    /// Every query's tenants name a model in the descriptor table.
    fn check(&self, queries: &[MappingQuery]) -> Result<(), EstimateError> {
        for q in queries {
            if let Some(p) = q
                .tenants
                .iter()
                .find(|p| p.model >= self.descriptors.rows().len())
            {
                return Err(EstimateError::Encode(format!(
                    "model index {} is outside the descriptor table",
                    p.model
                )));
            }
        }
        Ok(())
    }

    /// Raw outputs (normalised log units) to a prediction.
    fn prediction(&self, p50: &[f32], gap: &[f32], power: f32) -> MappingPrediction {
        let m = &self.meta;
        let ln50: Vec<f64> = p50
            .iter()
            .map(|&l| l as f64 * m.p50_std + m.p50_mean)
            .collect();
        MappingPrediction {
            service_p50_s: ln50.iter().map(|l| l.exp() / 1000.0).collect(),
            service_p95_s: ln50
                .iter()
                .zip(gap)
                .map(|(l, &g)| (l + g as f64).exp() / 1000.0)
                .collect(),
            power_w: (power as f64 * m.power_std + m.power_mean).exp(),
        }
    }

    /// Tokens `[B, T, F]` and mask `[B, T]` of a batch of queries (padded to the
    /// longest).
    pub fn batch(&self, queries: &[MappingQuery]) -> (Tensor, Tensor) {
        batch_tensors(&self.descriptors, queries)
    }
}

/// Tokens `[B, T, F]` and mask `[B, T]` of a batch of queries.
pub(crate) fn batch_tensors(d: &Descriptors, queries: &[MappingQuery]) -> (Tensor, Tensor) {
    let b = queries.len();
    let t = queries
        .iter()
        .map(|q| q.tenants.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut x = vec![0f32; b * t * FEATURES];
    let mut m = vec![0f32; b * t];
    for (i, q) in queries.iter().enumerate() {
        for (j, p) in q.tenants.iter().enumerate() {
            let at = (i * t + j) * FEATURES;
            x[at..at + FEATURES].copy_from_slice(&encode_tenant(d, q, p));
            m[i * t + j] = 1.0;
        }
    }
    (
        Tensor::from_slice(&x).view([b as i64, t as i64, FEATURES as i64]),
        Tensor::from_slice(&m).view([b as i64, t as i64]),
    )
}

impl MappingEstimator for TransformerEstimator {
    fn predict(
        &mut self,
        queries: &[MappingQuery],
    ) -> Result<Vec<MappingPrediction>, EstimateError> {
        self.check(queries)?;
        if self.fast.is_none() {
            self.fast = Some(
                self.copy_weights()
                    .map_err(|e| EstimateError::Backend(e.to_string()))?,
            );
        }
        let net = self.fast.as_ref().expect("made just above");
        let mut tokens = Vec::with_capacity(queries.len() * 8 * FEATURES);
        let mut lens = Vec::with_capacity(queries.len());
        for q in queries {
            for p in &q.tenants {
                tokens.extend_from_slice(&encode_tenant(&self.descriptors, q, p));
            }
            lens.push(q.tenants.len());
        }
        let out = net
            .forward_batch(&tokens, &lens)
            .iter()
            .map(|raw| self.prediction(&raw.p50, &raw.tail_gap, raw.power))
            .collect();
        Ok(out)
    }
}
/// An estimator predicts for the device whose profile it was trained on:
/// its tokens carry that device's mode clocks, which another device's
/// modes would misstate. `meta` (the estimator in `dir`) against `device`.
pub fn check_trained_on(
    meta: &EstimatorMeta,
    dir: &std::path::Path,
    device: &ecomap::device::DeviceModel,
) -> Result<(), String> {
    if meta.device == device.name() {
        Ok(())
    } else {
        Err(format!(
            "the estimator in {} was trained on \"{}\", not on the device \"{}\" it would \
             plan for; give the policy (or --device) the device description it was trained \
             with, or train one on a profile of this device",
            dir.display(),
            meta.device,
            device.name()
        ))
    }
}
