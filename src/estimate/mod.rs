//! Latency and power estimation of a workload *mapping*: which variant of
//! each tenant's model runs on which execution unit, at which power mode.
//!
//! The core defines the question ([`MappingQuery`]), the answer
//! ([`MappingPrediction`]) and how a query becomes the estimator's input
//! ([`encode`]: one token of [`FEATURES`] numbers per tenant), so the
//! trainer, the runtime's estimator actor and the planner share one
//! encoding. The learned estimator itself (a small transformer encoder on
//! libtorch) lives in `ecomap-actors`; the planner ([`crate::planner`])
//! only sees the [`MappingEstimator`] trait, so it runs on hand-made
//! estimators in tests.

pub mod analytic;
pub mod dataset;
pub mod descriptors;
pub mod profile_plan;

use crate::device::spec::UnitKind;
use descriptors::Descriptors;

/// Numbers per tenant token.
pub const FEATURES: usize = 22;

/// Largest number of execution units a token can name.
pub const MAX_UNITS: usize = 4;

/// One tenant's placement in a candidate mapping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Index of its variant in the [`Descriptors`] table.
    pub model: usize,
    /// Index of its unit among the device's units (< [`MAX_UNITS`]).
    pub unit: usize,
    /// The unit's kind.
    pub kind: UnitKind,
    /// Intra-op threads of its worker.
    pub threads: u32,
    /// Offered arrival rate, requests/s.
    pub rate_hz: f64,
}

/// A candidate mapping: a power mode and every tenant's placement.
#[derive(Debug, Clone, PartialEq)]
pub struct MappingQuery {
    /// The mode's GPU, DLA and CPU clocks as fractions of the reference mode.
    pub mode_fracs: [f64; 3],
    /// One per tenant.
    pub tenants: Vec<Placement>,
}

/// What an estimator predicts of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct MappingPrediction {
    /// Per tenant: median service time, seconds.
    pub service_p50_s: Vec<f64>,
    /// Per tenant: 95th-percentile service time, seconds.
    pub service_p95_s: Vec<f64>,
    /// Device power, watts.
    pub power_w: f64,
}

/// An estimator that cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum EstimateError {
    /// The backend failed (e.g. a libtorch error).
    #[error("estimator failed: {0}")]
    Backend(String),
    /// A query names something the estimator cannot encode.
    #[error("cannot encode the query: {0}")]
    Encode(String),
}

/// Predicts latency and power of candidate mappings, in batches.
pub trait MappingEstimator {
    /// One prediction per query, in order.
    fn predict(
        &mut self,
        queries: &[MappingQuery],
    ) -> Result<Vec<MappingPrediction>, EstimateError>;
}

/// The token of one tenant of `query` (see the field comments for scaling:
/// logarithms for quantities spanning decades, fractions as they are).
pub fn encode_tenant(d: &Descriptors, query: &MappingQuery, p: &Placement) -> [f32; FEATURES] {
    let m = d.get(p.model);
    let mut x = [0f32; FEATURES];
    // Model descriptors: 0..9.
    x[0] = (m.gmacs.ln() / 3.0) as f32;
    x[1] = (m.mparams.ln() / 4.0) as f32;
    x[2] = (m.input_px / 224.0) as f32;
    x[3] = (m.layers / 100.0) as f32;
    x[4] = (m.mactivations.ln() / 3.0) as f32;
    x[5] = m.conv_kxk_frac as f32;
    x[6] = m.conv_1x1_frac as f32;
    x[7] = m.depthwise_frac as f32;
    x[8] = m.linear_frac as f32;
    // Placement: unit one-hot 9..13, kind one-hot 13..16.
    x[9 + p.unit.min(MAX_UNITS - 1)] = 1.0;
    x[13 + p.kind.index()] = 1.0;
    x[16] = p.threads as f32 / 2.0;
    x[17] = (p.rate_hz.max(1e-3).ln() / 4.0) as f32;
    // Power mode: 18..21, and the clock of this tenant's own unit.
    x[18] = query.mode_fracs[0] as f32;
    x[19] = query.mode_fracs[1] as f32;
    x[20] = query.mode_fracs[2] as f32;
    x[21] = query.mode_fracs[p.kind.index()].ln() as f32;
    x
}

/// Every tenant's token of `query`, in tenant order.
pub fn encode(d: &Descriptors, query: &MappingQuery) -> Vec<[f32; FEATURES]> {
    query
        .tenants
        .iter()
        .map(|p| encode_tenant(d, query, p))
        .collect()
}

/// Parse a unit kind name (`gpu`, `dla`, `cpu`).
pub fn unit_kind(name: &str) -> Option<UnitKind> {
    UnitKind::ALL.into_iter().find(|k| k.name() == name)
}

/// The query a profiled configuration asked (its rows in tenant order).
pub fn query_of(
    d: &Descriptors,
    rows: &[&dataset::ProfileRow],
) -> Result<MappingQuery, EstimateError> {
    let first = rows
        .first()
        .ok_or_else(|| EstimateError::Encode("a configuration with no rows".into()))?;
    let tenants = rows
        .iter()
        .map(|r| {
            Ok(Placement {
                model: d.index(&r.variant).ok_or_else(|| {
                    EstimateError::Encode(format!(
                        "variant '{}' (configuration {}) has no descriptor; add it to \
                         scripts/model_descriptors.py and regenerate rt-config/model-descriptors.csv",
                        r.variant, r.config
                    ))
                })?,
                unit: r.unit_index as usize,
                kind: unit_kind(&r.unit_kind).ok_or_else(|| {
                    EstimateError::Encode(format!("unknown unit kind '{}'", r.unit_kind))
                })?,
                threads: r.threads,
                rate_hz: r.rate_hz,
            })
        })
        .collect::<Result<_, EstimateError>>()?;
    Ok(MappingQuery {
        mode_fracs: [
            first.mode_gpu_frac,
            first.mode_dla_frac,
            first.mode_cpu_frac,
        ],
        tenants,
    })
}
