//! Identities: the appliance's own (its TLS key, kept only in the keystore,
//! its certificate, the site's client CA and CRL) and its clients' (the
//! SPIFFE URI in their certificates).

use std::collections::HashSet;

use keystore::Store;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::*;
use zeroize::Zeroizing;

use crate::error::AppError;

const TREE: &str = "identity";
const PURPOSE: &str = "identity";
const KEY: &[u8] = b"tls-key";
const CERT: &[u8] = b"tls-certificate";
const CLIENT_CA: &[u8] = b"client-ca";
const CRL: &[u8] = b"crl";

/// What the appliance serves TLS with. The private key exists only here
/// and, wrapped, in the keystore.
pub struct ServerIdentity {
    /// PKCS#8 DER of the TLS key.
    pub key: Zeroizing<Vec<u8>>,
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

/// Creates the TLS key inside the keystore (replacing any earlier one) and
/// returns a PEM certificate signing request for `dns` names and `ips`.
pub fn create_csr(
    store: &Store,
    dns: &[String],
    ips: &[std::net::IpAddr],
) -> Result<String, AppError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| AppError::Internal(format!("key generation: {e}")))?;
    let mut params = rcgen::CertificateParams::new(dns.to_vec())
        .map_err(|e| AppError::InvalidArgument(format!("--dns: {e}")))?;
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
    let csr = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| AppError::Internal(format!("CSR: {e}")))?;
    let der = Zeroizing::new(key.serialize_der());
    store.tree(TREE, PURPOSE)?.put(KEY, &der)?;
    Ok(csr)
}

/// Installs the appliance certificate and the site CA after checking that
/// the certificate is for the key in the keystore, is signed by the CA, and
/// names this appliance with a SPIFFE URI. Returns (site, appliance id).
pub fn install(
    store: &Store,
    certificate_pem: &[u8],
    ca_pem: &[u8],
) -> Result<(String, String), AppError> {
    let tree = store.tree(TREE, PURPOSE)?;
    let key_der = tree.get(KEY)?.ok_or_else(|| {
        AppError::InvalidArgument(
            "no TLS key in the keystore: run `appliance identity csr` first".into(),
        )
    })?;
    let certificate = one_pem(certificate_pem, "CERTIFICATE", "the certificate")?;
    let ca = one_pem(ca_pem, "CERTIFICATE", "the CA certificate")?;
    let key = rcgen::KeyPair::try_from(key_der.as_slice())
        .map_err(|e| AppError::Internal(format!("stored TLS key: {e}")))?;
    let (site, id) = check_server_certificate(
        &certificate,
        &ca,
        &rcgen::PublicKeyData::subject_public_key_info(&key),
    )?;
    let batch: [(&[u8], &[u8]); 2] = [(CERT, &certificate), (CLIENT_CA, &ca)];
    tree.put_all(batch)?;
    Ok((site, id))
}

/// Loads the identity, or explains how to install one.
pub fn load(store: &Store) -> Result<ServerIdentity, AppError> {
    let tree = store.tree(TREE, PURPOSE)?;
    let missing = |what: &str| {
        AppError::InvalidArgument(format!(
            "no {what} installed: run `appliance identity csr`, have the site CA sign it \
             (`provision appliance issue --csr`), then `appliance identity install`"
        ))
    };
    let key = tree.get(KEY)?.ok_or_else(|| missing("TLS key"))?;
    let certificate = tree.get(CERT)?.ok_or_else(|| missing("certificate"))?;
    let ca = tree.get(CLIENT_CA)?.ok_or_else(|| missing("client CA"))?;
    let (_, cert) = X509Certificate::from_der(&certificate)
        .map_err(|e| AppError::Internal(format!("stored certificate: {e}")))?;
    let (site, appliance_id) = spiffe_of(&cert, ident::Kind::Appliance)?;
    Ok(ServerIdentity {
        key: Zeroizing::new(key.to_vec()),
        certificate: CertificateDer::from(certificate.to_vec()),
        client_ca: CertificateDer::from(ca.to_vec()),
        site,
        appliance_id,
    })
}

impl ServerIdentity {
    /// The key in the form rustls takes.
    pub fn private_key(&self) -> PrivatePkcs8KeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key.to_vec())
    }
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
