//! AES-256-GCM (RustCrypto's `aes-gcm`, with `aead-stream`'s STREAM for
//! blobs) and HMAC-SHA256 (ring), with key material held only in zeroizing
//! buffers.
//!
//! ring's AES-GCM wrote on-disk format 1; `aes-gcm` writes format 2. Both
//! are the same AES-256-GCM, so one implementation opens both (the format 1
//! fixture in `tests/format_v1.rs` and the cross-check below prove it).
//! `aes-gcm`'s key schedules are zeroized on drop (its `zeroize` feature);
//! ring stays for HMAC, randomness and TLS.

use std::fmt;

use aead_stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Tag};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Length of every symmetric key we use (AES-256, HMAC-SHA256).
pub const KEY_LEN: usize = 32;
/// Length of an AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Length of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Length of the per-blob nonce prefix of STREAM (BE32 flavour): the nonce
/// less a 32-bit chunk counter and a one-byte last-chunk flag.
pub(crate) const STREAM_PREFIX_LEN: usize = NONCE_LEN - 5;

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

/// An AES-256-GCM key ready for use; its key schedule is wiped on drop.
pub struct AeadKey(Aes256Gcm);

impl AeadKey {
    /// Expands `key` for AES-256-GCM.
    pub fn new(key: &SecretKey) -> Self {
        AeadKey(Aes256Gcm::new(key.expose().into()))
    }

    /// Encrypts `in_out` in place and appends the tag.
    pub fn seal(&self, nonce: [u8; NONCE_LEN], aad: &[u8], in_out: &mut Vec<u8>) {
        let tag = self
            .0
            .encrypt_inout_detached(&nonce.into(), aad, in_out.as_mut_slice().into())
            .unwrap_or_else(|_| unreachable!("AES-GCM sealing only fails beyond 64 GiB"));
        in_out.extend_from_slice(&tag);
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
        let len = in_out
            .len()
            .checked_sub(TAG_LEN)
            .ok_or_else(|| Error::tampered(what))?;
        let (text, tag) = in_out.split_at_mut(len);
        let tag = Tag::try_from(&*tag).map_err(|_| Error::tampered(what))?;
        // On failure the buffer is left as it was: aes-gcm checks the tag
        // before it decrypts.
        self.0
            .decrypt_inout_detached(&nonce.into(), aad, (&mut *text).into(), &tag)
            .map_err(|_| Error::tampered(what))?;
        Ok(text)
    }
}

impl fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AeadKey(<redacted>)")
    }
}

/// Seals the chunks of one blob in order: STREAM (Hoang, Reyhanitabar,
/// Rogaway, Vizár) as `aead-stream`'s BE32 flavour, nonce = prefix (7) |
/// chunk counter (u32 BE) | last-chunk flag (1 byte).
pub(crate) struct StreamSealer(EncryptorBE32<Aes256Gcm>);

impl StreamSealer {
    /// A sealer over a copy of `key`'s schedule (wiped when it drops).
    pub(crate) fn new(key: &AeadKey, prefix: &[u8; STREAM_PREFIX_LEN]) -> Self {
        StreamSealer(EncryptorBE32::from_aead(key.0.clone(), prefix.into()))
    }

    /// Seals a chunk that is not the last, in place (the tag is appended).
    pub(crate) fn seal_next(&mut self, aad: &[u8], in_out: &mut Vec<u8>) -> Result<()> {
        self.0
            .encrypt_next_in_place(aad, in_out)
            .map_err(|_| too_many_chunks())
    }

    /// Seals the last chunk, in place; nothing can follow it.
    pub(crate) fn seal_last(self, aad: &[u8], in_out: &mut Vec<u8>) -> Result<()> {
        self.0
            .encrypt_last_in_place(aad, in_out)
            .map_err(|_| too_many_chunks())
    }
}

/// Opens the chunks of one blob in order; the counterpart of
/// [`StreamSealer`]. A chunk out of place, a missing last chunk or a chunk
/// after it fails authentication.
pub(crate) struct StreamOpener(DecryptorBE32<Aes256Gcm>);

impl StreamOpener {
    /// An opener over a copy of `key`'s schedule (wiped when it drops).
    pub(crate) fn new(key: &AeadKey, prefix: &[u8; STREAM_PREFIX_LEN]) -> Self {
        StreamOpener(DecryptorBE32::from_aead(key.0.clone(), prefix.into()))
    }

    /// Opens a chunk that is not the last, in place (the tag is removed).
    pub(crate) fn open_next(&mut self, aad: &[u8], in_out: &mut Vec<u8>, what: &str) -> Result<()> {
        self.0
            .decrypt_next_in_place(aad, in_out)
            .map_err(|_| Error::tampered(what))
    }

    /// Opens the last chunk, in place.
    pub(crate) fn open_last(self, aad: &[u8], in_out: &mut Vec<u8>, what: &str) -> Result<()> {
        self.0
            .decrypt_last_in_place(aad, in_out)
            .map_err(|_| Error::tampered(what))
    }
}

/// A STREAM counts at most 2^32 − 1 chunks (256 TiB of 64 KiB chunks).
fn too_many_chunks() -> Error {
    Error::TooLarge {
        what: "blob",
        len: usize::MAX,
        limit: crate::CHUNK_LEN * u32::MAX as usize,
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

    /// Format 1 was sealed by ring: ring's output opens here, and ours
    /// opens in ring, for lengths around the block and tag sizes.
    #[test]
    fn ring_and_aes_gcm_agree_both_ways() {
        use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let secret = SecretKey::random().unwrap();
        let ring_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, secret.expose()).unwrap());
        let key = AeadKey::new(&secret);
        for len in [0, 1, 15, 16, 17, 255, 4096, 65536 + 3] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            let nonce = random_nonce().unwrap();
            let aad = format!("aad {len}");

            let mut by_ring = plain.clone();
            let n = Nonce::assume_unique_for_key(nonce);
            ring_key
                .seal_in_place_append_tag(n, Aad::from(aad.as_bytes()), &mut by_ring)
                .unwrap();
            let mut ours = plain.clone();
            key.seal(nonce, aad.as_bytes(), &mut ours);
            assert_eq!(ours, by_ring, "length {len}");

            assert_eq!(
                key.open(nonce, aad.as_bytes(), &mut by_ring, "t").unwrap(),
                &plain[..]
            );
            let n = Nonce::assume_unique_for_key(nonce);
            let opened = ring_key
                .open_in_place(n, Aad::from(aad.as_bytes()), &mut ours)
                .unwrap();
            assert_eq!(opened, &plain[..]);
        }
    }

    /// Blob format 1's STREAM, as our own code built its nonces (prefix |
    /// counter u32 BE | last flag), opens with aead-stream's BE32 and the
    /// other way round: one reader serves both blob formats.
    #[test]
    fn stream_be32_is_the_format_1_nonce_layout() {
        let key = AeadKey::new(&SecretKey::random().unwrap());
        let prefix = [9u8; STREAM_PREFIX_LEN];
        let format_1_nonce = |i: u32, last: bool| {
            let mut n = [0u8; NONCE_LEN];
            n[..STREAM_PREFIX_LEN].copy_from_slice(&prefix);
            n[STREAM_PREFIX_LEN..NONCE_LEN - 1].copy_from_slice(&i.to_be_bytes());
            n[NONCE_LEN - 1] = u8::from(last);
            n
        };
        let chunks: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100 + usize::from(i)]).collect();

        let mut sealer = StreamSealer::new(&key, &prefix);
        let mut opener = StreamOpener::new(&key, &prefix);
        for (i, chunk) in (0u32..).zip(&chunks[..4]) {
            let mut old = chunk.clone();
            key.seal(format_1_nonce(i, false), b"aad", &mut old);
            let mut new = chunk.clone();
            sealer.seal_next(b"aad", &mut new).unwrap();
            assert_eq!(new, old, "chunk {i}");
            opener.open_next(b"aad", &mut old, "t").unwrap();
            assert_eq!(&old, chunk);
        }
        let mut old = chunks[4].clone();
        key.seal(format_1_nonce(4, true), b"aad", &mut old);
        let mut new = chunks[4].clone();
        sealer.seal_last(b"aad", &mut new).unwrap();
        assert_eq!(new, old);
        opener.open_last(b"aad", &mut old, "t").unwrap();
        assert_eq!(old, chunks[4]);
    }

    #[test]
    fn stream_refuses_reordered_and_early_last_chunks() {
        let key = AeadKey::new(&SecretKey::random().unwrap());
        let prefix = [3u8; STREAM_PREFIX_LEN];
        let mut sealer = StreamSealer::new(&key, &prefix);
        let mut first = b"first".to_vec();
        let mut second = b"second".to_vec();
        sealer.seal_next(b"", &mut first).unwrap();
        sealer.seal_last(b"", &mut second).unwrap();

        let mut opener = StreamOpener::new(&key, &prefix);
        assert!(opener.open_next(b"", &mut second.clone(), "t").is_err());
        let opener = StreamOpener::new(&key, &prefix);
        assert!(opener.open_last(b"", &mut first.clone(), "t").is_err());
        let mut opener = StreamOpener::new(&key, &prefix);
        opener.open_next(b"", &mut first, "t").unwrap();
        opener.open_last(b"", &mut second, "t").unwrap();
        assert_eq!(second, b"second");
    }

    #[test]
    fn open_refuses_input_shorter_than_a_tag() {
        let key = AeadKey::new(&SecretKey::random().unwrap());
        for len in 0..TAG_LEN {
            let mut buf = vec![0u8; len];
            assert!(key.open([0; NONCE_LEN], b"", &mut buf, "t").is_err());
        }
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
