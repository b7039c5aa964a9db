//! The fixture every keystore test uses: a data directory plus a key backend,
//! either a real swtpm started for this test or the insecure software backend.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test binary uses a part

use std::path::{Path, PathBuf};

use keystore::{InsecureSoftwareBackend, KeyBackend, Store, TpmBackend};
use tempfile::TempDir;
use test_support::Swtpm;

/// The PCR the tests bind to: PCR 16 is resettable and extendable by anyone,
/// so it suits tests (production binds PCR 7 or a measured-boot set).
pub const TEST_PCRS: &str = "sha256:16";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tpm,
    Soft,
}

pub struct Fixture {
    pub kind: Kind,
    dir: TempDir,
    pub tpm: Option<Swtpm>,
}

impl Fixture {
    pub fn new(kind: Kind) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let tpm = (kind == Kind::Tpm).then(|| Swtpm::start(&dir.path().join("swtpm-state")));
        Fixture { kind, dir, tpm }
    }

    /// The store's data directory (what a stolen disk would hold).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A backend for this fixture's device.
    pub fn backend(&self) -> Box<dyn KeyBackend> {
        match &self.tpm {
            Some(tpm) => {
                Box::new(TpmBackend::new(&tpm.tcti(), TEST_PCRS.parse().unwrap()).unwrap())
            }
            None => Box::new(
                InsecureSoftwareBackend::open(&self.dir.path().join("insecure-root.key")).unwrap(),
            ),
        }
    }

    pub fn open(&self) -> Store {
        Store::open(&self.data_dir(), self.backend()).unwrap()
    }

    pub fn try_open(&self) -> keystore::Result<Store> {
        Store::open(&self.data_dir(), self.backend())
    }

    /// A reboot: the TPM restarts on the same state (PCRs back to power-on
    /// values). The software backend has nothing to restart.
    pub fn reboot(&mut self) {
        if let Some(tpm) = &mut self.tpm {
            tpm.restart();
        }
    }
}

/// Runs `$body` once per backend, as two separate tests.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, |$fx:ident| $body:block) => {
        mod $name {
            use super::*;
            #[allow(unused_mut)]
            fn run(mut $fx: Fixture) $body
            #[test]
            fn tpm() {
                run(Fixture::new(Kind::Tpm));
            }
            #[test]
            fn soft() {
                run(Fixture::new(Kind::Soft));
            }
        }
    };
}
