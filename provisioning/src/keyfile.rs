//! The encrypted CA key file, `<site>/ca.key.enc`.
//!
//! The CA's PKCS#8 private key is encrypted under a key derived from the
//! operator's passphrase. Layout (integers big-endian):
//!
//! ```text
//! offset  size  field
//!      0     7  magic "PRVCAKY"
//!      7     1  format version = 1
//!      8     1  KDF id: 1 = PBKDF2-HMAC-SHA256
//!      9     4  KDF iterations (600,000 ..= 10,000,000)
//!     13    16  salt (random)
//!     29    12  AES-256-GCM nonce (random)
//!     41     n  ciphertext of the PKCS#8 DER, followed by the 16-byte tag
//! ```
//!
//! The 41 header bytes are the AEAD's associated data, so lowering the
//! iteration count or swapping the salt in the file makes decryption fail
//! instead of silently weakening the file. Every file is written with a new
//! salt and nonce, so a (key, nonce) pair is never reused.

use std::fmt;
use std::num::NonZeroU32;
use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// PBKDF2 iterations for new key files: OWASP's 2023 figure for
/// PBKDF2-HMAC-SHA256. A deployment may raise it as hardware gets faster;
/// files keep their own count.
pub const PBKDF2_ITERATIONS: u32 = 600_000;
/// Fewest iterations a key file may declare; a file below it was not
/// written by us.
const MIN_ITERATIONS: u32 = PBKDF2_ITERATIONS;
/// Most iterations a key file may declare, so a crafted file cannot make
/// unlocking take hours.
const MAX_ITERATIONS: u32 = 10_000_000;
/// Shortest passphrase accepted for a new site.
pub const MIN_PASSPHRASE_LEN: usize = 8;

const MAGIC: &[u8; 7] = b"PRVCAKY";
const VERSION: u8 = 1;
const KDF_PBKDF2_SHA256: u8 = 1;
const SALT_LEN: usize = 16;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 7 + 1 + 1 + 4 + SALT_LEN + NONCE_LEN;
/// A P-256 PKCS#8 document is about 140 bytes; anything far beyond is not
/// ours.
const MAX_CIPHERTEXT_LEN: usize = 16 * 1024;

/// The operator's passphrase. Zeroized on drop; `Debug` does not print it.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Wraps a passphrase as typed or read from `PROVISION_PASSPHRASE`.
    /// Any value is accepted here; [`Passphrase::check_new`] applies the
    /// rules for a new site's passphrase.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// Checks the rules for a passphrase that will protect a new CA key: at
    /// least [`MIN_PASSPHRASE_LEN`] characters, not only white space.
    pub fn check_new(&self) -> Result<()> {
        if self.0.chars().count() < MIN_PASSPHRASE_LEN {
            return Err(Error::WeakPassphrase("use at least 8 characters"));
        }
        if self.0.trim().is_empty() {
            return Err(Error::WeakPassphrase("a passphrase of only spaces"));
        }
        Ok(())
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl PartialEq for Passphrase {
    fn eq(&self, other: &Self) -> bool {
        // Only compared when the operator types it twice; timing is moot.
        self.0.as_str() == other.0.as_str()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// A parsed (still encrypted) key file.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedKey {
    iterations: u32,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
    /// Ciphertext with the tag appended.
    ciphertext: Vec<u8>,
}

impl fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedKey")
            .field("iterations", &self.iterations)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

impl SealedKey {
    /// Encrypts `secret` under `passphrase` with a fresh salt and nonce and
    /// [`PBKDF2_ITERATIONS`].
    pub fn seal(secret: &[u8], passphrase: &Passphrase) -> Result<Self> {
        Self::seal_with_iterations(secret, passphrase, PBKDF2_ITERATIONS)
    }

    fn seal_with_iterations(
        secret: &[u8],
        passphrase: &Passphrase,
        iterations: u32,
    ) -> Result<Self> {
        if secret.is_empty() || secret.len() + TAG_LEN > MAX_CIPHERTEXT_LEN {
            return Err(Error::Crypto("sealing a key of unexpected size"));
        }
        let rng = SystemRandom::new();
        let mut salt = [0u8; SALT_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut salt)
            .map_err(|_| Error::Crypto("salt generation"))?;
        rng.fill(&mut nonce)
            .map_err(|_| Error::Crypto("nonce generation"))?;
        let mut sealed = Self {
            iterations,
            salt,
            nonce,
            ciphertext: Vec::new(),
        };
        let key = sealed.derive_key(passphrase)?;
        let mut buf = secret.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(sealed.header()),
            &mut buf,
        )
        .map_err(|_| Error::Crypto("key encryption"))?;
        sealed.ciphertext = buf;
        Ok(sealed)
    }

    /// Decrypts the key. `path` is only used in the error message.
    ///
    /// A wrong passphrase and a modified file are indistinguishable (that
    /// is the point of an AEAD); both give [`Error::WrongPassphrase`].
    pub fn open(&self, passphrase: &Passphrase, path: &Path) -> Result<Zeroizing<Vec<u8>>> {
        let key = self.derive_key(passphrase)?;
        let mut buf = Zeroizing::new(self.ciphertext.clone());
        let plain_len = key
            .open_in_place(
                Nonce::assume_unique_for_key(self.nonce),
                Aad::from(self.header()),
                &mut buf,
            )
            .map_err(|_| Error::WrongPassphrase {
                path: path.to_path_buf(),
            })?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.header().to_vec();
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Parses a key file's bytes. Never panics, whatever the input; `path`
    /// is only used in error messages.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |detail| Error::KeyFile {
            path: path.to_path_buf(),
            detail,
        };
        if bytes.len() < HEADER_LEN + TAG_LEN + 1 {
            return Err(bad("too short"));
        }
        let (header, ciphertext) = bytes.split_at(HEADER_LEN);
        if &header[..7] != MAGIC {
            return Err(bad("missing the PRVCAKY magic (not a provision key file)"));
        }
        if header[7] != VERSION {
            return Err(bad("unknown format version"));
        }
        if header[8] != KDF_PBKDF2_SHA256 {
            return Err(bad("unknown key-derivation function"));
        }
        let iterations = u32::from_be_bytes([header[9], header[10], header[11], header[12]]);
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(bad("iteration count outside 600,000..=10,000,000"));
        }
        if ciphertext.len() > MAX_CIPHERTEXT_LEN {
            return Err(bad("ciphertext too long"));
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&header[13..13 + SALT_LEN]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&header[13 + SALT_LEN..HEADER_LEN]);
        Ok(Self {
            iterations,
            salt,
            nonce,
            ciphertext: ciphertext.to_vec(),
        })
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..7].copy_from_slice(MAGIC);
        h[7] = VERSION;
        h[8] = KDF_PBKDF2_SHA256;
        h[9..13].copy_from_slice(&self.iterations.to_be_bytes());
        h[13..13 + SALT_LEN].copy_from_slice(&self.salt);
        h[13 + SALT_LEN..].copy_from_slice(&self.nonce);
        h
    }

    fn derive_key(&self, passphrase: &Passphrase) -> Result<LessSafeKey> {
        let iterations = NonZeroU32::new(self.iterations).ok_or(Error::Crypto("key derivation"))?;
        let mut raw = Zeroizing::new([0u8; 32]);
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &self.salt,
            passphrase.as_bytes(),
            raw.as_mut(),
        );
        // ring keeps its own expanded key schedule (not zeroized by ring);
        // the raw key above is.
        let unbound =
            UnboundKey::new(&AES_256_GCM, raw.as_ref()).map_err(|_| Error::Crypto("key setup"))?;
        Ok(LessSafeKey::new(unbound))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn p(s: &str) -> Passphrase {
        Passphrase::new(s)
    }

    #[test]
    fn round_trip_and_wrong_passphrase() {
        let path = Path::new("ca.key.enc");
        let secret = b"a pkcs8 document, say".to_vec();
        let sealed = SealedKey::seal(&secret, &p("correct horse")).unwrap();
        let bytes = sealed.to_bytes();
        assert_eq!(bytes.len(), HEADER_LEN + secret.len() + TAG_LEN);
        let parsed = SealedKey::parse(&bytes, path).unwrap();
        assert_eq!(parsed, sealed);
        assert_eq!(
            parsed.open(&p("correct horse"), path).unwrap().as_slice(),
            &secret[..]
        );
        let err = parsed.open(&p("correct horsf"), path).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("wrong passphrase (or the CA key file is damaged)"),
            "{err}"
        );
    }

    #[test]
    fn header_is_authenticated() {
        let path = Path::new("k");
        let sealed = SealedKey::seal(b"secret", &p("passphrase1")).unwrap();
        let bytes = sealed.to_bytes();
        // Raise the iteration count by one: still parses, no longer opens.
        let mut raised = bytes.clone();
        raised[12] ^= 1;
        let parsed = SealedKey::parse(&raised, path).unwrap();
        assert!(matches!(
            parsed.open(&p("passphrase1"), path),
            Err(Error::WrongPassphrase { .. })
        ));
        // Any flipped ciphertext bit fails too.
        let mut flipped = bytes;
        let last = flipped.len() - 1;
        flipped[last] ^= 0x80;
        let parsed = SealedKey::parse(&flipped, path).unwrap();
        assert!(parsed.open(&p("passphrase1"), path).is_err());
    }

    #[test]
    fn malformed_files_are_refused_by_name() {
        let path = Path::new("site/ca.key.enc");
        let good = SealedKey::seal(b"secret", &p("passphrase1"))
            .unwrap()
            .to_bytes();
        let mut low = good.clone();
        low[9..13].copy_from_slice(&1000u32.to_be_bytes());
        let mut magic = good.clone();
        magic[0] = b'X';
        let mut version = good.clone();
        version[7] = 2;
        for (bytes, needle) in [
            (&good[..10], "too short"),
            (&low[..], "iteration count"),
            (&magic[..], "magic"),
            (&version[..], "version"),
        ] {
            let err = SealedKey::parse(bytes, path).unwrap_err().to_string();
            assert!(err.contains("site/ca.key.enc"), "{err}");
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn passphrase_rules_and_debug() {
        assert!(p("short").check_new().is_err());
        assert!(p("        ").check_new().is_err());
        assert!(p("long enough").check_new().is_ok());
        assert_eq!(format!("{:?}", p("long enough")), "Passphrase(..)");
    }
}
