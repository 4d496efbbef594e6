//! Tensors as callers hand them in and get them back: a datatype, a shape
//! and the raw little-endian bytes, with no dependency on libtorch (the
//! core builds without it). The datatype names are the Open Inference
//! Protocol's (KServe v2, Triton), so a tensor crosses the HTTP server,
//! the embeddable API and the backends unchanged.
//!
//! The bytes are a [`bytes::Bytes`]: cloning or slicing one shares the
//! buffer, so an input read from a request body reaches the backend without
//! a copy.
//!
//! ```
//! use ecomap::tensor::{DataType, TensorData, TensorSpec};
//! let t = TensorData::from_f32(vec![1, 3], &[0.5, 1.0, 2.0]).unwrap();
//! assert_eq!(t.dtype, DataType::Fp32);
//! assert_eq!(t.to_f32().unwrap(), vec![0.5, 1.0, 2.0]);
//! let spec = TensorSpec::new("input", DataType::Fp32, vec![1, -1]);
//! assert!(spec.accepts(&t).is_ok());
//! assert!(TensorData::new(DataType::Fp32, vec![2, 2], vec![0u8; 3].into()).is_err());
//! ```

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// An element type, named as the Open Inference Protocol names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataType {
    /// `BOOL`, one byte per element.
    #[serde(rename = "BOOL")]
    Bool,
    /// `UINT8`.
    #[serde(rename = "UINT8")]
    Uint8,
    /// `INT8`.
    #[serde(rename = "INT8")]
    Int8,
    /// `INT16`.
    #[serde(rename = "INT16")]
    Int16,
    /// `INT32`.
    #[serde(rename = "INT32")]
    Int32,
    /// `INT64`.
    #[serde(rename = "INT64")]
    Int64,
    /// `FP16`.
    #[serde(rename = "FP16")]
    Fp16,
    /// `FP32`.
    #[serde(rename = "FP32")]
    Fp32,
    /// `FP64`.
    #[serde(rename = "FP64")]
    Fp64,
}

impl DataType {
    /// Every datatype, for messages.
    pub const ALL: [DataType; 9] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Int16 | DataType::Fp16 => 2,
            DataType::Int32 | DataType::Fp32 => 4,
            DataType::Int64 | DataType::Fp64 => 8,
        }
    }

    /// The protocol's name, e.g. `FP32`.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
        }
    }

    /// The datatype of a protocol name, if it is one ecomap carries.
    pub fn from_name(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.name() == name)
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a tensor is malformed or not what a model takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    /// A dimension is negative (or the element count overflows).
    #[error("shape {shape:?} is not a valid tensor shape (dimensions must be ≥ 0)")]
    BadShape {
        /// The shape given.
        shape: Vec<i64>,
    },
    /// The byte length does not match datatype × shape.
    #[error("a {dtype} tensor of shape {shape:?} takes {expected} bytes, but {actual} were given")]
    Size {
        /// Datatype.
        dtype: DataType,
        /// Shape.
        shape: Vec<i64>,
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The datatype is not the model's.
    #[error("input '{name}' takes {expected} data, not {actual}")]
    DataType {
        /// Input name.
        name: String,
        /// What the model takes.
        expected: DataType,
        /// What was given.
        actual: DataType,
    },
    /// The shape is not the model's.
    #[error(
        "input '{name}' takes shape {expected:?} (-1: any size of at least 1), not {actual:?}"
    )]
    Shape {
        /// Input name.
        name: String,
        /// What the model takes.
        expected: Vec<i64>,
        /// What was given.
        actual: Vec<i64>,
    },
}

/// Number of elements of `shape`, if it is a valid shape.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| {
        usize::try_from(d).ok().and_then(|d| n.checked_mul(d))
    })
}

/// A tensor's datatype, shape and little-endian bytes (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData {
    /// Element type.
    pub dtype: DataType,
    /// Dimensions.
    pub shape: Vec<i64>,
    /// `dtype.size() × Π shape` bytes.
    pub data: Bytes,
}

impl TensorData {
    /// A tensor, checked: the bytes must be exactly what the shape needs.
    pub fn new(dtype: DataType, shape: Vec<i64>, data: Bytes) -> Result<Self, TensorError> {
        let n = element_count(&shape).ok_or_else(|| TensorError::BadShape {
            shape: shape.clone(),
        })?;
        let expected = n
            .checked_mul(dtype.size())
            .ok_or_else(|| TensorError::BadShape {
                shape: shape.clone(),
            })?;
        if data.len() != expected {
            return Err(TensorError::Size {
                dtype,
                shape,
                expected,
                actual: data.len(),
            });
        }
        Ok(TensorData { dtype, shape, data })
    }

    /// An FP32 tensor from values.
    pub fn from_f32(shape: Vec<i64>, values: &[f32]) -> Result<Self, TensorError> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        TensorData::new(DataType::Fp32, shape, bytes.into())
    }

    /// Check that the bytes are exactly what datatype × shape needs (the
    /// fields are public, so a tensor built by hand may not be); the
    /// backends rely on it before reading the bytes as a tensor.
    pub fn check(&self) -> Result<(), TensorError> {
        let n = element_count(&self.shape).ok_or_else(|| TensorError::BadShape {
            shape: self.shape.clone(),
        })?;
        let expected = n
            .checked_mul(self.dtype.size())
            .ok_or_else(|| TensorError::BadShape {
                shape: self.shape.clone(),
            })?;
        if self.data.len() == expected {
            Ok(())
        } else {
            Err(TensorError::Size {
                dtype: self.dtype,
                shape: self.shape.clone(),
                expected,
                actual: self.data.len(),
            })
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len() / self.dtype.size()
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The values, if the datatype is FP32.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        (self.dtype == DataType::Fp32).then(|| {
            self.data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    }
}

/// What a model takes or gives: a name, a datatype and a shape (`-1`: any
/// size in that dimension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    /// Name (the protocol's tensor name).
    pub name: String,
    /// Element type.
    pub datatype: DataType,
    /// Dimensions; `-1` where any size of at least 1 is accepted (an
    /// empty image is no input a model can run on).
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// A spec.
    pub fn new(name: impl Into<String>, datatype: DataType, shape: Vec<i64>) -> Self {
        TensorSpec {
            name: name.into(),
            datatype,
            shape,
        }
    }

    /// Whether `t` has this spec's datatype and shape (and is consistent:
    /// [`TensorData::check`]).
    pub fn accepts(&self, t: &TensorData) -> Result<(), TensorError> {
        t.check()?;
        if t.dtype != self.datatype {
            return Err(TensorError::DataType {
                name: self.name.clone(),
                expected: self.datatype,
                actual: t.dtype,
            });
        }
        let fits = t.shape.len() == self.shape.len()
            && self
                .shape
                .iter()
                .zip(&t.shape)
                .all(|(&want, &got)| if want < 0 { got >= 1 } else { want == got });
        if fits {
            Ok(())
        } else {
            Err(TensorError::Shape {
                name: self.name.clone(),
                expected: self.shape.clone(),
                actual: t.shape.clone(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_and_overflow_is_an_error_not_a_panic() {
        assert!(TensorData::new(DataType::Int64, vec![2], vec![0u8; 16].into()).is_ok());
        let e = TensorData::new(DataType::Int64, vec![2], vec![0u8; 15].into()).unwrap_err();
        assert!(e.to_string().contains("takes 16 bytes, but 15"));
        assert!(matches!(
            TensorData::new(DataType::Fp32, vec![-1], Bytes::new()),
            Err(TensorError::BadShape { .. })
        ));
        assert!(matches!(
            TensorData::new(DataType::Fp64, vec![i64::MAX, i64::MAX], Bytes::new()),
            Err(TensorError::BadShape { .. })
        ));
    }

    #[test]
    fn a_spec_names_what_does_not_fit() {
        let spec = TensorSpec::new("image", DataType::Fp32, vec![1, 3, -1, -1]);
        let ok = TensorData::from_f32(vec![1, 3, 2, 2], &[0.0; 12]).unwrap();
        assert!(spec.accepts(&ok).is_ok());
        // A free dimension is at least 1: an empty image is refused here
        // (a 400), not left to fail in the forward pass.
        let empty = TensorData::from_f32(vec![1, 3, 0, 0], &[]).unwrap();
        assert!(matches!(
            spec.accepts(&empty),
            Err(TensorError::Shape { .. })
        ));
        let flat = TensorData::from_f32(vec![12], &[0.0; 12]).unwrap();
        assert!(spec
            .accepts(&flat)
            .unwrap_err()
            .to_string()
            .contains("[1, 3, -1, -1]"));
        let ints =
            TensorData::new(DataType::Uint8, vec![1, 3, 2, 2], vec![0u8; 12].into()).unwrap();
        assert!(spec
            .accepts(&ints)
            .unwrap_err()
            .to_string()
            .contains("FP32 data, not UINT8"));
        assert_eq!(DataType::from_name("INT64"), Some(DataType::Int64));
        // A spec in a RON catalog with a misspelt field is refused.
        let bad = crate::config::parse_ron::<TensorSpec>(
            r#"(name: "x", datatype: FP32, shape: [1], dims: [2])"#,
            std::path::Path::new("m.ron"),
            "catalog",
        );
        assert!(bad.unwrap_err().to_string().contains("dims"));
        assert_eq!(DataType::from_name("BYTES"), None);
    }
}
