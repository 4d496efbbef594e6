//! Training and evaluation of the estimator, with its two baselines.
//!
//! **Splits.** Configurations containing the held-out architecture are
//! never trained on (`heldout-arch`). Of the rest, every *combination* of
//! variants (the sorted multiset of a configuration's variants, whatever
//! its mode, units or rates) is hashed with the seed, and a share of the
//! combinations is held out whole (`heldout-mix`): no configuration with
//! that set of tenants is seen in training. Solo configurations are
//! always trained on (they are what the lookup baseline is made of).
//!
//! **Baselines**, on the same split:
//! - `lookup`: each tenant's solo profile at the same mode, thread count and
//!   unit kind (from training configurations); a variant without one takes
//!   the profile of the nearest model in MACs, scaled by the MAC ratio.
//!   Power: the mean of training configurations with the same mode and
//!   tenant count.
//! - `linear`: ridge regression on the same tokens, each concatenated with
//!   the mean token of the other tenants on its unit and the tenant counts;
//!   power on the configuration's mean token and tenant count.
//!
//! **Validation.** A share of the training combinations (hashed with the
//! seed and a salt of their own, so never a held-out one) takes no gradient
//! steps; every few epochs the network is scored on them, and the weights
//! of the best-scoring epoch are the ones kept. Without it the network
//! fitted the training mixes to 4.9% and missed unseen ones by 11.1%
//! (session 7, docs/results.md §8.1).
//!
//! Training is deterministic: one intra-op thread, parameters and batch
//! order from the seed.

use super::network::NetworkShape;
use super::{batch_tensors, EstimatorMeta, TransformerEstimator};
use ecomap::estimate::dataset::{configurations, ProfileRow};
use ecomap::estimate::descriptors::Descriptors;
use ecomap::estimate::{encode, query_of, EstimateError, MappingEstimator, MappingQuery, FEATURES};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashMap;
use tch::{nn, nn::OptimizerConfig, Kind, Tensor};

/// Which part of the data a configuration belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Trained on.
    Train,
    /// A combination of tenants never seen in training.
    HeldoutMix,
    /// Contains the held-out architecture.
    HeldoutArch,
}

impl Split {
    /// Name in `estimator_eval.csv`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::HeldoutMix => "heldout-mix",
            Split::HeldoutArch => "heldout-arch",
        }
    }

    /// All splits, in report order.
    pub const ALL: [Split; 3] = [Split::Train, Split::HeldoutMix, Split::HeldoutArch];
}

/// One configuration with what was measured.
#[derive(Debug, Clone)]
pub struct Example {
    /// The mapping.
    pub query: MappingQuery,
    /// Its variants' names (for the split and the lookup).
    pub variants: Vec<String>,
    /// Mode name.
    pub mode: String,
    /// Per tenant: measured median service, ms.
    pub p50_ms: Vec<f64>,
    /// Per tenant: measured p95 service, ms.
    pub p95_ms: Vec<f64>,
    /// Device power, W.
    pub power_w: f64,
    /// Its split.
    pub split: Split,
}

/// How to train.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Seed of everything random.
    pub seed: u64,
    /// Passes over the training set.
    pub epochs: usize,
    /// Architecture never trained on.
    pub heldout_arch: String,
    /// Share of tenant combinations held out.
    pub heldout_mix_fraction: f64,
    /// Share of the training combinations kept out of the gradient steps
    /// to choose the epoch (0: keep the last epoch).
    pub validation_fraction: f64,
    /// Score the validation set every this many epochs.
    pub validate_every: usize,
    /// Configurations per step.
    pub batch: usize,
    /// Peak learning rate (cosine decay to 5% of it).
    pub learning_rate: f64,
    /// Decoupled weight decay (AdamW).
    pub weight_decay: f64,
    /// Network shape.
    pub shape: NetworkShape,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            seed: 2026,
            epochs: 300,
            heldout_arch: "squeezenet1_1".into(),
            heldout_mix_fraction: 0.2,
            validation_fraction: 0.15,
            validate_every: 5,
            batch: 32,
            learning_rate: 3e-3,
            weight_decay: 0.05,
            shape: NetworkShape::default(),
        }
    }
}

/// Deterministic 64-bit FNV-1a (stable across platforms and releases,
/// unlike `std`'s hasher), mixed with the seed.
fn fnv(text: &str, seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A configuration's combination of variants: the sorted multiset.
fn combination(variants: &[String]) -> String {
    let mut key = variants.to_vec();
    key.sort();
    key.join("+")
}

/// Salt of the validation split's hash, so that it draws differently from
/// the held-out-mix split.
const VALIDATION_SALT: u64 = 0x7661_6c69_6461_7465;

/// Whether a training example is in the validation share (never a solo
/// configuration: those are the lookup's and every variant needs them).
fn is_validation(e: &Example, opts: &TrainOptions) -> bool {
    e.variants.len() > 1
        && (fnv(&combination(&e.variants), opts.seed ^ VALIDATION_SALT) % 10_000) as f64 / 10_000.0
            < opts.validation_fraction
}

/// Turn checked dataset rows into examples with their split.
pub fn examples(
    d: &Descriptors,
    rows: &[ProfileRow],
    opts: &TrainOptions,
) -> Result<Vec<Example>, EstimateError> {
    configurations(rows)
        .into_iter()
        .map(|cfg| {
            let query = query_of(d, &cfg)?;
            let variants: Vec<String> = cfg.iter().map(|r| r.variant.clone()).collect();
            let held_arch = query
                .tenants
                .iter()
                .any(|p| d.get(p.model).architecture == opts.heldout_arch);
            let key = combination(&variants);
            let held_mix = cfg.len() > 1
                && (fnv(&key, opts.seed) % 10_000) as f64 / 10_000.0 < opts.heldout_mix_fraction;
            Ok(Example {
                query,
                variants,
                mode: cfg[0].mode.clone(),
                p50_ms: cfg.iter().map(|r| r.service_p50_ms).collect(),
                p95_ms: cfg.iter().map(|r| r.service_p95_ms).collect(),
                power_w: cfg[0].power_w,
                split: if held_arch {
                    Split::HeldoutArch
                } else if held_mix {
                    Split::HeldoutMix
                } else {
                    Split::Train
                },
            })
        })
        .collect()
}

fn mean_std(xs: impl Iterator<Item = f64>) -> (f64, f64) {
    let v: Vec<f64> = xs.collect();
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt().max(1e-6))
}

/// Targets of a batch, normalised: (`[B, T]` ln p50, `[B, T]` ln p95, `[B]` ln power).
fn targets(batch: &[&Example], meta: &EstimatorMeta) -> (Tensor, Tensor, Tensor) {
    let t = batch.iter().map(|e| e.p50_ms.len()).max().unwrap_or(1);
    let mut p50 = vec![0f32; batch.len() * t];
    let mut p95 = vec![0f32; batch.len() * t];
    for (i, e) in batch.iter().enumerate() {
        for j in 0..e.p50_ms.len() {
            p50[i * t + j] = ((e.p50_ms[j].ln() - meta.p50_mean) / meta.p50_std) as f32;
            p95[i * t + j] = ((e.p95_ms[j].ln() - meta.p50_mean) / meta.p50_std) as f32;
        }
    }
    let power: Vec<f32> = batch
        .iter()
        .map(|e| ((e.power_w.ln() - meta.power_mean) / meta.power_std) as f32)
        .collect();
    let shape = [batch.len() as i64, t as i64];
    (
        Tensor::from_slice(&p50).view(shape),
        Tensor::from_slice(&p95).view(shape),
        Tensor::from_slice(&power),
    )
}

/// Train an estimator on the `Train` examples. `dataset` and `device`
/// label the metadata. Returns the estimator and the last epoch's loss.
pub fn train(
    descriptors: Descriptors,
    all: &[Example],
    opts: &TrainOptions,
    dataset: &str,
    device: &str,
    mut progress: impl FnMut(usize, f64),
) -> (TransformerEstimator, f64) {
    tch::set_num_threads(1);
    let (validation, train): (Vec<&Example>, Vec<&Example>) = all
        .iter()
        .filter(|e| e.split == Split::Train)
        .partition(|e| is_validation(e, opts));
    let (p50_mean, p50_std) = mean_std(train.iter().flat_map(|e| e.p50_ms.iter().map(|x| x.ln())));
    let (power_mean, power_std) = mean_std(train.iter().map(|e| e.power_w.ln()));
    let meta = EstimatorMeta {
        shape: opts.shape,
        p50_mean,
        p50_std,
        power_mean,
        power_std,
        seed: opts.seed,
        heldout_arch: opts.heldout_arch.clone(),
        heldout_mix_fraction: opts.heldout_mix_fraction,
        epochs: opts.epochs,
        weight_decay: Some(opts.weight_decay),
        dataset: dataset.to_string(),
        device: device.to_string(),
        train_configs: train.len() + validation.len(),
        validation_configs: validation.len(),
        best_epoch: None,
        validation_mape_pct: None,
    };
    let mut est = TransformerEstimator::fresh(meta, descriptors);
    let mut opt = nn::AdamW {
        wd: opts.weight_decay,
        ..Default::default()
    }
    .build(est.var_store(), opts.learning_rate)
    .expect("Adam over a CPU var store");
    let mut rng = SmallRng::seed_from_u64(opts.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let steps_per_epoch = train.len().div_ceil(opts.batch.max(1)).max(1);
    let total = (opts.epochs * steps_per_epoch).max(1);
    let mut step = 0usize;
    let mut last = f64::NAN;
    let mut best: Option<Validated> = None;
    for epoch in 0..opts.epochs {
        order.shuffle(&mut rng);
        let mut sum = 0.0;
        for chunk in order.chunks(opts.batch.max(1)) {
            let batch: Vec<&Example> = chunk.iter().map(|&i| train[i]).collect();
            let queries: Vec<MappingQuery> = batch.iter().map(|e| e.query.clone()).collect();
            let (tokens, mask) = batch_tensors(est.descriptors(), &queries);
            let (t50, t95, tp) = targets(&batch, est.meta());
            let out = est.network().forward(&tokens, &mask);
            let p95 = &out.p50 + &out.tail_gap / est.meta().p50_std;
            let n = mask.sum(Kind::Float);
            let lat = ((&out.p50 - &t50).square() * &mask).sum(Kind::Float) / &n;
            let tail = ((&p95 - &t95).square() * &mask).sum(Kind::Float) / &n;
            let power = (&out.power - &tp).square().mean(Kind::Float);
            let loss = lat + 0.5 * tail + power;
            // Cosine decay from the peak rate to 5% of it.
            let frac = step as f64 / total as f64;
            opt.set_lr(
                opts.learning_rate
                    * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos())),
            );
            opt.backward_step(&loss);
            sum += loss.double_value(&[]);
            step += 1;
        }
        last = sum / steps_per_epoch as f64;
        let due = (epoch + 1) % opts.validate_every.max(1) == 0 || epoch + 1 == opts.epochs;
        if !validation.is_empty() && due {
            // A NaN score (a diverged network) never counts as the best.
            let score = Some(validation_score(&est, &validation))
                .filter(|x| x.is_finite())
                .unwrap_or(f64::INFINITY);
            if best.as_ref().is_none_or(|b| score < b.0) {
                let weights = est
                    .var_store()
                    .variables()
                    .into_iter()
                    .map(|(name, t)| (name, t.detach().copy()))
                    .collect();
                best = Some((score, epoch + 1, weights));
            }
        }
        progress(epoch, last);
    }
    if let Some((score, epochs, weights)) = best {
        let mut vars = est.var_store().variables();
        for (name, saved) in weights {
            if let Some(var) = vars.get_mut(&name) {
                tch::no_grad(|| var.copy_(&saved));
            }
        }
        est.meta.best_epoch = Some(epochs);
        est.meta.validation_mape_pct = Some(score);
    }
    (est, last)
}

/// The best validated epoch so far: (score, epochs trained, a copy of the
/// weights).
type Validated = (f64, usize, Vec<(String, Tensor)>);

/// What picks the epoch: the mean of the median-latency and power MAPEs
/// (%) on the validation configurations.
fn validation_score(est: &TransformerEstimator, validation: &[&Example]) -> f64 {
    let queries: Vec<MappingQuery> = validation.iter().map(|e| e.query.clone()).collect();
    let Ok(preds) = est.predict_libtorch(&queries) else {
        return f64::INFINITY;
    };
    let (lat, _) = mape(validation.iter().zip(&preds).flat_map(|(e, p)| {
        p.service_p50_s
            .iter()
            .map(|s| s * 1000.0)
            .zip(e.p50_ms.iter().copied())
    }));
    let (power, _) = mape(
        validation
            .iter()
            .zip(&preds)
            .map(|(e, p)| (p.power_w, e.power_w)),
    );
    (lat + power) / 2.0
}

/// One line of `estimator_eval.csv`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EvalRow {
    /// `transformer`, `lookup` or `linear`.
    pub model: &'static str,
    /// `latency` (median service), `latency_p95` or `power`.
    pub target: &'static str,
    /// `train`, `heldout-mix` or `heldout-arch`.
    pub split: &'static str,
    /// Mean absolute percentage error.
    pub mape_pct: f64,
    /// Values it is the mean over (tenant rows, or configurations for power).
    pub n: usize,
}

/// Per-example predictions: (p50 ms per tenant, p95 ms per tenant, power W).
type Predicted = (Vec<f64>, Vec<f64>, f64);

/// (variant, mode, threads, unit kind index): a solo profile's key.
type SoloKey = (String, String, u32, usize);

struct Lookup {
    solo: HashMap<SoloKey, (f64, f64)>,
    gmacs: HashMap<String, f64>,
    power: HashMap<(String, usize), (f64, usize)>,
    power_mode: HashMap<String, (f64, usize)>,
}

impl Lookup {
    fn new(d: &Descriptors, train: &[&Example]) -> Lookup {
        let mut acc: HashMap<SoloKey, (f64, f64, usize)> = HashMap::new();
        let mut power: HashMap<(String, usize), (f64, usize)> = HashMap::new();
        let mut power_mode: HashMap<String, (f64, usize)> = HashMap::new();
        for e in train {
            let n = e.p50_ms.len();
            if n == 1 {
                let p = &e.query.tenants[0];
                let k = (
                    e.variants[0].clone(),
                    e.mode.clone(),
                    p.threads,
                    p.kind.index(),
                );
                let a = acc.entry(k).or_insert((0.0, 0.0, 0));
                a.0 += e.p50_ms[0];
                a.1 += e.p95_ms[0];
                a.2 += 1;
            }
            let a = power.entry((e.mode.clone(), n)).or_insert((0.0, 0));
            a.0 += e.power_w;
            a.1 += 1;
            let a = power_mode.entry(e.mode.clone()).or_insert((0.0, 0));
            a.0 += e.power_w;
            a.1 += 1;
        }
        Lookup {
            solo: acc
                .into_iter()
                .map(|(k, (a, b, n))| (k, (a / n as f64, b / n as f64)))
                .collect(),
            gmacs: d
                .rows()
                .iter()
                .map(|r| (r.variant.clone(), r.gmacs))
                .collect(),
            power,
            power_mode,
        }
    }

    fn predict(&self, e: &Example) -> Predicted {
        let (mut p50, mut p95) = (Vec::new(), Vec::new());
        for (p, v) in e.query.tenants.iter().zip(&e.variants) {
            let key = (v.clone(), e.mode.clone(), p.threads, p.kind.index());
            let (a, b) = self.solo.get(&key).copied().unwrap_or_else(|| {
                // Nearest model in MACs at the same mode, threads and kind,
                // scaled by the MAC ratio.
                let g = self.gmacs.get(v).copied().unwrap_or(1.0);
                self.solo
                    .iter()
                    .filter(|(k, _)| k.1 == e.mode && k.2 == p.threads && k.3 == p.kind.index())
                    .min_by(|x, y| {
                        let gx = self.gmacs.get(&x.0 .0).copied().unwrap_or(1.0);
                        let gy = self.gmacs.get(&y.0 .0).copied().unwrap_or(1.0);
                        // Ties (two names of one network) go to the first
                        // name in order, not to the map's iteration order.
                        (gx / g)
                            .ln()
                            .abs()
                            .total_cmp(&(gy / g).ln().abs())
                            .then_with(|| x.0.cmp(y.0))
                    })
                    .map(|(k, &(a, b))| {
                        let r = g / self.gmacs.get(&k.0).copied().unwrap_or(g);
                        (a * r, b * r)
                    })
                    .unwrap_or((f64::NAN, f64::NAN))
            });
            p50.push(a);
            p95.push(b);
        }
        let power = self
            .power
            .get(&(e.mode.clone(), e.p50_ms.len()))
            .or_else(|| self.power_mode.get(&e.mode))
            .map_or(f64::NAN, |(s, n)| s / *n as f64);
        (p50, p95, power)
    }
}

/// Ridge regression on `features` rows; returns the weights.
fn ridge(a: &[Vec<f64>], y: &[f64], lambda: f64) -> Vec<f64> {
    let (n, k) = (a.len() as i64, a[0].len() as i64);
    let flat: Vec<f64> = a.iter().flatten().copied().collect();
    let a = Tensor::from_slice(&flat).view([n, k]);
    let y = Tensor::from_slice(y).view([n, 1]);
    let at = a.transpose(0, 1);
    let lhs = at.matmul(&a) + Tensor::eye(k, (Kind::Double, tch::Device::Cpu)) * lambda;
    let w = Tensor::linalg_solve(&lhs, &at.matmul(&y), true);
    Vec::<f64>::try_from(w.flatten(0, -1)).expect("a double vector")
}

fn dot(w: &[f64], x: &[f64]) -> f64 {
    w.iter().zip(x).map(|(a, b)| a * b).sum()
}

struct Linear {
    p50: Vec<f64>,
    p95: Vec<f64>,
    power: Vec<f64>,
}

impl Linear {
    fn tenant_features(d: &Descriptors, q: &MappingQuery) -> Vec<Vec<f64>> {
        let tokens = encode(d, q);
        let n = tokens.len();
        (0..n)
            .map(|i| {
                let same: Vec<usize> = (0..n)
                    .filter(|&j| j != i && q.tenants[j].unit == q.tenants[i].unit)
                    .collect();
                let mut f: Vec<f64> = tokens[i].iter().map(|&x| x as f64).collect();
                // The mean token of its unit-mates (zeros when alone).
                let mut mates = [0.0f64; FEATURES];
                for &j in &same {
                    for (m, &x) in mates.iter_mut().zip(&tokens[j]) {
                        *m += x as f64 / same.len() as f64;
                    }
                }
                f.extend(mates);
                f.push(same.len() as f64);
                f.push((n - 1) as f64);
                f.push(1.0);
                f
            })
            .collect()
    }

    fn config_features(d: &Descriptors, q: &MappingQuery) -> Vec<f64> {
        let tokens = encode(d, q);
        let n = tokens.len() as f64;
        let mut f: Vec<f64> = (0..FEATURES)
            .map(|c| tokens.iter().map(|t| t[c] as f64).sum::<f64>() / n)
            .collect();
        f.push(n);
        f.push(1.0);
        f
    }

    fn fit(d: &Descriptors, train: &[&Example]) -> Linear {
        let (mut a, mut y50, mut y95, mut ap, mut yp) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for e in train {
            for (j, f) in Self::tenant_features(d, &e.query).into_iter().enumerate() {
                a.push(f);
                y50.push(e.p50_ms[j].ln());
                y95.push(e.p95_ms[j].ln());
            }
            ap.push(Self::config_features(d, &e.query));
            yp.push(e.power_w.ln());
        }
        Linear {
            p50: ridge(&a, &y50, 1e-3),
            p95: ridge(&a, &y95, 1e-3),
            power: ridge(&ap, &yp, 1e-3),
        }
    }

    fn predict(&self, d: &Descriptors, e: &Example) -> Predicted {
        let f = Self::tenant_features(d, &e.query);
        (
            f.iter().map(|x| dot(&self.p50, x).exp()).collect(),
            f.iter().map(|x| dot(&self.p95, x).exp()).collect(),
            dot(&self.power, &Self::config_features(d, &e.query)).exp(),
        )
    }
}

fn mape(pairs: impl Iterator<Item = (f64, f64)>) -> (f64, usize) {
    let (mut s, mut n) = (0.0, 0usize);
    for (pred, actual) in pairs {
        s += if pred.is_finite() {
            (pred - actual).abs() / actual
        } else {
            1.0
        };
        n += 1;
    }
    (100.0 * s / n.max(1) as f64, n)
}

/// Evaluate the estimator and both baselines on every split.
pub fn evaluate(
    est: &mut TransformerEstimator,
    all: &[Example],
) -> Result<Vec<EvalRow>, EstimateError> {
    tch::set_num_threads(1);
    let d = est.descriptors().clone();
    let train: Vec<&Example> = all.iter().filter(|e| e.split == Split::Train).collect();
    let lookup = Lookup::new(&d, &train);
    let linear = Linear::fit(&d, &train);
    let mut out = Vec::new();
    for split in Split::ALL {
        let part: Vec<&Example> = all.iter().filter(|e| e.split == split).collect();
        if part.is_empty() {
            continue;
        }
        let mut transformer = Vec::new();
        for chunk in part.chunks(256) {
            let q: Vec<MappingQuery> = chunk.iter().map(|e| e.query.clone()).collect();
            for p in est.predict(&q)? {
                let ms = |s: &Vec<f64>| s.iter().map(|x| x * 1000.0).collect::<Vec<_>>();
                transformer.push((ms(&p.service_p50_s), ms(&p.service_p95_s), p.power_w));
            }
        }
        let models: [(&'static str, Vec<Predicted>); 3] = [
            ("transformer", transformer),
            ("lookup", part.iter().map(|e| lookup.predict(e)).collect()),
            (
                "linear",
                part.iter().map(|e| linear.predict(&d, e)).collect(),
            ),
        ];
        for (model, preds) in models {
            let lat = mape(
                part.iter()
                    .zip(&preds)
                    .flat_map(|(e, p)| p.0.iter().copied().zip(e.p50_ms.iter().copied())),
            );
            let tail = mape(
                part.iter()
                    .zip(&preds)
                    .flat_map(|(e, p)| p.1.iter().copied().zip(e.p95_ms.iter().copied())),
            );
            let power = mape(part.iter().zip(&preds).map(|(e, p)| (p.2, e.power_w)));
            for (target, (m, n)) in [("latency", lat), ("latency_p95", tail), ("power", power)] {
                out.push(EvalRow {
                    model,
                    target,
                    split: split.name(),
                    mape_pct: m,
                    n,
                });
            }
        }
    }
    Ok(out)
}

/// Write `estimator_eval.csv`.
pub fn write_eval(path: &std::path::Path, rows: &[EvalRow]) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_path(path)?;
    for r in rows {
        w.serialize(r)?;
    }
    w.flush()?;
    Ok(())
}
