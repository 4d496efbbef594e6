//! Helpers shared by ecomap's benchmarks: CPU hogs, histogram summaries,
//! and cyclictest's histogram output.
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]

use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Busy-looping SCHED_OTHER threads pinned to given cores: the "hog" that
/// competes with the runtime for CPU time.
pub struct CpuHog {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl CpuHog {
    /// Start one spinning thread per core in `cores`.
    pub fn start(cores: &[usize]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = cores
            .iter()
            .map(|&c| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    core_affinity::set_for_current(core_affinity::CoreId { id: c });
                    let mut x: u64 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        std::hint::black_box(x);
                    }
                })
            })
            .collect();
        CpuHog { stop, threads }
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A memory figure of this process from `/proc/self/status`, in MB
/// (`field` e.g. "VmRSS" for resident, "VmHWM" for the peak); NaN if the
/// file or field is missing.
pub fn proc_status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.split(':').next() == Some(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The median of `v` (sorted in place); the mean of the middle two for an
/// even count.
///
/// ```
/// assert_eq!(ecomap_bench::median(&mut [3.0, 1.0, 2.0]), 2.0);
/// assert_eq!(ecomap_bench::median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
/// ```
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// p50, p99, p99.9 and max of a µs histogram, formatted as µs.
pub fn summary_us(h: &Histogram<u64>) -> [String; 4] {
    if h.is_empty() {
        return ["-".into(), "-".into(), "-".into(), "-".into()];
    }
    [
        h.value_at_quantile(0.5).to_string(),
        h.value_at_quantile(0.99).to_string(),
        h.value_at_quantile(0.999).to_string(),
        h.max().to_string(),
    ]
}

/// Parse cyclictest's `-h` histogram output (one line per µs bucket: the
/// bucket, then one count per thread; `#` lines are comments) into one
/// histogram over all threads. Overflows (latencies beyond the histogram)
/// are recorded at the histogram's limit + 1 so they still count.
pub fn parse_cyclictest_histogram(text: &str) -> Result<Histogram<u64>, String> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut limit = 0u64;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# Histogram Overflows:") {
            let n: u64 = rest
                .split_whitespace()
                .filter_map(|f| f.parse::<u64>().ok())
                .sum();
            if n > 0 {
                h.record_n(limit + 1, n).map_err(|e| e.to_string())?;
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let Some(Ok(bucket)) = fields.next().map(str::parse::<u64>) else {
            continue;
        };
        limit = limit.max(bucket);
        let count: u64 = fields.filter_map(|f| f.parse::<u64>().ok()).sum();
        if count > 0 {
            h.record_n(bucket.max(1), count)
                .map_err(|e| e.to_string())?;
        }
    }
    if h.is_empty() {
        return Err("cyclictest printed no histogram samples".into());
    }
    Ok(h)
}

/// An HTTP/1.1 client connection to `addr` on hyper's connection API
/// (TCP_NODELAY set). Its connection task is spawned on the calling tokio
/// runtime, so it runs whenever that runtime does — in `serve_http` and
/// `http_floor`, in each request's `block_on` on the client's own thread.
pub async fn open_hyper(
    addr: std::net::SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cyclictest_histogram_is_parsed_with_overflows() {
        let text = "# /dev/cpu_dma_latency set to 0us\n# Histogram\n000000 000000\t000000\n\
                    000003 000010\t000020\n000004 000005\t000000\n000010 000000\t000001\n\
                    # Total: 000000036 000000021\n# Max Latencies: 00010 00010\n\
                    # Histogram Overflows: 00001 00000\n";
        let h = parse_cyclictest_histogram(text).unwrap();
        assert_eq!(h.len(), 37);
        assert_eq!(h.value_at_quantile(0.5), 3);
        assert_eq!(h.max(), 11);
        assert!(parse_cyclictest_histogram("# nothing\n").is_err());
        let s = summary_us(&h);
        assert_eq!(s[0], "3");
    }

    #[test]
    fn hog_threads_stop_on_drop() {
        let hog = CpuHog::start(&[0, 0]);
        std::thread::sleep(std::time::Duration::from_millis(10));
        // Spinning until told to stop, not finished on their own.
        assert_eq!(hog.threads.len(), 2);
        assert!(hog.threads.iter().all(|t| !t.is_finished()));
        let stop = hog.stop.clone();
        // Drop stops and joins them: it returns, with the flag set.
        drop(hog);
        assert!(stop.load(Ordering::Relaxed));
        assert_eq!(Arc::strong_count(&stop), 1, "every hog thread has ended");
    }
}
