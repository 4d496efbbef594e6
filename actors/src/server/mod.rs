//! `ecomap serve`: the runtime behind an HTTP server (actix-web) speaking
//! the Open Inference Protocol (KServe v2) that Triton's clients use. A
//! tenant is a model; its name is the model name.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v2/health/live` | 200 while the server runs |
//! | `GET /v2/health/ready` | 200 once every model is loaded, 400 while stopping or while a model has no worker left |
//! | `GET /v2` | server metadata: name, version, extensions |
//! | `GET /v2/models/{name}[/versions/{v}]` | model metadata: inputs and outputs (name, datatype, shape) |
//! | `GET /v2/models/{name}[/versions/{v}]/ready` | 200; 400 while stopping or when no worker holding the model is left; 404 for an unknown model |
//! | `POST /v2/repository/index` | every tenant, `READY`, or `UNAVAILABLE` with the reason when no worker holding it is left |
//! | `POST /v2/models/{name}[/versions/{v}]/infer` | JSON or binary tensors in, the model's outputs out |
//! | `GET /v2/systemsharedmemory[/region/{r}]/status` | the registered shared-memory regions (with `--allow-client-shm`; see [`shared_memory`]) |
//! | `POST /v2/systemsharedmemory/region/{r}/register` | register a region: `{"key", "offset", "byte_size"}` |
//! | `POST /v2/systemsharedmemory[/region/{r}]/unregister` | unregister one region, or all |
//! | `GET /metrics` | Prometheus exposition (see [`metrics`]) |
//!
//! Every request's outcome maps to one status, with the protocol's error
//! body `{"error": "..."}` otherwise:
//!
//! | outcome | status |
//! |---|---|
//! | `on_time`, `late` | 200, outputs; `parameters.ecomap_outcome` says which |
//! | `rejected`: queue full | 429, `Retry-After: 1` |
//! | `rejected`: malformed request, wrong input, bad parameter | 400 (counted for the model) |
//! | `rejected`: runtime stopping | 503 |
//! | `expired` (deadline passed before it could start) | 504 |
//! | `shed` (predicted to miss its deadline) | 503 |
//! | `failed` | 500 |
//! | unknown model or route | 404 |
//! | body over `--max-body-mb` | 413 (counted for the model) |
//! | a `Content-Encoding` other than `identity` | 415 (counted for the model) |
//! | a body upload that sends nothing for 30 s ([`BODY_IDLE`]) | 408 (counted for the model) |
//! | shared memory asked for by a client not on this host | 403 (counted for the model) |
//!
//! Handlers submit through [`TenantQueue::submit_input`] and `.await` the
//! ticket: an HTTP thread never blocks on a model.

pub mod body_pool;
pub mod metrics;
pub mod protocol;
pub mod shared_memory;

use crate::dataplane::ticket::Answer;
use crate::tenant_queue::{SubmitError, TenantQueue};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use ecomap::request::Outcome;
use ecomap::tensor::TensorSpec;
use protocol::{InputData, OutputForm, OutputSelection, ResponseOutput, HEADER_LENGTH};
use serde_json::{json, Map, Value};
use shared_memory::{Place, SharedMemory, SharedMemoryError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an idle keep-alive connection stays open (nginx's default).
/// A robot's client holds one connection for the whole run; actix's
/// default of 5 s closed it at every longer pause, so the next request
/// paid for a new connection (a handshake, and a first upload into a
/// receive window that has not grown yet).
pub const KEEP_ALIVE: Duration = Duration::from_secs(75);

/// JSON request bodies larger than this are read on a blocking thread.
const JSON_INLINE_BYTES: usize = 256 * 1024;

/// How long past a request's deadline a handler waits for its answer. The
/// data plane answers every request it took — served (late ones too),
/// expired, shed or failed — but one sent in the instant its tenant's last
/// worker was retired waits for another worker's next step (docs/
/// architecture.md, "Faults: supervision, watchdog, incidents"); a client
/// must not wait on that for ever.
/// Long enough for a started pass of a slow model to finish late.
pub const ANSWER_GRACE: Duration = Duration::from_secs(30);

/// One model (tenant) as the server sees it.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// The tenant's queue.
    pub queue: TenantQueue,
    /// What it takes.
    pub inputs: Vec<TensorSpec>,
    /// What it gives.
    pub outputs: Vec<TensorSpec>,
    /// `pytorch_libtorch` or `ecomap_synthetic`.
    pub platform: &'static str,
}

/// What the handlers share.
pub struct ServerState {
    models: Vec<ModelEntry>,
    by_name: HashMap<String, usize>,
    ready: AtomicBool,
    max_body: usize,
    metrics: Option<metrics::MetricsSource>,
    bodies: Arc<body_pool::BodyPool>,
    /// Clients' shared-memory regions; `None` unless allowed.
    shared_memory: Option<SharedMemory>,
}

impl ServerState {
    /// State over `models`, accepting bodies up to `max_body` bytes;
    /// `metrics` serves `GET /metrics`; `allow_client_shm` lets local
    /// clients register shared-memory regions ([`shared_memory`]).
    pub fn new(
        models: Vec<ModelEntry>,
        max_body: usize,
        metrics: Option<metrics::MetricsSource>,
        allow_client_shm: bool,
    ) -> Arc<Self> {
        let by_name = models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.queue.name().to_string(), i))
            .collect();
        Arc::new(ServerState {
            models,
            by_name,
            ready: AtomicBool::new(true),
            max_body,
            bodies: body_pool::for_server(),
            metrics,
            shared_memory: allow_client_shm.then(SharedMemory::default),
        })
    }

    fn shared_memory(&self) -> Result<&SharedMemory, SharedMemoryError> {
        self.shared_memory
            .as_ref()
            .ok_or(SharedMemoryError::Disabled)
    }

    /// Stop reporting ready (before a graceful stop).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    fn model(&self, name: &str) -> Result<&ModelEntry, Box<HttpResponse>> {
        self.by_name
            .get(name)
            .map(|&i| &self.models[i])
            .ok_or_else(|| {
                Box::new(error(
                    StatusCode::NOT_FOUND,
                    &format!(
                        "unknown model '{name}'; models: {}",
                        self.models
                            .iter()
                            .map(|m| m.queue.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            })
    }
}

fn error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(protocol::error_body(message))
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().finish()
}

/// Ready as Triton's strict readiness has it: the server, and every model
/// in it. A model whose workers are all out for good refuses every request
/// (503), so a load balancer must not count the server as ready.
async fn ready(state: web::Data<ServerState>) -> HttpResponse {
    if state.ready.load(Ordering::Acquire) && state.models.iter().all(|m| m.queue.has_worker()) {
        HttpResponse::Ok().finish()
    } else {
        HttpResponse::BadRequest().finish()
    }
}

async fn server_metadata(state: web::Data<ServerState>) -> HttpResponse {
    // Of Triton's `model_repository` extension only the index is served
    // (models are fixed at start: no load or unload), so it is not claimed.
    let mut extensions = vec!["binary_tensor_data"];
    if state.shared_memory.is_some() {
        extensions.push("system_shared_memory");
    }
    HttpResponse::Ok().json(json!({
        "name": "ecomap",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": extensions,
    }))
}

/// Whether the request comes from this host. Shared memory is for local
/// clients: a region is memory on this host, and a remote client could
/// otherwise read or overwrite what a local one registered. (An IPv4
/// client of a dual-stack listener arrives as `::ffff:127.0.0.1`.)
fn local_peer(req: &HttpRequest) -> bool {
    req.peer_addr()
        .is_some_and(|a| a.ip().to_canonical().is_loopback())
}

/// The user that owns a loopback client's end of the connection, looked
/// up once when the connection is accepted (with `--allow-client-shm`).
#[derive(Debug, Clone, Copy)]
struct PeerUid(Option<u32>);

/// The registry and the user a shared-memory request acts as, or its
/// refusal: 400 with the flag off, 403 for a client not on this host or
/// one whose user cannot be told.
fn shm_access<'s>(
    state: &'s ServerState,
    req: &HttpRequest,
) -> Result<(&'s SharedMemory, u32), (StatusCode, String)> {
    let shm = state
        .shared_memory()
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    if !local_peer(req) {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "shared memory is served to clients on this host only (loopback), not to {}; \
                 send the tensors in the request body instead",
                req.peer_addr()
                    .map_or_else(|| "an unknown address".into(), |a| a.to_string())
            ),
        ));
    }
    match req.conn_data::<PeerUid>() {
        Some(PeerUid(Some(uid))) => Ok((shm, *uid)),
        _ => Err((
            StatusCode::FORBIDDEN,
            "cannot tell which user the client runs as (its connection is not in \
             /proc/net/tcp); shared memory needs it: each user reaches only its own objects"
                .into(),
        )),
    }
}

/// The body of a region's registration.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterRegion {
    key: String,
    #[serde(default)]
    offset: u64,
    byte_size: u64,
}

async fn shm_register(
    state: web::Data<ServerState>,
    name: web::Path<String>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let client = match shm_access(&state, &req) {
        Ok((_, uid)) => uid,
        Err((status, message)) => return error(status, &message),
    };
    let request: RegisterRegion = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "malformed registration: {e}; send {{\"key\": \"/name\", \"offset\": 0, \
                     \"byte_size\": N}}"
                ),
            )
        }
    };
    // Off the HTTP thread: registering allocates the region's pages, which
    // for a large region takes long enough to stall this thread's other
    // connections.
    let registered = web::block(move || {
        state.shared_memory().and_then(|shm| {
            shm.register(
                &name,
                &request.key,
                request.offset,
                request.byte_size,
                client,
            )
        })
    })
    .await;
    match registered {
        Ok(Ok(())) => HttpResponse::Ok().finish(),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("registering the region failed: {e}"),
        ),
    }
}

fn shm_unregister_one(state: &ServerState, req: &HttpRequest, name: Option<&str>) -> HttpResponse {
    match shm_access(state, req) {
        Ok((shm, client)) => {
            shm.unregister(name, client);
            HttpResponse::Ok().finish()
        }
        Err((status, message)) => error(status, &message),
    }
}

async fn shm_unregister(
    state: web::Data<ServerState>,
    name: web::Path<String>,
    req: HttpRequest,
) -> HttpResponse {
    shm_unregister_one(&state, &req, Some(&name))
}

async fn shm_unregister_all(state: web::Data<ServerState>, req: HttpRequest) -> HttpResponse {
    shm_unregister_one(&state, &req, None)
}

fn shm_status_of(state: &ServerState, req: &HttpRequest, name: Option<&str>) -> HttpResponse {
    let (shm, client) = match shm_access(state, req) {
        Ok(access) => access,
        Err((status, message)) => return error(status, &message),
    };
    match shm.status(name, client) {
        Ok(rows) => HttpResponse::Ok().json(rows),
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn shm_status(
    state: web::Data<ServerState>,
    name: web::Path<String>,
    req: HttpRequest,
) -> HttpResponse {
    shm_status_of(&state, &req, Some(&name))
}

async fn shm_status_all(state: web::Data<ServerState>, req: HttpRequest) -> HttpResponse {
    shm_status_of(&state, &req, None)
}

fn tensor_meta(specs: &[TensorSpec]) -> Value {
    Value::Array(
        specs
            .iter()
            .map(|s| json!({"name": s.name, "datatype": s.datatype.name(), "shape": s.shape}))
            .collect(),
    )
}

async fn model_metadata(state: web::Data<ServerState>, path: web::Path<String>) -> HttpResponse {
    match state.model(&path) {
        Err(e) => *e,
        Ok(m) => HttpResponse::Ok().json(json!({
            "name": m.queue.name(),
            "versions": ["1"],
            "platform": m.platform,
            "inputs": tensor_meta(&m.inputs),
            "outputs": tensor_meta(&m.outputs),
        })),
    }
}

/// Every model has one version, `1`: another is a 404 naming it (before
/// the body is read, so, like an unknown model, it is counted for no
/// tenant).
fn other_version(name: &str, version: &str) -> Option<HttpResponse> {
    (version != "1").then(|| {
        error(
            StatusCode::NOT_FOUND,
            &format!("model '{name}' has no version '{version}'; its only version is 1"),
        )
    })
}

async fn model_metadata_v(
    state: web::Data<ServerState>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (name, version) = path.into_inner();
    if let Some(e) = other_version(&name, &version) {
        return e;
    }
    model_metadata(state, web::Path::from(name)).await
}

async fn model_ready(state: web::Data<ServerState>, path: web::Path<String>) -> HttpResponse {
    match state.model(&path) {
        Err(e) => *e,
        Ok(m) if state.ready.load(Ordering::Acquire) && m.queue.has_worker() => {
            HttpResponse::Ok().finish()
        }
        Ok(_) => HttpResponse::BadRequest().finish(),
    }
}

async fn model_ready_v(
    state: web::Data<ServerState>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (name, version) = path.into_inner();
    if let Some(e) = other_version(&name, &version) {
        return e;
    }
    model_ready(state, web::Path::from(name)).await
}

async fn repository_index(state: web::Data<ServerState>) -> HttpResponse {
    let models: Vec<Value> = state
        .models
        .iter()
        .map(|m| {
            let (state, reason) = if m.queue.has_worker() {
                ("READY", "")
            } else {
                (
                    "UNAVAILABLE",
                    "no worker holding the model is left to serve it",
                )
            };
            json!({"name": m.queue.name(), "version": "1", "state": state, "reason": reason})
        })
        .collect();
    HttpResponse::Ok().json(models)
}

/// A request for a model not yet submitted to its queue: counted refused
/// if it is refused — or dropped — before it is.
struct Unsubmitted<'a> {
    queue: &'a TenantQueue,
    counted: bool,
}

impl<'a> Unsubmitted<'a> {
    fn new(queue: &'a TenantQueue) -> Self {
        Unsubmitted {
            queue,
            counted: false,
        }
    }

    /// Refused before submission: counted here.
    fn refused(&mut self) {
        if !self.counted {
            self.counted = true;
            self.queue.count_refused();
        }
    }

    /// Handed to the queue, which counts it from now on.
    fn submitted(mut self) {
        self.counted = true;
    }
}

impl Drop for Unsubmitted<'_> {
    fn drop(&mut self) {
        self.refused();
    }
}

/// Why a body could not be read.
#[derive(Debug)]
enum BodyError {
    TooLarge,
    Read(String),
    /// No byte of the body came for [`BODY_IDLE`].
    Stalled,
}

/// How long an upload may send nothing before the server gives up on it
/// (408): actix's own timeout covers only the request's head, so a client
/// that trickles or stalls a body held its connection and its pooled
/// buffer for as long as it liked.
pub const BODY_IDLE: Duration = Duration::from_secs(30);

/// Read the body into one buffer from the server's pool, sized from
/// `Content-Length` (no regrowth copies, no fresh pages), placed so that
/// the binary section after a JSON header of `header_length` bytes starts
/// 8-byte aligned: a model can then read its input tensor where it lies,
/// without another copy.
async fn read_body(
    mut payload: web::Payload,
    req: &HttpRequest,
    header_length: Option<usize>,
    limit: usize,
    pool: &body_pool::BodyPool,
    idle: Duration,
) -> Result<bytes::Bytes, BodyError> {
    use futures_util::StreamExt as _;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let pad = header_length.map_or(0, |h| (8 - h % 8) % 8);
    let mut buf = pool.take(pad + declared.unwrap_or(8192).min(limit));
    // The allocator aligns to at least 8, so `pad` zero bytes put the
    // binary section on an 8-byte boundary.
    debug_assert!(buf.capacity() == 0 || buf.as_ptr() as usize % 8 == 0);
    buf.resize(pad, 0);
    loop {
        let Ok(next) = actix_web::rt::time::timeout(idle, payload.next()).await else {
            return Err(BodyError::Stalled);
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| BodyError::Read(e.to_string()))?;
        if buf.len() - pad + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.seal(pad))
}

async fn infer(
    state: web::Data<ServerState>,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let entered = Instant::now();
    let model = match state.model(&path) {
        Ok(m) => m,
        Err(e) => return *e,
    };
    // Everything refused before submission is still counted for the model,
    // and so is a request whose handler is dropped before it was submitted
    // (its client went away mid-upload, or the server stopped waiting).
    let mut pending = Unsubmitted::new(&model.queue);
    let mut refuse = |status: StatusCode, message: String| {
        pending.refused();
        error(status, &message)
    };
    if let Some(encoding) = req.headers().get(header::CONTENT_ENCODING) {
        if !encoding.as_bytes().eq_ignore_ascii_case(b"identity") {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "request bodies are read uncompressed, not with Content-Encoding {encoding:?}; \
                     send the body without compression"
                ),
            );
        }
    }
    let header_length = match req.headers().get(HEADER_LENGTH) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()) {
            Some(n) => Some(n),
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("{HEADER_LENGTH} must be a byte count, got {v:?}"),
                )
            }
        },
    };
    let body = match read_body(
        payload,
        &req,
        header_length,
        state.max_body,
        &state.bodies,
        BODY_IDLE,
    )
    .await
    {
        Ok(b) => b,
        Err(BodyError::Stalled) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "no byte of the request body came for {}; send the body without pausing",
                    humantime::format_duration(BODY_IDLE)
                ),
            )
        }
        Err(BodyError::TooLarge) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body over the server's limit of {} bytes (--max-body-mb)",
                    state.max_body
                ),
            )
        }
        Err(BodyError::Read(e)) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )
        }
    };
    // A large JSON body takes tens of milliseconds to read (a binary one
    // is sliced, not read): off the HTTP thread, which meanwhile serves
    // its other connections.
    let parsed = if header_length.is_none() && body.len() > JSON_INLINE_BYTES {
        match web::block(move || protocol::parse_infer(body, None)).await {
            Ok(parsed) => parsed,
            Err(e) => {
                return refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("reading the request failed: {e}"),
                )
            }
        }
    } else {
        protocol::parse_infer(body, header_length)
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
    };
    // Our models take one input, by the name their metadata gives (an
    // entry built without one, through the library, serves nothing).
    let Some(expected) = model.inputs.first().map(|i| &i.name) else {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("model '{}' declares no input", path.as_str()),
        );
    };
    let mut inputs = parsed.inputs;
    if inputs.len() != 1 || &inputs[0].0 != expected {
        let got: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "model '{}' takes one input named '{expected}', got {got:?}",
                path.as_str()
            ),
        );
    }
    let wanted: Vec<(usize, OutputForm)> = match parsed.outputs {
        OutputSelection::All { binary } => {
            let form = if binary {
                OutputForm::Binary
            } else {
                OutputForm::Json
            };
            (0..model.outputs.len())
                .map(|i| (i, form.clone()))
                .collect()
        }
        OutputSelection::Named(list) => {
            let mut w = Vec::with_capacity(list.len());
            for (name, form) in list {
                match model.outputs.iter().position(|o| o.name == name) {
                    Some(i) => w.push((i, form)),
                    None => {
                        return refuse(
                            StatusCode::BAD_REQUEST,
                            format!(
                                "model '{}' has no output '{name}'; outputs: {}",
                                path.as_str(),
                                model
                                    .outputs
                                    .iter()
                                    .map(|o| o.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                    }
                }
            }
            w
        }
    };
    // Shared-memory places are resolved once, here: the regions checked are
    // the ones read and written, whatever is registered meanwhile.
    let uses_shm = matches!(inputs[0].1, InputData::Shared { .. })
        || wanted
            .iter()
            .any(|(_, f)| matches!(f, OutputForm::Shared(_)));
    let shm = if uses_shm {
        match shm_access(&state, &req) {
            Ok(access) => Some(access),
            Err((status, message)) => return refuse(status, message),
        }
    } else {
        None
    };
    let (input_name, input) = inputs.remove(0);
    let input_place = match (&input, shm) {
        (InputData::Shared { at, .. }, Some((shm, client))) => {
            match shm.locate(at, &format!("input '{input_name}'"), client) {
                Ok(p) => Some(p),
                Err(e) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
            }
        }
        _ => None,
    };
    // A shared-memory output's place is checked now, so a wrong one costs
    // no forward pass: a region of the client's, room in it (enough for a
    // fixed-size output), no byte shared with the request's input.
    // One entry per wanted output (an output named twice has two).
    let mut placed: Vec<Option<Place>> = Vec::with_capacity(wanted.len());
    for (i, form) in &wanted {
        let (OutputForm::Shared(at), Some((shm, client))) = (form, shm) else {
            placed.push(None);
            continue;
        };
        let spec = &model.outputs[*i];
        let place = match shm.locate(at, &format!("output '{}'", spec.name), client) {
            Ok(p) => p,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
        };
        if input_place.as_ref().is_some_and(|p| p.overlaps(&place)) {
            let e = SharedMemoryError::Overlap {
                output: spec.name.clone(),
                region: at.region.clone(),
                input: input_name.clone(),
            };
            return refuse(StatusCode::BAD_REQUEST, e.to_string());
        }
        // (a dynamic dimension, -1, has no count: checked when written)
        let fixed = ecomap::tensor::element_count(&spec.shape)
            .and_then(|n| n.checked_mul(spec.datatype.size()));
        if let Some(size) = fixed.filter(|&size| size > at.byte_size) {
            let e = SharedMemoryError::NoRoom {
                output: spec.name.clone(),
                region: at.region.clone(),
                byte_size: at.byte_size,
                size,
            };
            return refuse(StatusCode::BAD_REQUEST, e.to_string());
        }
        placed.push(Some(place));
    }
    let input_kept = input_place.clone();
    let tensor = match (input, input_place) {
        (InputData::Inline(t), _) => t,
        (InputData::Shared { dtype, shape, .. }, Some(place)) => {
            match ecomap::tensor::TensorData::new(dtype, shape, place.read()) {
                Ok(t) => t,
                Err(e) => {
                    return refuse(
                        StatusCode::BAD_REQUEST,
                        format!("input '{input_name}': {e}"),
                    )
                }
            }
        }
        (InputData::Shared { .. }, None) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("input '{input_name}': its shared-memory place was not resolved (a bug)"),
            )
        }
    };
    // From here the data plane counts it, whatever becomes of it.
    pending.submitted();
    let ticket = match model.queue.submit_input(tensor, parsed.timeout) {
        Ok(t) => t,
        Err(e) => return submit_error(&e),
    };
    let intake = entered.elapsed();
    let deadline = parsed
        .timeout
        .map_or(model.queue.deadline(), |t| t.min(model.queue.deadline()));
    let answer =
        match actix_web::rt::time::timeout(deadline.saturating_add(ANSWER_GRACE), ticket).await {
            Ok(answer) => answer,
            // The data plane still counts the request, once, when it ends.
            Err(_) => {
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!(
                        "model '{}': no answer from the data plane within {:?} past the deadline; \
                     the request is counted when it ends, and until then a shared-memory input's \
                     region is still read",
                        path.as_str(),
                        ANSWER_GRACE
                    ),
                )
            }
        };
    let handler = HandlerTimes { entered, intake };
    respond(
        &path,
        parsed.id.as_deref(),
        &answer,
        &wanted,
        SharedPlaces {
            outputs: &placed,
            input: input_kept.as_ref().map(|p| (input_name.as_str(), p)),
        },
        &model.outputs,
        &handler,
    )
}

/// Where an inference request's time in the handler went, for the
/// response's `ecomap_intake_us` and `ecomap_handler_us`: with the
/// runtime's own timings they split a client's round trip into the
/// network and HTTP stack, reading the body, the runtime, and the reply.
struct HandlerTimes {
    /// The handler started: the request head was parsed.
    entered: Instant,
    /// From `entered` to the submission: the body read and parsed.
    intake: Duration,
}

async fn infer_v(
    state: web::Data<ServerState>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let (name, version) = path.into_inner();
    if let Some(e) = other_version(&name, &version) {
        return e;
    }
    infer(state, web::Path::from(name), req, payload).await
}

fn submit_error(e: &SubmitError) -> HttpResponse {
    let message = e.to_string();
    match e {
        SubmitError::QueueFull { .. } => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, &message);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        SubmitError::BadInput { .. } | SubmitError::BadDeadline { .. } => {
            error(StatusCode::BAD_REQUEST, &message)
        }
        SubmitError::Closed { .. } | SubmitError::NoWorker { .. } => {
            error(StatusCode::SERVICE_UNAVAILABLE, &message)
        }
        SubmitError::PriorityInversion { .. } => error(StatusCode::INTERNAL_SERVER_ERROR, &message),
    }
}

/// A request's shared-memory places, resolved before submission: one per
/// wanted output (`None` for one not in shared memory), and its input's.
struct SharedPlaces<'a> {
    outputs: &'a [Option<Place>],
    input: Option<(&'a str, &'a Place)>,
}

fn respond(
    model: &str,
    id: Option<&str>,
    answer: &Answer,
    wanted: &[(usize, OutputForm)],
    shared: SharedPlaces<'_>,
    specs: &[TensorSpec],
    handler: &HandlerTimes,
) -> HttpResponse {
    let why = |what: &str| format!("request {} of model '{model}' {what}", answer.request.id);
    match answer.outcome {
        Outcome::OnTime | Outcome::Late => {}
        Outcome::Expired => {
            return error(
                StatusCode::GATEWAY_TIMEOUT,
                &why("expired: its deadline passed before a worker could start it"),
            )
        }
        Outcome::Shed => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                &why("was shed: it was predicted to finish past its deadline"),
            )
        }
        Outcome::Failed => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &why(&format!(
                    "failed: {}",
                    answer.error.as_deref().unwrap_or("the backend failed")
                )),
            )
        }
        Outcome::Rejected => return error(StatusCode::TOO_MANY_REQUESTS, &why("was rejected")),
    }
    let mut outputs = Vec::with_capacity(wanted.len());
    let mut to_write = Vec::new();
    for (k, (i, form)) in wanted.iter().enumerate() {
        let i = *i;
        let Some(tensor) = answer.outputs.get(i) else {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &why(&format!(
                    "returned {} outputs, not the {} declared",
                    answer.outputs.len(),
                    specs.len()
                )),
            );
        };
        if let OutputForm::Shared(_) = form {
            let Some(Some(place)) = shared.outputs.get(k) else {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &why(&format!(
                        "was served, but output '{}' has no resolved place (a bug)",
                        specs[i].name
                    )),
                );
            };
            to_write.push((place, specs[i].name.as_str(), tensor.data.as_ref()));
        }
        outputs.push(ResponseOutput {
            name: &specs[i].name,
            tensor,
            form,
        });
    }
    if !to_write.is_empty() {
        // Places were resolved before submission (a region unregistered
        // since is still the one written); an output of a dynamic shape
        // larger than its room fails here, and then no region is written.
        let written = SharedMemory::write_outputs(&to_write, shared.input);
        if let Err(e) = written {
            return error(
                StatusCode::BAD_REQUEST,
                &why(&format!("was served, but {e}")),
            );
        }
    }
    let mut parameters = Map::new();
    parameters.insert("ecomap_outcome".into(), Value::from(answer.outcome.name()));
    if let Some(v) = answer.variant {
        parameters.insert("ecomap_variant".into(), Value::from(v));
    }
    if let Some(t) = answer.timings {
        parameters.insert(
            "ecomap_queue_us".into(),
            Value::from(t.queueing.as_micros() as u64),
        );
        parameters.insert(
            "ecomap_service_us".into(),
            Value::from(t.service.as_micros() as u64),
        );
        parameters.insert(
            "ecomap_e2e_us".into(),
            Value::from(t.end_to_end.as_micros() as u64),
        );
    }
    parameters.insert(
        "ecomap_intake_us".into(),
        Value::from(handler.intake.as_micros() as u64),
    );
    // Taken before encoding (a few µs for binary outputs), so it can be
    // written into the response it describes.
    parameters.insert(
        "ecomap_handler_us".into(),
        Value::from(handler.entered.elapsed().as_micros() as u64),
    );
    let encoded = protocol::encode_infer(model, id, parameters, &outputs);
    let mut r = HttpResponse::Ok();
    match encoded.header_length {
        Some(n) => {
            r.content_type("application/octet-stream");
            r.insert_header((HEADER_LENGTH, n.to_string()));
        }
        None => {
            r.content_type("application/json");
        }
    }
    r.body(encoded.body)
}

async fn metrics_page(state: web::Data<ServerState>) -> HttpResponse {
    match &state.metrics {
        Some(m) => HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(m.render()),
        None => error(StatusCode::NOT_FOUND, "metrics are not enabled"),
    }
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        &format!("no route {} {}", req.method(), req.path()),
    )
}

/// Register every route on `cfg`.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v2/health/live", web::get().to(live))
        .route("/v2/health/ready", web::get().to(ready))
        .route("/v2", web::get().to(server_metadata))
        .route("/v2/repository/index", web::post().to(repository_index))
        .route("/v2/models/{name}", web::get().to(model_metadata))
        .route("/v2/models/{name}/ready", web::get().to(model_ready))
        .route("/v2/models/{name}/infer", web::post().to(infer))
        .route(
            "/v2/models/{name}/versions/{v}",
            web::get().to(model_metadata_v),
        )
        .route(
            "/v2/models/{name}/versions/{v}/ready",
            web::get().to(model_ready_v),
        )
        .route(
            "/v2/models/{name}/versions/{v}/infer",
            web::post().to(infer_v),
        )
        .route(
            "/v2/systemsharedmemory/status",
            web::get().to(shm_status_all),
        )
        .route(
            "/v2/systemsharedmemory/region/{r}/status",
            web::get().to(shm_status),
        )
        .route(
            "/v2/systemsharedmemory/region/{r}/register",
            web::post().to(shm_register),
        )
        .route(
            "/v2/systemsharedmemory/unregister",
            web::post().to(shm_unregister_all),
        )
        .route(
            "/v2/systemsharedmemory/region/{r}/unregister",
            web::post().to(shm_unregister),
        )
        .route("/metrics", web::get().to(metrics_page));
}

/// A running HTTP server on its own thread.
pub struct RunningServer {
    handle: actix_web::dev::ServerHandle,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
    /// The address it listens on.
    pub addr: SocketAddr,
    state: Arc<ServerState>,
}

impl RunningServer {
    /// Stop accepting connections, let requests in flight finish (their
    /// tickets resolve as the data plane drains), and join the thread.
    pub fn stop(self) -> std::io::Result<()> {
        self.state.set_ready(false);
        let handle = self.handle.clone();
        // `stop` returns a future; drive it on a small runtime of its own.
        actix_web::rt::System::new().block_on(handle.stop(true));
        self.thread
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the HTTP server thread panicked")))
    }
}

/// Start the server on `listen` with `http_workers` threads, each placed
/// as `thread` says (the rt-config's `server` entry; refusals noted in
/// `notes`).
pub fn start(
    state: Arc<ServerState>,
    listen: SocketAddr,
    http_workers: usize,
    thread: ecomap::config::rt::ThreadSpec,
    notes: crate::rt::RtNotes,
) -> std::io::Result<RunningServer> {
    let data = web::Data::from(state.clone());
    let client_shm = state.shared_memory.is_some();
    // actix-web's server is built, bound and run on its own thread (it is
    // not `Send`); the bound address or the bind error comes back.
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("http-server".into())
        .spawn(move || {
            // Placed first, so the threads actix starts from here — the
            // acceptor as well as the HTTP workers — inherit the server's
            // scheduling: a SCHED_OTHER acceptor waits behind busy
            // SCHED_FIFO workers before a new connection is served.
            crate::rt::apply("http-server", &thread, &notes);
            actix_web::rt::System::new().block_on(async move {
                let bound = HttpServer::new(move || {
                    // The factory runs once on each HTTP worker thread,
                    // before it serves: place the thread here.
                    crate::rt::apply("http-worker", &thread, &notes);
                    App::new()
                        .app_data(data.clone())
                        .configure(routes)
                        .default_service(web::to(not_found))
                })
                .workers(http_workers.max(1))
                // Clients keep their connections across pauses
                // (`KEEP_ALIVE`, and why).
                .keep_alive(KEEP_ALIVE)
                // Responses go out in one write; no waiting for an ACK
                // of the previous segment (Nagle) before the last one.
                .on_connect(move |conn, data| {
                    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                        let _ = tcp.set_nodelay(true);
                        // Which user a local client runs as, once per
                        // connection: shared memory is per user.
                        if client_shm {
                            if let (Ok(local), Ok(peer)) = (tcp.local_addr(), tcp.peer_addr()) {
                                let uid = peer
                                    .ip()
                                    .to_canonical()
                                    .is_loopback()
                                    .then(|| shared_memory::peer_uid(local, peer))
                                    .flatten();
                                data.insert(PeerUid(uid));
                            }
                        }
                    }
                })
                .disable_signals()
                .bind(listen);
                let server = match bound {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return Ok(());
                    }
                };
                let addr = server.addrs().first().copied();
                let server = server.run();
                let _ = tx.send(Ok((server.handle(), addr)));
                server.await
            })
        })?;
    let (handle, addr) = match rx.recv() {
        Ok(Ok((handle, Some(addr)))) => (handle, addr),
        Ok(Ok((_, None))) => return Err(std::io::Error::other("the server bound no address")),
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => return Err(std::io::Error::other("the HTTP server did not start")),
    };
    Ok(RunningServer {
        handle,
        thread,
        addr,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::RunClock;
    use crate::tenant_queue::tenant_queue;
    use actix_web::test as at;
    use ecomap::request::TenantId;
    use std::time::Duration;

    fn entry(id: u16, name: &str) -> ModelEntry {
        let spec = crate::tenant_queue::synthetic_spec(name, 4);
        let (queue, _receiver) = tenant_queue(TenantId(id), &spec, RunClock::start());
        ModelEntry {
            queue,
            inputs: Vec::new(),
            outputs: Vec::new(),
            platform: "ecomap_synthetic",
        }
    }

    /// A body that stops arriving is given up on after the idle limit,
    /// not waited on for as long as the client likes.
    #[test]
    fn a_stalled_upload_is_given_up_on() {
        use actix_web::FromRequest as _;
        use futures_util::StreamExt as _;
        actix_web::rt::System::new().block_on(async {
            let (req, _) = at::TestRequest::post()
                .insert_header((header::CONTENT_LENGTH, "100"))
                .to_http_parts();
            // Ten bytes, then nothing.
            let stream = futures_util::stream::once(async {
                Ok::<_, actix_web::error::PayloadError>(bytes::Bytes::from_static(b"0123456789"))
            })
            .chain(futures_util::stream::pending());
            let mut payload = actix_web::dev::Payload::from(Box::pin(stream)
                as std::pin::Pin<
                    Box<
                        dyn futures_util::Stream<
                            Item = Result<bytes::Bytes, actix_web::error::PayloadError>,
                        >,
                    >,
                >);
            let payload = web::Payload::from_request(&req, &mut payload)
                .await
                .unwrap();
            let pool = body_pool::BodyPool::new(2, 1 << 20);
            let t0 = std::time::Instant::now();
            let got = read_body(
                payload,
                &req,
                None,
                1 << 20,
                &pool,
                Duration::from_millis(100),
            )
            .await;
            assert!(matches!(got, Err(BodyError::Stalled)), "{got:?}");
            assert!(t0.elapsed() >= Duration::from_millis(100));
            assert!(t0.elapsed() < Duration::from_secs(10));
        });
    }

    /// A model whose last worker is out for good refuses every request
    /// (503), so the probes must not call it ready: its own readiness, the
    /// repository index and the server's strict readiness say so, while
    /// the other model stays ready and the server live.
    #[test]
    fn a_model_with_no_worker_left_is_not_ready() {
        let cam = entry(0, "cam");
        let lidar = entry(1, "lidar");
        let orphan = cam.queue.counters().clone();
        let state = ServerState::new(vec![cam, lidar], 1 << 20, None, false);
        actix_web::rt::System::new().block_on(async move {
            let app = at::init_service(
                App::new()
                    .app_data(web::Data::from(state.clone()))
                    .configure(routes),
            )
            .await;
            let status = |path: &'static str| {
                let req = at::TestRequest::get().uri(path).to_request();
                at::call_service(&app, req)
            };
            assert_eq!(status("/v2/health/ready").await.status(), 200);
            assert_eq!(status("/v2/models/cam/ready").await.status(), 200);

            orphan.no_worker.store(true, Ordering::Release);
            assert_eq!(status("/v2/health/live").await.status(), 200);
            assert_eq!(status("/v2/health/ready").await.status(), 400);
            assert_eq!(status("/v2/models/cam/ready").await.status(), 400);
            assert_eq!(
                status("/v2/models/cam/versions/1/ready").await.status(),
                400
            );
            assert_eq!(status("/v2/models/lidar/ready").await.status(), 200);

            let req = at::TestRequest::post()
                .uri("/v2/repository/index")
                .to_request();
            let index: Value = at::call_and_read_body_json(&app, req).await;
            assert_eq!(index[0]["name"], "cam");
            assert_eq!(index[0]["state"], "UNAVAILABLE");
            assert!(index[0]["reason"].as_str().unwrap().contains("no worker"));
            assert_eq!(index[1]["state"], "READY");
            assert_eq!(index[1]["reason"], "");
        });
    }

    /// Shared memory is off unless allowed: registration is refused with
    /// the flag that turns it on, and the extension is not listed; when
    /// allowed, a local client registers, lists and unregisters a region
    /// of its own user's over a real connection (its user looked up from
    /// the kernel's socket table).
    #[test]
    fn client_shared_memory_is_off_unless_allowed() {
        let key = format!("/ecomap_server_test_{}", std::process::id());
        let path = std::path::Path::new("/dev/shm").join(&key[1..]);
        std::fs::write(&path, [0u8; 64]).unwrap();
        for allowed in [false, true] {
            let state = ServerState::new(vec![entry(0, "cam")], 1 << 20, None, allowed);
            let server = start(
                state,
                "127.0.0.1:0".parse().unwrap(),
                1,
                Default::default(),
                Default::default(),
            )
            .unwrap();
            let base = format!("http://{}", server.addr);
            let agent = ureq::AgentBuilder::new().build();
            let read = |r: ureq::Response| -> Value {
                serde_json::from_str(&r.into_string().unwrap_or_default()).unwrap_or(Value::Null)
            };
            let json = |r: Result<ureq::Response, ureq::Error>| -> (u16, Value) {
                match r {
                    Ok(r) => (r.status(), read(r)),
                    Err(ureq::Error::Status(code, r)) => (code, read(r)),
                    Err(e) => panic!("{e}"),
                }
            };
            let (_, meta) = json(agent.get(&format!("{base}/v2")).call());
            let listed = meta["extensions"]
                .as_array()
                .unwrap()
                .contains(&json!("system_shared_memory"));
            assert_eq!(listed, allowed, "{meta}");
            let (status, body) = json(
                agent
                    .post(&format!("{base}/v2/systemsharedmemory/region/r/register"))
                    .send_string(&json!({"key": key, "byte_size": 32, "offset": 8}).to_string()),
            );
            if !allowed {
                assert_eq!(status, 400);
                let e = body["error"].as_str().unwrap();
                assert!(e.contains("--allow-client-shm"), "{e}");
            } else {
                assert_eq!(status, 200, "{body}");
                let (_, listed) = json(
                    agent
                        .get(&format!("{base}/v2/systemsharedmemory/region/r/status"))
                        .call(),
                );
                assert_eq!(
                    listed,
                    json!([{"name": "r", "key": key, "offset": 8, "byte_size": 32}])
                );
                let (status, _) = json(
                    agent
                        .post(&format!("{base}/v2/systemsharedmemory/region/r/unregister"))
                        .call(),
                );
                assert_eq!(status, 200);
                let (_, listed) = json(
                    agent
                        .get(&format!("{base}/v2/systemsharedmemory/status"))
                        .call(),
                );
                assert_eq!(listed, json!([]));
            }
            drop(agent);
            server.stop().unwrap();
        }
        let _ = std::fs::remove_file(&path);
    }

    /// A request naming shared memory from another host is refused (403)
    /// and counted for its model, as every refusal before submission is.
    #[test]
    fn shared_memory_from_another_host_is_refused_and_counted() {
        let mut cam = entry(0, "cam");
        cam.inputs = vec![TensorSpec::new(
            "input",
            ecomap::tensor::DataType::Fp32,
            vec![1],
        )];
        let counters = cam.queue.counters().clone();
        let state = ServerState::new(vec![cam], 1 << 20, None, true);
        actix_web::rt::System::new().block_on(async move {
            let app = at::init_service(
                App::new()
                    .app_data(web::Data::from(state))
                    .configure(routes),
            )
            .await;
            let body = json!({"inputs": [{"name": "input", "shape": [1], "datatype": "FP32",
                "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 4}}]});
            let req = at::TestRequest::post()
                .uri("/v2/models/cam/infer")
                .peer_addr("192.0.2.7:40000".parse().unwrap())
                .set_payload(body.to_string())
                .to_request();
            let res = at::call_service(&app, req).await;
            assert_eq!(res.status(), 403);
            let body: Value = at::read_body_json(res).await;
            assert!(
                body["error"].as_str().unwrap().contains("this host only"),
                "{body}"
            );
            let req = at::TestRequest::get()
                .uri("/v2/systemsharedmemory/status")
                .peer_addr("[::ffff:192.0.2.7]:40000".parse().unwrap())
                .to_request();
            assert_eq!(at::call_service(&app, req).await.status(), 403);
        });
        assert_eq!(counters.submitted.load(Ordering::Relaxed), 1);
        assert_eq!(counters.outcome(Outcome::Rejected), 1);
    }
}
