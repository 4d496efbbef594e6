//! The trained network's forward pass without libtorch, for queries.
//!
//! The estimator is tiny (width 32, two layers: about 20 k parameters), so
//! a libtorch forward pass is almost all per-operator overhead — some 45
//! operators, each dispatched, shape-checked and allocated — and a batch
//! of 32 candidates took 0.8 ms at the median and 1.2–1.3 ms at p99
//! (docs/results.md §8.2). [`FastNetwork`] copies the weights out of the
//! var store once and runs the same arithmetic in plain loops over each
//! candidate's own tenants (no padding to the batch's longest). Training
//! stays on libtorch (autograd); `tests` check the two agree.
//!
//! Equivalence with [`super::network::Network::forward`]: padding tokens
//! there get a −1e9 attention bias and are left out of the pooled mean, so
//! a candidate's outputs do not depend on its padding; here there is none.

use super::network::{NetworkShape, PowerHead, ADDITIVE_FLOOR_W};
use std::collections::HashMap;
use tch::{Kind, Tensor};

/// LayerNorm's epsilon: `tch::nn::LayerNormConfig::default().eps`.
const LAYER_NORM_EPS: f32 = 1e-5;

/// A linear layer, `y = W x + b`, `W` row-major `[out, in]` as libtorch
/// stores it.
#[derive(Debug, Clone)]
struct Dense {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
}

impl Dense {
    fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// `y = x Wᵀ + b` for every row of `x` (`[rows, inputs]` row-major)
    /// into `y` (`[rows, outputs]`): one matrix product (matrixmultiply
    /// picks AVX/FMA kernels at run time where the CPU has them).
    fn rows(&self, x: &[f32], y: &mut [f32]) {
        let (k, n) = (self.inputs, self.outputs());
        let rows = x.len() / k;
        assert!(
            x.len() == rows * k && y.len() == rows * n,
            "[rows, in] → [rows, out]"
        );
        assert_eq!(self.weight.len(), n * k, "W is [out, in]");
        for row in y.chunks_exact_mut(n) {
            row.copy_from_slice(&self.bias);
        }
        if rows == 0 {
            return;
        }
        // SAFETY: the lengths asserted above keep every access in bounds:
        // A = x is rows×k row-major (row stride k, column stride 1); B = Wᵀ
        // reads W ([n, k] row-major) as k×n with row stride 1 and column
        // stride k; C = y is rows×n row-major. `y` is a unique borrow, so C
        // aliases neither A nor B.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                k,
                n,
                1.0,
                x.as_ptr(),
                k as isize,
                1,
                self.weight.as_ptr(),
                1,
                k as isize,
                1.0,
                y.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    }
}

/// `Σ a[i] b[i]` in eight independent partial sums: a float sum in one
/// chain cannot be reordered, so the compiler would not vectorise it (the
/// result differs from libtorch's order only in rounding).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[derive(Debug, Clone)]
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Norm {
    /// LayerNorm of every row of `x` into `y`.
    fn rows(&self, x: &[f32], y: &mut [f32]) {
        let w = self.weight.len();
        for (a, b) in x.chunks_exact(w).zip(y.chunks_exact_mut(w)) {
            self.apply(a, b);
        }
    }

    /// LayerNorm over one row (biased variance, as libtorch).
    fn apply(&self, x: &[f32], y: &mut [f32]) {
        let n = x.len() as f32;
        let mean = x.iter().sum::<f32>() / n;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (var + LAYER_NORM_EPS).sqrt();
        for (((out, v), w), b) in y.iter_mut().zip(x).zip(&self.weight).zip(&self.bias) {
            *out = (v - mean) * inv * w + b;
        }
    }
}

#[derive(Debug, Clone)]
struct Layer {
    norm1: Norm,
    qkv: Dense,
    proj: Dense,
    norm2: Norm,
    ff1: Dense,
    ff2: Dense,
}

/// GELU, exact form (libtorch's `gelu("none")`).
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf to 1.5e-7 absolute (Abramowitz & Stegun 7.1.26; within 5e-7 after
/// f32 rounding, a few ulps of the GELU it feeds): one `exp` per value, where
/// `libm::erff` evaluates a longer series.
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let z = x.abs();
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    (1.0 - poly * (-z * z).exp()).copysign(x)
}

/// libtorch's `softplus` (β = 1, threshold 20).
fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// The network's raw outputs for one candidate (normalised log units, as
/// [`super::network::NetworkOutput`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FastOutput {
    /// Per tenant: normalised ln median service.
    pub p50: Vec<f32>,
    /// Per tenant: ln(p95 / p50) ≥ 0.
    pub tail_gap: Vec<f32>,
    /// Normalised ln device power.
    pub power: f32,
}

/// The forward pass in plain Rust, over weights copied from a var store.
#[derive(Debug, Clone)]
pub struct FastNetwork {
    width: usize,
    heads: usize,
    embed: Dense,
    layers: Vec<Layer>,
    norm: Norm,
    latency: Dense,
    power_hidden: Dense,
    power: Dense,
    /// [`PowerHead::Additive`]: per-tenant part, `[1 / std, −mean / std]`.
    additive: Option<(Dense, [f32; 2])>,
}

/// A tensor the var store lacks, or of the wrong shape: the network and
/// this copy of it disagree (a bug, caught by the tests).
#[derive(Debug, thiserror::Error)]
#[error("estimator weights: {0}")]
pub struct FastNetworkError(String);

fn values(
    vars: &HashMap<String, Tensor>,
    name: &str,
    len: usize,
) -> Result<Vec<f32>, FastNetworkError> {
    let t = vars
        .get(name)
        .ok_or_else(|| FastNetworkError(format!("tensor '{name}' is missing")))?;
    let v = Vec::<f32>::try_from(t.detach().to_kind(Kind::Float).flatten(0, -1))
        .map_err(|e| FastNetworkError(format!("tensor '{name}': {e}")))?;
    if v.len() != len {
        return Err(FastNetworkError(format!(
            "tensor '{name}' has {} values, the shape needs {len}",
            v.len()
        )));
    }
    Ok(v)
}

impl FastNetwork {
    /// Copy the weights of a [`super::network::Network`] of `shape` out of
    /// its var store's `variables`.
    pub fn from_vars(
        vars: &HashMap<String, Tensor>,
        shape: &NetworkShape,
    ) -> Result<Self, FastNetworkError> {
        let w = shape.width as usize;
        let dense =
            |name: &str, inputs: usize, outputs: usize| -> Result<Dense, FastNetworkError> {
                Ok(Dense {
                    weight: values(vars, &format!("{name}.weight"), inputs * outputs)?,
                    bias: values(vars, &format!("{name}.bias"), outputs)?,
                    inputs,
                })
            };
        let norm = |name: &str| -> Result<Norm, FastNetworkError> {
            Ok(Norm {
                weight: values(vars, &format!("{name}.weight"), w)?,
                bias: values(vars, &format!("{name}.bias"), w)?,
            })
        };
        let ff = shape.ff_width as usize;
        let layers = (0..shape.layers)
            .map(|i| {
                let p = format!("layer{i}");
                Ok(Layer {
                    norm1: norm(&format!("{p}.norm1"))?,
                    qkv: dense(&format!("{p}.qkv"), w, 3 * w)?,
                    proj: dense(&format!("{p}.proj"), w, w)?,
                    norm2: norm(&format!("{p}.norm2"))?,
                    ff1: dense(&format!("{p}.ff1"), w, ff)?,
                    ff2: dense(&format!("{p}.ff2"), ff, w)?,
                })
            })
            .collect::<Result<Vec<_>, FastNetworkError>>()?;
        Ok(FastNetwork {
            width: w,
            heads: shape.heads as usize,
            embed: dense("embed", shape.features as usize, w)?,
            layers,
            norm: norm("norm")?,
            latency: dense("latency", w, 2)?,
            power_hidden: dense("power_hidden", w, w)?,
            power: dense("power", w, 1)?,
            additive: match shape.power_head {
                PowerHead::Pooled => None,
                PowerHead::Additive => {
                    let norm = values(vars, "power_norm", 2)?;
                    Some((dense("power_tenant", w, 1)?, [norm[0], norm[1]]))
                }
            },
        })
    }

    /// One candidate: `tokens` holds its tenants' feature rows back to back
    /// (`features` numbers each).
    pub fn forward(&self, tokens: &[f32]) -> FastOutput {
        let t = tokens.len() / self.embed.inputs;
        self.forward_batch(tokens, &[t])
            .pop()
            .expect("one output per candidate")
    }

    /// Candidates of `lens[c]` tenants each, their feature rows back to back
    /// in `tokens`. The dense layers run over every token of the batch at
    /// once (one matrix product each); attention and pooling stay within a
    /// candidate. With no tenants a candidate's pooled state is zero, as
    /// libtorch's masked mean makes it.
    pub fn forward_batch(&self, tokens: &[f32], lens: &[usize]) -> Vec<FastOutput> {
        let f = self.embed.inputs;
        let (w, heads) = (self.width, self.heads);
        let n: usize = lens.iter().sum();
        assert_eq!(tokens.len(), n * f, "whole tokens, as many as `lens` says");
        let dh = w / heads;
        let scale = 1.0 / (dh as f32).sqrt();
        let ffw = self.layers.first().map_or(0, |l| l.ff1.outputs());
        let mut x = vec![0f32; n * w];
        self.embed.rows(tokens, &mut x);
        let (mut h, mut tmp) = (vec![0f32; n * w], vec![0f32; n * w]);
        let (mut qkv, mut att, mut hidden) = (
            vec![0f32; n * 3 * w],
            vec![0f32; n * w],
            vec![0f32; n * ffw],
        );
        let mut scores = Vec::new();
        for layer in &self.layers {
            // Attention block (pre-norm).
            layer.norm1.rows(&x, &mut h);
            layer.qkv.rows(&h, &mut qkv);
            let mut first = 0;
            for &t in lens {
                scores.resize(t, 0.0);
                // qkv row layout: [q | k | v], each `heads × dh` (libtorch's
                // view [t, 3, heads, dh]).
                let rows = &qkv[first * 3 * w..(first + t) * 3 * w];
                for i in 0..t {
                    for hd in 0..heads {
                        let q = &rows[i * 3 * w + hd * dh..][..dh];
                        for (j, s) in scores.iter_mut().enumerate() {
                            *s = dot(q, &rows[j * 3 * w + w + hd * dh..][..dh]) * scale;
                        }
                        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let mut sum = 0.0;
                        for s in scores.iter_mut() {
                            *s = (*s - max).exp();
                            sum += *s;
                        }
                        let out = &mut att[(first + i) * w + hd * dh..][..dh];
                        out.fill(0.0);
                        for (j, s) in scores.iter().enumerate() {
                            let p = s / sum;
                            let v = &rows[j * 3 * w + 2 * w + hd * dh..][..dh];
                            out.iter_mut().zip(v).for_each(|(o, vv)| *o += p * vv);
                        }
                    }
                }
                first += t;
            }
            layer.proj.rows(&att, &mut tmp);
            x.iter_mut().zip(&tmp).for_each(|(a, b)| *a += b);
            // Feed-forward block (pre-norm).
            layer.norm2.rows(&x, &mut h);
            layer.ff1.rows(&h, &mut hidden);
            hidden.iter_mut().for_each(|v| *v = gelu(*v));
            layer.ff2.rows(&hidden, &mut tmp);
            x.iter_mut().zip(&tmp).for_each(|(a, b)| *a += b);
        }
        self.norm.rows(&x, &mut h);
        let mut lat = vec![0f32; n * 2];
        self.latency.rows(&h, &mut lat);
        let c = lens.len();
        let mut pooled = vec![0f32; c * w];
        let mut first = 0;
        for (&t, p) in lens.iter().zip(pooled.chunks_exact_mut(w)) {
            for row in h[first * w..(first + t) * w].chunks_exact(w) {
                p.iter_mut().zip(row).for_each(|(a, b)| *a += b);
            }
            p.iter_mut().for_each(|a| *a /= t.max(1) as f32);
            first += t;
        }
        let mut hidden = vec![0f32; c * w];
        self.power_hidden.rows(&pooled, &mut hidden);
        hidden.iter_mut().for_each(|v| *v = gelu(*v));
        let mut power = vec![0f32; c];
        self.power.rows(&hidden, &mut power);
        if let Some((tenant, [scale, offset])) = &self.additive {
            let mut parts = vec![0f32; n];
            tenant.rows(&h, &mut parts);
            let mut first = 0;
            for (&t, p) in lens.iter().zip(power.iter_mut()) {
                let watts = softplus(*p)
                    + parts[first..first + t]
                        .iter()
                        .map(|&x| softplus(x))
                        .sum::<f32>();
                first += t;
                // libtorch's clamp_min passes a NaN through; `max` would not.
                debug_assert!(!watts.is_nan(), "finite weights give finite watts");
                *p = watts.max(ADDITIVE_FLOOR_W as f32).ln() * scale + offset;
            }
            debug_assert_eq!(first, n, "every token belongs to one candidate");
        }
        let mut first = 0;
        lens.iter()
            .zip(power)
            .map(|(&t, power)| {
                let rows = &lat[first * 2..(first + t) * 2];
                first += t;
                FastOutput {
                    p50: rows.iter().step_by(2).copied().collect(),
                    tail_gap: rows
                        .iter()
                        .skip(1)
                        .step_by(2)
                        .map(|&g| softplus(g))
                        .collect(),
                    power,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_within_its_bound_of_libm() {
        for i in -4000..=4000 {
            let x = i as f32 / 1000.0;
            let (ours, reference) = (erf(x), libm::erf(x as f64));
            assert!(
                (ours as f64 - reference).abs() < 5e-7,
                "erf({x}) = {ours}, libm {reference}"
            );
        }
    }

    #[test]
    fn dot_adds_every_product() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let b = vec![2.0f32; 19];
        assert_eq!(dot(&a, &b), 2.0 * (0..19).sum::<i32>() as f32);
    }
}
