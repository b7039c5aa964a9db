//! Operating the daemon: a bad configuration stops it before any port is
//! bound (exit 64, naming the key), metrics are for administrators only,
//! SIGTERM lets requests in flight finish, and every binary names its commit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::Duration;

use tests::{ADMIN, Appliance, binary};

#[test]
fn a_bad_configuration_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[server]\nlistne = \"127.0.0.1:0\"\n", "listne"),
        (
            "[server]\nlisten = \"127.0.0.1:0\"\nmax_message_bytes = 10\n[keystore]\ndata_dir = \"/x\"\nbackend = \"tpm\"\ntcti = \"device:/dev/null\"\npcrs = \"sha256:7\"\n",
            "server.max_message_bytes",
        ),
        (
            "[server]\nlisten = \"127.0.0.1:0\"\n[keystore]\ndata_dir = \"/x\"\nbackend = \"insecure-software\"\ninsecure_root_key = \"/x/k\"\n",
            "--insecure-software-keystore",
        ),
    ];
    for (text, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(binary("appliance"))
            .args(["run", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{key}: {stderr}");
        assert!(stderr.contains(key), "{key}: {stderr}");
        assert!(
            stderr.contains("bad.toml"),
            "the message names the file: {stderr}"
        );
    }
}

#[test]
fn the_daemon_cannot_dump_core() {
    let app = Appliance::start("");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", app.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
}

#[test]
fn metrics_are_served_to_administrators_only() {
    let mut app = Appliance::start("");
    app.load_reference_models();
    let user = app.client("metrics-user");
    app.grant("metrics-user", "digits");
    assert_eq!(app.triton(&user, &["call", "infer"])["code"], "OK");

    let admin = app.dir.path().join("clients").join(ADMIN);
    let (code, body) = app.metrics(&admin);
    assert_eq!(code, "200", "{body}");
    assert!(
        body.contains("appliance_requests_total{rpc=\"ModelInfer\",code=\"OK\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("appliance_inference_seconds_count{model=\"digits\"} 1"),
        "{body}"
    );
    assert!(body.contains("appliance_queue_depth 0"), "{body}");
    assert!(body.contains("appliance_models_ready 2"), "{body}");
    // Triton's per-model counters, under Triton's names and labels.
    let triton = |name: &str| -> u64 {
        let prefix = format!("{name}{{model=\"digits\",version=\"1\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in:\n{body}"))
            .parse()
            .unwrap()
    };
    assert_eq!(triton("nv_inference_request_success"), 1);
    assert_eq!(triton("nv_inference_request_failure"), 0);
    assert_eq!(triton("nv_inference_count"), 1);
    assert_eq!(triton("nv_inference_exec_count"), 1);
    let request = triton("nv_inference_request_duration_us");
    let parts =
        triton("nv_inference_queue_duration_us") + triton("nv_inference_compute_infer_duration_us");
    assert!(request > 0 && parts <= request, "{request} < {parts}");

    let (code, body) = app.metrics(&user);
    assert_eq!(code, "403", "{body}");
}

#[test]
fn sigterm_lets_requests_in_flight_finish() {
    let mut app = Appliance::start("");
    app.load_reference_models();
    let certs = app.client("patient-app");
    app.grant("patient-app", "minilm");
    // A request that takes a while: 48 sentences through int8 MiniLM
    // (about a second in this debug build; well inside the 30 s grace
    // period).
    let mut python = app.triton_process(
        &certs,
        &[
            "infer-text",
            "--announce",
            "--repeat",
            "16",
            "A long sentence about the weather, the sun and the people outside today.",
            "Another one.",
            "A third.",
        ],
    );
    let mut lines = BufReader::new(python.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "sending");
    // SIGTERM once the server has the request (its log says so).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !app.log_text().contains("inference started") {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never arrived"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    app.stop(); // SIGTERM; asserts a clean exit
    let result: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    python.wait().unwrap();
    assert_eq!(
        result["code"], "OK",
        "the request in flight failed: {result}"
    );
    assert_eq!(result["shape"], serde_json::json!([48, 384]));
    let log = app.log_text();
    let drained = log.find("shutting down").unwrap();
    let answered = log.rfind("rpc=\"ModelInfer\"").unwrap();
    assert!(
        answered > drained,
        "the answer should come after the shutdown began:\n{log}"
    );
}

#[test]
fn every_binary_names_the_commit_it_was_built_from() {
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(test_support::workspace_root())
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    assert_eq!(head.len(), 12, "not a git checkout?");
    for name in ["appliance", "provision", "model-image", "tuf-client"] {
        let out = Command::new(binary(name))
            .arg("--version")
            .output()
            .unwrap();
        assert!(out.status.success(), "{name} --version");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.trim(),
            format!("{name} {} (commit {head})", env!("CARGO_PKG_VERSION")),
            "{name}"
        );
    }
}
