//! Identities: the appliance's own (its TLS identity key, held by the key
//! backend — inside the TPM — its certificate, the site's client CA and CRL)
//! and its clients' (the SPIFFE URI in their certificates).

use std::collections::HashSet;
use std::sync::Arc;

use keystore::{IdentityKey, Store};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::*;

use crate::error::AppError;

const TREE: &str = "identity";
const PURPOSE: &str = "identity";
/// The PKCS#8 TLS key an earlier version kept in the store (refused now).
const LEGACY_KEY: &[u8] = b"tls-key";
/// The key backend's blob of the identity key (the TPM's own wrapping).
const IDENTITY_KEY: &[u8] = b"identity-key";
const CERT: &[u8] = b"tls-certificate";
const CLIENT_CA: &[u8] = b"client-ca";
const CRL: &[u8] = b"crl";

/// What the appliance serves TLS with. The private key never leaves the
/// key backend (the TPM); this holds a handle that asks it to sign.
pub struct ServerIdentity {
    /// The identity key.
    pub key: Arc<dyn IdentityKey>,
    /// The appliance certificate.
    pub certificate: CertificateDer<'static>,
    /// The site CA that issues client certificates.
    pub client_ca: CertificateDer<'static>,
    /// The site name (SPIFFE trust domain) from the certificate's URI SAN.
    pub site: String,
    /// This appliance's id from the same URI.
    pub appliance_id: String,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("site", &self.site)
            .field("appliance_id", &self.appliance_id)
            .finish_non_exhaustive()
    }
}

/// The identity key, created by the key backend (inside the TPM) on first
/// use and kept there; the store holds only the backend's blob of it.
pub fn identity_key(store: &Store) -> Result<Arc<dyn IdentityKey>, AppError> {
    let tree = store.tree(TREE, PURPOSE)?;
    if let Some(blob) = tree.get(IDENTITY_KEY)? {
        return Ok(store.open_identity_key(&blob)?);
    }
    let blob = store.create_identity_key()?;
    tree.put(IDENTITY_KEY, &blob)?;
    let key = store.open_identity_key(&blob)?;
    tracing::info!(holder = key.holder(), "identity key created");
    Ok(key)
}

/// Whether an appliance certificate is installed (enrollment is done).
pub fn is_enrolled(store: &Store) -> Result<bool, AppError> {
    Ok(store.tree(TREE, PURPOSE)?.get(CERT)?.is_some())
}

/// The identity key as rcgen signs with it: CSRs and the enrollment
/// certificate are signed inside the TPM.
struct RcgenKey<'a>(&'a dyn IdentityKey);

impl rcgen::PublicKeyData for RcgenKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_point()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for RcgenKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg).map_err(|e| {
            // rcgen's error carries no detail: say here why.
            tracing::error!(error = %e, "the identity key could not sign");
            rcgen::Error::RemoteKeyError
        })
    }
}

/// The SubjectPublicKeyInfo DER of the identity key.
pub fn public_key_info(key: &dyn IdentityKey) -> Vec<u8> {
    rcgen::PublicKeyData::subject_public_key_info(&RcgenKey(key))
}

/// A PEM certificate signing request for the identity key (created on first
/// use), naming `dns` names and `ips`.
pub fn create_csr(
    store: &Store,
    dns: &[String],
    ips: &[std::net::IpAddr],
) -> Result<String, AppError> {
    let key = identity_key(store)?;
    let mut params = rcgen::CertificateParams::new(dns.to_vec())
        .map_err(|e| AppError::InvalidArgument(format!("DNS name: {e}")))?;
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
    params
        .serialize_request(&RcgenKey(key.as_ref()))
        .and_then(|r| r.pem())
        .map_err(|e| AppError::Internal(format!("CSR: {e}")))
}

/// The certificate an appliance in enrollment mode serves: self-signed by
/// the identity key. The operator's tool pins its SHA-256 fingerprint.
pub fn enrollment_certificate(key: &dyn IdentityKey) -> Result<CertificateDer<'static>, AppError> {
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "appliance in enrollment mode");
    let now = ::time::OffsetDateTime::now_utc();
    params.not_before = now - ::time::Duration::hours(1);
    params.not_after = now + ::time::Duration::days(365);
    params
        .self_signed(&RcgenKey(key))
        .map(|c| c.der().clone())
        .map_err(|e| AppError::Internal(format!("enrollment certificate: {e}")))
}

/// The `SHA256:` fingerprint of a certificate as shown to operators:
/// colon-separated upper-case hex of the SHA-256 of its DER.
pub fn fingerprint(certificate: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, certificate);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    format!("SHA256:{}", hex.join(":"))
}

/// An appliance certificate and site CA that [`check_install`] accepted,
/// ready for [`install`].
#[derive(Debug)]
pub struct CheckedIdentity {
    certificate: Vec<u8>,
    client_ca: CertificateDer<'static>,
    /// The site name from the certificate's SPIFFE URI.
    pub site: String,
    /// This appliance's id from the same URI.
    pub appliance_id: String,
}

impl CheckedIdentity {
    /// The site CA (which also signs the CRL).
    pub fn client_ca(&self) -> &CertificateDer<'static> {
        &self.client_ca
    }
}

/// Checks, without installing, that the certificate is for the identity
/// key, is signed by the CA, and names this appliance with a SPIFFE URI.
pub fn check_install(
    store: &Store,
    certificate_pem: &[u8],
    ca_pem: &[u8],
) -> Result<CheckedIdentity, AppError> {
    let key = identity_key(store)?;
    let certificate = one_pem(certificate_pem, "CERTIFICATE", "the certificate")?;
    let ca = one_pem(ca_pem, "CERTIFICATE", "the CA certificate")?;
    let (site, appliance_id) =
        check_server_certificate(&certificate, &ca, &public_key_info(key.as_ref()))?;
    Ok(CheckedIdentity {
        certificate,
        client_ca: CertificateDer::from(ca),
        site,
        appliance_id,
    })
}

/// Installs a checked appliance certificate and site CA.
pub fn install(store: &Store, checked: &CheckedIdentity) -> Result<(), AppError> {
    let batch: [(&[u8], &[u8]); 2] = [
        (CERT, &checked.certificate),
        (CLIENT_CA, &checked.client_ca),
    ];
    store.tree(TREE, PURPOSE)?.put_all(batch)?;
    Ok(())
}

/// Loads the identity, or explains how to install one.
pub fn load(store: &Store) -> Result<ServerIdentity, AppError> {
    let tree = store.tree(TREE, PURPOSE)?;
    let missing = |what: &str| {
        AppError::InvalidArgument(format!(
            "no {what} installed: start the appliance to enroll it over the network \
             (`provision device enroll`), or run `appliance identity csr`, have the site CA \
             sign it (`provision appliance issue --csr`), then `appliance identity install`"
        ))
    };
    if tree.get(IDENTITY_KEY)?.is_none() && tree.get(LEGACY_KEY)?.is_some() {
        return Err(AppError::InvalidArgument(
            "this appliance's TLS key was kept in the store by an earlier version; the key \
             now lives in the TPM: run `appliance identity csr` and install a new certificate"
                .into(),
        ));
    }
    let certificate = tree.get(CERT)?.ok_or_else(|| missing("certificate"))?;
    let ca = tree.get(CLIENT_CA)?.ok_or_else(|| missing("client CA"))?;
    let key = identity_key(store)?;
    let (_, cert) = X509Certificate::from_der(&certificate)
        .map_err(|e| AppError::Internal(format!("stored certificate: {e}")))?;
    if cert.public_key().raw != public_key_info(key.as_ref()).as_slice() {
        return Err(AppError::Internal(
            "the installed certificate is not for the identity key".into(),
        ));
    }
    let (site, appliance_id) = spiffe_of(&cert, ident::Kind::Appliance)?;
    Ok(ServerIdentity {
        key,
        certificate: CertificateDer::from(certificate.to_vec()),
        client_ca: CertificateDer::from(ca.to_vec()),
        site,
        appliance_id,
    })
}

/// A parsed CRL: its DER (for the TLS verifier) and its revoked serials
/// (for the per-request check on connections opened before it arrived).
#[derive(Debug, Clone, Default)]
pub struct Crl {
    /// DER bytes.
    pub der: Vec<u8>,
    /// Revoked serial numbers (big-endian bytes, no leading zeroes).
    pub revoked: HashSet<Vec<u8>>,
}

/// Parses a CRL from PEM or DER and checks the site CA signed it.
pub fn parse_crl(bytes: &[u8], ca: &CertificateDer<'_>) -> Result<Crl, AppError> {
    let der = if bytes.starts_with(b"-----BEGIN") {
        one_pem(bytes, "X509 CRL", "the CRL")?
    } else {
        bytes.to_vec()
    };
    let (_, crl) = CertificateRevocationList::from_der(&der)
        .map_err(|e| AppError::InvalidArgument(format!("the CRL does not parse: {e}")))?;
    let (_, ca_cert) =
        X509Certificate::from_der(ca).map_err(|e| AppError::Internal(format!("stored CA: {e}")))?;
    crl.verify_signature(ca_cert.public_key())
        .map_err(|_| AppError::InvalidArgument("the CRL is not signed by the site CA".into()))?;
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| trim_serial(r.raw_serial()))
        .collect();
    Ok(Crl { der, revoked })
}

/// Stores a CRL (already parsed and checked).
pub fn store_crl(store: &Store, crl: &Crl) -> Result<(), AppError> {
    store.tree(TREE, PURPOSE)?.put(CRL, &crl.der)?;
    Ok(())
}

/// The stored CRL, if any.
pub fn load_crl(store: &Store, ca: &CertificateDer<'_>) -> Result<Option<Crl>, AppError> {
    match store.tree(TREE, PURPOSE)?.get(CRL)? {
        Some(der) => parse_crl(&der, ca).map(Some),
        None => Ok(None),
    }
}

/// A client as its certificate identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId {
    /// The `<name>` of `spiffe://<site>/client/<name>`.
    pub name: String,
    /// The certificate's serial (for revocation checks on every request).
    pub serial: Vec<u8>,
}

/// Identifies the client of a verified certificate, which must carry a
/// SPIFFE URI of this site.
pub fn client_of(leaf: &CertificateDer<'_>, site: &str) -> Result<ClientId, AppError> {
    let (_, cert) = X509Certificate::from_der(leaf)
        .map_err(|_| AppError::Unauthenticated("the client certificate does not parse".into()))?;
    let (cert_site, name) = spiffe_of(&cert, ident::Kind::Client)
        .map_err(|e| AppError::Unauthenticated(e.to_string()))?;
    if cert_site != site {
        return Err(AppError::Unauthenticated(
            "the client certificate belongs to another site".into(),
        ));
    }
    Ok(ClientId {
        name,
        serial: trim_serial(cert.raw_serial()),
    })
}

/// The (site, name) of the one `spiffe://<site>/<kind>/<name>` URI SAN.
fn spiffe_of(cert: &X509Certificate<'_>, kind: ident::Kind) -> Result<(String, String), AppError> {
    let bad = || {
        AppError::InvalidArgument(format!(
            "the certificate must carry one URI SAN spiffe://<site>/{kind}/<name>"
        ))
    };
    let san = cert
        .subject_alternative_name()
        .map_err(|_| bad())?
        .ok_or_else(bad)?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    let [uri] = uris.as_slice() else {
        return Err(bad());
    };
    match ident::SpiffeId::parse(uri) {
        Ok(id) if id.kind() == kind => Ok((id.site().to_string(), id.name().to_owned())),
        _ => Err(bad()),
    }
}

fn check_server_certificate(
    certificate: &[u8],
    ca: &[u8],
    public_key_der: &[u8],
) -> Result<(String, String), AppError> {
    let bad = |what: &str| AppError::InvalidArgument(what.to_owned());
    let (_, cert) = X509Certificate::from_der(certificate)
        .map_err(|_| bad("the certificate does not parse"))?;
    let (_, ca_cert) =
        X509Certificate::from_der(ca).map_err(|_| bad("the CA certificate does not parse"))?;
    if cert.public_key().raw != public_key_der {
        return Err(bad(
            "the certificate is not for this appliance's key (issue it from this appliance's CSR)",
        ));
    }
    cert.verify_signature(Some(ca_cert.public_key()))
        .map_err(|_| bad("the certificate is not signed by the given CA"))?;
    spiffe_of(&cert, ident::Kind::Appliance)
}

/// The DER of the first PEM block labelled `tag` in `bytes`.
fn one_pem(bytes: &[u8], tag: &str, what: &str) -> Result<Vec<u8>, AppError> {
    for block in Pem::iter_from_buffer(bytes) {
        let block =
            block.map_err(|e| AppError::InvalidArgument(format!("{what}: bad PEM: {e}")))?;
        if block.label == tag {
            return Ok(block.contents);
        }
    }
    Err(AppError::InvalidArgument(format!(
        "{what}: no -----BEGIN {tag}----- block"
    )))
}

fn trim_serial(raw: &[u8]) -> Vec<u8> {
    ident::Serial::from_der_integer(raw).as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// PEM and CRL parsing take operator- and network-supplied bytes.
        #[test]
        fn pem_and_crl_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = one_pem(&bytes, "CERTIFICATE", "x");
            let mut pem = b"-----BEGIN X509 CRL-----\n".to_vec();
            pem.extend_from_slice(&bytes);
            let _ = one_pem(&pem, "X509 CRL", "x");
            let ca = CertificateDer::from(bytes.clone());
            let _ = parse_crl(&bytes, &ca);
            let _ = client_of(&CertificateDer::from(bytes.clone()), "site");
        }
    }
}
