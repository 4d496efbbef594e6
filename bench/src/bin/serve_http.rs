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
//! (`TenantQueue::infer`) and HTTP with binary tensors through two Rust
//! clients (`ureq`, and `reqwest` over hyper; keep-alive), with 1 and with
//! 8 concurrent clients. Per request
//! the HTTP overhead is the client's round trip minus the server's own
//! end-to-end time for that request (returned in the response's
//! `ecomap_e2e_us`); the in-process caller's overhead is its round trip
//! minus the same end-to-end time from the answer. Medians over rounds of
//! p50 and p99, side by side.
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
    /// Offered load in the load test, × the measured capacity.
    #[arg(long, default_value_t = 2.0)]
    load_factor: f64,
    /// SCHED_FIFO priority of the client threads. The clients share this
    /// host's two cores with the server: at 70 (the load generators'
    /// class) they run above its HTTP threads (65) and workers (60).
    #[arg(long, default_value_t = 70, value_parser = clap::value_parser!(u8).range(1..=99))]
    client_priority: u8,
    /// HTTP worker threads of the server (`ecomap serve --http-workers`).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    http_workers: u16,
    /// Side of the square FP32 input image (the model resizes it to 224).
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(i64).range(8..=1024))]
    side: i64,
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

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds")
}

/// One HTTP inference: (round trip µs, the server's e2e µs), or the status.
fn http_infer(
    agent: &ureq::Agent,
    url: &str,
    body: &[u8],
    header: usize,
) -> Result<(u64, u64), u16> {
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
            let rtt = t0.elapsed().as_micros() as u64;
            let json: serde_json::Value =
                serde_json::from_slice(&bytes[..header_len.min(bytes.len())]).map_err(|_| 0u16)?;
            let e2e = json["parameters"]["ecomap_e2e_us"].as_u64().ok_or(0u16)?;
            Ok((rtt, e2e))
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

/// One HTTP inference with reqwest (hyper): (round trip µs, server e2e µs).
fn reqwest_infer(
    client: &reqwest::blocking::Client,
    url: &str,
    body: &bytes::Bytes,
    header: usize,
) -> Result<(u64, u64), u16> {
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
    let rtt = t0.elapsed().as_micros() as u64;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes[..header_len.min(bytes.len())]).map_err(|_| 0u16)?;
    let e2e = json["parameters"]["ecomap_e2e_us"].as_u64().ok_or(0u16)?;
    Ok((rtt, e2e))
}

/// `clients` threads × `n` requests each; per request (round trip, overhead) µs.
fn run_clients(
    clients: usize,
    n: usize,
    one: impl Fn(usize) -> Result<(u64, u64), u16> + Send + Sync,
) -> (Histogram<u64>, Histogram<u64>, u64) {
    let rtt = Mutex::new(hist());
    let over = Mutex::new(hist());
    let errors = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for client in 0..clients {
            let (one, rtt, over, errors) = (&one, &rtt, &over, &errors);
            s.spawn(move || {
                as_client();
                for _ in 0..n {
                    match one(client) {
                        Ok((r, e2e)) => {
                            let _ = rtt.lock().unwrap().record(r.max(1));
                            let _ = over.lock().unwrap().record(r.saturating_sub(e2e).max(1));
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    (
        rtt.into_inner().unwrap(),
        over.into_inner().unwrap(),
        errors.into_inner(),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
    );
    let (spec, notes) = runtime.server_thread();
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
    let x = image(args.side);
    let (body, header) = binary_body(&x);
    let in_process = |_client: usize| {
        let t0 = Instant::now();
        match queue.infer(x.clone(), None) {
            Ok(a) if a.is_served() => {
                let rtt = t0.elapsed().as_micros() as u64;
                let e2e = a.timings.map_or(0, |t| t.end_to_end.as_micros() as u64);
                Ok((rtt, e2e))
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
    // that the rounds then keep (the server keeps idle connections for
    // `server::KEEP_ALIVE`, longer than any pause between rounds).
    let _ = run_clients(8, 5, in_process);
    let _ = run_clients(8, 5, over_http);
    let _ = run_clients(8, 5, over_reqwest);

    let code = match args.load_seconds {
        None => overhead(&args, &in_process, &over_http, &over_reqwest),
        Some(secs) => load(&args, secs, &over_http, &in_process),
    };
    drop(agents);
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
    in_process: &(impl Fn(usize) -> Result<(u64, u64), u16> + Send + Sync),
    over_http: &(impl Fn(usize) -> Result<(u64, u64), u16> + Send + Sync),
    over_reqwest: &(impl Fn(usize) -> Result<(u64, u64), u16> + Send + Sync),
) -> ExitCode {
    println!(
        "| clients | idle cores | path | round trip p50 ms | round trip p99 ms | overhead p50 µs | overhead p99 µs | errors |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|---:|");
    let notes = ecomap_actors::rt::RtNotes::default();
    for clients in [1usize, 8] {
        let mut rows: BTreeMap<(&str, &str), Vec<[f64; 4]>> = BTreeMap::new();
        let mut errors: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for round in 0..args.rounds {
            eprintln!("{clients} client(s), round {}…", round + 1);
            let n = (args.requests / clients).max(10);
            // Each round twice: with the kernel's idle states, then with
            // idle cores held polling (the rt-config's `cpu_dma_latency_us:
            // Some(0)`), so the two compare on the same machine minutes.
            for idle in ["kernel", "cpu_dma_latency 0"] {
                let _hold = (idle != "kernel")
                    .then(|| ecomap_actors::rt::hold_wake_latency(0, &notes))
                    .flatten();
                if idle != "kernel" && _hold.is_none() {
                    eprintln!("warning: /dev/cpu_dma_latency refused; the held rows are skipped");
                    continue;
                }
                for (path, (rtt, over, err)) in [
                    ("in-process", run_clients(clients, n, in_process)),
                    ("HTTP, binary (ureq)", run_clients(clients, n, over_http)),
                    (
                        "HTTP, binary (reqwest)",
                        run_clients(clients, n, over_reqwest),
                    ),
                ] {
                    let path = (path, idle);
                    rows.entry(path).or_default().push([
                        rtt.value_at_quantile(0.5) as f64 / 1e3,
                        rtt.value_at_quantile(0.99) as f64 / 1e3,
                        over.value_at_quantile(0.5) as f64,
                        over.value_at_quantile(0.99) as f64,
                    ]);
                    *errors.entry(path).or_default() += err;
                }
            }
        }
        for ((path, idle), r) in &rows {
            let col = |i: usize| median(r.iter().map(|x| x[i]).collect());
            println!(
                "| {clients} | {idle} | {path} | {:.2} | {:.2} | {:.0} | {:.0} | {} |",
                col(0),
                col(1),
                col(2),
                col(3),
                errors[&(*path, *idle)]
            );
        }
    }
    ExitCode::SUCCESS
}

fn load(
    args: &Args,
    secs: u64,
    over_http: &(impl Fn(usize) -> Result<(u64, u64), u16> + Send + Sync),
    in_process: &(impl Fn(usize) -> Result<(u64, u64), u16> + Send + Sync),
) -> ExitCode {
    // Capacity: closed-loop throughput with 8 clients.
    let t0 = Instant::now();
    let (h, _, _) = run_clients(8, 25, in_process);
    let capacity = h.len() as f64 / t0.elapsed().as_secs_f64();
    let rate = capacity * args.load_factor;
    eprintln!("capacity {capacity:.1} req/s; offering {rate:.1} req/s for {secs} s…");
    let statuses: Mutex<BTreeMap<u16, u64>> = Mutex::new(BTreeMap::new());
    let sent = std::sync::atomic::AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let rss = Mutex::new(vec![ecomap_bench::proc_status_mb("VmRSS")]);
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate);
    let next = Mutex::new(start);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(5));
                rss.lock()
                    .unwrap()
                    .push(ecomap_bench::proc_status_mb("VmRSS"));
            }
        });
        let workers: Vec<_> = (0..64)
            .map(|client| {
                let (next, sent, statuses) = (&next, &sent, &statuses);
                s.spawn(move || loop {
                    as_client();
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
                    sent.fetch_add(1, Ordering::Relaxed);
                    let status = match over_http(client) {
                        Ok(_) => 200,
                        Err(code) => code,
                    };
                    *statuses.lock().unwrap().entry(status).or_default() += 1;
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = start.elapsed().as_secs_f64();
    let statuses = statuses.into_inner().unwrap();
    let answered: u64 = statuses.values().sum();
    let sent = sent.into_inner();
    let rss = rss.into_inner().unwrap();
    println!(
        "load test: {secs} s at {rate:.1} req/s offered ({:.1}x the measured {capacity:.1} req/s); \
         sent {sent}, answered {answered} in {elapsed:.1} s; by status: {statuses:?}; server RSS \
         {:.0} MB at the start, {:.0} MB at the end, {:.0}–{:.0} MB over {} samples",
        args.load_factor,
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
