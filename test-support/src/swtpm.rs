//! A swtpm process on 127.0.0.1, owned by a test.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// A running software TPM serving the TPM command channel on `port` and its
/// control channel on `port + 1` (the TSS `swtpm` TCTI expects that pairing).
/// Killed when dropped.
#[derive(Debug)]
pub struct Swtpm {
    child: Option<Child>,
    state_dir: PathBuf,
    port: u16,
}

/// Next candidate port offset within this process; combined with the pid so
/// parallel test processes rarely probe the same pair.
static NEXT: AtomicU16 = AtomicU16::new(0);

impl Swtpm {
    /// Starts swtpm with its state in `state_dir` (created if missing). A
    /// fresh directory is a brand-new TPM with its own seeds.
    pub fn start(state_dir: &Path) -> Swtpm {
        std::fs::create_dir_all(state_dir).expect("create swtpm state dir");
        let mut tpm = Swtpm {
            child: None,
            state_dir: state_dir.to_path_buf(),
            port: 0,
        };
        tpm.launch();
        tpm
    }

    /// The TCTI string that reaches this TPM.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Stops swtpm and starts it again on the same state: a reboot. PCRs
    /// return to their power-on values; keys derived from the seeds do not
    /// change.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Extends PCR `index` (SHA-256 bank) with an arbitrary digest, using the
    /// independent `tpm2_pcrextend` tool.
    pub fn extend_pcr(&self, index: u32) {
        let digest = "a5".repeat(32);
        let out = Command::new("tpm2_pcrextend")
            .arg("-T")
            .arg(self.tcti())
            .arg(format!("{index}:sha256={digest}"))
            .output()
            .expect("run tpm2_pcrextend (Debian package tpm2-tools)");
        assert!(
            out.status.success(),
            "tpm2_pcrextend failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops swtpm (its state stays on disk).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn launch(&mut self) {
        for _ in 0..50 {
            let port = candidate_port();
            if !pair_is_free(port) {
                continue;
            }
            let mut child = Command::new("swtpm")
                .arg("socket")
                .arg("--tpm2")
                .arg("--tpmstate")
                .arg(format!("dir={}", self.state_dir.display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .arg("--flags")
                .arg("not-need-init,startup-clear")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start swtpm (Debian package swtpm)");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // lost a race for the ports: try another pair
                }
                // Probe the control channel, not the command channel, so the
                // TPM's single command connection stays untouched.
                // Both sockets: swtpm may listen on its control port before
                // its command port, and a TCTI that connects to a port with
                // no listener can end up connected to itself (TCP
                // self-connect), which it reports as "response code not
                // recognized".
                if TcpStream::connect(("127.0.0.1", port + 1)).is_ok()
                    && TcpStream::connect(("127.0.0.1", port)).is_ok()
                {
                    self.child = Some(child);
                    self.port = port;
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                sleep(Duration::from_millis(10));
            }
        }
        panic!("could not start swtpm on any loopback port pair");
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn candidate_port() -> u16 {
    // Even ports in 20000..32766, spread by pid, stepping by 2 per attempt:
    // below Linux's ephemeral range (32768 and up), so no outgoing
    // connection takes one while swtpm starts.
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let base = (std::process::id() as u64 * 7919 + u64::from(n)) % 6383;
    20000 + (base as u16) * 2
}

fn pair_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
        && TcpListener::bind(("127.0.0.1", port + 1)).is_ok()
}
