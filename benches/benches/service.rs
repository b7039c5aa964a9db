//! The service's overhead: the same model and input, called in-process
//! (`Model::infer`) and over mutual-TLS gRPC through the appliance binary
//! (TPM keystore on swtpm, audit log and per-request logging on, as
//! deployed), measured in the same run.
//!
//! Reports, per model: p50/p99 latency of one client and the p50 overhead
//! (target: at most 100 µs), and throughput with 1, 8 and 32 concurrent
//! clients against the in-process maximum (target at 32: at least 90 %).
//! Client and server share this machine's cores, which the in-process
//! baseline does not pay for; the ratio is a lower bound.
//!
//! Run: `cargo build --release -p appliance -p provisioning -p images && cargo bench -p benches --bench service`
//! (after `scripts/models`). `BENCH_SECONDS` sets each measurement's length.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a harness: fail loudly

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{Case, cases, connect, median_p99, request};
use inference::{InputTensor, Limits, Model, ModelSource};
use tests::Appliance;

fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let budget = Duration::from_secs_f64(seconds);
    let mut app = Appliance::start("max_concurrent_streams = 256\nmax_connections = 4096\n");
    app.load_reference_models();
    let certs = app.client("bench-app");
    // Limits out of the way: this measures the service, not the limiter.
    app.grant_unlimited("bench-app");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // Each measurement runs as a task on the runtime's workers, as a real
    // client's calls would: `block_on` itself would add hand-offs between
    // the calling thread and the connection's task to every call.
    let address = app.address.to_string();
    let (live50, live99) = runtime.block_on(spawned(live_latency(
        address.clone(),
        certs.clone(),
        budget,
    )));
    println!(
        "transport floor (ServerLive over mTLS: TLS, HTTP/2, authorization, audit, log; no model): p50 {}, p99 {}",
        us(live50),
        us(live99)
    );

    for case in cases() {
        let model = Arc::new(load(case.model));
        let (p50, p99) = in_process_latency(&model, &case, budget);
        let local_max = in_process_throughput(&model, &case, cores, budget);
        println!("\n## {} (batch 1)\n", case.model);
        println!("| | p50 | p99 | throughput |");
        println!("|---|---:|---:|---:|");
        println!("| in-process, 1 thread | {} | {} | |", us(p50), us(p99));
        println!("| in-process, {cores} threads | | | {local_max:.0}/s |");
        let (rp50, rp99) = runtime.block_on(remote_latency(
            &app.address.to_string(),
            &certs,
            &case,
            budget,
        ));
        println!("| mTLS gRPC, 1 client | {} | {} | |", us(rp50), us(rp99));
        for clients in [1usize, 8, 32] {
            let rate = runtime.block_on(remote_throughput(
                &app.address.to_string(),
                &certs,
                &case,
                clients,
                budget,
            ));
            println!(
                "| mTLS gRPC, {clients} clients | | | {rate:.0}/s ({:.0} % of in-process) |",
                100.0 * rate / local_max
            );
        }
        let overhead = rp50.as_secs_f64() * 1e6 - p50.as_secs_f64() * 1e6;
        println!("\np50 overhead of the service: {overhead:.0} µs");
    }
    app.stop();
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn load(name: &str) -> Model {
    let dir = test_support::models_dir();
    let (file, tokenizer) = match name {
        "digits" => ("digits_cnn_qoperator.onnx", None),
        _ => (
            "minilm_dynamic.onnx",
            Some(std::fs::read(dir.join("minilm_tokenizer.json")).unwrap()),
        ),
    };
    let onnx = std::fs::read(dir.join(file)).unwrap();
    let source = ModelSource {
        onnx: &onnx,
        tokenizer_json: tokenizer.as_deref(),
    };
    Model::load(name, 1, source, Limits::default()).unwrap()
}

fn tensor(case: &Case) -> InputTensor<'_> {
    InputTensor {
        name: case.input,
        datatype: case.datatype,
        shape: &case.shape,
        data: &case.data,
    }
}

fn in_process_latency(model: &Model, case: &Case, budget: Duration) -> (Duration, Duration) {
    let input = [tensor(case)];
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < budget {
        let t = Instant::now();
        drop(model.infer(&input, &[]).unwrap());
        samples.push(t.elapsed());
    }
    median_p99(&mut samples)
}

fn in_process_throughput(model: &Arc<Model>, case: &Case, threads: usize, budget: Duration) -> f64 {
    let started = Instant::now();
    let counts: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let input = [tensor(case)];
                    let mut n = 0;
                    while started.elapsed() < budget {
                        drop(model.infer(&input, &[]).unwrap());
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    counts.iter().sum::<usize>() as f64 / started.elapsed().as_secs_f64()
}

async fn spawned<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    tokio::spawn(work).await.unwrap()
}

async fn live_latency(
    address: String,
    certs: std::path::PathBuf,
    budget: Duration,
) -> (Duration, Duration) {
    let mut client = connect(&address, &certs).await;
    let request = wire::inference::ServerLiveRequest {};
    client.server_live(request).await.unwrap();
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < budget {
        let t = Instant::now();
        client.server_live(request).await.unwrap();
        samples.push(t.elapsed());
    }
    median_p99(&mut samples)
}

async fn remote_latency(
    address: &str,
    certs: &Path,
    case: &Case,
    budget: Duration,
) -> (Duration, Duration) {
    let mut client = connect(address, certs).await;
    let message = request(case);
    client.model_infer(message.clone()).await.unwrap(); // warm-up
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < budget {
        let t = Instant::now();
        client.model_infer(message.clone()).await.unwrap();
        samples.push(t.elapsed());
    }
    median_p99(&mut samples)
}

async fn remote_throughput(
    address: &str,
    certs: &Path,
    case: &Case,
    clients: usize,
    budget: Duration,
) -> f64 {
    let mut tasks = Vec::new();
    let mut connected = Vec::new();
    for _ in 0..clients {
        connected.push(connect(address, certs).await);
    }
    let started = Instant::now();
    for mut client in connected {
        let message = request(case);
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while started.elapsed() < budget {
                client.model_infer(message.clone()).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}
