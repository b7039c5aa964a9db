//! Test fixtures shared by the workspace's tests and demos. Not part of the
//! product.
//!
//! [`Swtpm`] starts a real software TPM (`swtpm`) on loopback, one instance
//! per test, each on its own port pair, so tests run in parallel.
#![forbid(unsafe_code)]
#![allow(clippy::expect_used, clippy::unwrap_used)] // fixtures fail loudly

mod swtpm;
mod vendor;

pub use swtpm::Swtpm;
pub use vendor::{Vendor, golden_inputs};

use std::path::PathBuf;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support lives in the workspace")
        .to_path_buf()
}

/// `target/models`, where `scripts/models` writes the reference models.
/// Panics with the fix when they are missing: `scripts/test` builds them
/// before running cargo, so this only happens under a bare `cargo test`.
pub fn models_dir() -> PathBuf {
    let dir = workspace_root().join("target/models");
    assert!(
        dir.join(".digits.ok").exists() && dir.join(".minilm.ok").exists(),
        "reference models missing in {}: run scripts/models (scripts/test does it)",
        dir.display()
    );
    dir
}

/// Reads a reference model file.
pub fn model_bytes(file: &str) -> Vec<u8> {
    let path = models_dir().join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The Python of the project's virtual environment (onnxruntime, numpy,
/// tritonclient...), made by `scripts/venv`.
pub fn venv_python() -> PathBuf {
    let python = workspace_root().join("target/venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/venv (scripts/test does it)",
        python.display()
    );
    python
}

/// Every file under `dir`, with its bytes: what a scan of a stolen disk
/// would see.
pub fn files_under(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

/// Copies `from` into `to` (created): a disk image taken at this moment.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for (path, bytes) in files_under(from) {
        let target = to.join(path.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
}

/// Opens a keystore's sled database directly, under the store's back, to
/// damage it on purpose. The store must be closed; sled may hold the lock
/// of a handle dropped a moment ago for a little longer, so this retries.
pub fn open_raw_database(data_dir: &std::path::Path) -> sled::Db {
    (0..200)
        .find_map(|_| {
            sled::open(data_dir.join("db"))
                .inspect_err(|_| std::thread::sleep(std::time::Duration::from_millis(10)))
                .ok()
        })
        .expect("open the keystore's database directly")
}
