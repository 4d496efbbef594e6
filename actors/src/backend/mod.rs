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
use ecomap::tensor::{DataType, TensorData};

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

/// A model whose every answer must have the outputs its tenant declares (or
/// that its trial pass found at load) — as many tensors, of the same
/// datatypes: a pass that returns others fails, so it is counted `failed`
/// where it is decided — not counted served and then answered with an
/// error by the server, or with tensors the client was not told of.
/// Shapes are not held: an image model's outputs may follow its input's
/// size.
pub struct CheckedOutputs {
    inner: Box<dyn LoadedModel>,
    expected: Vec<DataType>,
}

impl CheckedOutputs {
    /// `inner`, whose answers must hold one tensor of each of `expected`'s
    /// datatypes, in that order.
    pub fn new(inner: Box<dyn LoadedModel>, expected: Vec<DataType>) -> Self {
        CheckedOutputs { inner, expected }
    }
}

impl LoadedModel for CheckedOutputs {
    fn run(&mut self) -> Result<(), BackendError> {
        self.inner.run()
    }

    fn infer(&mut self, input: &TensorData) -> Result<Vec<TensorData>, BackendError> {
        let outputs = self.inner.infer(input)?;
        if outputs.len() != self.expected.len() {
            return Err(BackendError::Run(format!(
                "the model returned {} output(s), not the {} its tenant declares",
                outputs.len(),
                self.expected.len()
            )));
        }
        if let Some((i, (o, want))) = outputs
            .iter()
            .zip(&self.expected)
            .enumerate()
            .find(|(_, (o, want))| o.dtype != **want)
        {
            return Err(BackendError::Run(format!(
                "the model's output {i} is {}, not the {want} its tenant declares",
                o.dtype
            )));
        }
        Ok(outputs)
    }

    fn parameter_bytes(&self) -> u64 {
        self.inner.parameter_bytes()
    }
}

/// A `Synthetic` variant in a family of real models: it runs, taking its
/// time, for requests without an input (generated load), but it has none
/// of the family's outputs to give a client, so a pass on a client's input
/// fails (counted `failed`) rather than answer with the input echoed.
/// `ecomap serve` refuses such a family at start.
pub struct StandIn {
    inner: Box<dyn LoadedModel>,
}

impl StandIn {
    /// `inner`, a stand-in.
    pub fn new(inner: Box<dyn LoadedModel>) -> Self {
        StandIn { inner }
    }
}

impl LoadedModel for StandIn {
    fn run(&mut self) -> Result<(), BackendError> {
        self.inner.run()
    }

    fn infer(&mut self, _input: &TensorData) -> Result<Vec<TensorData>, BackendError> {
        // It runs all the same: a stand-in takes its time whatever it answers.
        self.inner.run()?;
        Err(BackendError::Run(
            "a Synthetic stand-in served the request: it has none of its family's outputs \
             (a family that serves clients' inputs needs real models only)"
                .into(),
        ))
    }

    fn parameter_bytes(&self) -> u64 {
        self.inner.parameter_bytes()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers with as many copies of its input as the input's first value.
    struct Varying;

    impl LoadedModel for Varying {
        fn run(&mut self) -> Result<(), BackendError> {
            Ok(())
        }
        fn infer(&mut self, input: &TensorData) -> Result<Vec<TensorData>, BackendError> {
            let n = input.to_f32().unwrap()[0] as usize;
            Ok(vec![input.clone(); n])
        }
    }

    #[test]
    fn an_answer_with_other_outputs_than_declared_is_a_failed_pass() {
        let mut m = CheckedOutputs::new(Box::new(Varying), vec![DataType::Fp32; 2]);
        let x = |n: f32| TensorData::from_f32(vec![1], &[n]).unwrap();
        assert_eq!(m.infer(&x(2.0)).unwrap().len(), 2);
        let e = m.infer(&x(1.0)).unwrap_err().to_string();
        assert!(e.contains("returned 1 output(s), not the 2"), "{e}");
        assert!(m.infer(&x(3.0)).is_err());
        assert!(m.run().is_ok());
        // As many tensors, but one of another datatype.
        let mut m = CheckedOutputs::new(Box::new(Varying), vec![DataType::Fp32, DataType::Int64]);
        let e = m.infer(&x(2.0)).unwrap_err().to_string();
        assert!(e.contains("output 1 is FP32, not the INT64"), "{e}");
    }
}
