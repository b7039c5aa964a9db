//! The rustls server configuration, built by hand.
//!
//! tonic's own TLS settings cannot take a CRL or pin protocol versions, so
//! the configuration is assembled here: the ring provider, TLS 1.3 (1.2 with
//! ECDHE+AEAD suites only when configured; rustls offers no other kind),
//! a mandatory client certificate verified against the site CA and the
//! current CRL, ALPN h2 and http/1.1 (gRPC and the REST form share the
//! port), and no session resumption (every connection proves
//! its certificate afresh, against the CRL of the moment).
//!
//! The server's key never leaves the key backend: rustls signs each
//! handshake through [`BackendKey`], which asks the TPM. A TPM signs one
//! thing at a time and takes milliseconds (a hardware TPM tens of them), so
//! the signature is taken off the async workers (`block_in_place`).

use std::sync::{Arc, PoisonError, RwLock};

use keystore::IdentityKey;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{RootCertStore, ServerConfig, SignatureAlgorithm, SignatureScheme};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};

use crate::config::MinTls;
use crate::error::AppError;
use crate::identity::{Crl, ServerIdentity};

/// The TLS configuration in force, replaced whole when a CRL arrives.
pub struct TlsState {
    identity: ServerIdentity,
    min: MinTls,
    current: RwLock<(Arc<ServerConfig>, Arc<Crl>)>,
}

impl TlsState {
    /// Builds the first configuration.
    pub fn new(identity: ServerIdentity, crl: Option<Crl>, min: MinTls) -> Result<Self, AppError> {
        let crl = Arc::new(crl.unwrap_or_default());
        let config = build(&identity, &crl, min)?;
        Ok(TlsState {
            identity,
            min,
            current: RwLock::new((config, crl)),
        })
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.read().0.clone()
    }

    /// Whether a certificate serial is on the CRL in force.
    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        self.read().1.revoked.contains(serial)
    }

    /// Installs a new CRL for every later handshake and request.
    pub fn replace_crl(&self, crl: Crl) -> Result<(), AppError> {
        let crl = Arc::new(crl);
        let config = build(&self.identity, &crl, self.min)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = (config, crl);
        Ok(())
    }

    /// This appliance's identity.
    pub fn identity(&self) -> &ServerIdentity {
        &self.identity
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, (Arc<ServerConfig>, Arc<Crl>)> {
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }
}

fn build(identity: &ServerIdentity, crl: &Crl, min: MinTls) -> Result<Arc<ServerConfig>, AppError> {
    let tls = |e: rustls::Error| AppError::Internal(format!("TLS configuration: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let mut roots = RootCertStore::empty();
    roots.add(identity.client_ca.clone()).map_err(tls)?;
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if !crl.der.is_empty() {
        verifier = verifier.with_crls([CertificateRevocationListDer::from(crl.der.clone())]);
    }
    // No `allow_unauthenticated`: a client certificate is mandatory.
    let verifier = verifier
        .build()
        .map_err(|e| AppError::Internal(format!("client verifier: {e}")))?;

    let versions: &[&rustls::SupportedProtocolVersion] = match min {
        MinTls::Tls13 => &[&rustls::version::TLS13],
        MinTls::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(tls)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver(identity.certificate.clone(), identity.key.clone()));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The configuration of enrollment mode: TLS 1.3, the self-signed
/// certificate of the identity key, and no client certificate (the
/// enrollment code authenticates the operator; no site CA is known yet).
pub fn enrollment_config(
    certificate: CertificateDer<'static>,
    key: Arc<dyn IdentityKey>,
) -> Result<Arc<ServerConfig>, AppError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| AppError::Internal(format!("TLS configuration: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(resolver(certificate, key));
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

fn resolver(
    certificate: CertificateDer<'static>,
    key: Arc<dyn IdentityKey>,
) -> Arc<SingleCertAndKey> {
    Arc::new(SingleCertAndKey::from(CertifiedKey::new(
        vec![certificate],
        Arc::new(BackendKey(key)),
    )))
}

/// The identity key as rustls signs with it: ECDSA P-256 with SHA-256, the
/// one scheme a P-256 TPM key offers in TLS 1.3.
#[derive(Debug)]
pub struct BackendKey(pub Arc<dyn IdentityKey>);

impl rustls::sign::SigningKey for BackendKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(BackendSigner(self.0.clone())) as Box<dyn rustls::sign::Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct BackendSigner(Arc<dyn IdentityKey>);

impl rustls::sign::Signer for BackendSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let sign = || {
            self.0.sign(message).map_err(|e| {
                tracing::error!(error = %e, "the identity key could not sign a handshake");
                rustls::Error::General("the identity key could not sign".into())
            })
        };
        // On a multi-threaded runtime the worker hands its other tasks on
        // while the TPM works; elsewhere (tests, the blocking pool) this
        // thread may simply wait.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(sign)
            }
            _ => sign(),
        }
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}
