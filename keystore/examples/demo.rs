//! The keystore demonstration that `scripts/demo` runs: a real swtpm seals
//! the store's key; a record survives a TPM restart and is refused once a
//! policy PCR changes.
//!
//! Usage: `demo <work dir>` (everything is created inside it, afresh).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use keystore::{Error, Store, TpmBackend};
use test_support::Swtpm;

const PCRS: &str = "sha256:16";
const SECRET: &[u8] = b"patient 4711: diagnosis confidential";

fn main() -> ExitCode {
    let Some(work) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: demo <work dir>");
        return ExitCode::from(64);
    };
    match run(&work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(work: &Path) -> Result<(), Box<dyn std::error::Error>> {
    if work.exists() {
        std::fs::remove_dir_all(work)?;
    }
    let data = work.join("data");
    let mut tpm = Swtpm::start(&work.join("swtpm-state"));
    println!(
        "1. swtpm started on loopback ({}), state in {}",
        tpm.tcti(),
        work.join("swtpm-state").display()
    );

    let open = |tpm: &Swtpm| -> Result<Store, Error> {
        Store::open(
            &data,
            Box::new(TpmBackend::new(&tpm.tcti(), PCRS.parse()?)?),
        )
    };
    let store = open(&tpm)?;
    println!(
        "2. store created in {}; its key is sealed by the TPM to PCR {PCRS}",
        data.display()
    );

    let tree = store.tree("patients", "client/demo")?;
    tree.put(b"record-1", SECRET)?;
    let back = tree.get(b"record-1")?.ok_or("record missing")?;
    println!(
        "3. wrote and read back: {:?}",
        String::from_utf8_lossy(&back)
    );
    drop((tree, store));

    let hits = count_plaintext(&data, SECRET);
    println!("4. raw scan of the data directory for the plaintext: {hits} hits");

    tpm.restart();
    let store = open(&tpm)?;
    let back = store
        .tree("patients", "client/demo")?
        .get(b"record-1")?
        .ok_or("record missing")?;
    println!(
        "5. swtpm restarted (a reboot); read again: {:?}",
        String::from_utf8_lossy(&back)
    );
    drop(store);

    tpm.extend_pcr(16);
    match open(&tpm) {
        Err(e @ Error::PcrMismatch { .. }) => {
            println!(
                "6. PCR 16 extended (as another boot chain would); opening the store is refused:"
            );
            println!("   {e}");
        }
        Err(e) => return Err(format!("expected a PCR refusal, got: {e}").into()),
        Ok(_) => return Err("the store opened with a changed PCR".into()),
    }
    tpm.stop();
    println!("done: swtpm stopped; everything is in {}", work.display());
    Ok(())
}

/// Occurrences of `needle` in every file under `dir`.
fn count_plaintext(dir: &Path, needle: &[u8]) -> usize {
    test_support::files_under(dir)
        .iter()
        .map(|(_, bytes)| bytes.windows(needle.len()).filter(|w| *w == needle).count())
        .sum()
}
