//! Key backends: what protects the key-encryption key (KEK) at rest.
//!
//! A backend turns the 256-bit KEK into an opaque sealed blob that is stored
//! beside the data, and back. The TPM backend seals it to the TPM under a PCR
//! policy; the insecure software backend encrypts it under a key in a plain
//! file and exists for development only.

mod soft;
mod tpm;

pub use soft::InsecureSoftwareBackend;
pub use tpm::{PcrSelection, TpmBackend};

use crate::crypto::SecretKey;
use crate::error::Result;

/// Which kind of backend protects a data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendKind {
    /// A TPM 2.0, through the TSS stack.
    Tpm,
    /// A key in a plain file. Development only: anyone who can read the
    /// data directory can read everything.
    InsecureSoftware,
}

impl BackendKind {
    /// The name used in messages and in the data directory.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Tpm => "tpm",
            BackendKind::InsecureSoftware => "insecure-software",
        }
    }

    pub(crate) fn to_byte(self) -> u8 {
        match self {
            BackendKind::Tpm => 1,
            BackendKind::InsecureSoftware => 2,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(BackendKind::Tpm),
            2 => Some(BackendKind::InsecureSoftware),
            _ => None,
        }
    }
}

/// Seals and unseals the key-encryption key.
///
/// Implementations are blocking (a TPM command takes milliseconds); callers
/// in async code go through `spawn_blocking`.
pub trait KeyBackend: Send {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// Protects `kek`, returning an opaque blob to store beside the data.
    fn seal(&mut self, kek: &SecretKey) -> Result<Vec<u8>>;

    /// Recovers the KEK from a blob made by [`KeyBackend::seal`].
    ///
    /// Fails with [`crate::Error::PcrMismatch`] when the TPM's policy is not
    /// met and [`crate::Error::ForeignDevice`] when the blob was sealed by
    /// another device.
    fn unseal(&mut self, sealed: &[u8]) -> Result<SecretKey>;
}
