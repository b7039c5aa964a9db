//! Helpers shared by the integration tests: a fresh site in a temporary
//! directory and rustls verifiers built from a site's CA and CRL.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use provisioning::{Passphrase, Site, SiteName, UnlockedSite};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use tempfile::TempDir;

pub const PASS: &str = "correct horse battery staple";
pub const SITE: &str = "acme.example";

pub fn pass() -> Passphrase {
    Passphrase::new(PASS)
}

/// A new site `acme.example` in `<tmp>/site`.
pub fn new_site() -> (TempDir, UnlockedSite) {
    let tmp = tempfile::tempdir().unwrap();
    let site = Site::init(
        &tmp.path().join("site"),
        &SiteName::new(SITE).unwrap(),
        &pass(),
    )
    .unwrap();
    (tmp, site)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &CertificateDer<'static>) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    Arc::new(roots)
}

/// What the appliance will build: the site CA as the only root, the CRLs.
pub fn client_verifier(
    ca: &CertificateDer<'static>,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Arc<dyn ClientCertVerifier> {
    WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
        .with_crls(crls)
        .build()
        .unwrap()
}

/// What a client of the appliance builds.
pub fn server_verifier(ca: &CertificateDer<'static>) -> Arc<WebPkiServerVerifier> {
    WebPkiServerVerifier::builder_with_provider(roots(ca), provider())
        .build()
        .unwrap()
}
