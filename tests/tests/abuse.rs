//! HTTP/2 abuse by an enrolled client that writes frames itself
//! (`tests/python/h2_client.py`): floods of PING, SETTINGS, empty DATA,
//! rapid reset and CONTINUATION, an HPACK bomb, more streams than allowed,
//! and a client that never lets an answer in. Each abusive connection must
//! be cut, refused or throttled within a bound, memory must stay bounded,
//! and a well-behaved stock client's ServerLive must answer in under two
//! seconds throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tests::{Appliance, last_json, rss_kib};

/// Samples the daemon's resident memory every 20 ms; the peak, in KiB.
struct PeakRss {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakRss {
    fn watch(pid: u32) -> PeakRss {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        PeakRss {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn peak(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

#[test]
fn abusive_connections_are_cut_and_others_are_served_throughout() {
    // The digits model for the stalled answer; 2 s so the test is short.
    let mut app = Appliance::start("stall_timeout_s = 2\nmax_concurrent_streams = 64\n");
    app.update_from(&tests::vendor().repo(), &["--model", "digits"]);
    let abuser = app.client("abuser");
    app.grant("abuser", "*");
    let steady = app.client("steady");
    app.grant("steady", "*");
    let pid = app.pid();
    let baseline = rss_kib(pid);

    // The well-behaved client, calling all along.
    let mut probe = app.triton_process(&steady, &["probe"]);
    let mut probe_out = BufReader::new(probe.stdout.take().unwrap());
    let mut line = String::new();
    probe_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "probing");

    let mut peaks = Vec::new();
    let mut run = |args: &[&str]| {
        let mut watch = PeakRss::watch(pid);
        let started = Instant::now();
        let out = app.h2(&abuser, args).output().unwrap();
        let report = last_json(&out.stdout);
        let peak = watch.peak();
        println!(
            "{args:?}: {report} in {:.2} s, peak RSS {} MiB (baseline {} MiB)",
            started.elapsed().as_secs_f64(),
            peak / 1024,
            baseline / 1024
        );
        peaks.push((args.join(" "), peak));
        report
    };

    // Floods our meter cuts (h2 alone answers every PING and SETTINGS):
    // the connection closes within a second.
    for kind in ["ping", "settings", "empty-data"] {
        let report = run(&["flood", kind, "200000", "--wait", "5"]);
        let closed = report["closed_after"]
            .as_f64()
            .unwrap_or_else(|| panic!("a {kind} flood was never cut: {report}"));
        assert!(closed < 2.0, "{kind} flood cut after {closed} s: {report}");
        let sent = report["sent"].as_u64().unwrap();
        assert!(
            sent < 20_000,
            "{kind} flood: {sent} frames sent before the cut"
        );
    }
    // Floods h2 itself refuses: rapid reset and CONTINUATION end in a
    // GOAWAY or a close.
    for kind in ["reset", "continuation"] {
        let report = run(&["flood", kind, "100000", "--wait", "5"]);
        let closed = report["closed_after"]
            .as_f64()
            .unwrap_or_else(|| panic!("a {kind} flood was never cut: {report}"));
        assert!(closed < 2.0, "{kind} flood cut after {closed} s: {report}");
    }
    // An HPACK bomb: 400 MB of header list from about 100 KB on the wire is
    // refused, the stream or the connection.
    let report = run(&["bomb", "100000", "--wait", "3"]);
    assert!(
        report["closed_after"].is_number() || report["reset"].is_number(),
        "an HPACK bomb was accepted: {report}"
    );
    // More streams than max_concurrent_streams: the rest are refused.
    let report = run(&["streams", "300", "--wait", "2"]);
    let refused = report["refused"].as_u64().unwrap();
    assert!(
        refused >= 300 - 64 || report["closed_after"].is_number(),
        "{refused} of 300 streams refused with max_concurrent_streams 64: {report}"
    );
    // A client that never lets its answer in is cut at stall_timeout_s.
    let report = run(&["stall", "digits", "1048576", "--wait", "15"]);
    let closed = report["closed_after"]
        .as_f64()
        .unwrap_or_else(|| panic!("a stalled reader was never cut: {report}"));
    assert!(
        (1.5..5.0).contains(&closed),
        "stalled reader cut after {closed} s with stall_timeout_s = 2: {report}"
    );

    // The steady client never waited two seconds and never failed.
    writeln!(probe.stdin.as_mut().unwrap()).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut probe_out, &mut rest).unwrap();
    probe.wait().unwrap();
    let probed = last_json(rest.as_bytes());
    println!("steady client: {probed}");
    assert!(probed["calls"].as_u64().unwrap() > 20, "{probed}");
    assert_eq!(probed["failures"], serde_json::json!([]), "{probed}");
    let worst = probed["max_ms"].as_f64().unwrap();
    assert!(worst < 2000.0, "ServerLive took {worst} ms under abuse");

    for (case, peak) in &peaks {
        assert!(
            *peak < baseline + 256 * 1024,
            "{case}: resident memory peaked at {} MiB from {} MiB",
            peak / 1024,
            baseline / 1024
        );
    }
    // The cuts are counted where an operator looks.
    let (code, metrics) = app.metrics(&app.admin_certs());
    assert_eq!(code, "200", "{metrics}");
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
    };
    // PING and SETTINGS are ours to cut (h2 answers them all); empty DATA
    // may be cut by h2 first.
    assert!(counter("appliance_connections_cut_flood_total ") >= 2);
    assert_eq!(counter("appliance_connections_cut_stalled_total "), 1);
    let log = app.log_text();
    assert!(
        log.contains("connection cut: the client flooded control frames"),
        "no log line for the floods"
    );
    assert!(
        log.contains("connection cut: the client took no answer"),
        "no log line for the stalled reader"
    );
}
