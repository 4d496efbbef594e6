//! Which DNN a tenant runs.
//!
//! A [`ModelSpec`] names a model; the backends in `ecomap-actors` load and run
//! it. `Vision` models are the `tch::vision` builtins (randomly initialised:
//! weights are irrelevant to latency), `TorchScript` loads a `.pt` file, and
//! `Synthetic` spins for a fixed service time (scheduler benchmarks, hosts
//! without libtorch).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A `tch::vision` builtin network. All take a 1x3x224x224 image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum VisionModel {
    /// ResNet-18.
    ResNet18,
    /// ResNet-34.
    ResNet34,
    /// ResNet-50.
    ResNet50,
    /// ResNet-101.
    ResNet101,
    /// ResNet-152.
    ResNet152,
    /// MobileNetV2.
    MobileNetV2,
    /// SqueezeNet 1.1.
    SqueezeNet1_1,
    /// EfficientNet-B0.
    EfficientNetB0,
}

impl VisionModel {
    /// Every builtin, for messages that list the choices.
    pub const ALL: [VisionModel; 8] = [
        VisionModel::ResNet18,
        VisionModel::ResNet34,
        VisionModel::ResNet50,
        VisionModel::ResNet101,
        VisionModel::ResNet152,
        VisionModel::MobileNetV2,
        VisionModel::SqueezeNet1_1,
        VisionModel::EfficientNetB0,
    ];

    /// Input tensor shape (batch 1).
    pub fn input_shape(self) -> [i64; 4] {
        [1, 3, 224, 224]
    }
}

/// What a tenant's requests run.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub enum ModelSpec {
    /// A `tch::vision` builtin, e.g. `Vision(MobileNetV2)`.
    Vision(VisionModel),
    /// A `tch::vision` builtin fed a smaller (or larger) square image, e.g.
    /// `VisionAt(model: MobileNetV2, size: 128)`: the same network at a
    /// lower resolution, a cheaper variant. All builtins end in global
    /// pooling, so any size from 32 up works.
    VisionAt {
        /// The network.
        model: VisionModel,
        /// Input height and width in pixels.
        size: i64,
    },
    /// A TorchScript module saved with `torch.jit.save` whose forward takes
    /// one FP32 tensor. The load generators' requests run it on a random
    /// input of `example_shape` (default: `input_shape` with any `-1` taken
    /// as 224); callers' inputs must fit `input_shape`. A relative path is
    /// resolved against the workload (or catalog) file's folder.
    TorchScript {
        /// Path of the `.pt` file.
        path: PathBuf,
        /// Shape of the input tensor, batch dimension included; `-1` where
        /// any size is accepted (e.g. `[1, 3, -1, -1]` for images).
        input_shape: Vec<i64>,
        /// The input the module is run on for requests without one.
        #[serde(default)]
        example_shape: Option<Vec<i64>>,
        /// What the module returns, in order (e.g. a detector's boxes,
        /// labels and scores); without it, found by a trial pass.
        #[serde(default)]
        outputs: Option<Vec<crate::tensor::TensorSpec>>,
    },
    /// Any variant of a family of the workload's model catalog, e.g.
    /// `Family("imagenet-classifier")`; the quality policy picks which.
    Family(String),
    /// Busy-spin for `service` per request, e.g. `Synthetic(service: "1ms")`.
    Synthetic {
        /// Service time of one request.
        #[serde(with = "humantime_serde")]
        service: Duration,
    },
}

/// The most values a TorchScript model's example input may hold: 32 M
/// (128 MiB of FP32), room for a 4K RGB frame (3840 × 2160 × 3 = 24.9 M).
pub const MAX_EXAMPLE_ELEMENTS: i64 = 32 * 1024 * 1024;

impl ModelSpec {
    /// Check the parameters that can be checked without loading anything.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ModelSpec::Vision(_) | ModelSpec::Family(_) => Ok(()),
            ModelSpec::VisionAt { size, .. } => {
                if (32..=1024).contains(size) {
                    Ok(())
                } else {
                    Err(format!(
                        "VisionAt size must be 32..=1024 pixels, got {size}"
                    ))
                }
            }
            ModelSpec::TorchScript {
                path,
                input_shape,
                example_shape,
                outputs,
            } => {
                if input_shape.is_empty() || input_shape.iter().any(|&d| d <= 0 && d != -1) {
                    return Err(format!(
                        "TorchScript input_shape must be a non-empty list of positive sizes \
                         (or -1 for any size), got {input_shape:?}"
                    ));
                }
                if let Some(e) = example_shape {
                    let fits = e.len() == input_shape.len()
                        && e.iter()
                            .zip(input_shape)
                            .all(|(&x, &want)| x > 0 && (want < 0 || x == want));
                    if !fits {
                        return Err(format!(
                            "TorchScript example_shape {e:?} must be positive sizes that fit \
                             input_shape {input_shape:?}"
                        ));
                    }
                }
                // The example input is allocated at load (FP32), given or
                // made from input_shape (-1 → 224): bound it, as VisionAt's
                // images are, well above any frame.
                let e = self.example_shape().unwrap_or_default();
                let elements = e
                    .iter()
                    .try_fold(1i64, |n, &x| n.checked_mul(x))
                    .unwrap_or(i64::MAX);
                if elements > MAX_EXAMPLE_ELEMENTS {
                    return Err(format!(
                        "TorchScript example input {e:?} (example_shape, or input_shape with \
                         -1 as 224) holds {elements} values, more than the \
                         {MAX_EXAMPLE_ELEMENTS} (128 MiB of FP32) an example input may; give a \
                         frame-sized example_shape"
                    ));
                }
                if let Some(o) = outputs {
                    if o.is_empty()
                        || o.iter()
                            .any(|t| t.name.is_empty() || t.shape.iter().any(|&d| d < -1))
                    {
                        return Err(
                            "TorchScript outputs must name at least one tensor, each with a \
                             name and a shape of sizes (or -1)"
                                .into(),
                        );
                    }
                }
                if !path.is_file() {
                    return Err(format!(
                        "TorchScript file {} does not exist or is not a file",
                        path.display()
                    ));
                }
                Ok(())
            }
            ModelSpec::Synthetic { service } => {
                // At most an hour, as a device description's costs: start-up
                // runs two warm-up passes, and a pass of a day would hold
                // it at "loading models" for two.
                if service.is_zero() || *service > std::time::Duration::from_secs(3600) {
                    Err(format!(
                        "Synthetic service time must be positive and at most an hour, e.g. \
                         \"1ms\"; got {}",
                        humantime::format_duration(*service)
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// What a caller's input must be, or `None` for any tensor (a
    /// synthetic model echoes whatever it is given; an unresolved family
    /// has no model yet). Vision builtins take an FP32 image batch of one,
    /// any height and width: it is resized to each variant's size.
    pub fn input_spec(&self) -> Option<crate::tensor::TensorSpec> {
        use crate::tensor::{DataType, TensorSpec};
        match self {
            ModelSpec::Vision(_) | ModelSpec::VisionAt { .. } => {
                Some(TensorSpec::new("input", DataType::Fp32, vec![1, 3, -1, -1]))
            }
            ModelSpec::TorchScript { input_shape, .. } => Some(TensorSpec::new(
                "input",
                DataType::Fp32,
                input_shape.clone(),
            )),
            ModelSpec::Synthetic { .. } | ModelSpec::Family(_) => None,
        }
    }

    /// The input a TorchScript module runs on for requests without one.
    pub fn example_shape(&self) -> Option<Vec<i64>> {
        match self {
            ModelSpec::TorchScript {
                input_shape,
                example_shape,
                ..
            } => Some(example_shape.clone().unwrap_or_else(|| {
                input_shape
                    .iter()
                    .map(|&d| if d < 0 { 224 } else { d })
                    .collect()
            })),
            _ => None,
        }
    }

    /// The outputs a model declares (TorchScript `outputs`), if any.
    pub fn declared_outputs(&self) -> Option<&[crate::tensor::TensorSpec]> {
        match self {
            ModelSpec::TorchScript { outputs, .. } => outputs.as_deref(),
            _ => None,
        }
    }

    /// Whether running this model needs the libtorch backend.
    pub fn needs_libtorch(&self) -> bool {
        !matches!(self, ModelSpec::Synthetic { .. })
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSpec::Vision(v) => write!(f, "{v:?}"),
            ModelSpec::VisionAt { model, size } => write!(f, "{model:?}@{size}"),
            ModelSpec::Family(name) => write!(f, "Family({name})"),
            ModelSpec::TorchScript { path, .. } => write!(f, "TorchScript({})", path.display()),
            ModelSpec::Synthetic { service } => {
                write!(f, "Synthetic({})", humantime::format_duration(*service))
            }
        }
    }
}
