//! Load test of `kiln serve` (a benchmark, not a test): starts the server in this process on
//! a free loopback port with kiln-tiny, then sends REQUESTS txt2img requests from CLIENTS
//! concurrent clients over real HTTP, and prints one JSON line: answered, failed, p50/p95/max
//! latency, throughput, and the process's resident memory after the first fifth of the
//! requests and at the end (flat memory: no growth per request).
//!
//! ```sh
//! cargo run --release -p kiln-serve --example load -- [REQUESTS] [CLIENTS] [STEPS]
//! ```
//! (defaults 100, 8, 10; the model is `assets/models/kiln-tiny`, or `KILN_LOAD_MODEL`).

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kiln_serve::{Limits, ServeConfig, Server};

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// One request; the status code and whether the body holds an image.
fn txt2img(addr: &str, seed: usize, steps: usize) -> (u16, bool) {
    let body = format!(
        r#"{{"prompt": "a large red circle on a blue background", "seed": {seed}, "steps": {steps}}}"#
    );
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return (0, false);
    };
    let head = format!(
        "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return (0, false);
    }
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw);
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, raw.contains("\"images\":[\""))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let requests = args.first().copied().unwrap_or(100);
    let clients = args.get(1).copied().unwrap_or(8);
    let steps = args.get(2).copied().unwrap_or(10);
    let model = std::env::var_os("KILN_LOAD_MODEL").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/models/kiln-tiny"),
        PathBuf::from,
    );
    let outputs = std::env::temp_dir().join(format!("kiln-load-{}", std::process::id()));
    let server = Server::start(
        ServeConfig {
            model,
            models_dir: None,
            host: "127.0.0.1".parse().unwrap(),
            port: 0,
            auth: Vec::new(),
            insecure_listen: false,
            lora_dir: None,
            embeddings_dir: None,
            outputs: outputs.clone(),
            device: "cpu".parse().unwrap(),
            cors_allow_origins: Vec::new(),
            cache_dir: None,
            limits: Limits::default(),
        },
        None,
    )
    .unwrap();
    let addr = server.addr().to_string();
    // Warm-up: the model loads, the first generation allocates.
    let (status, _) = txt2img(&addr, 0, steps);
    assert_eq!(status, 200, "warm-up request failed");
    let rss_start = rss_bytes();
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let rss_fifth = Arc::new(Mutex::new(0u64));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, next, latencies, failed, rss_fifth) = (
                addr.clone(),
                next.clone(),
                latencies.clone(),
                failed.clone(),
                rss_fifth.clone(),
            );
            std::thread::spawn(move || {
                loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    if k >= requests {
                        break;
                    }
                    let t = Instant::now();
                    let (status, image) = txt2img(&addr, k + 1, steps);
                    if status == 200 && image {
                        latencies.lock().unwrap().push(t.elapsed().as_secs_f64());
                    } else {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    if k + 1 == requests / 5 {
                        *rss_fifth.lock().unwrap() = rss_bytes();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let wall = started.elapsed().as_secs_f64();
    let rss_end = rss_bytes();
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(f64::total_cmp);
    let answered = l.len();
    println!(
        "{}",
        serde_json::json!({
            "requests": requests,
            "clients": clients,
            "steps": steps,
            "answered": answered,
            "failed": failed.load(Ordering::SeqCst),
            "p50_seconds": percentile(&l, 0.5),
            "p95_seconds": percentile(&l, 0.95),
            "max_seconds": l.last().copied().unwrap_or(0.0),
            "throughput_per_second": answered as f64 / wall,
            "wall_seconds": wall,
            "rss_after_warmup_bytes": rss_start,
            "rss_after_first_fifth_bytes": *rss_fifth.lock().unwrap(),
            "rss_end_bytes": rss_end,
        })
    );
    server.stop().unwrap();
    let _ = std::fs::remove_dir_all(outputs);
}
