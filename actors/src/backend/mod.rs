//! Inference backends: what a worker calls to run one request.
//!
//! A [`Backend`] loads a [`ModelSpec`] into a [`LoadedModel`]; a worker then
//! calls [`LoadedModel::run`] once per request of the load generators (the
//! model's own synthetic input), or [`LoadedModel::infer`] on a caller's
//! input tensor, whose outputs go back to the caller. Two backends exist:
//! - [`synthetic::SyntheticBackend`] spins for a fixed service time;
//! - `torch::TorchBackend` (cargo feature `tch`, on by default) runs real
//!   forward passes with libtorch.
//!
//! [`load_model`] picks the backend a spec needs.

pub mod synthetic;
#[cfg(feature = "tch")]
pub mod torch;

use ecomap::config::rt::DeviceSpec;
use ecomap::model::ModelSpec;
use ecomap::tensor::TensorData;

/// A backend failed to load or run a model.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The model could not be loaded.
    #[error("cannot load {model}: {reason}")]
    Load {
        /// The model.
        model: String,
        /// Why.
        reason: String,
    },
    /// A forward pass failed.
    #[error("inference failed: {0}")]
    Run(String),
    /// The backend panicked while loading or warming the model up.
    #[error("the backend panicked while loading the model")]
    Panicked,
}

/// A model ready to serve requests, owned by one worker thread.
pub trait LoadedModel {
    /// Run one request (one forward pass on the model's input).
    fn run(&mut self) -> Result<(), BackendError>;

    /// Run one request on the caller's `input` (already checked against
    /// the tenant's input spec) and return the model's outputs.
    fn infer(&mut self, input: &TensorData) -> Result<Vec<TensorData>, BackendError>;

    /// Bytes of parameters the model holds (0 when unknown).
    fn parameter_bytes(&self) -> u64 {
        0
    }
}

/// Something that turns a model spec into a runnable model.
pub trait Backend {
    /// Name in messages.
    fn name(&self) -> &'static str;

    /// Load `spec` for `device`. Called on the worker's own thread.
    fn load(
        &self,
        spec: &ModelSpec,
        device: DeviceSpec,
    ) -> Result<Box<dyn LoadedModel>, BackendError>;
}

/// Load `spec` with the backend it needs.
pub fn load_model(
    spec: &ModelSpec,
    device: DeviceSpec,
) -> Result<Box<dyn LoadedModel>, BackendError> {
    match spec {
        ModelSpec::Synthetic { .. } => synthetic::SyntheticBackend.load(spec, device),
        ModelSpec::Family(name) => Err(BackendError::Load {
            model: spec.to_string(),
            reason: format!(
                "family {name:?} was not resolved to its variants (the workload needs a `catalog`)"
            ),
        }),
        #[cfg(feature = "tch")]
        _ => torch::TorchBackend.load(spec, device),
        #[cfg(not(feature = "tch"))]
        _ => Err(BackendError::Load {
            model: spec.to_string(),
            reason: "this build has no libtorch backend (built without the `tch` feature); \
                     rebuild with default features, or use Synthetic models"
                .into(),
        }),
    }
}

/// Whether this build can run libtorch models.
pub const HAS_LIBTORCH: bool = cfg!(feature = "tch");
