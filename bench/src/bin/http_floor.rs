//! What an HTTP exchange of `serve_http`'s sizes costs on this host with
//! no runtime behind it: a 602 kB request body in, a 4 kB answer out, over
//! loopback, through
//!
//! - a bare TCP exchange (length-prefixed bytes, a blocking server thread);
//! - actix-web, the server `ecomap serve` runs on (its handler streams the
//!   body into a reused buffer, as `ecomap serve`'s does);
//! - hyper's HTTP/1 server on a current-thread tokio runtime;
//!
//! each called by hyper's client on the caller's thread, and the two HTTP
//! servers also by a plain blocking client (one `write_all` of a prepared
//! request, the answer's head parsed with `httparse`). Paths take turns
//! request by request, so drift of this shared VM lands on all of them
//! alike. It answers one question about §9.1 of docs/results.md: how much
//! of the HTTP path's overhead over bare TCP the server framework and the
//! client library cost by themselves.
//!
//! `cargo run --release -p ecomap-bench --bin http_floor -- --requests 2000`

#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]

use actix_web::{web, App, HttpResponse, HttpServer};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser, Debug)]
struct Args {
    /// Exchanges per path.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Request body bytes (602112: a 1×3×224×224 FP32 image).
    #[arg(long, default_value_t = 602_112)]
    body: usize,
    /// Answer body bytes (4000: MobileNetV2's 1000 FP32 scores).
    #[arg(long, default_value_t = 4000)]
    answer: usize,
    /// SCHED_FIFO priority of the server threads (0: leave them as they
    /// are); `ecomap serve`'s HTTP threads run at 65 in rt-config/host.ron.
    #[arg(long, default_value_t = 65)]
    server_priority: i32,
    /// SCHED_FIFO priority of the client (0: leave it); serve_http's 70.
    #[arg(long, default_value_t = 70)]
    client_priority: i32,
    /// Behind every server, a stand-in for the forward pass: a worker
    /// thread pinned to the last core at SCHED_FIFO 60 (the workers' class
    /// in rt-config/host.ron) that computes for this long per request
    /// before it answers (0: answer at once, no worker). Adds an
    /// "in-process" path, the caller handing the job to the worker itself.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    service: std::time::Duration,
    /// What the stand-in worker streams through while it computes, in MiB
    /// (0: nothing; it computes in registers): a forward pass's weights and
    /// activations (MobileNetV2: 14 MB of weights) push the servers' code
    /// and data out of the caches, and this does the same.
    #[arg(long, default_value_t = 0)]
    thrash_mib: usize,
    /// Hold idle cores polling (`/dev/cpu_dma_latency` at 0 µs, the
    /// rt-config's `cpu_dma_latency_us: Some(0)`) for the whole run.
    #[arg(long)]
    poll_idle: bool,
}

/// The stand-in worker's queue: each job is answered on its one-shot
/// channel after the worker has computed for the configured time.
/// It also keeps the last job's time from hand-off to done, in µs: with
/// one client at a time, a round trip minus it is what the path added.
#[derive(Clone)]
struct Worker(Option<(crossbeam_channel::Sender<Job>, Arc<AtomicU64>)>);

/// A job: when it was handed over, and where to say it is done.
type Job = (Instant, tokio::sync::oneshot::Sender<()>);

impl Worker {
    fn start(service: std::time::Duration, thrash_mib: usize) -> Worker {
        if service.is_zero() {
            return Worker(None);
        }
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let last = Arc::new(AtomicU64::new(0));
        let last_e2e = last.clone();
        std::thread::spawn(move || {
            let last = std::thread::available_parallelism().map_or(0, |n| n.get() - 1);
            let spec = ecomap::config::rt::ThreadSpec {
                core: Some(last),
                sched: ecomap::config::rt::SchedSpec::Fifo { priority: 60 },
            };
            ecomap_actors::rt::apply("worker", &spec, &Default::default());
            let mut memory = vec![0u8; thrash_mib << 20];
            for (handed, job) in rx {
                let t0 = Instant::now();
                let mut x = 0u64;
                let mut at = 0;
                while t0.elapsed() < service {
                    for i in 0..1000u64 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                    }
                    // A 64 kB stretch per turn, one write per cache line.
                    if !memory.is_empty() {
                        for line in memory[at..at + (64 << 10)].chunks_mut(64) {
                            line[0] = line[0].wrapping_add(x as u8);
                        }
                        at = (at + (64 << 10)) % memory.len();
                    }
                }
                std::hint::black_box(x);
                last_e2e.store(handed.elapsed().as_micros() as u64, Ordering::SeqCst);
                let _ = job.send(());
            }
        });
        Worker(Some((tx, last)))
    }

    /// Hand a job over; the receiver resolves when it is done.
    fn submit(&self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let (tx, _) = self.0.as_ref()?;
        let (done, rx) = tokio::sync::oneshot::channel();
        tx.send((Instant::now(), done)).ok()?;
        Some(rx)
    }

    /// The last job's hand-off to done, µs (0 without a worker).
    fn last_e2e(&self) -> u64 {
        self.0.as_ref().map_or(0, |(_, l)| l.load(Ordering::SeqCst))
    }

    /// Submit and wait, blocking.
    fn run_blocking(&self) {
        if let Some(rx) = self.submit() {
            let _ = rx.blocking_recv();
        }
    }

    /// Submit and wait, in async code.
    async fn run(&self) {
        if let Some(rx) = self.submit() {
            let _ = rx.await;
        }
    }
}

/// Put the calling thread in SCHED_FIFO at `priority` (0: leave it), as
/// ecomap's own threads are placed; a refusal is printed, and it runs as is.
fn fifo(priority: i32) {
    if priority == 0 {
        return;
    }
    let spec = ecomap::config::rt::ThreadSpec {
        core: None,
        sched: ecomap::config::rt::SchedSpec::Fifo { priority },
    };
    let notes = ecomap_actors::rt::RtNotes::default();
    ecomap_actors::rt::apply("http_floor", &spec, &notes);
    for note in notes.to_vec() {
        eprintln!("{note}");
    }
}

/// The bare TCP server: per connection, a thread reading an 8-byte length
/// and the body into a reused buffer, answering a length and `answer`
/// bytes in one write.
fn raw_server(priority: i32, answer: usize, worker: Worker) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let worker = worker.clone();
            std::thread::spawn(move || {
                fifo(priority);
                let _ = raw_connection(stream, answer, &worker);
            });
        }
    });
    Ok(addr)
}

fn raw_connection(mut s: TcpStream, answer: usize, worker: &Worker) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut body = Vec::new();
    let mut reply = (answer as u64).to_le_bytes().to_vec();
    reply.resize(8 + answer, 7);
    loop {
        let mut len = [0u8; 8];
        s.read_exact(&mut len)?;
        body.resize(u64::from_le_bytes(len) as usize, 0);
        s.read_exact(&mut body)?;
        worker.run_blocking();
        s.write_all(&reply)?;
    }
}

/// actix-web with one worker; the handler streams the body into a buffer
/// reused from request to request, as `ecomap serve`'s pool does.
fn actix_server(priority: i32, answer: usize, worker: Worker) -> std::io::Result<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        fifo(priority);
        actix_web::rt::System::new().block_on(async move {
            let reply = Bytes::from(vec![7u8; answer]);
            let server = HttpServer::new(move || {
                fifo(priority);
                let reply = reply.clone();
                let worker = worker.clone();
                App::new().route(
                    "/infer",
                    web::post().to(move |mut payload: web::Payload| {
                        let reply = reply.clone();
                        let worker = worker.clone();
                        async move {
                            use futures_util::StreamExt;
                            thread_local! {
                                static SPARE: std::cell::RefCell<Vec<u8>> =
                                    const { std::cell::RefCell::new(Vec::new()) };
                            }
                            let mut body = SPARE.with(|s| std::mem::take(&mut *s.borrow_mut()));
                            body.clear();
                            while let Some(chunk) = payload.next().await {
                                match chunk {
                                    Ok(c) => body.extend_from_slice(&c),
                                    Err(_) => return HttpResponse::BadRequest().finish(),
                                }
                            }
                            SPARE.with(|s| *s.borrow_mut() = body);
                            worker.run().await;
                            HttpResponse::Ok()
                                .content_type("application/octet-stream")
                                .body(reply)
                        }
                    }),
                )
            })
            .workers(1)
            // As `ecomap serve` (server::KEEP_ALIVE): a connection outlives
            // the other paths' turns.
            .keep_alive(std::time::Duration::from_secs(75))
            .on_connect(|conn, _| {
                if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                    let _ = tcp.set_nodelay(true);
                }
            })
            .disable_signals()
            .bind("127.0.0.1:0");
            let server = match server {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return Ok(());
                }
            };
            let addr = server.addrs()[0];
            let running = server.run();
            let _ = tx.send(Ok(addr));
            running.await
        })
    });
    rx.recv()
        .map_err(|_| std::io::Error::other("actix did not start"))?
}

/// hyper's HTTP/1 server, one current-thread runtime on its own thread.
fn hyper_server(priority: i32, answer: usize, worker: Worker) -> std::io::Result<SocketAddr> {
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    std::thread::spawn(move || {
        fifo(priority);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("a runtime");
        let reply = Bytes::from(vec![7u8; answer]);
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a listener");
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let reply = reply.clone();
                let worker = worker.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let reply = reply.clone();
                        let worker = worker.clone();
                        async move {
                            let body = req.into_body().collect().await?.to_bytes();
                            std::hint::black_box(body.len());
                            worker.run().await;
                            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(reply)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    Ok(addr)
}

/// One client of the bare TCP server.
struct RawClient {
    stream: TcpStream,
    request: Vec<u8>,
    answer: Vec<u8>,
}

impl RawClient {
    fn exchange(&mut self) -> std::io::Result<()> {
        self.stream.write_all(&self.request)?;
        let mut len = [0u8; 8];
        self.stream.read_exact(&mut len)?;
        self.answer.resize(u64::from_le_bytes(len) as usize, 0);
        self.stream.read_exact(&mut self.answer)
    }
}

/// A plain blocking HTTP/1.1 client: the request prepared once and sent in
/// one write, the answer's head parsed with `httparse`, its body read to
/// its Content-Length.
struct PlainClient {
    stream: TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl PlainClient {
    fn connect(addr: SocketAddr, body: &[u8]) -> std::io::Result<PlainClient> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let mut request = format!(
            "POST /infer HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        Ok(PlainClient {
            stream,
            request,
            buf: vec![0; 64 * 1024],
        })
    }

    fn exchange(&mut self) -> std::io::Result<()> {
        self.stream.write_all(&self.request)?;
        let mut filled = 0;
        loop {
            let n = self.stream.read(&mut self.buf[filled..])?;
            if n == 0 {
                return Err(std::io::Error::other("closed"));
            }
            filled += n;
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut response = httparse::Response::new(&mut headers);
            let status = response
                .parse(&self.buf[..filled])
                .map_err(std::io::Error::other)?;
            if let httparse::Status::Complete(head) = status {
                if response.code != Some(200) {
                    return Err(std::io::Error::other("not 200"));
                }
                let length: usize = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                    .ok_or_else(|| std::io::Error::other("no content-length"))?;
                let total = head + length;
                if self.buf.len() < total {
                    self.buf.resize(total, 0);
                }
                if filled < total {
                    self.stream.read_exact(&mut self.buf[filled..total])?;
                }
                return Ok(());
            }
        }
    }
}

/// hyper's client on the caller's thread, as serve_http's.
struct HyperClient {
    rt: tokio::runtime::Runtime,
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>,
    host: String,
    body: Bytes,
}

impl HyperClient {
    fn connect(addr: SocketAddr, body: Bytes) -> Result<HyperClient, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| e.to_string())?;
        let sender = rt.block_on(ecomap_bench::open_hyper(addr))?;
        Ok(HyperClient {
            rt,
            sender,
            host: addr.to_string(),
            body,
        })
    }

    fn exchange(&mut self) -> Result<(), String> {
        use http_body_util::{BodyExt, Full};
        let request = hyper::Request::post("/infer")
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::CONTENT_LENGTH, self.body.len())
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(self.body.clone()))
            .map_err(|e| e.to_string())?;
        let sender = &mut self.sender;
        self.rt.block_on(async {
            sender.ready().await.map_err(|e| e.to_string())?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("status {}", response.status()));
            }
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            std::hint::black_box(bytes.len());
            Ok(())
        })
    }
}

enum Path {
    InProcess(Worker),
    Raw(RawClient),
    Plain(PlainClient),
    Hyper(HyperClient),
}

impl Path {
    fn exchange(&mut self) -> Result<(), String> {
        match self {
            Path::InProcess(w) => {
                w.run_blocking();
                Ok(())
            }
            Path::Raw(c) => c.exchange().map_err(|e| e.to_string()),
            Path::Plain(c) => c.exchange().map_err(|e| e.to_string()),
            Path::Hyper(c) => c.exchange(),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http_floor: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let body: Vec<u8> = (0..args.body).map(|i| (i % 251) as u8).collect();
    let notes = ecomap_actors::rt::RtNotes::default();
    let _hold = args
        .poll_idle
        .then(|| ecomap_actors::rt::hold_wake_latency(0, &notes));
    for note in notes.to_vec() {
        eprintln!("{note}");
    }
    let worker = Worker::start(args.service, args.thrash_mib);
    let server = |f: fn(i32, usize, Worker) -> std::io::Result<SocketAddr>| {
        f(args.server_priority, args.answer, worker.clone()).map_err(|e| e.to_string())
    };
    let (raw, actix, hyper) = (
        server(raw_server)?,
        server(actix_server)?,
        server(hyper_server)?,
    );
    fifo(args.client_priority);
    let io = |e: std::io::Error| e.to_string();
    let mut raw_request = (body.len() as u64).to_le_bytes().to_vec();
    raw_request.extend_from_slice(&body);
    let shared = Bytes::from(body.clone());
    let mut paths: Vec<(&str, Path)> = vec![
        (
            "bare TCP",
            Path::Raw(RawClient {
                stream: {
                    let s = TcpStream::connect(raw).map_err(io)?;
                    s.set_nodelay(true).map_err(io)?;
                    s
                },
                request: raw_request,
                answer: Vec::new(),
            }),
        ),
        (
            "actix-web ← plain client",
            Path::Plain(PlainClient::connect(actix, &body).map_err(io)?),
        ),
        (
            "actix-web ← hyper client",
            Path::Hyper(HyperClient::connect(actix, shared.clone())?),
        ),
        (
            "hyper server ← plain client",
            Path::Plain(PlainClient::connect(hyper, &body).map_err(io)?),
        ),
        (
            "hyper server ← hyper client",
            Path::Hyper(HyperClient::connect(hyper, shared)?),
        ),
    ];
    if !args.service.is_zero() {
        paths.push(("in-process (no network)", Path::InProcess(worker.clone())));
    }
    // Warm every connection and buffer first.
    for (name, p) in paths.iter_mut() {
        for _ in 0..50 {
            p.exchange().map_err(|e| format!("{name}: {e}"))?;
        }
    }
    let mut hists: Vec<Histogram<u64>> = paths
        .iter()
        .map(|_| Histogram::new_with_bounds(1, 10_000_000, 3).expect("valid bounds"))
        .collect();
    for i in 0..args.requests {
        // Rotate the order each turn: no path always follows another.
        for k in 0..paths.len() {
            let j = (i + k) % paths.len();
            let (name, p) = &mut paths[j];
            let t0 = Instant::now();
            p.exchange().map_err(|e| format!("{name}: {e}"))?;
            // The round trip, less the worker's part in it.
            let us = (t0.elapsed().as_micros() as u64).saturating_sub(worker.last_e2e());
            hists[j].record(us.max(1)).map_err(|e| e.to_string())?;
        }
    }
    let quantiles = |h: &Histogram<u64>| [0.5, 0.9, 0.99].map(|q| h.value_at_quantile(q) as i64);
    // What each path adds over the in-process hand-off when there is a
    // worker behind the servers, else over bare TCP.
    let base = quantiles(hists.last().expect("paths"));
    let base = if args.service.is_zero() {
        quantiles(&hists[0])
    } else {
        base
    };
    let against = if args.service.is_zero() {
        "bare TCP"
    } else {
        "in-process"
    };
    // Every setting, so a log of several runs says which was which.
    println!("{args:?}");
    println!(
        "{} requests per path, body {} B, answer {} B, service {:?}, idle cores {}; round trip less the worker's hand-off to done, µs",
        args.requests,
        args.body,
        args.answer,
        args.service,
        if args.poll_idle { "polling" } else { "in the kernel's idle states" }
    );
    println!(
        "{:<30} {:>7} {:>7} {:>7}   over {against} p50 / p99",
        "path", "p50", "p90", "p99"
    );
    for ((name, _), h) in paths.iter().zip(&hists) {
        let [p50, p90, p99] = quantiles(h);
        println!(
            "{name:<30} {p50:>7} {p90:>7} {p99:>7}   {:+} / {:+}",
            p50 - base[0],
            p99 - base[2]
        );
    }
    Ok(())
}
