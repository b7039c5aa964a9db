//! The vendor's ed25519 signing keys: PKCS#8 DER files, mode 0600, never
//! printed; and the TUF form of their public halves.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::canonical;
use crate::error::{Error, Result};

/// An ed25519 key pair loaded from its file.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    id: String,
    path: PathBuf,
}

impl fmt::Debug for SigningKey {
    /// Names the key, never its secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Creates a new key at `path` (which must not exist), readable by its
    /// owner only.
    pub fn generate(path: &Path) -> Result<SigningKey> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| Error::Key {
            path: path.into(),
            reason: "the system random generator failed".into(),
        })?;
        let der = Zeroizing::new(pkcs8.as_ref().to_vec());
        durable::write_new(path, &der, durable::PRIVATE).map_err(|e| Error::io(path, e))?;
        Self::from_der(&der, path)
    }

    /// Loads a key file. Refuses one that others can read.
    pub fn load(path: &Path) -> Result<SigningKey> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::Key {
                path: path.into(),
                reason: "readable by group or others: chmod 600 it".into(),
            });
        }
        let der = Zeroizing::new(std::fs::read(path).map_err(|e| Error::io(path, e))?);
        Self::from_der(&der, path)
    }

    fn from_der(der: &[u8], path: &Path) -> Result<SigningKey> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| Error::Key {
            path: path.into(),
            reason: "not an ed25519 PKCS#8 DER key".into(),
        })?;
        let id = key_id(pair.public_key().as_ref());
        Ok(SigningKey {
            pair,
            id,
            path: path.into(),
        })
    }

    /// The TUF key id (hex SHA-256 of the canonical public key object).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public key in TUF form.
    pub fn public_json(&self) -> Value {
        public_json(self.pair.public_key().as_ref())
    }

    /// The file the key came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Signs `message`; returns the signature in hex.
    pub fn sign_hex(&self, message: &[u8]) -> String {
        hex::encode(self.pair.sign(message).as_ref())
    }
}

/// `{"keytype":"ed25519","keyval":{"public":<hex>},"scheme":"ed25519"}`.
pub fn public_json(public: &[u8]) -> Value {
    json!({
        "keytype": "ed25519",
        "scheme": "ed25519",
        "keyval": { "public": hex::encode(public) },
    })
}

/// The key id TUF (and tough, and python-tuf) computes for a public key.
pub fn key_id(public: &[u8]) -> String {
    let bytes = canonical(&public_json(public)).unwrap_or_default();
    hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes))
}
