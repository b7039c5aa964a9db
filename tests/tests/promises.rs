//! Promises the daemon's documentation makes, each held to account: an idle
//! connection is closed although it pings, a refused upload does not cost
//! readiness, an unknown health service is audited as the NOT_FOUND the
//! client got, and the grace period's end really closes what is left.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use test_support::models_dir;
use tests::{Appliance, last_json, rss_kib, vendor};

#[test]
fn a_connection_without_requests_is_closed_although_it_pings() {
    let mut app = Appliance::start("idle_timeout_s = 2\nkeepalive_interval_s = 1\n");
    let certs = app.client("pinger");
    app.grant("pinger", "*");
    let out = app
        .h2(&certs, &["idle-pings", "10", "0.3"])
        .output()
        .unwrap();
    let report = last_json(&out.stdout);
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
    let mut holder = app
        .h2(&certs, &["hold-stream", "20"])
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

#[test]
fn the_audit_log_keeps_what_retention_says_and_verifies_from_its_checkpoint() {
    let mut app = Appliance::start_with("", "[audit]\nretain_records = 30\n", None);
    let certs = app.client("counted");
    app.grant("counted", "*");
    for _ in 0..60 {
        assert_eq!(app.triton(&certs, &["call", "live"])["ok"], true);
    }
    let out = app.dir.path().join("audit.jsonl");
    app.provision_ok(&["audit", "export", "--out", out.to_str().unwrap()]);
    let sequences: Vec<u64> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["sequence"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let first = sequences[0];
    assert!(
        first > 20,
        "records from {first} on are still kept: {sequences:?}"
    );
    assert!(
        sequences.len() <= 40,
        "{} records kept, bound 30 (+ a batch)",
        sequences.len()
    );
    assert!(
        sequences.windows(2).all(|w| w[1] == w[0] + 1),
        "{sequences:?}"
    );
    // What retention removed was archived first, in order, and the archive
    // chains into what the store keeps (read once the daemon is stopped:
    // the export was a call too, and pruning went on after it).
    app.stop();
    let archive = app.dir.path().join("data/audit-archive");
    let files: Vec<_> = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one file per UTC day: {files:?}");
    let archived: Vec<u64> = std::fs::read_to_string(&files[0])
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["sequence"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let last = *archived.last().unwrap();
    assert_eq!(archived, (0..=last).collect::<Vec<_>>());
    assert!(last + 1 >= first, "records {last}..{first} were lost");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (ok, text) = app.audit_verify();
    assert!(ok, "{text}");
    assert!(
        text.contains("hash chain verified from the first record")
            && text.contains(&format!("({} archived in", last + 1)),
        "{text}"
    );
    // A changed archived record is caught, by number.
    let original = std::fs::read_to_string(&files[0]).unwrap();
    std::fs::write(
        &files[0],
        original.replacen("\"OK\"", "\"PERMISSION_DENIED\"", 1),
    )
    .unwrap();
    let (ok, text) = app.audit_verify();
    assert!(
        !ok && text.contains("archived record 0 does not match"),
        "{text}"
    );
    // Shipped away (deleted), the archive no longer anchors the chain:
    // the store is verified from its checkpoint.
    std::fs::remove_dir_all(&archive).unwrap();
    let (ok, text) = app.audit_verify();
    assert!(ok, "{text}");
    assert!(
        text.contains("verified from the retention checkpoint"),
        "{text}"
    );
}

#[test]
fn a_filling_disk_refuses_calls_before_the_store_fails_and_loses_nothing() {
    let mut app = Appliance::start("");
    let certs = app.client("busy");
    app.grant("busy", "*");
    app.stop();
    // Relaunch with the data directory on a small tmpfs of its own mount
    // namespace (so the test can fill that disk), keeping 16 MiB in reserve.
    app.edit_config(|c| c.replace("[keystore]\n", "[keystore]\nmin_free_mb = 16\n"));
    let data = app.dir.path().join("data");
    let data = data.to_str().unwrap();
    let script = format!(
        "set -e; cp -a {data} {data}.seed; mount -t tmpfs -o size=48m tmpfs {data}; \
         cp -a {data}.seed/. {data}/; exec \"$0\" \"$@\""
    );
    let unshare: &[&str] = if is_root() {
        &["unshare", "--mount", "--propagation", "private"]
    } else {
        &[
            "unshare",
            "--mount",
            "--map-root-user",
            "--propagation",
            "private",
        ]
    };
    let mut wrapper = unshare.to_vec();
    wrapper.extend(["sh", "-c", &script]);
    // systemd's watchdog socket, as the packaged unit would give it: the
    // daemon pings only while it can serve.
    let socket_path = app.dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    let (tx, pings) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok(n) = socket.recv(&mut buf) {
            if buf[..n].windows(10).any(|w| w == b"WATCHDOG=1") && tx.send(()).is_err() {
                break;
            }
        }
    });
    app.launch_with(
        &wrapper,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    assert_eq!(app.triton(&certs, &["call", "live"])["ok"], true);
    pings
        .recv_timeout(Duration::from_secs(5))
        .expect("watchdog pings while serving");

    // Leave 8 MiB free under the daemon, below its reserve: fill the disk,
    // then give 8 MiB back.
    let inside = format!("/proc/{}/root{data}", app.pid());
    let filler = format!("{inside}/filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 1 << 20];
    while std::io::Write::write_all(&mut f, &block).is_ok() {}
    let len = f.metadata().unwrap().len();
    f.set_len(len - (8 << 20)).unwrap();
    drop(f);

    let flood = app.triton(&certs, &["flood", "3000"]);
    let refused = flood["UNAVAILABLE"].as_u64().unwrap_or(0);
    assert!(
        refused > 0,
        "calls were never refused with a full disk: {flood}"
    );
    assert!(
        flood["messages"]["UNAVAILABLE"]
            .as_str()
            .unwrap()
            .contains("audit log"),
        "{flood}"
    );
    let log = app.log_text();
    assert!(
        log.contains("AUDIT LOG UNWRITABLE") && log.contains("below keystore.min_free_mb"),
        "{log}"
    );
    // (No model is installed: calls that got through were answered
    // NOT_FOUND, and audited.)
    let answered = flood["NOT_FOUND"].as_u64().unwrap_or(0);
    println!("disk at its reserve: {answered} calls answered before, {refused} refused");
    // Refusing every call is not serving: the watchdog hears nothing (it
    // would restart the service).
    while pings.try_recv().is_ok() {}
    assert!(
        pings.recv_timeout(Duration::from_millis(1500)).is_err(),
        "the watchdog was pinged while the audit log refused every call"
    );

    // Space again: the held batch is written, calls are served again.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.triton(&certs, &["call", "live"])["ok"] != true {
        assert!(
            Instant::now() < deadline,
            "calls were not served again after space returned: {}",
            app.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(app.log_text().contains("audit log writable again"));
    pings
        .recv_timeout(Duration::from_secs(5))
        .expect("watchdog pings again");
    // Every answered call is in the chain, which has no gap.
    let out = app.dir.path().join("audit.jsonl");
    app.provision_ok(&["audit", "export", "--out", out.to_str().unwrap()]);
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        records
            .windows(2)
            .all(|w| w[1]["sequence"].as_u64() == w[0]["sequence"].as_u64().map(|s| s + 1))
    );
    let recorded = records
        .iter()
        .filter(|r| r["client"] == "busy" && r["outcome"] == "NOT_FOUND")
        .count() as u64;
    assert_eq!(recorded, answered, "every answered call was recorded");
    app.stop();
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

#[test]
fn a_ten_second_soak_fails_nothing_and_holds_its_memory() {
    let mut app = Appliance::start("max_concurrent_streams = 256\n");
    app.update_from(&vendor().repo(), &["--model", "digits"]);
    // A small store cache and audit window, so the warm-up reaches both
    // bounds: the memory they take grows up to them by design (about 300
    // bytes a kept record), and the test is about what comes after.
    app.stop();
    app.edit_config(|c| {
        c.replace("[keystore]\n", "[keystore]\ncache_mb = 4\n") + "[audit]\nretain_records = 5000\n"
    });
    app.launch();
    let certs = app.client("soak");
    app.grant_unlimited("soak");
    let mut load = app.triton_process(&certs, &["load", "50"]);
    let mut out = BufReader::new(load.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "running");
    std::thread::sleep(Duration::from_secs(5));
    let warm = rss_kib(app.pid());
    std::thread::sleep(Duration::from_secs(10));
    let end = rss_kib(app.pid());
    std::io::Write::write_all(load.stdin.as_mut().unwrap(), b"stop\n").unwrap();
    let mut json = String::new();
    out.read_line(&mut json).unwrap();
    load.wait().unwrap();
    let totals: serde_json::Value = serde_json::from_str(&json).unwrap();
    println!("soak: {totals}; resident {warm} KiB after warm-up, {end} KiB at the end");
    assert_eq!(totals["errors"], serde_json::json!({}), "{totals}");
    assert!(totals["requests"].as_u64().unwrap() > 500, "{totals}");
    assert!(
        end * 10 <= warm * 11,
        "resident memory grew from {warm} to {end} KiB over 10 s of load"
    );
}

#[test]
fn requests_beyond_the_inflight_budget_are_refused_and_the_budget_comes_back() {
    let mut app = Appliance::start("max_inflight_mb = 1\nmax_message_bytes = 4194304\n");
    app.update_from(&vendor().repo(), &["--model", "digits"]);
    let certs = app.client("bulk");
    app.grant("bulk", "*");
    // 2 MiB of request is more than the whole budget: refused, not held.
    let big = app.triton(
        &certs,
        &["raw", "digits", "input", "FP32", "8192,1,8,8", "2097152"],
    );
    assert_eq!(big["code"], "RESOURCE_EXHAUSTED", "{big}");
    assert!(
        big["message"]
            .as_str()
            .unwrap()
            .contains("server.max_inflight_mb"),
        "{big}"
    );
    // 600 KiB fits, and once answered gives its share back: one after the
    // other, none is refused (two at once would not fit).
    for _ in 0..4 {
        let fits = app.triton(
            &certs,
            &["raw", "digits", "input", "FP32", "2400,1,8,8", "614400"],
        );
        assert_eq!(fits["code"], "OK", "{fits}");
    }
    let (_, metrics) = app.metrics(&app.admin_certs());
    assert!(
        metrics.contains("appliance_requests_refused_inflight_total 1"),
        "{metrics}"
    );
    // The refusal is in the audit log as the client saw it.
    let out = app.dir.path().join("audit.jsonl");
    app.provision_ok(&["audit", "export", "--out", out.to_str().unwrap()]);
    let refused = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"ModelInfer\"") && l.contains("\"RESOURCE_EXHAUSTED\""))
        .count();
    assert_eq!(refused, 1);
}

#[test]
fn a_sigterm_as_soon_as_the_address_is_announced_is_a_graceful_stop() {
    // The handlers were installed only once serving began, after the
    // address was printed: a supervisor's SIGTERM in between killed the
    // daemon by signal (seen as a failed unit) instead of stopping it.
    let mut app = Appliance::start("");
    for _ in 0..5 {
        app.stop(); // asserts a successful exit
        app.launch();
    }
}

#[test]
fn a_health_watch_answers_once_and_ends_and_is_never_cut() {
    // health.rs: Watch answers once with the current status and ends (a
    // watcher re-asks); a client reading it is never taken for a stalled
    // reader.
    let mut app = Appliance::start("stall_timeout_s = 1\n");
    let certs = app.client("watcher");
    app.grant("watcher", "*");
    let report = app.triton(&certs, &["watch", "4"]);
    assert_eq!(report["code"], "OK", "{report}");
    assert_eq!(
        report["statuses"],
        serde_json::json!([1]),
        "one SERVING: {report}"
    );
    assert!(
        !app.log_text().contains("connection cut"),
        "{}",
        app.log_text()
    );
}
