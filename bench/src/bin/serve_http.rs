//! `ecomap serve` measured: the HTTP path's overhead over the in-process
//! API, and a load test at twice the server's capacity. The HTTP threads
//! run as `rt-config/host.ron`'s `server` entry says (SCHED_FIFO 65); the
//! clients at SCHED_FIFO 70, like the load generators.
//!
//! One MobileNetV2 tenant (real libtorch, random weights) on
//! `rt-config/host.ron` (pinned SCHED_FIFO workers, platform dropped: no
//! power control needed here), served in-process by the same runtime the
//! HTTP server fronts.
//!
//! **Overhead** (default): rounds alternate the in-process API
//! (`TenantQueue::infer`), HTTP with binary tensors through three Rust
//! clients (`ureq`; `reqwest`'s blocking client, which hands each request
//! to an I/O thread; hyper's connection API driven on the client's own
//! thread; all keep-alive), and the same bytes over a bare loopback TCP
//! connection to a plain server thread (no HTTP: the floor under any
//! network path on this host), with 1 and with 8 concurrent clients. Per
//! request the overhead is the client's round trip minus the runtime's own
//! end-to-end time for that request (returned in the response's
//! `ecomap_e2e_us`, or the in-process answer's timings). Medians over
//! rounds of p50 and p99, side by side; then, for the network paths, where
//! the overhead goes: outside the server's handler, reading the body, and
//! the wake-up from the runtime's finish to the response (from the
//! response's `ecomap_intake_us` and `ecomap_handler_us`), at the median
//! and over the p99 tail.
//!
//! **Load** (`--load-seconds N`): an open-loop client releasing requests at
//! `--load-factor` (default 2) × the capacity measured first (closed-loop
//! throughput with 8 clients), for N seconds, over 64 connections; every
//! response's status is counted, and resident memory sampled every 5 s.
//!
//! Run from the repository root, as root for SCHED_FIFO:
//! `cargo run --release -p ecomap-bench --bin serve_http`
//! `cargo run --release -p ecomap-bench --bin serve_http -- --load-seconds 60`

use clap::Parser;
use ecomap::config::policy::Policy;
use ecomap::config::rt::RtConfig;
use ecomap::config::workload::Workload;
use ecomap::tensor::TensorData;
use ecomap_actors::runtime::Runtime;
use ecomap_actors::server::{self, ModelEntry, ServerState};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// Requests per client per round (overhead mode).
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Rounds of (in-process, HTTP) per client count.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Instead: a load test of this many seconds.
    #[arg(long)]
    load_seconds: Option<u64>,
    /// Offered load in the load test, × the measured capacity (> 0).
    #[arg(long, default_value_t = 2.0, value_parser = positive)]
    load_factor: f64,
    /// SCHED_FIFO priority of the client threads. The clients share this
    /// host's two cores with the server: at 70 (the load generators'
    /// class) they run above its HTTP threads (65) and workers (60).
    #[arg(long, default_value_t = 70, value_parser = clap::value_parser!(u8).range(1..=99))]
    client_priority: u8,
    /// HTTP worker threads of the server (`ecomap serve --http-workers`).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    http_workers: u16,
    /// Measure only the network paths whose name contains this (the
    /// in-process path always runs: the others are measured against it),
    /// e.g. "binary (hyper" or "shared memory"; for profiling one path.
    #[arg(long)]
    only: Option<String>,
    /// Side of the square FP32 input image (the model resizes it to 224).
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(i64).range(8..=1024))]
    side: i64,
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

const WORKLOAD: &str = r#"(tenants: [
    (name: "mobilenet", model: Vision(MobileNetV2), arrival: Periodic(rate_hz: 1.0),
     deadline: "1s", capacity: 16, shed: Some(true)),
])"#;

fn image(side: i64) -> TensorData {
    let n = (3 * side * side) as usize;
    let values: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    TensorData::from_f32(vec![1, 3, side, side], &values).expect("a valid image tensor")
}

/// The binary-extension request body for `x`, and its JSON header length.
fn binary_body(x: &TensorData) -> (Vec<u8>, usize) {
    let header = format!(
        r#"{{"inputs":[{{"name":"input","shape":{:?},"datatype":"FP32","parameters":{{"binary_data_size":{}}}}}],"parameters":{{"binary_data_output":true}}}}"#,
        x.shape,
        x.data.len()
    );
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&x.data);
    (body, header.len())
}

/// One answered request, as a client saw it.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// The client's round trip, µs.
    rtt: u64,
    /// The runtime's release-to-finish time for it, µs.
    e2e: u64,
    /// Over the network paths, the server handler's own times
    /// (`ecomap_intake_us`, `ecomap_handler_us`, or the raw server's).
    handler: Option<(u64, u64)>,
}

impl Sample {
    /// The overhead over the runtime: round trip − end-to-end.
    fn added(&self) -> u64 {
        self.rtt.saturating_sub(self.e2e)
    }

    /// Over the network paths, the overhead in three parts, µs: outside
    /// the handler (client, TCP, actix-http's routing, parsing and
    /// framing, the response's encoding), the intake (the body's upload
    /// and parsing until submission), and from the runtime's finish to the
    /// response built (the ticket's wake-up of the HTTP thread). The
    /// runtime's release is stamped inside the submission, so intake and
    /// end-to-end overlap by a few µs, which the reply part loses.
    fn parts(&self) -> Option<[u64; 3]> {
        let (intake, handler) = self.handler?;
        Some([
            self.rtt.saturating_sub(handler),
            intake,
            handler.saturating_sub(intake).saturating_sub(self.e2e),
        ])
    }
}

/// An HTTP answer's sample: its round trip, and the server's figures from
/// the JSON header that starts `bytes` (`header_len` long).
/// A `header_len` of 0 is a JSON-only answer: all of `bytes`.
fn http_sample(rtt: u64, bytes: &[u8], header_len: usize) -> Result<Sample, u16> {
    let json = match header_len {
        0 => bytes,
        n => &bytes[..n.min(bytes.len())],
    };
    let json: serde_json::Value = serde_json::from_slice(json).map_err(|_| 0u16)?;
    let server_us = |key: &str| json["parameters"][key].as_u64().ok_or(0u16);
    Ok(Sample {
        rtt,
        e2e: server_us("ecomap_e2e_us")?,
        handler: Some((
            server_us("ecomap_intake_us")?,
            server_us("ecomap_handler_us")?,
        )),
    })
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds")
}

/// One HTTP inference, or the status.
fn http_infer(agent: &ureq::Agent, url: &str, body: &[u8], header: usize) -> Result<Sample, u16> {
    let t0 = Instant::now();
    let resp = agent
        .post(url)
        .set("Inference-Header-Content-Length", &header.to_string())
        .send_bytes(body);
    match resp {
        Ok(r) => {
            let header_len: usize = r
                .header("Inference-Header-Content-Length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut bytes = Vec::new();
            if std::io::Read::read_to_end(&mut r.into_reader(), &mut bytes).is_err() {
                return Err(0);
            }
            http_sample(t0.elapsed().as_micros() as u64, &bytes, header_len)
        }
        Err(ureq::Error::Status(code, _)) => Err(code),
        Err(_) => Err(0),
    }
}

/// The clients' SCHED_FIFO priority (`--client-priority`).
static CLIENT_PRIORITY: std::sync::OnceLock<u8> = std::sync::OnceLock::new();

/// Client threads run unpinned at SCHED_FIFO `--client-priority` (by
/// default 70, like the load generators of `rt-config/host.ron`), so what
/// is measured is the server, not a client starved by busy real-time
/// workers.
fn as_client() {
    let spec = ecomap::config::rt::ThreadSpec {
        core: None,
        sched: ecomap::config::rt::SchedSpec::Fifo {
            priority: i32::from(*CLIENT_PRIORITY.get().unwrap_or(&70)),
        },
    };
    ecomap_actors::rt::apply("client", &spec, &ecomap_actors::rt::RtNotes::default());
}

/// One HTTP inference with reqwest (hyper).
fn reqwest_infer(
    client: &reqwest::blocking::Client,
    url: &str,
    body: &bytes::Bytes,
    header: usize,
) -> Result<Sample, u16> {
    let t0 = Instant::now();
    let r = client
        .post(url)
        .header("Inference-Header-Content-Length", header.to_string())
        .body(body.clone())
        .send()
        .map_err(|_| 0u16)?;
    if !r.status().is_success() {
        return Err(r.status().as_u16());
    }
    let header_len: usize = r
        .headers()
        .get("Inference-Header-Content-Length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bytes = r.bytes().map_err(|_| 0u16)?;
    http_sample(t0.elapsed().as_micros() as u64, &bytes, header_len)
}

/// What one path's round of clients measured.
struct Round {
    /// Round trips, µs.
    rtt: Histogram<u64>,
    /// Overheads (round trip − the runtime's end-to-end), µs.
    over: Histogram<u64>,
    /// Requests that got no answer.
    errors: u64,
    /// Every answered request.
    samples: Vec<Sample>,
}

impl Round {
    /// Over the network paths, the mean of each of [`Sample::parts`] over the requests
    /// whose overhead is at or above the round's p99: where the tail is.
    fn tail_parts(&self) -> Option<[f64; 3]> {
        let p99 = self.over.value_at_quantile(0.99);
        let tail: Vec<[u64; 3]> = self
            .samples
            .iter()
            .filter(|s| {
                let added = s.added().max(1);
                added >= p99 || self.over.equivalent(added, p99)
            })
            .filter_map(Sample::parts)
            .collect();
        (!tail.is_empty()).then(|| {
            let mean = |i: usize| tail.iter().map(|p| p[i] as f64).sum::<f64>() / tail.len() as f64;
            [mean(0), mean(1), mean(2)]
        })
    }

    /// Over the network paths, the median of each of [`Sample::parts`].
    fn median_parts(&self) -> Option<[f64; 3]> {
        let parts: Vec<[u64; 3]> = self.samples.iter().filter_map(Sample::parts).collect();
        (!parts.is_empty())
            .then(|| std::array::from_fn(|i| median(parts.iter().map(|p| p[i] as f64).collect())))
    }
}

/// One request on a path by client `c`: its sample, or the HTTP status
/// (0: no answer).
type PathFn<'a> = dyn Fn(usize) -> Result<Sample, u16> + Send + Sync + 'a;

/// `clients` threads × `n` requests each.
fn run_clients(clients: usize, n: usize, one: &PathFn<'_>) -> Round {
    let samples = Mutex::new(Vec::with_capacity(clients * n));
    let errors = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for client in 0..clients {
            let (samples, errors) = (&samples, &errors);
            s.spawn(move || {
                as_client();
                for _ in 0..n {
                    match one(client) {
                        Ok(sample) => samples.lock().unwrap().push(sample),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    let samples = samples.into_inner().unwrap();
    let (mut rtt, mut over) = (hist(), hist());
    for s in &samples {
        let _ = rtt.record(s.rtt.max(1));
        let _ = over.record(s.added().max(1));
    }
    Round {
        rtt,
        over,
        errors: errors.into_inner(),
        samples,
    }
}

/// The median (the mean of the middle two for an even count, e.g. of two
/// rounds).
fn median(mut v: Vec<f64>) -> f64 {
    ecomap_bench::median(&mut v)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let _ = CLIENT_PRIORITY.set(args.client_priority);
    let workload: Workload =
        match ecomap::config::parse_ron(WORKLOAD, Path::new("serve_http"), "workload") {
            Ok(w) => w,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
    let mut rt = match RtConfig::load(Path::new("rt-config/host.ron")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    rt.platform = None;
    let mut runtime = match Runtime::start(&workload, &rt, &Policy::edf("edf")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.mark_serving();
    let queue = runtime.queue(0).clone();
    let (inputs, outputs) = runtime.model_io(0);
    let state = ServerState::new(
        vec![ModelEntry {
            queue: queue.clone(),
            inputs,
            outputs,
            platform: "pytorch_libtorch",
        }],
        64 << 20,
        None,
        true,
    );
    let (spec, notes) = runtime.server_thread();
    let x = image(args.side);
    let raw_server = match raw_tcp::serve(queue.clone(), x.shape.clone(), spec, notes.clone()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: cannot start the raw TCP server: {e}");
            return ExitCode::from(1);
        }
    };
    let http = match server::start(
        state,
        "127.0.0.1:0".parse().expect("an address"),
        usize::from(args.http_workers),
        spec,
        notes,
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let url = format!("http://{}/v2/models/mobilenet/infer", http.addr);
    let (body, header) = binary_body(&x);
    let in_process = |_client: usize| {
        let t0 = Instant::now();
        match queue.infer(x.clone(), None) {
            Ok(a) if a.is_served() => {
                let rtt = t0.elapsed().as_micros() as u64;
                let e2e = a.timings.map_or(0, |t| t.end_to_end.as_micros() as u64);
                Ok(Sample {
                    rtt,
                    e2e,
                    handler: None,
                })
            }
            _ => Err(0u16),
        }
    };
    // One keep-alive connection per client slot, kept across rounds: client
    // `c` of every round sends on connection `c`. (Until session 8 each
    // round's threads took the next of 64 agents, so every 8-client round
    // opened 8 new connections, and their first uploads met a receive
    // window still small: the 40 ms tails of results §9.)
    let agents: Vec<ureq::Agent> = (0..64).map(|_| ureq::AgentBuilder::new().build()).collect();
    let over_http = |client: usize| http_infer(&agents[client % 64], &url, &body, header);
    let rq_body = bytes::Bytes::from(body.clone());
    // Eight hyper connections, each driven by whichever client thread
    // holds it.
    let hyper_clients = match connections(|| hyper_client::Client::connect(http.addr)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot connect a hyper client: {e}");
            return ExitCode::from(1);
        }
    };
    let infer_path = "/v2/models/mobilenet/infer";
    let over_hyper = |client: usize| {
        hyper_clients[client % hyper_clients.len()]
            .lock()
            .unwrap()
            .infer(infer_path, &rq_body, Some(header))
    };
    // Triton's system shared-memory extension: each client slot has an
    // input region and an output region of its own. Every request copies
    // the frame into its input region and the output out of its output
    // region inside the timed exchange, as a client using
    // `tritonclient.utils.shared_memory` does; the request itself is a few
    // hundred bytes of JSON each way.
    let regions = match shared_memory::Regions::create(http.addr, x.data.len(), 8, 4 * 1000) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot set up the shared-memory regions: {e}");
            return ExitCode::from(1);
        }
    };
    let shm_bodies: Vec<bytes::Bytes> = (0..8)
        .map(|c| regions.request(&x.shape, c).into())
        .collect();
    let over_shm = |client: usize| {
        let slot = client % shm_bodies.len();
        let mut output = [0u8; 4000];
        let t0 = Instant::now();
        let mut sample = regions.exchange(slot, &x.data, &mut output, || {
            hyper_clients[client % hyper_clients.len()]
                .lock()
                .unwrap()
                .infer(infer_path, &shm_bodies[slot], None)
        })?;
        std::hint::black_box(&output);
        sample.rtt = t0.elapsed().as_micros() as u64;
        Ok(sample)
    };
    // Eight bare TCP connections, kept like the HTTP clients' (client `c`
    // of every round on connection `c`).
    let raw_request: Vec<u8> = (x.data.len() as u64)
        .to_le_bytes()
        .iter()
        .chain(x.data.iter())
        .copied()
        .collect();
    let raw_clients = match connections(|| raw_tcp::Client::connect(raw_server.addr)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot connect to the raw TCP server: {e}");
            return ExitCode::from(1);
        }
    };
    let over_raw = |client: usize| {
        raw_clients[client % raw_clients.len()]
            .lock()
            .unwrap()
            .infer(&raw_request)
            .map_err(|_| 0u16)
    };
    // A blocking reqwest client runs its connections on a thread of its own,
    // spawned when it is built; a new thread inherits its creator's
    // scheduling, so build them on a client-priority thread. (Built on the
    // SCHED_OTHER main thread, that I/O thread is starved whenever the
    // SCHED_FIFO workers fill both cores: 0.2 s p99 tails with 8 clients.)
    let rq_clients: Vec<reqwest::blocking::Client> = std::thread::scope(|s| {
        s.spawn(|| {
            as_client();
            (0..8)
                .map(|_| {
                    reqwest::blocking::Client::builder()
                        .tcp_nodelay(true)
                        .build()
                })
                .collect::<Result<_, _>>()
                .unwrap_or_default()
        })
        .join()
        .unwrap_or_default()
    });
    let over_reqwest = |client: usize| match rq_clients.get(client % rq_clients.len().max(1)) {
        Some(c) => reqwest_infer(c, &url, &rq_body, header),
        None => Err(0),
    };
    // Warm every path, and open the 8 connections of each client library
    // that the rounds then keep. `overhead` warms them again before its
    // 8-client rounds: the one-client rounds leave connections 1–7 idle
    // for longer than the server keeps them (`server::KEEP_ALIVE`).
    let warm = || {
        for path in [
            &in_process as &PathFn<'_>,
            &over_http,
            &over_reqwest,
            &over_raw,
            &over_hyper,
            &over_shm,
        ] {
            let _ = run_clients(8, 5, path);
        }
    };
    warm();

    let code = match args.load_seconds {
        None => overhead(
            &args,
            &warm,
            &in_process,
            &over_raw,
            [
                ("HTTP, binary (ureq)", &over_http as &PathFn<'_>),
                ("HTTP, binary (reqwest)", &over_reqwest),
                ("HTTP, binary (hyper, same thread)", &over_hyper),
                ("HTTP, shared memory (hyper, same thread)", &over_shm),
            ],
        ),
        Some(secs) => load(&args, secs, &over_http, &in_process),
    };
    // Every client connection closed before the server's graceful stop,
    // which would otherwise wait them out.
    drop(agents);
    drop(rq_clients);
    drop(hyper_clients);
    drop(raw_clients);
    drop(regions);
    raw_server.stop();
    let _ = http.stop();
    drop(queue);
    let report = runtime.shutdown();
    println!("\nruntime report (all phases):\n{}", report.render());
    if !report.is_conserved() {
        return ExitCode::from(1);
    }
    code
}

fn overhead(
    args: &Args,
    warm: &dyn Fn(),
    in_process: &PathFn<'_>,
    over_raw: &PathFn<'_>,
    over_http: [(&'static str, &PathFn<'_>); 4],
) -> ExitCode {
    /// A path's figures from one round: round trip p50, p99 (ms), overhead
    /// p50, p99 (µs), then over HTTP its parts (µs; outside the handler,
    /// intake, reply) at the median and averaged over the p99 tail.
    type Figures = ([f64; 4], Option<([f64; 3], [f64; 3])>);
    let mut table = Vec::new();
    let mut parts_table = Vec::new();
    let notes = ecomap_actors::rt::RtNotes::default();
    for clients in [1usize, 8] {
        if clients > 1 {
            warm();
        }
        let mut rows: BTreeMap<(&str, &str), Vec<Figures>> = BTreeMap::new();
        let mut errors: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for round in 0..args.rounds {
            eprintln!("{clients} client(s), round {}…", round + 1);
            let n = (args.requests / clients).max(10);
            // Each round twice: with the kernel's idle states, then with
            // idle cores held polling (the rt-config's `cpu_dma_latency_us:
            // Some(0)`), so the two compare on the same machine minutes.
            for idle in ["kernel", "polling"] {
                let _hold = (idle != "kernel")
                    .then(|| ecomap_actors::rt::hold_wake_latency(0, &notes))
                    .flatten();
                if idle != "kernel" && _hold.is_none() {
                    eprintln!("warning: /dev/cpu_dma_latency refused; the held rows are skipped");
                    continue;
                }
                let mut paths: Vec<(&str, &PathFn<'_>)> =
                    vec![("in-process", in_process), ("raw TCP, no HTTP", over_raw)];
                paths.extend(over_http);
                paths.retain(|(name, _)| {
                    *name == "in-process"
                        || args.only.as_deref().is_none_or(|only| name.contains(only))
                });
                // A different path first each round: on a VM whose speed
                // drifts, a fixed order would favour the same path.
                let first = round % paths.len();
                paths.rotate_left(first);
                for (path, one) in paths {
                    let measured = run_clients(clients, n, one);
                    let path = (path, idle);
                    rows.entry(path).or_default().push((
                        [
                            measured.rtt.value_at_quantile(0.5) as f64 / 1e3,
                            measured.rtt.value_at_quantile(0.99) as f64 / 1e3,
                            measured.over.value_at_quantile(0.5) as f64,
                            measured.over.value_at_quantile(0.99) as f64,
                        ],
                        measured.median_parts().zip(measured.tail_parts()),
                    ));
                    *errors.entry(path).or_default() += measured.errors;
                }
            }
        }
        for ((path, idle), r) in &rows {
            let col = |i: usize| median(r.iter().map(|x| x.0[i]).collect());
            // The same round's in-process figure subtracted, round by
            // round, then the median: what this path adds over the API.
            let over_api = |i: usize| match rows.get(&("in-process", *idle)) {
                Some(api) if *path != "in-process" && api.len() == r.len() => {
                    let d = median(r.iter().zip(api).map(|(x, a)| x.0[i] - a.0[i]).collect());
                    format!("{d:+.0}")
                }
                _ => "".into(),
            };
            table.push(format!(
                "| {clients} | {idle} | {path} | {:.2} | {:.2} | {:.0} | {:.0} | {} | {} | {} |",
                col(0),
                col(1),
                col(2),
                col(3),
                over_api(2),
                over_api(3),
                errors[&(*path, *idle)]
            ));
            let parts: Vec<_> = r.iter().filter_map(|x| x.1).collect();
            if !parts.is_empty() {
                let med = |i: usize| median(parts.iter().map(|p| p.0[i]).collect());
                let tail = |i: usize| median(parts.iter().map(|p| p.1[i]).collect());
                parts_table.push(format!(
                    "| {clients} | {idle} | {path} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} / {:.0} |",
                    med(0),
                    tail(0),
                    med(1),
                    tail(1),
                    med(2),
                    tail(2),
                ));
            }
        }
    }
    println!(
        "| clients | idle cores | path | round trip p50 ms | round trip p99 ms | overhead p50 µs | overhead p99 µs | over in-process p50 µs | over in-process p99 µs | errors |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for line in table {
        println!("{line}");
    }
    println!(
        "\nWhere the HTTP overhead goes, µs: the median request / the mean of the requests at \
         or above the p99 overhead (medians over rounds). Outside the handler: the client, TCP \
         and actix-http; intake: reading and parsing the body until submission; reply: from the \
         runtime's finish to the response built (the HTTP thread's wake-up). The raw TCP \
         path's parts are the same spans in its own server thread.\n"
    );
    println!("| clients | idle cores | path | outside the handler | intake | reply |");
    println!("|---:|---|---|---:|---:|---:|");
    for line in parts_table {
        println!("{line}");
    }
    ExitCode::SUCCESS
}

fn load(args: &Args, secs: u64, over_http: &PathFn<'_>, in_process: &PathFn<'_>) -> ExitCode {
    // Capacity: closed-loop throughput with 8 clients.
    let t0 = Instant::now();
    let measured = run_clients(8, 25, in_process);
    let capacity = measured.samples.len() as f64 / t0.elapsed().as_secs_f64();
    if capacity.is_nan() || capacity <= 0.0 {
        eprintln!("error: the in-process path served nothing: no capacity to load against");
        return ExitCode::from(1);
    }
    let rate = capacity * args.load_factor;
    eprintln!("capacity {capacity:.1} req/s; offering {rate:.1} req/s for {secs} s…");
    let statuses: Mutex<BTreeMap<u16, u64>> = Mutex::new(BTreeMap::new());
    let sent = std::sync::atomic::AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let rss = Mutex::new(vec![ecomap_bench::proc_status_mb("VmRSS")]);
    // Open loop, honestly: how late each request went out against its
    // release time (all 64 senders busy → it slips), and its latency from
    // that release time, not from the send (no coordinated omission).
    let (lag, from_release) = (Mutex::new(hist()), Mutex::new(hist()));
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate);
    let next = Mutex::new(start);
    let mut elapsed = 0.0;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() >= Duration::from_secs(5) {
                    last = Instant::now();
                    rss.lock()
                        .unwrap()
                        .push(ecomap_bench::proc_status_mb("VmRSS"));
                }
            }
        });
        let workers: Vec<_> = (0..64)
            .map(|client| {
                let (next, sent, statuses) = (&next, &sent, &statuses);
                let (lag, from_release) = (&lag, &from_release);
                s.spawn(move || {
                    as_client();
                    loop {
                        // Open loop: each request has a release time on the
                        // schedule, whoever sends it.
                        let at = {
                            let mut n = next.lock().unwrap();
                            let at = *n;
                            *n += period;
                            at
                        };
                        if at.duration_since(start) >= Duration::from_secs(secs) {
                            break;
                        }
                        if let Some(wait) = at.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let _ =
                            lag.lock().unwrap().record(
                                Instant::now().saturating_duration_since(at).as_micros() as u64,
                            );
                        sent.fetch_add(1, Ordering::Relaxed);
                        let status = match over_http(client) {
                            Ok(_) => 200,
                            Err(code) => code,
                        };
                        let _ = from_release
                            .lock()
                            .unwrap()
                            .record(at.elapsed().as_micros().max(1) as u64);
                        *statuses.lock().unwrap().entry(status).or_default() += 1;
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
        elapsed = start.elapsed().as_secs_f64();
        rss.lock()
            .unwrap()
            .push(ecomap_bench::proc_status_mb("VmRSS"));
        stop.store(true, Ordering::Relaxed);
    });
    let statuses = statuses.into_inner().unwrap();
    let answered: u64 = statuses.values().sum();
    let sent = sent.into_inner();
    let rss = rss.into_inner().unwrap();
    let (lag, from_release) = (
        lag.into_inner().unwrap(),
        from_release.into_inner().unwrap(),
    );
    println!(
        "load test: {secs} s at {rate:.1} req/s offered ({:.1}x the {capacity:.1} req/s the \
         in-process path served closed-loop with 8 clients); sent {sent} (one per release time in the window; a sender behind schedule shows in the lag below), \
         answered {answered} in {elapsed:.1} s (the last answers included); by status: {statuses:?}; sends behind their release \
         time: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; latency from release p50 {:.1} ms, p99 \
         {:.1} ms; RSS of this process (the server with the runtime, and the 64 clients) {:.0} MB \
         at the start, {:.0} MB at the end, {:.0}–{:.0} MB over {} samples",
        args.load_factor,
        lag.value_at_quantile(0.5) as f64 / 1e3,
        lag.value_at_quantile(0.99) as f64 / 1e3,
        lag.max() as f64 / 1e3,
        from_release.value_at_quantile(0.5) as f64 / 1e3,
        from_release.value_at_quantile(0.99) as f64 / 1e3,
        rss[0],
        rss[rss.len() - 1],
        rss.iter().copied().fold(f64::INFINITY, f64::min),
        rss.iter().copied().fold(0.0, f64::max),
        rss.len()
    );
    if answered == sent && !statuses.contains_key(&0) {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "error: {} request(s) got no HTTP answer",
            sent - answered + statuses.get(&0).copied().unwrap_or(0)
        );
        ExitCode::from(1)
    }
}

/// The same exchange over a bare loopback TCP connection, no HTTP: the
/// floor under any network path on this host (a client's send, two
/// cross-thread wake-ups through the socket, the copies of the body).
///
/// A request is the tensor's byte count (u64, little-endian) and its
/// bytes; the answer is a status (0: served), the runtime's end-to-end,
/// intake and handler times (µs), the first output's byte count (u64
/// each) and its bytes.
/// Each connection is served by a thread of its own, placed like the HTTP
/// threads (the rt-config's `server` entry), which reads the body with
/// `read_exact` into one buffer and waits for the ticket blocking.
/// Eight connections, each driven by whichever client thread holds it.
fn connections<C, E>(connect: impl Fn() -> Result<C, E>) -> Result<Vec<Mutex<C>>, E> {
    (0..8).map(|_| connect().map(Mutex::new)).collect()
}

mod raw_tcp {
    use super::Sample;
    use ecomap::tensor::{DataType, TensorData};
    use ecomap_actors::tenant_queue::TenantQueue;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    /// A running server: its address, and how to stop it. Dropping it
    /// stops it too, so an early return (an error after it started) does
    /// not leave connection threads holding the tenant's queue.
    pub(super) struct RawServer {
        pub(super) addr: SocketAddr,
        stop: Arc<AtomicBool>,
        accept: Option<std::thread::JoinHandle<Vec<std::thread::JoinHandle<()>>>>,
    }

    impl RawServer {
        /// Stop accepting, and join every connection's thread (each ends
        /// when its client closes): none then holds the tenant's queue.
        pub(super) fn stop(self) {
            drop(self);
        }
    }

    impl Drop for RawServer {
        fn drop(&mut self) {
            let Some(accept) = self.accept.take() else {
                return;
            };
            self.stop.store(true, Ordering::SeqCst);
            // Wake the blocking accept with a connection it will drop.
            let _ = TcpStream::connect(self.addr);
            for conn in accept.join().unwrap_or_default() {
                let _ = conn.join();
            }
        }
    }

    /// Start the server.
    pub(super) fn serve(
        queue: TenantQueue,
        shape: Vec<i64>,
        spec: ecomap::config::rt::ThreadSpec,
        notes: ecomap_actors::rt::RtNotes,
    ) -> std::io::Result<RawServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let accept = std::thread::Builder::new()
            .name("raw-tcp-accept".into())
            .spawn(move || {
                let mut conns = Vec::new();
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (queue, shape, notes) = (queue.clone(), shape.clone(), notes.clone());
                    let conn =
                        std::thread::Builder::new()
                            .name("raw-tcp".into())
                            .spawn(move || {
                                ecomap_actors::rt::apply("raw-tcp", &spec, &notes);
                                let _ = connection(stream, &queue, &shape);
                            });
                    conns.extend(conn);
                }
                conns
            })?;
        Ok(RawServer {
            addr,
            stop,
            accept: Some(accept),
        })
    }

    fn connection(mut s: TcpStream, queue: &TenantQueue, shape: &[i64]) -> std::io::Result<()> {
        s.set_nodelay(true)?;
        let mut len = [0u8; 8];
        // One body buffer, reused like the HTTP server's pooled ones: it
        // comes back once the worker has dropped the input.
        let mut spare: Option<bytes::BytesMut> = None;
        loop {
            s.read_exact(&mut len)?;
            let entered = Instant::now();
            let n = u64::from_le_bytes(len) as usize;
            let mut body = spare.take().unwrap_or_default();
            body.resize(n, 0);
            s.read_exact(&mut body)?;
            let body = body.freeze();
            let answer = TensorData::new(DataType::Fp32, shape.to_vec(), body.clone())
                .map_err(|e| e.to_string())
                .and_then(|input| queue.submit_input(input, None).map_err(|e| e.to_string()))
                .map(|ticket| (entered.elapsed(), ticket.wait()));
            spare = body.try_into_mut().ok();
            // Status 0: served, with its timings and first output; 1: not
            // (refused, shed, expired or failed), answered all the same.
            let (status, e2e, intake, out) = match &answer {
                Ok((intake, a)) if a.is_served() => (
                    0,
                    a.timings.map_or(0, |t| t.end_to_end.as_micros() as u64),
                    intake.as_micros() as u64,
                    a.outputs
                        .first()
                        .map(|t| t.data.clone())
                        .unwrap_or_default(),
                ),
                _ => (1, 0, 0, bytes::Bytes::new()),
            };
            drop(answer);
            let handler = entered.elapsed();
            let mut reply = Vec::with_capacity(40 + out.len());
            for v in [
                status,
                e2e,
                intake,
                handler.as_micros() as u64,
                out.len() as u64,
            ] {
                reply.extend_from_slice(&v.to_le_bytes());
            }
            reply.extend_from_slice(&out);
            s.write_all(&reply)?;
        }
    }

    /// One client connection.
    pub(super) struct Client {
        stream: TcpStream,
        answer: Vec<u8>,
    }

    impl Client {
        pub(super) fn connect(addr: SocketAddr) -> std::io::Result<Client> {
            let stream = TcpStream::connect(addr)?;
            stream.set_nodelay(true)?;
            Ok(Client {
                stream,
                answer: Vec::new(),
            })
        }

        /// One exchange; `request` is the length prefix and the bytes, in
        /// one buffer (one write).
        pub(super) fn infer(&mut self, request: &[u8]) -> std::io::Result<Sample> {
            let t0 = Instant::now();
            self.stream.write_all(request)?;
            let mut head = [0u8; 40];
            self.stream.read_exact(&mut head)?;
            let word =
                |i: usize| u64::from_le_bytes(head[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            self.answer.resize(word(4) as usize, 0);
            self.stream.read_exact(&mut self.answer)?;
            if word(0) != 0 {
                return Err(std::io::Error::other("the request was not served"));
            }
            Ok(Sample {
                rtt: t0.elapsed().as_micros() as u64,
                e2e: word(1),
                handler: Some((word(2), word(3))),
            })
        }
    }
}

/// An HTTP/1.1 client on hyper's connection API, driven on the calling
/// thread by a current-thread tokio runtime: no hand-off to an I/O thread
/// and back, which reqwest's blocking client makes twice per request.
mod hyper_client {
    use super::Sample;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::client::conn::http1::SendRequest;
    use hyper::{header, Request};
    use std::net::SocketAddr;
    use std::time::Instant;

    /// One keep-alive connection, opened again when the server has closed
    /// it (an idle connection outlives `server::KEEP_ALIVE` while other
    /// paths run), as reqwest's and ureq's pools do.
    pub(super) struct Client {
        rt: tokio::runtime::Runtime,
        addr: SocketAddr,
        sender: SendRequest<Full<Bytes>>,
        host: String,
    }

    impl Client {
        pub(super) fn connect(addr: SocketAddr) -> Result<Client, String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(|e| e.to_string())?;
            let sender = rt.block_on(ecomap_bench::open_hyper(addr))?;
            Ok(Client {
                rt,
                addr,
                sender,
                host: addr.to_string(),
            })
        }

        /// One inference: the body, and its JSON header's length when
        /// binary data follows it.
        pub(super) fn infer(
            &mut self,
            path: &str,
            body: &Bytes,
            header: Option<usize>,
        ) -> Result<Sample, u16> {
            let t0 = Instant::now();
            let mut request = Request::post(path)
                .header(header::HOST, &self.host)
                .header(header::CONTENT_LENGTH, body.len());
            // A JSON-only body goes without it, as tritonclient sends one.
            if let Some(n) = header {
                request = request.header("Inference-Header-Content-Length", n);
            }
            let request = request.body(Full::new(body.clone())).map_err(|_| 0u16)?;
            let (sender, addr) = (&mut self.sender, self.addr);
            let (status, header_len, bytes) = self.rt.block_on(async {
                // Let the connection's task run first: it has not run since
                // the last request, and only it can see that the server
                // closed the connection in between.
                tokio::task::yield_now().await;
                if sender.ready().await.is_err() {
                    *sender = ecomap_bench::open_hyper(addr).await.map_err(|_| 0u16)?;
                    sender.ready().await.map_err(|_| 0u16)?;
                }
                let response = match sender.try_send_request(request).await {
                    Ok(r) => r,
                    // The server closed the idle connection as the request
                    // went out, before any of it was written: hyper hands
                    // it back, and it goes again on a new connection.
                    Err(mut e) => {
                        let request = e.take_message().ok_or(0u16)?;
                        *sender = ecomap_bench::open_hyper(addr).await.map_err(|_| 0u16)?;
                        sender.ready().await.map_err(|_| 0u16)?;
                        sender.send_request(request).await.map_err(|_| 0u16)?
                    }
                };
                let status = response.status();
                let header_len: usize = response
                    .headers()
                    .get("Inference-Header-Content-Length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|_| 0u16)?
                    .to_bytes();
                Ok::<_, u16>((status, header_len, bytes))
            })?;
            if !status.is_success() {
                return Err(status.as_u16());
            }
            let rtt = t0.elapsed().as_micros() as u64;
            super::http_sample(rtt, &bytes, header_len)
        }
    }
}

/// The shared-memory objects of the shared-memory path, in /dev/shm,
/// registered with the server; removed when dropped.
mod shared_memory {
    use memmap2::MmapMut;
    use std::fs::File;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::sync::Mutex;

    pub(super) struct Regions {
        paths: Vec<PathBuf>,
        /// Per client slot: its input object and its output object, mapped
        /// as `tritonclient.utils.shared_memory` maps them.
        slots: Vec<Mutex<(MmapMut, MmapMut)>>,
        input_bytes: usize,
        output_bytes: usize,
    }

    fn map(file: &File) -> std::io::Result<MmapMut> {
        // SAFETY: the object is this bench's own, created just before; the
        // server reads the input and writes the output only while a
        // request of the slot is in flight, and the slot's client waits
        // for the answer before it touches either again (the mutex keeps
        // one client per slot).
        #[allow(unsafe_code)]
        unsafe {
            MmapMut::map_mut(file)
        }
    }

    impl Regions {
        /// Per client slot, an input region of `input_bytes` and an output
        /// region of `output_bytes`, registered over HTTP at `addr`.
        pub(super) fn create(
            addr: SocketAddr,
            input_bytes: usize,
            slots: usize,
            output_bytes: usize,
        ) -> Result<Regions, String> {
            // Built first, so an error part-way removes the objects
            // already made (its `Drop`).
            let mut regions = Regions {
                paths: Vec::new(),
                slots: Vec::new(),
                input_bytes,
                output_bytes,
            };
            let agent = ureq::AgentBuilder::new().build();
            for c in 0..slots {
                let input = regions.add(addr, &agent, &format!("in{c}"), input_bytes)?;
                let output = regions.add(addr, &agent, &format!("out{c}"), output_bytes)?;
                regions.slots.push(Mutex::new((input, output)));
            }
            Ok(regions)
        }

        /// Create object `name` of `bytes`, map it, and register it.
        fn add(
            &mut self,
            addr: SocketAddr,
            agent: &ureq::Agent,
            name: &str,
            bytes: usize,
        ) -> Result<MmapMut, String> {
            let key = format!("/ecomap_bench_{}_{name}", std::process::id());
            let path = PathBuf::from("/dev/shm").join(&key[1..]);
            self.paths.push(path.clone());
            let mapped = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .and_then(|f| f.set_len(bytes as u64).map(|()| f))
                .and_then(|f| map(&f))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            agent
                .post(&format!(
                    "http://{addr}/v2/systemsharedmemory/region/{name}/register"
                ))
                .set("Content-Type", "application/json")
                .send_string(
                    &serde_json::json!({"key": key, "offset": 0, "byte_size": bytes}).to_string(),
                )
                .map_err(|e| format!("registering {name}: {e}"))?;
            Ok(mapped)
        }

        /// Client slot `c`'s request body: its input's place, and its
        /// output's.
        pub(super) fn request(&self, shape: &[i64], c: usize) -> Vec<u8> {
            serde_json::to_vec(&serde_json::json!({
                "inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                    "parameters": {"shared_memory_region": format!("in{c}"),
                                   "shared_memory_byte_size": self.input_bytes}}],
                "outputs": [{"name": "output",
                    "parameters": {"shared_memory_region": format!("out{c}"),
                                   "shared_memory_byte_size": self.output_bytes}}]
            }))
            .expect("a JSON value")
        }

        /// Slot `c`'s exchange: the frame copied into its input region,
        /// `send` (the request), then the output copied out of its output
        /// region into `out` — as a tritonclient user's
        /// `set_shared_memory_region` and `get_contents_as_numpy` do.
        pub(super) fn exchange<T>(
            &self,
            c: usize,
            frame: &[u8],
            out: &mut [u8],
            send: impl FnOnce() -> T,
        ) -> T {
            let mut slot = self.slots[c].lock().unwrap_or_else(|p| p.into_inner());
            slot.0[..frame.len()].copy_from_slice(frame);
            let answer = send();
            out.copy_from_slice(&slot.1[..out.len()]);
            answer
        }
    }

    impl Drop for Regions {
        fn drop(&mut self) {
            for f in &self.paths {
                let _ = std::fs::remove_file(f);
            }
        }
    }
}
