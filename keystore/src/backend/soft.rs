//! The insecure software backend, for development machines without a TPM.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use zeroize::Zeroizing;

use super::{BackendKind, IdentityKey, KeyBackend};
use crate::crypto::{AeadKey, KEY_LEN, NONCE_LEN, SecretKey, random_nonce};
use crate::error::{Error, Result};

const AAD: &[u8] = b"appliance keystore: insecure software KEK wrap v1";

/// Protects the KEK with a root key kept in a plain file.
///
/// **Insecure by design.** Anyone who can read the root key file can decrypt
/// everything in the store. The appliance refuses this backend unless it is
/// started with an explicit insecure flag.
#[derive(Debug)]
pub struct InsecureSoftwareBackend {
    root: AeadKey,
    file: PathBuf,
}

impl InsecureSoftwareBackend {
    /// Opens the root key file, creating it (mode 0600) if it does not exist.
    pub fn open(root_key_file: &Path) -> Result<Self> {
        tracing::warn!(
            file = %root_key_file.display(),
            "INSECURE software key backend in use: keys are protected only by a plain file \
             (development only; never use this on an appliance)"
        );
        let key = match fs::read(root_key_file) {
            Ok(bytes) => SecretKey::from_slice(&bytes).ok_or_else(|| {
                Error::io(
                    root_key_file,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("root key file must hold exactly {KEY_LEN} bytes"),
                    ),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SecretKey::random()?;
                write_new_private_file(root_key_file, key.expose())?;
                key
            }
            Err(e) => return Err(Error::io(root_key_file, e)),
        };
        Ok(InsecureSoftwareBackend {
            root: AeadKey::new(&key),
            file: root_key_file.to_path_buf(),
        })
    }
}

impl KeyBackend for InsecureSoftwareBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::InsecureSoftware
    }

    fn seal(&mut self, kek: &SecretKey) -> Result<Vec<u8>> {
        let nonce = random_nonce()?;
        let mut buf = kek.expose().to_vec();
        self.root.seal(nonce, AAD, &mut buf);
        let mut out = nonce.to_vec();
        out.append(&mut buf);
        Ok(out)
    }

    fn unseal(&mut self, sealed: &[u8]) -> Result<SecretKey> {
        if sealed.len() < NONCE_LEN {
            return Err(Error::tampered("sealed key"));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| Error::tampered("sealed key"))?;
        let mut buf = Zeroizing::new(ct.to_vec());
        // A wrong root key and a modified blob are indistinguishable here; the
        // likely cause is a data directory copied from another machine.
        let plain = self
            .root
            .open(nonce, AAD, &mut buf, "sealed key")
            .map_err(|_| Error::ForeignDevice)?;
        SecretKey::from_slice(plain).ok_or_else(|| Error::tampered("sealed key"))
    }

    /// The key is a PKCS#8 document; the store keeps the blob as a sealed
    /// record, so it is wrapped, but by a key in a plain file.
    fn create_identity_key(&mut self) -> Result<Vec<u8>> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .map_err(|_| Error::Random)?;
        Ok(pkcs8.as_ref().to_vec())
    }

    fn open_identity_key(&self, blob: &[u8]) -> Result<Arc<dyn IdentityKey>> {
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, blob, &SystemRandom::new())
                .map_err(|_| Error::tampered("identity key"))?;
        Ok(Arc::new(SoftIdentityKey { key }))
    }

    /// Crypto-shredding here is only as good as deleting a file: the root
    /// key is overwritten and removed, but a copy (a backup, an SSD's
    /// remapped block) would still open everything.
    fn destroy(&mut self, _sealed: &[u8]) -> Result<bool> {
        let len = match fs::metadata(&self.file) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(&self.file, e)),
        };
        let zeros = Zeroizing::new(vec![0u8; usize::try_from(len).unwrap_or(KEY_LEN)]);
        durable::replace(&self.file, &zeros, durable::PRIVATE)
            .map_err(|e| Error::io(&self.file, e))?;
        fs::remove_file(&self.file).map_err(|e| Error::io(&self.file, e))?;
        Ok(true)
    }
}

/// The software backend's identity key: in process memory.
struct SoftIdentityKey {
    key: EcdsaKeyPair,
}

impl std::fmt::Debug for SoftIdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SoftIdentityKey")
    }
}

impl IdentityKey for SoftIdentityKey {
    fn public_point(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let signature = self
            .key
            .sign(&SystemRandom::new(), message)
            .map_err(|_| Error::Random)?;
        Ok(signature.as_ref().to_vec())
    }

    fn holder(&self) -> &'static str {
        "in process memory (insecure software keystore)"
    }
}

fn write_new_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::fsutil::create_private_dir(parent)?;
    }
    durable::replace(path, bytes, durable::PRIVATE).map_err(|e| Error::io(path, e))
}
