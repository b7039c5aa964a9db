//! The appliance as a systemd service: the packaged unit verifies and is
//! hardened, and the daemon speaks the notification protocol (READY,
//! STATUS, WATCHDOG while it can serve, STOPPING) to the socket systemd
//! would give it. (systemd is not PID 1 here, so the unit is not started.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use test_support::workspace_root;
use tests::{Appliance, binary};

/// The packaged unit, with ExecStart pointing at the binary under test.
fn unit_under_test(dir: &std::path::Path) -> std::path::PathBuf {
    let unit =
        std::fs::read_to_string(workspace_root().join("packaging/appliance.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/appliance run "), "{unit}");
    let path = dir.join("appliance.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/appliance", binary("appliance").to_str().unwrap()),
    )
    .unwrap();
    path
}

#[test]
fn the_unit_verifies_and_its_exposure_is_low() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for appliance.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"))
        .parse()
        .unwrap();
    // 0 is locked down, 10 unprotected; systemd calls below 2 "OK".
    assert!(score <= 2.0, "exposure {score}:\n{text}");
}

/// Every notification the daemon sends, read as it arrives (as systemd
/// would: a listener that stops reading fills its small queue).
fn listen(socket: UnixDatagram) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            if tx
                .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    rx
}

fn next_message(messages: &Receiver<String>, wanted: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match messages.recv_timeout(left) {
            Ok(message) if message.contains(wanted) => return message,
            Ok(_) => {}
            Err(_) => panic!("no `{wanted}` notification"),
        }
    }
}

#[test]
fn the_daemon_notifies_ready_status_watchdog_and_stopping() {
    let mut app = Appliance::unenrolled("", "");
    let socket_path = app.dir.path().join("notify.sock");
    let socket = listen(UnixDatagram::bind(&socket_path).unwrap());
    app.launch_with_env(&[
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "200000"),
    ]);
    let ready = next_message(&socket, "READY=1", Duration::from_secs(30));
    assert!(ready.contains("STATUS=enrollment mode"), "{ready}");
    let started = Instant::now();
    for _ in 0..3 {
        next_message(&socket, "WATCHDOG=1", Duration::from_secs(5));
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    let (fingerprint, code) = app.enrollment_prompt();
    let out = app.enroll(&fingerprint, &code);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = next_message(&socket, "STATUS=serving", Duration::from_secs(30));
    assert!(status.contains("serving mTLS"), "{status}");
    next_message(&socket, "WATCHDOG=1", Duration::from_secs(5));
    app.stop();
    next_message(&socket, "STOPPING=1", Duration::from_secs(5));
}
