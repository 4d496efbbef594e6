//! The Open Inference Protocol (KServe v2) as Triton's HTTP clients speak
//! it: inference request and response bodies in JSON, the binary tensor
//! data extension (`Inference-Header-Content-Length`), and error bodies.
//! Pure: bytes in, values out — the server (`server/mod.rs`) does the I/O.
//!
//! A request's inputs arrive either as JSON `data` (a flat or nested array
//! in row-major order) or as binary: the JSON header names each input's
//! `binary_data_size`, and the bytes follow the header in input order.
//! Binary inputs are slices of the request body (shared, not copied).
//! Outputs go back as binary when the request asks for it (the request
//! parameter `binary_data_output`, or an output's `binary_data`), as JSON
//! otherwise. With Triton's system shared-memory extension an input, or a
//! requested output, names a place in a shared-memory region the client
//! registered instead (`shared_memory_region`, `shared_memory_byte_size`,
//! `shared_memory_offset`): the parser only says where; the server's
//! region registry (`server/shared_memory.rs`) reads and writes it.

use bytes::{Bytes, BytesMut};
use ecomap::tensor::{element_count, DataType, TensorData, TensorError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

/// The request header of the binary tensor data extension.
pub const HEADER_LENGTH: &str = "Inference-Header-Content-Length";

/// Why a request cannot be served as sent (a 4xx).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    /// The JSON does not parse or does not have the protocol's shape.
    #[error("malformed inference request: {0}")]
    Json(String),
    /// The binary header length is wrong.
    #[error(
        "{HEADER_LENGTH} is {header} but the body has only {body} bytes; it must be the length \
         of the JSON header that starts the body"
    )]
    HeaderLength {
        /// The header's value.
        header: usize,
        /// The body's length.
        body: usize,
    },
    /// An input's binary data runs past the body.
    #[error(
        "input '{input}': binary_data_size {size} at offset {offset} runs past the {available} \
         bytes of binary data (truncated body?)"
    )]
    Truncated {
        /// Input name.
        input: String,
        /// Its declared size.
        size: usize,
        /// Where it starts in the binary section.
        offset: usize,
        /// Bytes of binary data in the body.
        available: usize,
    },
    /// Binary bytes no input claimed.
    #[error("{0} bytes of binary data follow the inputs that no input claims")]
    Unclaimed(usize),
    /// A datatype ecomap does not carry.
    #[error(
        "input '{input}': datatype {datatype:?} is not supported; use one of {}",
        supported()
    )]
    DataType {
        /// Input name.
        input: String,
        /// What was given.
        datatype: String,
    },
    /// The input's values do not fit its shape or datatype.
    #[error("input '{input}': {why}")]
    Data {
        /// Input name.
        input: String,
        /// What is wrong.
        why: String,
    },
    /// The tensor is inconsistent.
    #[error("input '{input}': {error}")]
    Tensor {
        /// Input name.
        input: String,
        /// What is wrong.
        error: TensorError,
    },
    /// A parameter has the wrong type or value.
    #[error("parameter '{name}': {why}")]
    Parameter {
        /// Parameter name.
        name: String,
        /// What is wrong.
        why: String,
    },
}

fn supported() -> String {
    DataType::ALL
        .iter()
        .map(|d| d.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestBody<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<RequestInput<'a>>,
    #[serde(default)]
    outputs: Option<Vec<RequestOutput>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestInput<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    /// Left as the body's text until the datatype is known (it may come
    /// after `data`), then read straight into the tensor's bytes: a tree
    /// of `Value`s would take 32 bytes or more per number — 16× a body of
    /// small integers.
    #[serde(default, borrow)]
    data: Option<&'a serde_json::value::RawValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestOutput {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// A tensor's place in a registered shared-memory region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMemoryRef {
    /// The region's name, as registered.
    pub region: String,
    /// Where the tensor starts, in bytes from the region's start.
    pub offset: usize,
    /// Its size in bytes (for an output: the room it has).
    pub byte_size: usize,
}

/// Where an input's values are.
#[derive(Debug, Clone, PartialEq)]
pub enum InputData {
    /// In the request: its JSON `data`, or its slice of the binary section.
    Inline(TensorData),
    /// In a shared-memory region, to be read once the region is looked up.
    Shared {
        /// Its datatype.
        dtype: DataType,
        /// Its shape.
        shape: Vec<i64>,
        /// Where it lies.
        at: SharedMemoryRef,
    },
}

impl InputData {
    /// The tensor, when it came in the request itself.
    pub fn inline(&self) -> Option<&TensorData> {
        match self {
            InputData::Inline(t) => Some(t),
            InputData::Shared { .. } => None,
        }
    }
}

/// How one requested output goes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputForm {
    /// As JSON `data`.
    Json,
    /// As binary data after the JSON header.
    Binary,
    /// Written into a shared-memory region; the response names where.
    Shared(SharedMemoryRef),
}

/// Which outputs to return, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSelection {
    /// Every output, binary if `true`.
    All {
        /// As binary data.
        binary: bool,
    },
    /// These outputs, in this order, each in its form.
    Named(Vec<(String, OutputForm)>),
}

/// A parsed inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    /// The client's request id, echoed in the response.
    pub id: Option<String>,
    /// Inputs by name, in request order.
    pub inputs: Vec<(String, InputData)>,
    /// Outputs wanted.
    pub outputs: OutputSelection,
    /// A deadline tighter than the model's (Triton's `timeout`
    /// parameter, microseconds).
    pub timeout: Option<Duration>,
}

fn flag(params: &Option<Map<String, Value>>, name: &str) -> Result<Option<bool>, ProtocolError> {
    match params.as_ref().and_then(|p| p.get(name)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ProtocolError::Parameter {
            name: name.into(),
            why: format!("must be true or false, not {other}"),
        }),
    }
}

/// The shared-memory parameters, which inputs and outputs both take.
const SHARED_MEMORY: [&str; 3] = [
    "shared_memory_region",
    "shared_memory_byte_size",
    "shared_memory_offset",
];

/// Refuse a tensor parameter other than `known` and the shared-memory
/// ones: an extension ecomap does not serve (Triton's `classification`
/// output) would otherwise be ignored, and the client would read something
/// else than it asked for (raw scores for class labels).
fn only(
    params: &Option<Map<String, Value>>,
    known: &str,
    tensor: &str,
) -> Result<(), ProtocolError> {
    let served = |k: &str| k == known || SHARED_MEMORY.contains(&k);
    match params.iter().flat_map(|p| p.keys()).find(|k| !served(k)) {
        None => Ok(()),
        Some(k) => Err(ProtocolError::Parameter {
            name: k.clone(),
            why: format!(
                "not served on {tensor}: of the tensor parameters ecomap serves only \
                 `{known}` and the shared-memory ones ({}); no classification extension",
                SHARED_MEMORY.join(", ")
            ),
        }),
    }
}

/// The tensor's shared-memory place, if its parameters give one: the
/// region and its byte size both, or neither (then no offset either), as
/// Triton requires.
fn shared_memory(
    params: &Option<Map<String, Value>>,
    tensor: &str,
) -> Result<Option<SharedMemoryRef>, ProtocolError> {
    let region = match params.as_ref().and_then(|p| p.get(SHARED_MEMORY[0])) {
        None => None,
        Some(Value::String(r)) => Some(r.clone()),
        Some(other) => {
            return Err(ProtocolError::Parameter {
                name: SHARED_MEMORY[0].into(),
                why: format!("must be a region's name (a string), not {other}"),
            })
        }
    };
    let byte_size = size(params, SHARED_MEMORY[1])?;
    let offset = size(params, SHARED_MEMORY[2])?;
    let to_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    match (region, byte_size) {
        (Some(region), Some(byte_size)) => Ok(Some(SharedMemoryRef {
            region,
            offset: offset.map_or(0, to_usize),
            byte_size: to_usize(byte_size),
        })),
        (None, None) => match offset {
            None => Ok(None),
            Some(_) => Err(ProtocolError::Parameter {
                name: SHARED_MEMORY[2].into(),
                why: format!(
                    "given on {tensor} without {} and {}",
                    SHARED_MEMORY[0], SHARED_MEMORY[1]
                ),
            }),
        },
        (Some(_), None) | (None, Some(_)) => Err(ProtocolError::Parameter {
            name: SHARED_MEMORY[0].into(),
            why: format!(
                "{tensor} needs both {} and {}, or neither",
                SHARED_MEMORY[0], SHARED_MEMORY[1]
            ),
        }),
    }
}

fn size(params: &Option<Map<String, Value>>, name: &str) -> Result<Option<u64>, ProtocolError> {
    match params.as_ref().and_then(|p| p.get(name)) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| ProtocolError::Parameter {
                name: name.into(),
                why: format!("must be a non-negative integer, not {v}"),
            }),
    }
}

/// Parse an inference request `body`; `header_length` is the
/// `Inference-Header-Content-Length` header, if sent.
pub fn parse_infer(
    body: Bytes,
    header_length: Option<usize>,
) -> Result<InferRequest, ProtocolError> {
    let (json, mut binary) = match header_length {
        None => (body.clone(), Bytes::new()),
        Some(n) if n <= body.len() => (body.slice(..n), body.slice(n..)),
        Some(n) => {
            return Err(ProtocolError::HeaderLength {
                header: n,
                body: body.len(),
            })
        }
    };
    let req: RequestBody<'_> =
        serde_json::from_slice(&json).map_err(|e| ProtocolError::Json(e.to_string()))?;
    let available = binary.len();
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for input in req.inputs {
        let dtype =
            DataType::from_name(&input.datatype).ok_or_else(|| ProtocolError::DataType {
                input: input.name.clone(),
                datatype: input.datatype.clone(),
            })?;
        let n = element_count(&input.shape).ok_or_else(|| ProtocolError::Tensor {
            input: input.name.clone(),
            error: TensorError::BadShape {
                shape: input.shape.clone(),
            },
        })?;
        let what = format!("input '{}'", input.name);
        only(&input.parameters, "binary_data_size", &what)?;
        if let Some(at) = shared_memory(&input.parameters, &what)? {
            if input.data.is_some() || size(&input.parameters, "binary_data_size")?.is_some() {
                return Err(ProtocolError::Data {
                    input: input.name,
                    why: "has shared-memory parameters and `data` or binary_data_size; send one"
                        .into(),
                });
            }
            inputs.push((
                input.name,
                InputData::Shared {
                    dtype,
                    shape: input.shape,
                    at,
                },
            ));
            continue;
        }
        let bytes = match (size(&input.parameters, "binary_data_size")?, &input.data) {
            (Some(_), Some(_)) => {
                return Err(ProtocolError::Data {
                    input: input.name,
                    why: "has both `data` and binary_data_size; send one".into(),
                })
            }
            (Some(len), None) => {
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                if len > binary.len() {
                    return Err(ProtocolError::Truncated {
                        input: input.name,
                        size: len,
                        offset: available - binary.len(),
                        available,
                    });
                }
                binary.split_to(len)
            }
            (None, Some(data)) => json_to_bytes(&input.name, dtype, n, data.get())?,
            (None, None) => {
                return Err(ProtocolError::Data {
                    input: input.name,
                    why: "has neither `data` nor a binary_data_size parameter".into(),
                })
            }
        };
        let tensor =
            TensorData::new(dtype, input.shape, bytes).map_err(|error| ProtocolError::Tensor {
                input: input.name.clone(),
                error,
            })?;
        inputs.push((input.name, InputData::Inline(tensor)));
    }
    if !binary.is_empty() {
        return Err(ProtocolError::Unclaimed(binary.len()));
    }
    let all_binary = flag(&req.parameters, "binary_data_output")?.unwrap_or(false);
    let outputs = match req.outputs {
        // No outputs named (or an empty list): every output, as Triton does.
        None => OutputSelection::All { binary: all_binary },
        Some(list) if list.is_empty() => OutputSelection::All { binary: all_binary },
        Some(list) => OutputSelection::Named(
            list.into_iter()
                .map(|o| {
                    let what = format!("output '{}'", o.name);
                    only(&o.parameters, "binary_data", &what)?;
                    let binary = flag(&o.parameters, "binary_data")?;
                    let form = match (shared_memory(&o.parameters, &what)?, binary) {
                        (Some(_), Some(true)) => {
                            return Err(ProtocolError::Parameter {
                                name: "binary_data".into(),
                                why: format!(
                                    "{what} is asked for in shared memory and as binary data; \
                                     ask for one"
                                ),
                            })
                        }
                        (Some(at), _) => OutputForm::Shared(at),
                        (None, b) if b.unwrap_or(all_binary) => OutputForm::Binary,
                        (None, _) => OutputForm::Json,
                    };
                    Ok((o.name, form))
                })
                .collect::<Result<_, ProtocolError>>()?,
        ),
    };
    let timeout = match size(&req.parameters, "timeout")? {
        None | Some(0) => None,
        Some(us) => Some(Duration::from_micros(us)),
    };
    Ok(InferRequest {
        id: req.id,
        inputs,
        outputs,
        timeout,
    })
}

/// Flatten a (possibly nested) JSON array of `n` values, the text `data`,
/// into `dtype` bytes, in one pass over the text (row-major order).
fn json_to_bytes(
    input: &str,
    dtype: DataType,
    n: usize,
    data: &str,
) -> Result<Bytes, ProtocolError> {
    use serde::de::DeserializeSeed;
    let bad = |why: String| ProtocolError::Data {
        input: input.into(),
        why,
    };
    if dtype == DataType::Fp16 {
        return Err(bad(
            "FP16 tensors must be sent as binary data (JSON has no half floats)".into(),
        ));
    }
    // Sized from the text actually sent (each value takes at least two
    // characters with its separator), not from the declared shape alone.
    let sent = data.len() / 2 + 1;
    let mut flat = Flatten {
        dtype,
        n,
        out: BytesMut::with_capacity(n.min(sent).saturating_mul(dtype.size())),
        count: 0,
        why: None,
    };
    let mut de = serde_json::Deserializer::from_str(data);
    let read = (&mut flat).deserialize(&mut de).and_then(|()| de.end());
    if let Some(why) = flat.why {
        return Err(bad(why));
    }
    read.map_err(|e| bad(format!("malformed data: {e}")))?;
    if flat.count != n {
        return Err(bad(format!(
            "{} values given, its shape holds {n}",
            flat.count
        )));
    }
    Ok(flat.out.freeze())
}

/// The state of [`json_to_bytes`]'s pass: values are appended to `out`
/// as the deserializer meets them; the first problem is kept in `why`
/// (and aborts the pass), so it reads as the protocol's error rather than
/// the JSON parser's.
struct Flatten {
    dtype: DataType,
    n: usize,
    out: BytesMut,
    count: usize,
    why: Option<String>,
}

/// One JSON value as the tensor reader met it.
#[derive(Debug, Clone, Copy)]
enum Scalar<'s> {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    /// Anything else, as the message should name it.
    Other(&'s str),
}

impl std::fmt::Display for Scalar<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(x) => write!(f, "{x}"),
            Scalar::Uint(x) => write!(f, "{x}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Other(s) => f.write_str(s),
        }
    }
}

impl Flatten {
    fn push<E: serde::de::Error>(&mut self, v: Scalar<'_>) -> Result<(), E> {
        self.count += 1;
        let why = if self.count > self.n {
            Some(format!("more than the {} values its shape holds", self.n))
        } else {
            push_scalar(&mut self.out, self.dtype, v)
                .err()
                .map(|why| format!("value #{}: {why}", self.count))
        };
        match why {
            None => Ok(()),
            Some(why) => {
                self.why = Some(why);
                Err(E::custom("stopped"))
            }
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for &mut Flatten {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for &mut Flatten {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number, a boolean, or a (nested) array of them")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(&mut *self)?.is_some() {}
        Ok(())
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.push(Scalar::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.push(Scalar::Int(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.push(Scalar::Uint(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.push(Scalar::Float(v))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        self.push(Scalar::Other("a string"))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.push(Scalar::Other("null"))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.push(Scalar::Other("an object"))
    }
}

fn push_scalar(out: &mut BytesMut, dtype: DataType, v: Scalar<'_>) -> Result<(), String> {
    let int = |lo: i64, hi: i64| -> Result<i64, String> {
        let x = match v {
            Scalar::Int(x) => x,
            Scalar::Uint(x) => {
                i64::try_from(x).map_err(|_| format!("{x} is out of range for {dtype}"))?
            }
            _ => return Err(format!("{v} is not an integer")),
        };
        if (lo..=hi).contains(&x) {
            Ok(x)
        } else {
            Err(format!("{x} is out of range for {dtype}"))
        }
    };
    let float = || match v {
        Scalar::Int(x) => Ok(x as f64),
        Scalar::Uint(x) => Ok(x as f64),
        Scalar::Float(x) => Ok(x),
        _ => Err(format!("{v} is not a number")),
    };
    match dtype {
        DataType::Bool => match v {
            Scalar::Bool(b) => out.extend_from_slice(&[u8::from(b)]),
            _ => return Err(format!("{v} is not true or false")),
        },
        DataType::Uint8 => out.extend_from_slice(&[int(0, 255)? as u8]),
        DataType::Int8 => out.extend_from_slice(&(int(-128, 127)? as i8).to_le_bytes()),
        DataType::Int16 => {
            out.extend_from_slice(&(int(i16::MIN.into(), i16::MAX.into())? as i16).to_le_bytes())
        }
        DataType::Int32 => {
            out.extend_from_slice(&(int(i32::MIN.into(), i32::MAX.into())? as i32).to_le_bytes())
        }
        DataType::Int64 => out.extend_from_slice(&int(i64::MIN, i64::MAX)?.to_le_bytes()),
        DataType::Fp32 => out.extend_from_slice(&(float()? as f32).to_le_bytes()),
        DataType::Fp64 => out.extend_from_slice(&float()?.to_le_bytes()),
        DataType::Fp16 => return Err("FP16 must be binary".into()),
    }
    Ok(())
}

/// A tensor's values as a flat JSON array.
fn bytes_to_json(t: &TensorData) -> Value {
    let d = &t.data;
    let vals: Vec<Value> = match t.dtype {
        DataType::Bool => d.iter().map(|&b| Value::Bool(b != 0)).collect(),
        DataType::Uint8 => d.iter().map(|&b| Value::from(b)).collect(),
        DataType::Int8 => d.iter().map(|&b| Value::from(b as i8)).collect(),
        DataType::Int16 => d
            .chunks_exact(2)
            .map(|c| Value::from(i16::from_le_bytes([c[0], c[1]])))
            .collect(),
        DataType::Int32 => d
            .chunks_exact(4)
            .map(|c| Value::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        DataType::Int64 => d
            .chunks_exact(8)
            .map(|c| Value::from(i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
            .collect(),
        DataType::Fp32 => d
            .chunks_exact(4)
            .map(|c| json_float(f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))))
            .collect(),
        DataType::Fp64 => d
            .chunks_exact(8)
            .map(|c| json_float(f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
            .collect(),
        // Half floats as their values (JSON has no f16).
        DataType::Fp16 => d
            .chunks_exact(2)
            .map(|c| json_float(half::f16::from_le_bytes([c[0], c[1]]).to_f64()))
            .collect(),
    };
    Value::Array(vals)
}

/// NaN and infinities have no JSON number: they become null.
fn json_float(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// One output of a response.
#[derive(Debug, Clone)]
pub struct ResponseOutput<'a> {
    /// Output name.
    pub name: &'a str,
    /// Its values.
    pub tensor: &'a TensorData,
    /// How it goes back; a shared-memory output must already have been
    /// written to its region (the response only says where).
    pub form: &'a OutputForm,
}

#[derive(Serialize)]
struct ResponseTensor {
    name: String,
    datatype: &'static str,
    shape: Vec<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
}

#[derive(Serialize)]
struct ResponseBody<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    parameters: Map<String, Value>,
    outputs: Vec<ResponseTensor>,
}

/// An encoded response: the body, and the JSON header's length when binary
/// data follows it (for the `Inference-Header-Content-Length` header).
#[derive(Debug, Clone)]
pub struct EncodedResponse {
    /// The body.
    pub body: Bytes,
    /// The JSON header's length, when binary outputs follow it.
    pub header_length: Option<usize>,
}

/// Encode a successful inference response.
pub fn encode_infer(
    model: &str,
    id: Option<&str>,
    parameters: Map<String, Value>,
    outputs: &[ResponseOutput<'_>],
) -> EncodedResponse {
    let mut binary = Vec::new();
    let tensors = outputs
        .iter()
        .map(|o| {
            let (parameters, data) = match o.form {
                OutputForm::Binary => {
                    binary.push(o.tensor.data.clone());
                    let mut p = Map::new();
                    p.insert("binary_data_size".into(), Value::from(o.tensor.data.len()));
                    (Some(p), None)
                }
                OutputForm::Json => (None, Some(bytes_to_json(o.tensor))),
                // Where it was written, and how many bytes of the room it
                // took; no `data`, as the extension requires.
                OutputForm::Shared(at) => {
                    let mut p = Map::new();
                    p.insert(SHARED_MEMORY[0].into(), Value::from(at.region.as_str()));
                    p.insert(SHARED_MEMORY[1].into(), Value::from(o.tensor.data.len()));
                    if at.offset != 0 {
                        p.insert(SHARED_MEMORY[2].into(), Value::from(at.offset));
                    }
                    (Some(p), None)
                }
            };
            ResponseTensor {
                name: o.name.to_string(),
                datatype: o.tensor.dtype.name(),
                shape: o.tensor.shape.clone(),
                parameters,
                data,
            }
        })
        .collect();
    let header = serde_json::to_vec(&ResponseBody {
        model_name: model,
        model_version: "1",
        id,
        parameters,
        outputs: tensors,
    })
    .unwrap_or_else(|_| b"{}".to_vec());
    if binary.is_empty() {
        return EncodedResponse {
            body: header.into(),
            header_length: None,
        };
    }
    let header_length = header.len();
    let mut body =
        BytesMut::with_capacity(header_length + binary.iter().map(Bytes::len).sum::<usize>());
    body.extend_from_slice(&header);
    for b in binary {
        body.extend_from_slice(&b);
    }
    EncodedResponse {
        body: body.freeze(),
        header_length: Some(header_length),
    }
}

/// The protocol's error body: `{"error": "..."}`.
pub fn error_body(message: &str) -> Bytes {
    serde_json::to_vec(&serde_json::json!({ "error": message }))
        .unwrap_or_default()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json(v: Value) -> Bytes {
        serde_json::to_vec(&v).unwrap().into()
    }

    #[test]
    fn json_inputs_flat_or_nested_become_tensors() {
        let body = json(serde_json::json!({
            "id": "7",
            "inputs": [
                {"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [[1.0, 2.0], [3.0, 4.5]]},
                {"name": "b", "shape": [3], "datatype": "INT64", "data": [1, -2, 3]}
            ],
            "parameters": {"timeout": 20000}
        }));
        let r = parse_infer(body, None).unwrap();
        assert_eq!(r.id.as_deref(), Some("7"));
        let inline = |i: usize| r.inputs[i].1.inline().unwrap();
        assert_eq!(inline(0).to_f32().unwrap(), vec![1.0, 2.0, 3.0, 4.5]);
        assert_eq!(inline(1).data.len(), 24);
        assert_eq!(r.timeout, Some(Duration::from_millis(20)));
        assert_eq!(r.outputs, OutputSelection::All { binary: false });
        // An empty list of outputs asks for every one, as with Triton.
        let body = json(serde_json::json!({
            "inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1.0]}],
            "outputs": [],
            "parameters": {"binary_data_output": true}
        }));
        let r = parse_infer(body, None).unwrap();
        assert_eq!(r.outputs, OutputSelection::All { binary: true });
    }

    #[test]
    fn binary_inputs_are_slices_of_the_body() {
        let header = serde_json::to_vec(&serde_json::json!({
            "inputs": [
                {"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
                {"name": "y", "shape": [1], "datatype": "UINT8", "parameters": {"binary_data_size": 1}}
            ],
            "outputs": [{"name": "out", "parameters": {"binary_data": true}}]
        }))
        .unwrap();
        let mut body = header.clone();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&(-2.0f32).to_le_bytes());
        body.push(9);
        let body = Bytes::from(body);
        let r = parse_infer(body.clone(), Some(header.len())).unwrap();
        let inline = |i: usize| r.inputs[i].1.inline().unwrap();
        assert_eq!(inline(0).to_f32().unwrap(), vec![1.5, -2.0]);
        assert_eq!(inline(1).data.as_ref(), &[9]);
        // Shared with the body, not copied.
        assert_eq!(inline(0).data.as_ptr(), body[header.len()..].as_ptr());
        assert_eq!(
            r.outputs,
            OutputSelection::Named(vec![("out".into(), OutputForm::Binary)])
        );
        // Truncated, unclaimed and wrong header lengths are named.
        let e = parse_infer(body.slice(..body.len() - 1), Some(header.len())).unwrap_err();
        assert!(e.to_string().contains("runs past"), "{e}");
        let mut extra = body.to_vec();
        extra.push(0);
        let e = parse_infer(extra.into(), Some(header.len())).unwrap_err();
        assert_eq!(e, ProtocolError::Unclaimed(1));
        let e = parse_infer(body.clone(), Some(body.len() + 1)).unwrap_err();
        assert!(matches!(e, ProtocolError::HeaderLength { .. }));
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases = [
            (
                serde_json::json!({"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "data": [1.0]}]}),
                "1 values given, its shape holds 2",
            ),
            (
                serde_json::json!({"inputs": [{"name": "a", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}),
                "not supported",
            ),
            (
                serde_json::json!({"inputs": [{"name": "a", "shape": [1], "datatype": "UINT8", "data": [300]}]}),
                "out of range",
            ),
            (
                serde_json::json!({"inputs": [{"name": "a", "shape": [1], "datatype": "FP16", "data": [1.0]}]}),
                "binary",
            ),
            (
                serde_json::json!({"inputs": [{"name": "a", "shape": [-3], "datatype": "FP32", "data": []}]}),
                "not a valid tensor shape",
            ),
            (
                serde_json::json!({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32"}]}),
                "neither",
            ),
            (
                serde_json::json!({"inputs": [], "parameters": {"binary_data_output": 3}}),
                "true or false",
            ),
            (serde_json::json!({"input": []}), "malformed"),
            (
                serde_json::json!({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32",
                    "parameters": {"shared_memory_region": "r"}}]}),
                "input 'a' needs both shared_memory_region and shared_memory_byte_size",
            ),
            (
                serde_json::json!({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32",
                    "parameters": {"shared_memory_offset": 4}}]}),
                "given on input 'a' without",
            ),
            (
                serde_json::json!({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1.0],
                    "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 4}}]}),
                "send one",
            ),
            (
                serde_json::json!({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32",
                    "parameters": {"shared_memory_region": 3, "shared_memory_byte_size": 4}}]}),
                "a region's name",
            ),
            (
                serde_json::json!({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1.0]}],
                    "outputs": [{"name": "o", "parameters": {"binary_data": true,
                        "shared_memory_region": "r", "shared_memory_byte_size": 4}}]}),
                "ask for one",
            ),
            (
                serde_json::json!({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1.0]}],
                    "outputs": [{"name": "logits", "parameters": {"classification": 3}}]}),
                "parameter 'classification': not served on output 'logits'",
            ),
        ];
        for (body, needle) in cases {
            let e = parse_infer(json(body.clone()), None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn responses_carry_json_or_binary_outputs() {
        let t = TensorData::from_f32(vec![1, 2], &[0.25, f32::NAN]).unwrap();
        let encode = |form: OutputForm| {
            encode_infer(
                "m",
                Some("1"),
                Map::new(),
                &[ResponseOutput {
                    name: "out",
                    tensor: &t,
                    form: &form,
                }],
            )
        };
        let r = encode(OutputForm::Json);
        assert!(r.header_length.is_none());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["outputs"][0]["data"], serde_json::json!([0.25, null]));
        assert_eq!(v["model_name"], "m");
        let r = encode(OutputForm::Binary);
        let n = r.header_length.unwrap();
        let v: Value = serde_json::from_slice(&r.body[..n]).unwrap();
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(&r.body[n..], t.data.as_ref());
        // A shared-memory output is named, not sent.
        let r = encode(OutputForm::Shared(SharedMemoryRef {
            region: "out_region".into(),
            offset: 16,
            byte_size: 64,
        }));
        assert!(r.header_length.is_none());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let out = &v["outputs"][0];
        assert!(out.get("data").is_none(), "{out}");
        assert_eq!(out["parameters"]["shared_memory_region"], "out_region");
        assert_eq!(out["parameters"]["shared_memory_byte_size"], 8);
        assert_eq!(out["parameters"]["shared_memory_offset"], 16);
    }

    #[test]
    fn shared_memory_inputs_and_outputs_name_their_place() {
        let body = json(serde_json::json!({
            "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
                "parameters": {"shared_memory_region": "in", "shared_memory_byte_size": 24,
                               "shared_memory_offset": 8}}],
            "outputs": [{"name": "y", "parameters": {"shared_memory_region": "out",
                                                     "shared_memory_byte_size": 4000}}]
        }));
        let r = parse_infer(body, None).unwrap();
        assert_eq!(
            r.inputs[0].1,
            InputData::Shared {
                dtype: DataType::Fp32,
                shape: vec![2, 3],
                at: SharedMemoryRef {
                    region: "in".into(),
                    offset: 8,
                    byte_size: 24
                },
            }
        );
        assert_eq!(
            r.outputs,
            OutputSelection::Named(vec![(
                "y".into(),
                OutputForm::Shared(SharedMemoryRef {
                    region: "out".into(),
                    offset: 0,
                    byte_size: 4000
                })
            )])
        );
    }

    proptest! {
        #[test]
        fn no_body_makes_the_parser_panic(body in proptest::collection::vec(any::<u8>(), 0..256),
                                          header in proptest::option::of(0usize..300)) {
            let _ = parse_infer(body.into(), header);
        }

        #[test]
        fn no_json_input_makes_the_parser_panic(shape in proptest::collection::vec(-2i64..5, 0..4),
                                                dtype in proptest::sample::select(vec!["FP32", "INT8", "BOOL", "FP16", "UINT8", "INT64", "X"]),
                                                data in proptest::collection::vec(-300i64..300, 0..20)) {
            let body = serde_json::json!({"inputs": [{"name": "a", "shape": shape, "datatype": dtype, "data": data}]});
            let _ = parse_infer(serde_json::to_vec(&body).unwrap().into(), None);
        }

        /// Read in one pass over the text, flat or nested, the values land
        /// in row-major order, each as its datatype's bytes.
        #[test]
        fn json_data_reads_as_its_values_in_row_major_order(
            rows in proptest::collection::vec(proptest::collection::vec(any::<i32>(), 3), 1..6),
            nested in any::<bool>(),
        ) {
            let flat: Vec<i32> = rows.iter().flatten().copied().collect();
            let data = if nested { serde_json::json!(rows) } else { serde_json::json!(flat) };
            let body = serde_json::json!({"inputs": [
                {"data": data, "name": "a", "shape": [rows.len(), 3], "datatype": "INT32"},
                {"name": "b", "datatype": "FP64", "shape": [rows.len(), 3], "data": data}]});
            let r = parse_infer(serde_json::to_vec(&body).unwrap().into(), None).unwrap();
            let ints: Vec<u8> = flat.iter().flat_map(|x| x.to_le_bytes()).collect();
            let floats: Vec<u8> = flat.iter().flat_map(|&x| f64::from(x).to_le_bytes()).collect();
            prop_assert_eq!(r.inputs[0].1.inline().unwrap().data.as_ref(), ints.as_slice());
            prop_assert_eq!(r.inputs[1].1.inline().unwrap().data.as_ref(), floats.as_slice());
        }
    }
}
