//! Keys that a TPM protects, and a store in which nothing is written in the
//! clear.
//!
//! The key hierarchy:
//!
//! ```text
//! TPM primary storage key (ECC P-256, re-derived from its template at each start)
//!   └─ key-encryption key (KEK): 256 random bits sealed to a PCR policy
//!        └─ data keys (DEKs), one per purpose ("metadata", "audit",
//!           "client/<name>", "model/<line>"), random, stored wrapped by the KEK
//!             └─ records (sled) and blobs (chunked files), AES-256-GCM
//! ```
//!
//! [`Store::open`] unseals the KEK through a [`KeyBackend`]: the
//! [`TpmBackend`] in production, the [`InsecureSoftwareBackend`] on
//! development machines without a TPM. Every record is bound by its
//! associated data to its tree, its id, its key id and the format version, so
//! a ciphertext moved elsewhere does not decrypt. Record and tree names are
//! keyed hashes. Every write is flushed before it returns.
//!
//! The crate is synchronous: TPM commands and fsyncs block. Async callers go
//! through `spawn_blocking`.
#![forbid(unsafe_code)]

pub mod backend;
mod blob;
pub mod crypto;
mod error;
mod fsutil;
mod store;

pub use backend::{
    BackendKind, IdentityKey, InsecureSoftwareBackend, KeyBackend, PcrSelection, TpmBackend,
};
pub use blob::{BlobReader, BlobWriter, CHUNK_LEN};
pub use crypto::SecretKey;
pub use error::{Error, Result};
pub use store::{
    DEFAULT_CACHE_BYTES, MAX_ID_LEN, MAX_VALUE_LEN, Reset, Store, Tree, Value, factory_reset,
};
