//! Bad input never costs the server: every malformed request gets its
//! status, hostile connections are dropped, memory stays bounded, and the
//! server keeps serving the others throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tests::{Appliance, rss_kib};

const CONFIG: &str =
    "max_message_bytes = 1048576\nhandshake_timeout_ms = 1500\nmax_connections = 4000\n";

/// Seconds since midnight of a log line's RFC 3339 timestamp.
fn timestamp(line: &str) -> f64 {
    let time = line.split_whitespace().next().unwrap();
    let clock = time.split('T').nth(1).unwrap().trim_end_matches('Z');
    let parts: Vec<f64> = clock.split(':').map(|p| p.parse().unwrap()).collect();
    parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
}

#[test]
fn every_bad_request_gets_its_status_and_the_server_stays_healthy() {
    let mut app = Appliance::start(CONFIG);
    app.load_reference_models();
    let certs = app.client("fuzzy-app");
    app.grant("fuzzy-app", "digits,minilm");
    let raw = |args: &[&str]| {
        let mut all = vec!["raw"];
        all.extend_from_slice(args);
        app.triton(&certs, &all)
    };
    let cases: [(&[&str], &str, &str); 12] = [
        (
            &["digits", "nope", "FP32", "1,1,8,8", "256"],
            "INVALID_ARGUMENT",
            "unknown input `nope`",
        ),
        (
            &["digits", "input", "INT32", "1,1,8,8", "256"],
            "INVALID_ARGUMENT",
            "expected datatype FP32",
        ),
        (
            &["digits", "input", "FLOAT", "1,1,8,8", "256"],
            "INVALID_ARGUMENT",
            "unknown datatype",
        ),
        (
            &["digits", "input", "FP32", "1,64", "256"],
            "INVALID_ARGUMENT",
            "expected 4 dimensions",
        ),
        (
            &["digits", "input", "FP32", "1,1,8,9", "288"],
            "INVALID_ARGUMENT",
            "dimension 3 must be 8",
        ),
        (
            &["digits", "input", "FP32", "1,1,8,8", "100"],
            "INVALID_ARGUMENT",
            "expected 256 bytes",
        ),
        (
            &["digits", "input", "FP32", "0,1,8,8", "0"],
            "INVALID_ARGUMENT",
            "at least 1",
        ),
        // 2^40 elements declared, no data: refused before any allocation.
        (
            &["digits", "input", "FP32", "17179869184,1,8,8", "0"],
            "RESOURCE_EXHAUSTED",
            "the limit is",
        ),
        (
            &["minilm", "text", "BYTES", "1", "3"],
            "INVALID_ARGUMENT",
            "length prefix",
        ),
        (
            &["nosuchmodel", "input", "FP32", "1", "4"],
            "PERMISSION_DENIED",
            "not granted",
        ),
        // Over max_message_bytes (1 MiB).
        (
            &["digits", "input", "FP32", "4096,1,8,8", "1048576"],
            "RESOURCE_EXHAUSTED",
            "larger than",
        ),
        (&["digits", "input", "FP32", "1,1,8,8", "256"], "OK", ""),
    ];
    for (args, code, message) in cases {
        let report = raw(args);
        assert_eq!(report["code"], code, "{args:?}: {report}");
        assert!(
            report["message"].as_str().unwrap().contains(message),
            "{args:?}: {report}"
        );
    }
    let report = app.triton(&certs, &["infer-text", "ok"]);
    assert_eq!(report["code"], "OK", "{report}");

    // Unknown model for a client granted everything: NOT_FOUND.
    app.grant("fuzzy-app", "*");
    let report = raw(&["nosuchmodel", "input", "FP32", "1", "4"]);
    assert_eq!(report["code"], "NOT_FOUND", "{report}");

    // Garbage instead of a TLS handshake, and garbage inside TLS.
    for _ in 0..20 {
        let mut s = TcpStream::connect(app.address).unwrap();
        let _ = s.write_all(&[0x5a; 4096]);
        let mut buf = [0u8; 64];
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.read(&mut buf);
    }
    let report = app.triton(&certs, &["tls-garbage", "65536"]);
    assert_eq!(report["closed_by_server"], true, "{report}");

    assert_eq!(app.triton(&certs, &["call", "infer"])["code"], "OK");
    assert!(!app.log_text().contains("panicked"), "{}", app.log_text());
}

#[test]
fn hostile_connections_are_bounded_and_others_are_still_served() {
    let mut app = Appliance::start(CONFIG);
    app.load_reference_models();
    let certs = app.client("steady-app");
    app.grant("steady-app", "digits");
    let pid = app.pid();
    let before = rss_kib(pid);

    // A client that stalls mid-handshake: half a TLS record, then silence.
    let mut stalled = TcpStream::connect(app.address).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .unwrap();
    let stalled_at = Instant::now();
    let stalled_port = stalled.local_addr().unwrap().port();
    let watcher = std::thread::spawn(move || {
        stalled
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut buf = [0u8; 16];
        let n = stalled.read(&mut buf).unwrap_or(0);
        (n, stalled_at.elapsed())
    });

    // Two thousand connections that never start a handshake.
    let idle: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(app.address).unwrap())
        .collect();
    // Two hundred TLS sessions that complete and then say nothing, held
    // while a normal client works.
    let holder = {
        let address = app.address;
        let certs = certs.clone();
        std::thread::spawn(move || {
            let out = std::process::Command::new(test_support::venv_python())
                .arg(test_support::workspace_root().join("tests/python/oip_client.py"))
                .args([
                    "--url",
                    &address.to_string(),
                    "--certs",
                    certs.to_str().unwrap(),
                    "idle",
                    "200",
                    "3",
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..5 {
        assert_eq!(app.triton(&certs, &["call", "infer"])["code"], "OK");
    }
    let during = rss_kib(pid);

    // The stalled handshake is dropped at the handshake deadline (1.5 s):
    // the client sees its connection closed, and the server's log shows
    // when it gave up (measured there: the test process is busy enough with
    // its own two thousand sockets to see the close late).
    let (n, waited) = watcher.join().unwrap();
    assert_eq!(n, 0, "the server answered a half handshake");
    assert!(
        waited < Duration::from_secs(20),
        "stalled handshake held for {waited:?}"
    );
    let log = app.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!(":{stalled_port}")))
        .collect();
    // (The port may be reused by a later connection: the first two lines
    // are the stalled client's.)
    let [accepted, dropped, ..] = lines.as_slice() else {
        panic!("expected an accept and a timeout for the stalled client: {lines:?}");
    };
    assert!(accepted.contains("connection accepted") && dropped.contains("handshake timed out"));
    let held = timestamp(dropped) - timestamp(accepted);
    assert!(
        (1.4..3.0).contains(&held),
        "stalled handshake held {held} s by the server"
    );

    let idle_report = holder.join().unwrap();
    let idle_report: serde_json::Value = serde_json::from_str(idle_report.trim()).unwrap();
    assert_eq!(idle_report["opened"], 200, "{idle_report}");
    // Three seconds is far inside the idle timeout: all are still open.
    assert_eq!(idle_report["still_open"], 200, "{idle_report}");
    drop(idle);

    assert_eq!(app.triton(&certs, &["call", "infer"])["code"], "OK");
    let after = rss_kib(pid);
    println!("resident KiB: before {before}, during {during}, after {after}");
    // Generous: 2200 connections' worth of buffers and then some.
    assert!(
        during < before + 400 * 1024,
        "memory grew from {before} to {during} KiB"
    );
}
