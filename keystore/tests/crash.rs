//! Crash harness: nothing acknowledged is lost to a SIGKILL.
//!
//! A child process (this same binary, in child mode) opens the store on a
//! real swtpm, writes records in a loop and prints each id only after `put`
//! returned. The parent kills it with SIGKILL at a random moment, at least
//! 50 times, and after each kill reopens the store and checks that every
//! acknowledged record reads back intact and no record is corrupt.
//!
//! A custom harness (`harness = false`) so the child mode is not a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Fixture, Kind, TEST_PCRS};
use keystore::{Store, TpmBackend};

const KILLS: usize = 50;
const CHILD_DATA: &str = "KEYSTORE_CRASH_CHILD_DATA";
const CHILD_TCTI: &str = "KEYSTORE_CRASH_CHILD_TCTI";
const CHILD_RUN: &str = "KEYSTORE_CRASH_CHILD_RUN";

fn main() {
    if let Ok(data) = std::env::var(CHILD_DATA) {
        child(PathBuf::from(data));
        return;
    }
    let started = Instant::now();
    let acknowledged = parent();
    println!(
        "crash harness: {KILLS} SIGKILLs, {acknowledged} acknowledged records, none lost ({:.1?})",
        started.elapsed()
    );
}

/// Writes `run-<n>/<i>` records forever, acknowledging each on stdout.
fn child(data: PathBuf) {
    let tcti = std::env::var(CHILD_TCTI).unwrap();
    let run = std::env::var(CHILD_RUN).unwrap();
    let backend = TpmBackend::new(&tcti, TEST_PCRS.parse().unwrap()).unwrap();
    let store = Store::open(&data, Box::new(backend)).unwrap();
    let tree = store.tree("crash", "metadata").unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    for i in 0u64.. {
        let id = format!("{run}/{i}");
        tree.put(id.as_bytes(), &value_for(&id)).unwrap();
        writeln!(out, "{id}").unwrap();
        out.flush().unwrap();
    }
}

fn value_for(id: &str) -> Vec<u8> {
    let mut v = id.as_bytes().repeat(8);
    v.extend_from_slice(&[0xA5; 100]);
    v
}

/// Returns how many records the children acknowledged in all.
fn parent() -> usize {
    let fx = Fixture::new(Kind::Tpm);
    let tcti = fx.tpm.as_ref().unwrap().tcti();
    let exe = std::env::current_exe().unwrap();
    let mut acknowledged: BTreeMap<String, ()> = BTreeMap::new();
    let mut seed = std::process::id() as u64 ^ 0x9E37_79B9_7F4A_7C15;

    for run in 0..KILLS {
        let mut child = Command::new(&exe)
            .env(CHILD_DATA, fx.data_dir())
            .env(CHILD_TCTI, &tcti)
            .env(CHILD_RUN, format!("run-{run}"))
            .env("TSS2_LOG", "all+NONE")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(30))
                .expect("child became ready"),
            "ready"
        );
        // Kill somewhere in the first 0..150 ms of writing: mid-write,
        // mid-flush, or between writes.
        seed = xorshift(seed);
        std::thread::sleep(Duration::from_micros(seed % 150_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let before = acknowledged.len();
        for line in rx.try_iter() {
            acknowledged.insert(line, ());
        }
        assert!(
            acknowledged.len() > before || run > 0,
            "the first child acknowledged nothing"
        );

        // Every acknowledged record is there and intact; nothing is corrupt.
        let store = fx.open();
        let tree = store.tree("crash", "metadata").unwrap();
        for id in acknowledged.keys() {
            let value = tree
                .get(id.as_bytes())
                .unwrap_or_else(|e| panic!("run {run}: {id}: {e}"))
                .unwrap_or_else(|| panic!("run {run}: acknowledged record {id} lost"));
            assert_eq!(value.as_slice(), value_for(id).as_slice(), "{id}");
        }
        let mut stored = 0;
        for record in tree.iter() {
            let (id, value) = record.unwrap_or_else(|e| panic!("run {run}: corrupt record: {e}"));
            let id = String::from_utf8(id).unwrap();
            assert_eq!(value.as_slice(), value_for(&id).as_slice());
            stored += 1;
        }
        // At most the one write in flight at the kill may exist unacknowledged.
        assert!(stored <= acknowledged.len() + run + 1);
    }
    assert!(
        acknowledged.len() > KILLS,
        "children wrote too little to mean anything"
    );
    acknowledged.len()
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}
