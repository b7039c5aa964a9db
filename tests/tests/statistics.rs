//! Triton's model configuration and statistics extensions, through both
//! stock clients (gRPC and REST), and the tool built on them: perf_analyzer
//! (Triton's load generator) runs against the appliance over mTLS, on gRPC
//! and on HTTPS, and its figures are printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use test_support::workspace_root;
use tests::Appliance;

/// `ensure_perf_analyzer` in scripts/lib/common.sh puts it there.
fn perf_analyzer() -> (PathBuf, PathBuf) {
    let dir = workspace_root().join("target/tools/perf_analyzer");
    let binary = dir.join("perf_analyzer");
    assert!(
        binary.exists(),
        "{} is missing: scripts/test installs it (ensure_perf_analyzer)",
        binary.display()
    );
    (binary, dir.join("lib"))
}

/// One bounded perf_analyzer run; returns its CSV row per concurrency and
/// its printed report.
fn run_perf_analyzer(app: &Appliance, protocol: &[&str]) -> (Vec<String>, String) {
    let (binary, lib) = perf_analyzer();
    let csv = app.dir.path().join(format!("perf-{}.csv", protocol[1]));
    let out = Command::new("timeout")
        .arg("120")
        .arg(binary)
        .env("LD_LIBRARY_PATH", lib)
        .args(["-m", "digits", "-b", "1", "--input-data", "zero"])
        .args([
            "--concurrency-range",
            "1:2",
            "-p",
            "1000",
            "-r",
            "8",
            "-s",
            "50",
        ])
        .args(protocol)
        .arg("-f")
        .arg(&csv)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "perf_analyzer {protocol:?}: {report}");
    let rows = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    (rows, report)
}

#[test]
fn statistics_and_configuration_serve_the_stock_clients_and_perf_analyzer() {
    let mut app = Appliance::start("");
    app.load_reference_models();
    let client = app.client("bench-app");
    // A load generator outruns the default rate limit.
    app.grant_unlimited("bench-app");

    // Five inferences, then the statistics as both clients read them.
    for _ in 0..5 {
        let r = app.rest(&client, &["call", "infer"]);
        assert_eq!(r["ok"], true, "{r}");
    }
    let report = app.rest(&client, &["stats", "digits"]);
    let http = &report["http_stats"]["model_stats"][0];
    assert_eq!(http["name"], "digits", "{report}");
    assert_eq!(http["version"], "1");
    let s = &http["inference_stats"];
    assert_eq!(s["success"]["count"], 5, "{report}");
    assert_eq!(s["fail"]["count"], 0);
    // perf_analyzer requires these counts to agree.
    for part in ["queue", "compute_input", "compute_infer", "compute_output"] {
        assert_eq!(s[part]["count"], 5, "{part}: {report}");
    }
    assert!(s["success"]["ns"].as_u64().unwrap() >= s["compute_infer"]["ns"].as_u64().unwrap());
    assert_eq!(http["inference_count"], 5);
    assert_eq!(http["execution_count"], 5);
    assert_eq!(http["batch_stats"][0]["batch_size"], 1);
    assert!(http["last_inference"].as_u64().unwrap() > 1_700_000_000_000);
    // gRPC says the same (protobuf's JSON writes 64-bit numbers as strings).
    let grpc = &report["grpc_stats"]["model_stats"][0];
    assert_eq!(grpc["inference_stats"]["success"]["count"], "5", "{report}");
    assert_eq!(grpc["version"], "1");

    // The configuration, Triton's way: a batching model has max_batch_size
    // > 0 and dims without the batch dimension.
    for config in [&report["http_config"], &report["grpc_config"]] {
        assert_eq!(config["name"], "digits", "{report}");
        assert_eq!(config["platform"], "tract_onnx");
        assert_eq!(config["input"][0]["data_type"], "TYPE_FP32");
        assert_eq!(config["output"][0]["name"], "logits");
    }
    let http_config = &report["http_config"];
    assert_eq!(
        http_config["input"][0]["dims"],
        serde_json::json!([1, 8, 8])
    );
    assert_eq!(http_config["output"][0]["dims"], serde_json::json!([10]));
    assert!(http_config["max_batch_size"].as_i64().unwrap() >= 32);
    let text = app.rest(&client, &["stats", "minilm"]);
    assert_eq!(text["http_config"]["input"][0]["data_type"], "TYPE_STRING");
    assert_eq!(text["http_config"]["max_batch_size"], 256, "{text}");
    assert_eq!(
        text["http_stats"]["model_stats"][0]["inference_stats"]["success"]["count"],
        0
    );

    // perf_analyzer over gRPC and over HTTPS, mutual TLS both times.
    let file = |name: &str| client.join(name).to_str().unwrap().to_owned();
    let grpc_url = format!("127.0.0.1:{}", app.address.port());
    let https_url = format!("https://localhost:{}", app.address.port());
    let (ca, cert, key) = (file("ca.pem"), file("cert.pem"), file("key.pem"));
    let runs = [
        (
            "gRPC",
            vec![
                "-i",
                "grpc",
                "-u",
                &grpc_url,
                "--ssl-grpc-use-ssl",
                "--ssl-grpc-root-certifications-file",
                &ca,
                "--ssl-grpc-certificate-chain-file",
                &cert,
                "--ssl-grpc-private-key-file",
                &key,
            ],
        ),
        (
            "HTTPS",
            vec![
                "-i",
                "http",
                "-u",
                &https_url,
                "--ssl-https-ca-certificates-file",
                &ca,
                "--ssl-https-client-certificate-file",
                &cert,
                "--ssl-https-private-key-file",
                &key,
            ],
        ),
    ];
    for (name, protocol) in &runs {
        let (rows, report) = run_perf_analyzer(&app, protocol);
        println!("perf_analyzer over {name}, digits, batch 1:\n{report}");
        // The server's side of the figures comes from ModelStatistics.
        assert!(report.contains("Server:"), "{report}");
        assert!(report.contains("Inference count:"), "{report}");
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert!(
            rows[0].starts_with("Concurrency,Inferences/Second"),
            "{rows:?}"
        );
        for row in &rows[1..] {
            let throughput: f64 = row.split(',').nth(1).unwrap().parse().unwrap();
            assert!(throughput > 0.0, "{row}");
        }
    }
    // The appliance counted every one of those requests.
    let after = app.rest(&client, &["stats", "digits"]);
    let served = after["http_stats"]["model_stats"][0]["inference_stats"]["success"]["count"]
        .as_u64()
        .unwrap();
    assert!(served > 100, "{after}");
    assert_eq!(
        after["http_stats"]["model_stats"][0]["inference_stats"]["fail"]["count"],
        0
    );
}
