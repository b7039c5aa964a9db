//! The insecure software backend, for development machines without a TPM.

use std::fs;
use std::path::Path;

use super::{BackendKind, KeyBackend};
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
        let mut buf = zeroize::Zeroizing::new(ct.to_vec());
        // A wrong root key and a modified blob are indistinguishable here; the
        // likely cause is a data directory copied from another machine.
        let plain = self
            .root
            .open(nonce, AAD, &mut buf, "sealed key")
            .map_err(|_| Error::ForeignDevice)?;
        SecretKey::from_slice(plain).ok_or_else(|| Error::tampered("sealed key"))
    }
}

fn write_new_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::fsutil::create_private_dir(parent)?;
    }
    durable::replace(path, bytes, durable::PRIVATE).map_err(|e| Error::io(path, e))
}
