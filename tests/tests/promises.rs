//! Promises the daemon's documentation makes, each held to account: an idle
//! connection is closed although it pings, a refused upload does not cost
//! readiness, an unknown health service is audited as the NOT_FOUND the
//! client got, and the grace period's end really closes what is left.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_support::{models_dir, venv_python, workspace_root};
use tests::Appliance;

fn h2(app: &Appliance, certs: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(venv_python());
    c.arg(workspace_root().join("tests/python/h2_client.py"))
        .arg("--url")
        .arg(app.address.to_string())
        .arg("--certs")
        .arg(certs)
        .args(args);
    c
}

fn json_of(out: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(out);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no JSON ({e}): {text}"))
}

#[test]
fn a_connection_without_requests_is_closed_although_it_pings() {
    let mut app = Appliance::start("idle_timeout_s = 2\nkeepalive_interval_s = 1\n");
    let certs = app.client("pinger");
    app.grant("pinger", "*");
    let out = h2(&app, &certs, &["idle-pings", "10", "0.3"])
        .output()
        .unwrap();
    let report = json_of(&out.stdout);
    let closed = report["closed_after"]
        .as_f64()
        .unwrap_or_else(|| panic!("a pinging idle connection was never closed: {report}"));
    assert!(
        (1.5..6.0).contains(&closed),
        "closed after {closed} s with idle_timeout_s = 2: {report}"
    );
    assert_eq!(
        report["goaway"], true,
        "closed gracefully, with GOAWAY: {report}"
    );
    // A client that keeps calling is not idle.
    for _ in 0..4 {
        assert_eq!(app.triton(&certs, &["call", "live"])["ok"], true);
        std::thread::sleep(Duration::from_millis(700));
    }
}

#[test]
fn a_refused_upload_does_not_cost_readiness() {
    let mut app = Appliance::start_with("", "[models]\nallow_unsigned = true\n", None);
    let certs = app.client("watcher");
    app.grant("watcher", "*");
    let digits = models_dir().join("digits_mlp.onnx");
    app.provision_ok(&[
        "model",
        "load",
        "--name",
        "digits",
        "--version",
        "1",
        "--onnx",
        digits.to_str().unwrap(),
    ]);
    let garbage = app.dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"this is not an ONNX model").unwrap();
    let bad_op = models_dir().join("digits_mlp_qgemm_unsupported.onnx");
    for (name, file) in [("broken", &garbage), ("contrib", &bad_op)] {
        let out = app.provision(&[
            "model",
            "load",
            "--name",
            name,
            "--version",
            "1",
            "--onnx",
            file.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{name} was accepted");
        let status = app.triton(&certs, &["status"]);
        assert_eq!(status["ready"], true, "after refusing {name}: {status}");
        let health = app.triton(&certs, &["health", ""]);
        assert_eq!(
            health["status"], "SERVING",
            "after refusing {name}: {health}"
        );
    }
    let list = app.provision_ok(&["model", "list"]);
    assert!(
        !list.contains("broken") && !list.contains("contrib"),
        "{list}"
    );
}

#[test]
fn health_outcomes_are_audited_as_the_client_saw_them() {
    let mut app = Appliance::start("");
    let certs = app.client("prober");
    app.grant("prober", "*");
    let known = app.triton(&certs, &["health", "inference.GRPCInferenceService"]);
    assert_eq!(known["status"], "SERVING", "{known}");
    let unknown = app.triton(&certs, &["health", "no.such.Service"]);
    assert_eq!(unknown["code"], "NOT_FOUND", "{unknown}");
    let out = app.dir.path().join("audit.jsonl");
    app.provision_ok(&["audit", "export", "--out", out.to_str().unwrap()]);
    let outcomes: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["rpc"] == "HealthCheck" && r["client"] == "prober")
        .map(|r| r["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outcomes, ["OK", "NOT_FOUND"]);
}

#[test]
fn the_end_of_the_grace_period_closes_what_is_still_open() {
    let mut app = Appliance::start("shutdown_grace_s = 1\n");
    let certs = app.client("staller");
    app.grant("staller", "*");
    // A request whose body never comes: it holds the connection open.
    let mut holder = h2(&app, &certs, &["hold-stream", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "holding");
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    app.stop(); // SIGTERM; asserts a clean exit
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "stopping took {took:?} with a 1 s grace period"
    );
    let mut report = String::new();
    out.read_line(&mut report).unwrap();
    holder.wait().unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert!(
        report["closed_after"].as_f64().is_some(),
        "the held connection was not closed: {report}"
    );
    let log = app.log_text();
    assert!(
        log.contains("closed the remaining connections") && log.contains("connections=1"),
        "{log}"
    );
}

#[test]
fn the_log_has_a_line_per_failed_call_only_unless_asked() {
    let mut app = Appliance::start_with("", "[log]\ncalls = \"failures\"\n", None);
    let certs = app.client("quiet");
    app.grant("quiet", "*");
    let stranger = app.client("stranger");
    for _ in 0..3 {
        assert_eq!(app.triton(&certs, &["call", "live"])["ok"], true);
    }
    assert_eq!(
        app.triton(&stranger, &["call", "live"])["code"],
        "PERMISSION_DENIED"
    );
    let log = app.log_text();
    let calls: Vec<&str> = log.lines().filter(|l| l.contains(" call ")).collect();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].contains("PERMISSION_DENIED"), "{calls:?}");
    // The audit log has all four.
    let out = app.dir.path().join("audit.jsonl");
    app.provision_ok(&["audit", "export", "--out", out.to_str().unwrap()]);
    let live = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"ServerLive\""))
        .count();
    assert_eq!(live, 4);
}
