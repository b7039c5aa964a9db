//! The one error type of this crate.
//!
//! Messages are written for an operator: they say what happened and, where it
//! helps, what to do. They never contain key material or record contents.

use std::path::PathBuf;

/// Everything that can go wrong in the keystore.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TPM evaluated the key's PCR policy and the current PCR values do
    /// not match the ones the key was sealed to (another boot chain, or a PCR
    /// was extended since boot).
    #[error(
        "the TPM refused to unseal: the PCR values differ from those the key was sealed to \
         (PCRs {pcrs})"
    )]
    PcrMismatch {
        /// The PCR selection of the sealed key, e.g. `sha256:16`.
        pcrs: String,
    },

    /// The sealed key-encryption key cannot be loaded under this device's
    /// root: the data directory comes from another TPM (or another software
    /// root key), or the TPM was cleared.
    #[error(
        "this data directory was sealed by a different TPM (or the TPM was cleared, or a \
         factory reset destroyed its root key); it cannot be opened on this device"
    )]
    ForeignDevice,

    /// The data directory was created with another key backend.
    #[error("this data directory was created with the {found} key backend, not {expected}")]
    BackendMismatch {
        /// Backend recorded in the data directory.
        found: &'static str,
        /// Backend the store was opened with.
        expected: &'static str,
    },

    /// Talking to the TPM failed for a reason other than policy or identity.
    #[error("TPM error during {operation}: {detail}")]
    Tpm {
        /// What we were doing, e.g. "unseal".
        operation: &'static str,
        /// The TSS stack's description of the failure.
        detail: String,
    },

    /// A TCTI string from configuration could not be parsed.
    #[error("invalid TPM TCTI `{tcti}`: {detail}")]
    InvalidTcti {
        /// The string as configured.
        tcti: String,
        /// Why it was refused.
        detail: String,
    },

    /// A PCR selection from configuration could not be parsed.
    #[error("invalid PCR selection `{0}`: expected e.g. `sha256:7` or `sha256:0,2,7`")]
    InvalidPcrSelection(String),

    /// A record's ciphertext, tag, header or binding failed authentication.
    /// The record was modified on disk, moved from elsewhere, or corrupted.
    #[error("record failed authentication (tampered or corrupted) in {what}")]
    Tampered {
        /// Which kind of object: "record", "data key", "blob chunk 3", ...
        what: String,
    },

    /// The data key a record was written under has been destroyed on purpose.
    #[error("the data key for this {what} has been destroyed (crypto-shredded)")]
    Shredded {
        /// Which kind of object.
        what: &'static str,
    },

    /// The data directory has an on-disk format this build does not know.
    #[error("unsupported on-disk format in {what}: version {version}")]
    UnsupportedFormat {
        /// Which kind of object.
        what: &'static str,
        /// The version byte found.
        version: u8,
    },

    /// A blob file ends before its final chunk: it was truncated.
    #[error("blob is truncated (its final chunk is missing)")]
    Truncated,

    /// No blob exists under that name.
    #[error("no such blob")]
    NoSuchBlob,

    /// A name or value is larger than this store accepts.
    #[error("{what} is too large: {len} bytes, the limit is {limit}")]
    TooLarge {
        /// Which kind of input.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },

    /// Another process holds the data directory open.
    #[error("the data directory {dir} is in use by another process")]
    InUse {
        /// The database directory.
        dir: PathBuf,
    },

    /// The embedded database failed.
    #[error("storage engine error: {0}")]
    Storage(#[from] sled::Error),

    /// A file operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn tampered(what: impl Into<String>) -> Self {
        Error::Tampered { what: what.into() }
    }
}
