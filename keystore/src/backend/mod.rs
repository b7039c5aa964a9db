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

use std::sync::Arc;

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

    /// Creates a new ECDSA P-256 identity key (the appliance's TLS key) and
    /// returns an opaque blob to keep in the store. The TPM backend creates
    /// it inside the TPM, under the store's root key, and the blob holds
    /// only the TPM's own wrapping of it. Needs a store opened (or created)
    /// with this backend first.
    fn create_identity_key(&mut self) -> Result<Vec<u8>>;

    /// Opens an identity key from a blob made by
    /// [`KeyBackend::create_identity_key`].
    fn open_identity_key(&self, blob: &[u8]) -> Result<Arc<dyn IdentityKey>>;

    /// Destroys, for good, what makes `sealed` (a blob from
    /// [`KeyBackend::seal`]) and every identity key made beside it usable:
    /// the store's root key in the TPM, or the software root key file.
    /// Returns false when there was nothing of it left to destroy.
    fn destroy(&mut self, sealed: &[u8]) -> Result<bool>;
}

/// An ECDSA P-256 signing key whose private part the backend holds: in the
/// TPM (never exported) or, with the insecure software backend, in memory.
pub trait IdentityKey: Send + Sync + std::fmt::Debug {
    /// The public key as an uncompressed SEC1 point (`04 || x || y`).
    fn public_point(&self) -> &[u8];

    /// ECDSA P-256 over SHA-256 of `message`, as an ASN.1 DER
    /// `Ecdsa-Sig-Value`. Blocking: the TPM signs in milliseconds (a
    /// hardware TPM in tens of milliseconds).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>>;

    /// Where the private key lives, for logs.
    fn holder(&self) -> &'static str;
}
