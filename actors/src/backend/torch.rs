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
use ecomap::tensor::{DataType, TensorData};
use tch::nn::ModuleT;
use tch::{nn, CModule, Device, IValue, Kind, Tensor};

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

    /// One forward pass on `x` (for comparing with what the runtime
    /// returns for the same input).
    pub fn forward_on(&self, x: &Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        self.net.forward_t(x, false)
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

    /// The caller's image batch, resized to this variant's input size if
    /// it differs (a lighter variant runs at a lower resolution), through
    /// the network; the logits back.
    fn infer(&mut self, input: &TensorData) -> Result<Vec<TensorData>, BackendError> {
        let _guard = tch::no_grad_guard();
        let device = self.input.device();
        // SAFETY (of the shared view): the builtins' first operation is a
        // convolution that reads its input and never writes it.
        let x = shared_view(input, device)?;
        let want = self.input.size();
        let x = if x.size() == want {
            x
        } else {
            x.f_upsample_bilinear2d([want[2], want[3]], false, None, None)
                .map_err(run_error)?
        };
        let out = self.net.forward_t(&x, false);
        Ok(vec![to_tensor_data(&out)?])
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
    /// The caller's input (copied once: a TorchScript module may write to
    /// its input in place) through the module; every tensor of its output
    /// (a tensor, or tuples, lists and dicts of them, in order) back.
    fn infer(&mut self, input: &TensorData) -> Result<Vec<TensorData>, BackendError> {
        let _guard = tch::no_grad_guard();
        // libtorch reads shape × element size bytes: check there are.
        input
            .check()
            .map_err(|e| BackendError::Run(e.to_string()))?;
        let x = Tensor::f_from_data_size(&input.data, &input.shape, kind_of(input.dtype))
            .map_err(run_error)?
            .to_device(self.input.device());
        let out = self
            .module
            .forward_is(&[IValue::Tensor(x)])
            .map_err(run_error)?;
        let mut tensors = Vec::new();
        collect_tensors(out, &mut tensors);
        // Copying each output to the CPU waits for a CUDA pass to end.
        tensors.iter().map(to_tensor_data).collect()
    }

    fn run(&mut self) -> Result<(), BackendError> {
        let _guard = tch::no_grad_guard();
        // Any output (a tensor, or tuples and dicts of them: a detector).
        let _out = self
            .module
            .forward_is(&[IValue::Tensor(self.input.shallow_clone())])
            .map_err(|e| BackendError::Run(e.to_string()))?;
        if let Device::Cuda(i) = self.input.device() {
            tch::Cuda::synchronize(i64::try_from(i).unwrap_or(0));
        }
        Ok(())
    }
}

fn run_error(e: tch::TchError) -> BackendError {
    BackendError::Run(e.to_string())
}

/// The libtorch kind of a datatype.
fn kind_of(d: DataType) -> Kind {
    match d {
        DataType::Bool => Kind::Bool,
        DataType::Uint8 => Kind::Uint8,
        DataType::Int8 => Kind::Int8,
        DataType::Int16 => Kind::Int16,
        DataType::Int32 => Kind::Int,
        DataType::Int64 => Kind::Int64,
        DataType::Fp16 => Kind::Half,
        DataType::Fp32 => Kind::Float,
        DataType::Fp64 => Kind::Double,
    }
}

/// The datatype of a libtorch kind, if the protocol has one.
fn datatype_of(k: Kind) -> Option<DataType> {
    Some(match k {
        Kind::Bool => DataType::Bool,
        Kind::Uint8 => DataType::Uint8,
        Kind::Int8 => DataType::Int8,
        Kind::Int16 => DataType::Int16,
        Kind::Int => DataType::Int32,
        Kind::Int64 => DataType::Int64,
        Kind::Half => DataType::Fp16,
        Kind::Float => DataType::Fp32,
        Kind::Double => DataType::Fp64,
        _ => return None,
    })
}

/// A tensor over the caller's bytes, read-only: shared (no copy) when they
/// are aligned for the element type, copied once otherwise; moved to
/// `device`. The caller must not let the model write to it, and must drop
/// it before `input`.
fn shared_view(input: &TensorData, device: Device) -> Result<Tensor, BackendError> {
    // The bytes must be exactly what the shape needs before libtorch reads
    // them as a tensor (the fields of a `TensorData` are public).
    input
        .check()
        .map_err(|e| BackendError::Run(e.to_string()))?;
    let kind = kind_of(input.dtype);
    let ptr = input.data.as_ptr();
    let t = if !input.data.is_empty() && (ptr as usize) % input.dtype.size() == 0 {
        // SAFETY: `ptr` points to `input.data.len()` initialised bytes,
        // exactly shape × element size (`input.check()` above), aligned
        // for the element type (checked above). The tensor does not own them:
        // callers drop it before `input`, and only read through it (no
        // in-place operation on a model's input; under `no_grad`, nothing
        // keeps it for a backward pass).
        unsafe { Tensor::f_from_blob(ptr, &input.shape, &[], kind, Device::Cpu) }
    } else {
        Tensor::f_from_data_size(&input.data, &input.shape, kind)
    }
    .map_err(run_error)?;
    Ok(if device == Device::Cpu {
        t
    } else {
        t.to_device(device)
    })
}

/// A libtorch tensor's values, copied out (the caller gets its own bytes).
fn to_tensor_data(t: &Tensor) -> Result<TensorData, BackendError> {
    let t = t.to_device(Device::Cpu).contiguous();
    let kind = t.kind();
    let dtype = datatype_of(kind)
        .ok_or_else(|| BackendError::Run(format!("the model returned a {kind:?} tensor")))?;
    let numel = t.numel();
    let mut bytes = vec![0u8; numel * dtype.size()];
    t.f_copy_data_u8(&mut bytes, numel).map_err(run_error)?;
    TensorData::new(dtype, t.size(), bytes.into()).map_err(|e| BackendError::Run(e.to_string()))
}

/// Every tensor in a TorchScript output, depth first, in order.
fn collect_tensors(v: IValue, out: &mut Vec<Tensor>) {
    match v {
        IValue::Tensor(t) => out.push(t),
        IValue::TensorList(ts) => out.extend(ts),
        IValue::Tuple(vs) | IValue::GenericList(vs) => {
            vs.into_iter().for_each(|v| collect_tensors(v, out))
        }
        IValue::GenericDict(kvs) => kvs.into_iter().for_each(|(_, v)| collect_tensors(v, out)),
        _ => {}
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
            ModelSpec::TorchScript { path, .. } => {
                let input_shape = spec.example_shape().unwrap_or_default();
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
