//! Keystore figures, each next to a baseline measured in the same run:
//!
//! - AES-256-GCM sealing throughput of the store's crypto path (`aes-gcm`;
//!   and of the blob writer and reader, which add copying and file I/O)
//!   against `openssl speed -evp aes-256-gcm` on one core (target ratio:
//!   >= 0.7) and against ring's AES-256-GCM on the same blocks.
//! - A 100 MB model blob: write and commit, then read back, median of 5.
//! - Time to open the store, TPM unseal included (swtpm), median and p99.
//! - Latency of one flushed record write and of one record read, median
//!   and p99.
//!
//! Run: `cargo bench -p benches --bench keystore`

#![allow(clippy::expect_used)] // a harness: failing loudly is right

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use benches::median_p99;
use keystore::crypto::{AeadKey, SecretKey};
use keystore::{InsecureSoftwareBackend, Store, TpmBackend};
use test_support::Swtpm;

const BLOCK: usize = 16 * 1024;
const ROUNDS: usize = 5;
const ROUND: Duration = Duration::from_millis(800);

fn main() {
    let ours = median_rate(seal_round);
    let ring = median_rate(ring_seal_round);
    let blobs = median_rate(blob_round);
    let blob_reads = median_rate(blob_read_round);
    let plain = median_rate(plain_file_round);
    let openssl = openssl_rate();
    println!("AES-256-GCM, {BLOCK}-byte blocks, one core, median of {ROUNDS} rounds");
    println!(
        "  store crypto path (AeadKey::seal) {:>9.1} MB/s",
        ours / 1e6
    );
    println!(
        "  ring AES-256-GCM, same blocks     {:>9.1} MB/s",
        ring / 1e6
    );
    println!("  ratio crypto path / ring          {:>9.2}", ours / ring);
    println!(
        "  blob writer to tmpfs              {:>9.1} MB/s",
        blobs / 1e6
    );
    println!(
        "  plain file write to tmpfs         {:>9.1} MB/s",
        plain / 1e6
    );
    println!(
        "  blob reader from tmpfs            {:>9.1} MB/s",
        blob_reads / 1e6
    );
    println!("  ratio blob writer / plain write   {:>9.2}", blobs / plain);
    match openssl {
        Some(base) => {
            println!(
                "  openssl speed -evp aes-256-gcm    {:>9.1} MB/s",
                base / 1e6
            );
            println!("  ratio crypto path / openssl       {:>9.2}", ours / base);
            println!("  ratio blob writer / openssl       {:>9.2}", blobs / base);
        }
        None => println!("  openssl speed: not available, no ratio"),
    }

    let (write, read) = model_blob();
    println!(
        "100 MB model blob on tmpfs, median of {ROUNDS}: write+commit {write:.1?}, read {read:.1?}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let mut tpm = Swtpm::start(&dir.path().join("tpm"));
    let tcti = tpm.tcti();
    let data = dir.path().join("data");
    let open_tpm = || {
        let backend = TpmBackend::new(&tcti, "sha256:16".parse().expect("pcrs")).expect("tpm");
        Store::open(&data, Box::new(backend)).expect("open")
    };
    drop(open_tpm());
    let mut opens: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            drop(open_tpm());
            t.elapsed()
        })
        .collect();
    let (m, p) = median_p99(&mut opens);
    println!("store open with TPM unseal (swtpm), 20 runs: median {m:.1?}, p99 {p:.1?}");
    tpm.stop();

    let soft = dir.path().join("soft");
    let store = Store::open(
        &soft.join("data"),
        Box::new(InsecureSoftwareBackend::open(&soft.join("root.key")).expect("soft")),
    )
    .expect("open");
    let tree = store.tree("bench", "bench").expect("tree");
    let value = vec![7u8; 256];
    let mut puts: Vec<Duration> = (0..500u32)
        .map(|i| {
            let t = Instant::now();
            tree.put(&i.to_be_bytes(), &value).expect("put");
            t.elapsed()
        })
        .collect();
    let (m, p) = median_p99(&mut puts);
    println!("record put (256 B, flushed before return), 500 writes: median {m:.1?}, p99 {p:.1?}");
    let mut gets: Vec<Duration> = (0..500u32)
        .map(|i| {
            let t = Instant::now();
            let value = tree.get(&i.to_be_bytes()).expect("get");
            let took = t.elapsed();
            assert!(value.is_some());
            took
        })
        .collect();
    let (m, p) = median_p99(&mut gets);
    println!("record get (256 B), 500 reads: median {m:.1?}, p99 {p:.1?}");
}

/// Bytes per second of `round`, median over several rounds.
fn median_rate(round: fn(Duration) -> (usize, Duration)) -> f64 {
    let mut rates: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let (bytes, took) = round(ROUND);
            bytes as f64 / took.as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[ROUNDS / 2]
}

fn seal_round(budget: Duration) -> (usize, Duration) {
    let key = AeadKey::new(&SecretKey::random().expect("rng"));
    seal_loop(budget, |nonce, buf| key.seal(nonce, b"bench", buf))
}

/// ring's AES-256-GCM (what format 1 used, and what TLS uses) on the same
/// blocks: the figure the store's `aes-gcm` path is weighed against.
fn ring_seal_round(budget: Duration) -> (usize, Duration) {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let secret = SecretKey::random().expect("rng");
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, secret.expose()).expect("key"));
    seal_loop(budget, |nonce, buf| {
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(b"bench"),
            buf,
        )
        .expect("seal");
    })
}

/// Seals [`BLOCK`]-byte buffers with `seal` until `budget` has passed.
fn seal_loop(budget: Duration, seal: impl Fn([u8; 12], &mut Vec<u8>)) -> (usize, Duration) {
    let mut buf = Vec::with_capacity(BLOCK + 16);
    let start = Instant::now();
    let mut bytes = 0;
    let mut counter = 0u64;
    while start.elapsed() < budget {
        for _ in 0..64 {
            buf.clear();
            buf.resize(BLOCK, 0x5a);
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&counter.to_be_bytes());
            counter += 1;
            seal(nonce, &mut buf);
            bytes += BLOCK;
        }
    }
    (bytes, start.elapsed())
}

fn blob_round(budget: Duration) -> (usize, Duration) {
    let base = scratch_dir();
    let store = soft_store(base.path());
    let block = vec![0x5au8; BLOCK];
    let mut writer = store.create_blob("bench", "bench").expect("blob");
    let start = Instant::now();
    let mut bytes = 0;
    while start.elapsed() < budget {
        for _ in 0..64 {
            writer.write_all(&block).expect("write");
            bytes += BLOCK;
        }
    }
    let took = start.elapsed();
    drop(writer); // not committed: the file is discarded
    (bytes, took)
}

/// Reads a committed 32 MiB blob over and over: authenticated decryption
/// plus the file reads (tmpfs), as a model load does.
fn blob_read_round(budget: Duration) -> (usize, Duration) {
    const LEN: usize = 32 << 20;
    let base = scratch_dir();
    let store = soft_store(base.path());
    let block = vec![0x5au8; 1 << 20];
    let mut writer = store.create_blob("bench", "bench").expect("blob");
    for _ in 0..LEN / block.len() {
        writer.write_all(&block).expect("write");
    }
    writer.commit().expect("commit");
    let mut buf = vec![0u8; BLOCK];
    let start = Instant::now();
    let mut bytes = 0;
    while start.elapsed() < budget {
        let mut reader = store.open_blob("bench").expect("open blob");
        loop {
            let n = reader.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            bytes += n;
        }
    }
    (bytes, start.elapsed())
}

/// What a model install and a model load cost in the keystore: a 100 MB
/// blob written and committed (fsync, rename), then read back whole.
/// Medians of [`ROUNDS`] runs.
fn model_blob() -> (Duration, Duration) {
    const LEN: usize = 100_000_000;
    let base = scratch_dir();
    let store = soft_store(base.path());
    let block = vec![0x5au8; 1 << 20];
    let mut buf = vec![0u8; 1 << 20];
    let mut writes = Vec::with_capacity(ROUNDS);
    let mut reads = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let mut writer = store.create_blob("model", "model/bench").expect("blob");
        let mut left = LEN;
        while left > 0 {
            let n = left.min(block.len());
            writer.write_all(&block[..n]).expect("write");
            left -= n;
        }
        writer.commit().expect("commit");
        writes.push(t.elapsed());

        let t = Instant::now();
        let mut reader = store.open_blob("model").expect("open blob");
        let mut total = 0;
        loop {
            let n = reader.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            total += n;
        }
        reads.push(t.elapsed());
        assert_eq!(total, LEN);
    }
    (median_p99(&mut writes).0, median_p99(&mut reads).0)
}

fn soft_store(base: &std::path::Path) -> Store {
    Store::open(
        &base.join("data"),
        Box::new(InsecureSoftwareBackend::open(&base.join("root.key")).expect("soft")),
    )
    .expect("open")
}

/// The same writes as `blob_round` without encryption: the file system's
/// own cost, so the blob writer's crypto overhead can be read off.
fn plain_file_round(budget: Duration) -> (usize, Duration) {
    let base = scratch_dir();
    let block = vec![0x5au8; 64 * 1024];
    let mut file = std::fs::File::create(base.path().join("plain")).expect("create");
    let start = Instant::now();
    let mut bytes = 0;
    while start.elapsed() < budget {
        for _ in 0..16 {
            file.write_all(&block).expect("write");
            bytes += block.len();
        }
    }
    (bytes, start.elapsed())
}

/// A directory on tmpfs where there is one, so disk speed stays out of it.
fn scratch_dir() -> tempfile::TempDir {
    if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir")
}

/// OpenSSL's single-core AES-256-GCM rate in bytes per second, from its
/// machine-readable output (`+F:<n>:<name>:<rate>`).
fn openssl_rate() -> Option<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-mr", "-seconds", "3", "-bytes"])
        .arg(BLOCK.to_string())
        .args(["-evp", "aes-256-gcm"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("+F:"))?;
    line.rsplit(':').next()?.trim().parse().ok()
}
