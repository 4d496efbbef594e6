//! The estimator's network: a small transformer encoder over tenant tokens.
//!
//! One token per tenant ([`ecomap::estimate::encode`]); two pre-norm encoder
//! layers of multi-head self-attention let each tenant's prediction depend
//! on who else shares its unit and the device; per token a head predicts
//! the median service time and the gap to the 95th percentile (in log
//! space, so errors are relative), and a power head predicts device power:
//! from the mean of the tokens ([`PowerHead::Pooled`]), or as a base from
//! that mean plus one non-negative contribution per tenant
//! ([`PowerHead::Additive`]: the shape of a device whose power is idle plus
//! each busy unit's share).

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Shape of the network (saved beside its weights).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkShape {
    /// Numbers per input token.
    pub features: i64,
    /// Width of the token embedding.
    pub width: i64,
    /// Attention heads (divides `width`).
    pub heads: i64,
    /// Encoder layers.
    pub layers: i64,
    /// Hidden width of each layer's feed-forward block.
    pub ff_width: i64,
    /// How the power head reads the tokens (absent in estimators trained
    /// before session 9: `Pooled`).
    #[serde(default)]
    pub power_head: PowerHead,
}

/// How the network predicts device power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum PowerHead {
    /// An MLP on the mean of the tenant tokens.
    #[default]
    Pooled,
    /// Watts = base + Σ per-tenant part: the base (≥ 0) from the MLP on
    /// the mean token, each tenant's part (≥ 0) from its own token after
    /// attention. Power on a device is its idle draw plus what each busy
    /// unit adds, so a mix of tenants never seen together is a sum of parts
    /// that were. The sum is normalised like the target, `(ln W − mean) /
    /// std`, with the training set's constants (stored, not trained), so
    /// the parts stay in watts.
    Additive,
}

impl Default for NetworkShape {
    fn default() -> Self {
        NetworkShape {
            features: ecomap::estimate::FEATURES as i64,
            width: 32,
            heads: 4,
            layers: 2,
            ff_width: 64,
            power_head: PowerHead::Pooled,
        }
    }
}

#[derive(Debug)]
struct EncoderLayer {
    norm1: nn::LayerNorm,
    qkv: nn::Linear,
    proj: nn::Linear,
    norm2: nn::LayerNorm,
    ff1: nn::Linear,
    ff2: nn::Linear,
    heads: i64,
}

impl EncoderLayer {
    fn new(p: &nn::Path<'_>, s: &NetworkShape) -> Self {
        let ln = || nn::LayerNormConfig::default();
        EncoderLayer {
            norm1: nn::layer_norm(p / "norm1", vec![s.width], ln()),
            qkv: nn::linear(p / "qkv", s.width, 3 * s.width, Default::default()),
            proj: nn::linear(p / "proj", s.width, s.width, Default::default()),
            norm2: nn::layer_norm(p / "norm2", vec![s.width], ln()),
            ff1: nn::linear(p / "ff1", s.width, s.ff_width, Default::default()),
            ff2: nn::linear(p / "ff2", s.ff_width, s.width, Default::default()),
            heads: s.heads,
        }
    }

    /// `x`: `[B, T, W]`; `key_bias`: `[B, 1, 1, T]`, 0 for real tokens and a
    /// large negative number for padding.
    fn forward(&self, x: &Tensor, key_bias: &Tensor) -> Tensor {
        let (b, t, w) = x.size3().expect("tokens are [batch, tenants, width]");
        let dh = w / self.heads;
        let qkv = self
            .qkv
            .forward(&self.norm1.forward(x))
            .view([b, t, 3, self.heads, dh])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let scores = q.matmul(&k.transpose(-2, -1)) / (dh as f64).sqrt() + key_bias;
        let att = scores
            .softmax(-1, Kind::Float)
            .matmul(&v)
            .transpose(1, 2)
            .reshape([b, t, w]);
        let x = x + self.proj.forward(&att);
        let ff = self
            .ff2
            .forward(&self.ff1.forward(&self.norm2.forward(&x)).gelu("none"));
        x + ff
    }
}

/// The least power the additive head takes the log of (W): keeps the log
/// finite when every part is near zero.
pub const ADDITIVE_FLOOR_W: f64 = 1e-3;

/// The network.
#[derive(Debug)]
pub struct Network {
    embed: nn::Linear,
    layers: Vec<EncoderLayer>,
    norm: nn::LayerNorm,
    latency: nn::Linear,
    power_hidden: nn::Linear,
    power: nn::Linear,
    /// [`PowerHead::Additive`]: per-tenant part, and `[1 / std, −mean /
    /// std]` mapping ln watts to the normalised target (not trained).
    additive: Option<(nn::Linear, Tensor)>,
}

/// What the network outputs, in normalised log units.
#[derive(Debug)]
pub struct NetworkOutput {
    /// `[B, T]`: normalised ln median service.
    pub p50: Tensor,
    /// `[B, T]`: ln(p95 / p50) ≥ 0.
    pub tail_gap: Tensor,
    /// `[B]`: normalised ln device power.
    pub power: Tensor,
}

impl Network {
    /// Build with fresh parameters under `p`.
    pub fn new(p: &nn::Path<'_>, s: &NetworkShape) -> Network {
        Network {
            embed: nn::linear(p / "embed", s.features, s.width, Default::default()),
            layers: (0..s.layers)
                .map(|i| EncoderLayer::new(&(p / format!("layer{i}")), s))
                .collect(),
            norm: nn::layer_norm(p / "norm", vec![s.width], Default::default()),
            latency: nn::linear(p / "latency", s.width, 2, Default::default()),
            power_hidden: nn::linear(p / "power_hidden", s.width, s.width, Default::default()),
            power: nn::linear(p / "power", s.width, 1, Default::default()),
            additive: (s.power_head == PowerHead::Additive).then(|| {
                (
                    nn::linear(p / "power_tenant", s.width, 1, Default::default()),
                    p.zeros_no_train("power_norm", &[2]),
                )
            }),
        }
    }

    /// Set the additive head's normalisation to the training set's,
    /// `(ln W − ln_mean) / ln_std` (no-op for the pooled head). Not a
    /// trained parameter: the optimiser never sees it, so the parts stay
    /// in watts; a loaded estimator reads it from its weights file.
    pub fn set_power_norm(&mut self, ln_mean: f64, ln_std: f64) {
        debug_assert!(ln_std > 0.0, "EstimatorMeta::problem refuses a zero spread");
        if let Some((_, norm)) = &mut self.additive {
            tch::no_grad(|| {
                norm.copy_(&Tensor::from_slice(&[
                    (1.0 / ln_std) as f32,
                    (-ln_mean / ln_std) as f32,
                ]));
            });
        }
    }

    /// `tokens`: `[B, T, F]`; `mask`: `[B, T]`, 1 for a tenant and 0 for padding.
    pub fn forward(&self, tokens: &Tensor, mask: &Tensor) -> NetworkOutput {
        let key_bias = ((mask - 1.0) * 1e9).unsqueeze(1).unsqueeze(1);
        let mut x = self.embed.forward(tokens);
        for layer in &self.layers {
            x = layer.forward(&x, &key_bias);
        }
        let x = self.norm.forward(&x);
        let lat = self.latency.forward(&x);
        let m = mask.unsqueeze(-1);
        let pooled = (&x * &m).sum_dim_intlist(1, false, Kind::Float)
            / m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0);
        let head = self
            .power
            .forward(&self.power_hidden.forward(&pooled).gelu("none"))
            .squeeze_dim(-1);
        let power =
            match &self.additive {
                None => head,
                Some((tenant, norm)) => {
                    let parts = (tenant.forward(&x).squeeze_dim(-1).softplus() * mask)
                        .sum_dim_intlist(1, false, Kind::Float);
                    let watts = head.softplus() + parts;
                    watts.clamp_min(ADDITIVE_FLOOR_W).log() * norm.get(0) + norm.get(1)
                }
            };
        NetworkOutput {
            p50: lat.select(-1, 0),
            tail_gap: lat.select(-1, 1).softplus(),
            power,
        }
    }
}
