//! Soak: 50 concurrent mTLS clients for a minute on the int8 digits model,
//! then on int8 MiniLM, through the appliance binary (TPM keystore, audit
//! log on). Reports requests, errors (target 0), p50/p99, and the daemon's
//! resident memory after warm-up and at the end (target: within 10 %, and
//! within DESIGN §9's bound of 1.5 × the models + 40 MB).
//!
//! Run: `cargo build --release -p appliance -p provisioning -p images &&
//! cargo bench -p benches --bench soak` (after `scripts/models`).
//! `BENCH_SOAK_SECONDS` sets each run's length (default 60);
//! `BENCH_SOAK_CACHE_MB` sets `keystore.cache_mb` and
//! `BENCH_SOAK_RETAIN_RECORDS` sets `audit.retain_records`, and
//! `BENCH_SOAK_INT8_AS_FLOAT=false` sets `inference.int8_as_float` (defaults:
//! the daemon's; on a CPU without fast int8 kernels the float products cost
//! 4x the int8 weights' memory). Until the audit window is full, each kept record adds about
//! 300 bytes of the store's index to resident memory, by design.
//! Memory is read after a settle of 12 s, so jemalloc's 10 s decay has
//! returned what a burst left behind.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a harness: fail loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use benches::{cases, connect, median_p99, request};
use tests::Appliance;

const CLIENTS: usize = 50;
/// Longer than jemalloc's dirty-page decay (10 s).
const SETTLE: Duration = Duration::from_secs(12);

fn rss_mb(pid: u32) -> f64 {
    tests::rss_kib(pid) as f64 / 1024.0
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut app = Appliance::start("max_concurrent_streams = 256\nmax_connections = 4096\n");
    let cache = std::env::var("BENCH_SOAK_CACHE_MB").ok();
    let retain = std::env::var("BENCH_SOAK_RETAIN_RECORDS").ok();
    let as_float = std::env::var("BENCH_SOAK_INT8_AS_FLOAT").ok();
    if cache.is_some() || retain.is_some() || as_float.is_some() {
        app.stop();
        app.edit_config(|mut config| {
            if let Some(mb) = cache {
                config = config.replace("[keystore]\n", &format!("[keystore]\ncache_mb = {mb}\n"));
            }
            if let Some(n) = retain {
                config.push_str(&format!("[audit]\nretain_records = {n}\n"));
            }
            if let Some(v) = as_float {
                config = config.replace(
                    "[inference]\n",
                    &format!("[inference]\nint8_as_float = {v}\n"),
                );
            }
            config
        });
        app.launch();
    }
    app.load_reference_models();
    let certs = app.client("soak");
    app.grant_unlimited("soak");
    let models = test_support::models_dir();
    let model_mb: f64 = [
        "digits_cnn_qoperator.onnx",
        "minilm_dynamic.onnx",
        "minilm_tokenizer.json",
    ]
    .iter()
    .map(|f| std::fs::metadata(models.join(f)).unwrap().len() as f64)
    .sum::<f64>()
        / 1e6
        * (1e6 / 1048576.0);
    let bound = 1.5 * model_mb + 40.0;
    let pid = app.pid();
    std::thread::sleep(SETTLE);
    let loaded = rss_mb(pid);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "\n## Soak: {CLIENTS} clients, {seconds} s per model (models {model_mb:.1} MiB; DESIGN bound {bound:.0} MiB)\n"
    );
    println!("Resident memory with the models loaded, before any request: {loaded:.0} MiB\n");
    println!(
        "| model | requests | errors | p50 | p99 | RSS after warm-up | RSS at end | end / warm-up |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for case in cases() {
        let case = Arc::new(case);
        let address = app.address.to_string();
        let warm = Duration::from_secs((seconds / 10).max(3));
        runtime.block_on(run(&address, &certs, &case, warm));
        std::thread::sleep(SETTLE);
        let before = rss_mb(pid);
        let (latencies, errors) =
            runtime.block_on(run(&address, &certs, &case, Duration::from_secs(seconds)));
        std::thread::sleep(SETTLE);
        let after = rss_mb(pid);
        let mut latencies = latencies;
        let n = latencies.len();
        let (p50, p99) = median_p99(&mut latencies);
        println!(
            "| {} | {n} | {errors} | {:.2} ms | {:.2} ms | {before:.0} MiB | {after:.0} MiB | {:.3} |",
            case.model,
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            after / before
        );
    }
    app.stop();
}

/// `CLIENTS` clients (one connection each) calling in a loop for `budget`.
async fn run(
    address: &str,
    certs: &std::path::Path,
    case: &Arc<benches::Case>,
    budget: Duration,
) -> (Vec<Duration>, u64) {
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..CLIENTS {
        let mut client = connect(address, certs).await;
        let message = request(case);
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while started.elapsed() < budget {
                let t = Instant::now();
                match client.model_infer(message.clone()).await {
                    Ok(_) => samples.push(t.elapsed()),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all, errors.load(Ordering::Relaxed))
}
