//! The libtorch backend (cargo feature `tch`).
//!
//! Vision builtins are built with `tch::vision` and random weights (weights
//! cannot be downloaded here and do not change latency); TorchScript files
//! are loaded with `tch::CModule`. Each model owns a pre-allocated random
//! input of its shape, so a request's cost is the forward pass alone, run in
//! inference mode (no autograd bookkeeping).

use super::{Backend, BackendError, LoadedModel};
use ecomap::config::rt::DeviceSpec;
use ecomap::model::{ModelSpec, VisionModel};
use tch::nn::ModuleT;
use tch::{nn, CModule, Device, Kind, Tensor};

/// Runs models with libtorch.
#[derive(Debug, Clone, Copy, Default)]
pub struct TorchBackend;

/// Convert ecomap's device to libtorch's.
pub fn device(d: DeviceSpec) -> Device {
    match d {
        DeviceSpec::Cpu => Device::Cpu,
        DeviceSpec::Cuda(i) => Device::Cuda(i),
    }
}

/// Set libtorch's process-wide intra-op thread count.
pub fn set_intra_op_threads(n: usize) {
    tch::set_num_threads(i32::try_from(n).unwrap_or(i32::MAX));
}

/// Build a `tch::vision` network with random weights in `vs`.
pub fn build_vision(model: VisionModel, vs: &nn::VarStore) -> Box<dyn ModuleT + Send> {
    let p = vs.root();
    match model {
        VisionModel::ResNet18 => Box::new(tch::vision::resnet::resnet18(&p, 1000)),
        VisionModel::ResNet34 => Box::new(tch::vision::resnet::resnet34(&p, 1000)),
        VisionModel::ResNet50 => Box::new(tch::vision::resnet::resnet50(&p, 1000)),
        VisionModel::ResNet101 => Box::new(tch::vision::resnet::resnet101(&p, 1000)),
        VisionModel::ResNet152 => Box::new(tch::vision::resnet::resnet152(&p, 1000)),
        VisionModel::MobileNetV2 => Box::new(tch::vision::mobilenet::v2(&p, 1000)),
        VisionModel::SqueezeNet1_1 => Box::new(tch::vision::squeezenet::v1_1(&p, 1000)),
        VisionModel::EfficientNetB0 => Box::new(tch::vision::efficientnet::b0(&p, 1000)),
    }
}

/// Held while seeding libtorch's process-wide generator and drawing from
/// it, so concurrent loads are reproducible per instance.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A `tch::vision` network and its input.
pub struct VisionNet {
    // Keeps the parameters alive; the module refers to them.
    vs: nn::VarStore,
    net: Box<dyn ModuleT + Send>,
    input: Tensor,
}

impl VisionNet {
    /// Build `model` on `device` with a random input. The weights and input
    /// are drawn from a fixed seed per model, so every instance of a model
    /// computes the same numbers (and takes the same time: random values
    /// can decide how many denormals a pass meets).
    pub fn new(model: VisionModel, device: Device) -> Self {
        Self::with_input(model, model.input_shape(), device)
    }

    /// Build `model` on `device` fed a random input of `shape`.
    pub fn with_input(model: VisionModel, shape: [i64; 4], device: Device) -> Self {
        // libtorch's default generator is process-wide: two workers loading
        // at once would interleave their draws, and an instance's weights
        // would depend on the other thread's timing. Seeding and drawing
        // under one lock makes each instance's numbers its own.
        let _rng = TORCH_RNG.lock().unwrap_or_else(|p| p.into_inner());
        tch::manual_seed(0x5EED_0000 + model as i64);
        let vs = nn::VarStore::new(device);
        let net = build_vision(model, &vs);
        let input = Tensor::randn(shape, (Kind::Float, device));
        VisionNet { vs, net, input }
    }

    /// One forward pass; returns the output (for tests and benchmarks).
    pub fn forward(&self) -> Result<Tensor, tch::TchError> {
        let _guard = tch::no_grad_guard();
        let out = self.net.forward_t(&self.input, false);
        // A CUDA forward pass is asynchronous; wait so the service time is real.
        if let Device::Cuda(i) = self.input.device() {
            tch::Cuda::synchronize(i64::try_from(i).unwrap_or(0));
        }
        Ok(out)
    }
}

impl LoadedModel for VisionNet {
    fn run(&mut self) -> Result<(), BackendError> {
        self.forward()
            .map(drop)
            .map_err(|e| BackendError::Run(e.to_string()))
    }

    fn parameter_bytes(&self) -> u64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
            .sum()
    }
}

/// A TorchScript module and its input.
pub struct ScriptNet {
    module: CModule,
    input: Tensor,
}

impl LoadedModel for ScriptNet {
    fn run(&mut self) -> Result<(), BackendError> {
        let _guard = tch::no_grad_guard();
        let out = self
            .module
            .forward_ts(&[&self.input])
            .map_err(|e| BackendError::Run(e.to_string()))?;
        if let Device::Cuda(i) = out.device() {
            tch::Cuda::synchronize(i64::try_from(i).unwrap_or(0));
        }
        Ok(())
    }
}

impl Backend for TorchBackend {
    fn name(&self) -> &'static str {
        "tch"
    }

    fn load(
        &self,
        spec: &ModelSpec,
        dev: DeviceSpec,
    ) -> Result<Box<dyn LoadedModel>, BackendError> {
        let d = device(dev);
        if let Device::Cuda(i) = d {
            if !tch::Cuda::is_available() || i >= tch::Cuda::device_count() as usize {
                return Err(BackendError::Load {
                    model: spec.to_string(),
                    reason: format!(
                        "CUDA device {i} is not available (libtorch sees {} CUDA device(s)); \
                         use `device: Cpu` in the rt-config",
                        tch::Cuda::device_count()
                    ),
                });
            }
        }
        // Building a network can panic inside tch on exotic failures (e.g.
        // out of device memory); turn that into an error.
        let vision = |m: VisionModel, shape: [i64; 4]| {
            std::panic::catch_unwind(move || VisionNet::with_input(m, shape, d))
                .map(|n| Box::new(n) as Box<dyn LoadedModel>)
                .map_err(|_| BackendError::Load {
                    model: spec.to_string(),
                    reason: "libtorch failed while building the network".into(),
                })
        };
        match spec {
            ModelSpec::Vision(m) => vision(*m, m.input_shape()),
            ModelSpec::VisionAt { model, size } => vision(*model, [1, 3, *size, *size]),
            ModelSpec::TorchScript { path, input_shape } => {
                let mut module =
                    CModule::load_on_device(path, d).map_err(|e| BackendError::Load {
                        model: spec.to_string(),
                        reason: format!("not a loadable TorchScript module: {e}"),
                    })?;
                module.set_eval();
                let input = {
                    let _rng = TORCH_RNG.lock().unwrap_or_else(|p| p.into_inner());
                    tch::manual_seed(0x5EED_1000);
                    Tensor::randn(input_shape.as_slice(), (Kind::Float, d))
                };
                let mut net = ScriptNet { module, input };
                // One trial run so a shape mismatch fails at load, not per request.
                net.run().map_err(|e| BackendError::Load {
                    model: spec.to_string(),
                    reason: format!("trial forward pass with input {input_shape:?} failed: {e}"),
                })?;
                Ok(Box::new(net))
            }
            ModelSpec::Synthetic { .. } => super::synthetic::SyntheticBackend.load(spec, dev),
            ModelSpec::Family(name) => Err(BackendError::Load {
                model: spec.to_string(),
                reason: format!(
                    "family {name:?} was not resolved to its variants (the workload needs a `catalog`)"
                ),
            }),
        }
    }
}
