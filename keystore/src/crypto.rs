//! AES-256-GCM and HMAC-SHA256 primitives, with key material held only in
//! zeroizing buffers.
//!
//! ring is used for both: its AES-GCM is the same stitched assembly OpenSSL
//! uses, which the at-rest throughput target needs. Caveat, recorded in
//! ARCHITECTURE.md: ring's expanded key schedule (inside `LessSafeKey`) is not
//! zeroized when dropped; the raw 32-byte keys we hold are.

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Length of every symmetric key we use (AES-256, HMAC-SHA256).
pub const KEY_LEN: usize = 32;
/// Length of an AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Length of an AES-GCM nonce.
pub use ring::aead::NONCE_LEN;

/// 256 bits of secret key material. Zeroized on drop, never printed.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; KEY_LEN]>);

impl SecretKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn random() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(bytes.as_mut())?;
        Ok(SecretKey(bytes))
    }

    /// Takes ownership of key bytes (e.g. just unsealed by a TPM).
    pub fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        SecretKey(bytes)
    }

    /// Copies key bytes out of a slice of exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(SecretKey(Zeroizing::new(arr)))
    }

    /// The raw bytes, for sealing or wrapping only.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Derives an independent subkey for a labelled purpose (HMAC-SHA256 as a
    /// PRF), so one stored key can serve two algorithms without reuse.
    pub fn derive(&self, label: &[u8]) -> SecretKey {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.0.as_ref());
        let tag = hmac::sign(&key, label);
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        out.copy_from_slice(tag.as_ref());
        SecretKey(out)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) -> Result<()> {
    SystemRandom::new().fill(buf).map_err(|_| Error::Random)
}

/// An AES-256-GCM key ready for use.
pub struct AeadKey(LessSafeKey);

impl AeadKey {
    /// Expands `key` for AES-256-GCM.
    pub fn new(key: &SecretKey) -> Self {
        // Cannot fail: the length is fixed by the type.
        let unbound = UnboundKey::new(&AES_256_GCM, key.expose().as_ref())
            .unwrap_or_else(|_| unreachable!("AES-256 key length is fixed"));
        AeadKey(LessSafeKey::new(unbound))
    }

    /// Encrypts `in_out` in place and appends the tag.
    pub fn seal(&self, nonce: [u8; NONCE_LEN], aad: &[u8], in_out: &mut Vec<u8>) {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .unwrap_or_else(|_| unreachable!("AES-GCM sealing only fails beyond 64 GiB"));
        in_out.extend_from_slice(tag.as_ref());
    }

    /// Decrypts `in_out` (ciphertext followed by tag) in place and returns
    /// the plaintext prefix. `what` names the object for the error.
    pub fn open<'a>(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &'a mut [u8],
        what: &str,
    ) -> Result<&'a mut [u8]> {
        self.0
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .map_err(|_| Error::tampered(what))
    }
}

impl fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AeadKey(<redacted>)")
    }
}

/// A random 96-bit nonce. Safe for the record counts one data key sees
/// (far below the 2^32 messages at which random GCM nonces become risky).
pub fn random_nonce() -> Result<[u8; NONCE_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    Ok(nonce)
}

/// A keyed hash used for record and tree identifiers, so names never reach
/// the disk in the clear.
pub struct IdHasher(hmac::Key);

impl IdHasher {
    /// A hasher keyed by `key`.
    pub fn new(key: &SecretKey) -> Self {
        IdHasher(hmac::Key::new(hmac::HMAC_SHA256, key.expose().as_ref()))
    }

    /// HMAC-SHA256 over length-prefixed parts (unambiguous: ("ab","c") and
    /// ("a","bc") hash differently).
    pub fn hash(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.0);
        for part in parts {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }
}

impl fmt::Debug for IdHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdHasher(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let key = AeadKey::new(&SecretKey::random().unwrap());
        let nonce = random_nonce().unwrap();
        let mut buf = b"hello".to_vec();
        key.seal(nonce, b"ad", &mut buf);
        assert_eq!(buf.len(), 5 + TAG_LEN);

        let mut copy = buf.clone();
        assert_eq!(key.open(nonce, b"ad", &mut copy, "t").unwrap(), b"hello");

        let mut copy = buf.clone();
        assert!(matches!(
            key.open(nonce, b"other", &mut copy, "t"),
            Err(Error::Tampered { .. })
        ));
    }

    #[test]
    fn aes_256_gcm_known_answer() {
        // NIST SP 800-38D test case 16 (AES-256, 96-bit IV, with AAD).
        let k = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
        let iv = hex("cafebabefacedbaddecaf888");
        let pt = hex(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        );
        let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let ct = hex(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        );
        let tag = hex("76fc6ece0f4e1768cddf8853bb2d551b");

        let key = AeadKey::new(&SecretKey::from_slice(&k).unwrap());
        let mut buf = pt.clone();
        key.seal(iv.clone().try_into().unwrap(), &aad, &mut buf);
        assert_eq!(&buf[..pt.len()], &ct[..]);
        assert_eq!(&buf[pt.len()..], &tag[..]);
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let key = SecretKey::from_slice(&[0xab; KEY_LEN]).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("ab") && !shown.contains("171"), "{shown}");
    }

    #[test]
    fn id_hash_is_unambiguous() {
        let h = IdHasher::new(&SecretKey::random().unwrap());
        assert_ne!(h.hash(&[b"ab", b"c"]), h.hash(&[b"a", b"bc"]));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
