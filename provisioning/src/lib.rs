//! Provisioning: the operator's side of the appliance.
//!
//! Offline, a *site* ([`Site`]) is a directory holding the site CA (ECDSA
//! P-256, its key encrypted under the operator's passphrase, see
//! [`keyfile`]), a copy of every certificate it issued, the revocations and
//! the current CRL. [`Site::unlock`] gives an [`UnlockedSite`], which issues
//! client certificates (`spiffe://<site>/client/<name>`, clientAuth) and
//! appliance server certificates (`spiffe://<site>/appliance/<id>` plus DNS
//! and IP names, serverAuth; key generated here or taken from a CSR),
//! revokes, and signs CRLs that rustls-webpki accepts.
//!
//! Online, [`admin::AdminSession`] talks to an appliance's admin service
//! over mutual TLS 1.3: grants, CRL installation, model upload, audit
//! export. It is the only async part of the crate; the runtime lives in the
//! `provision` binary.
//!
//! ```no_run
//! # fn main() -> provisioning::Result<()> {
//! use provisioning::{ClientName, Passphrase, Site, SiteName, Validity};
//! let pass = Passphrase::new("correct horse battery");
//! let mut site = Site::init("site".as_ref(), &SiteName::new("acme")?, &pass)?;
//! let cert = site.issue_client(&ClientName::new("billing")?, Validity::days(365)?)?;
//! cert.write_bundle("billing".as_ref())?; // ca.pem, cert.pem, key.pem
//! site.revoke_client(&ClientName::new("billing")?)?; // and re-signs crl.pem
//! let crl_der = site.crl_der()?;
//! # let _ = crl_der; Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod admin;
mod cert;
pub mod enroll;
mod error;
mod fsutil;
pub mod grant;
pub mod keyfile;
mod names;
mod site;

pub use cert::{
    CLOCK_SKEW, CertKind, CertificateRequest, IssuedCert, MAX_DAYS, Serial, ServerNames,
    SubjectKey, Usage, Validity, check_bundle_target, spiffe_id,
};
pub use error::{Error, Result};
pub use keyfile::Passphrase;
pub use names::{ApplianceId, ClientName, ModelName, SiteName};
pub use site::{CrlInfo, IssuedRecord, Revocation, Site, UnlockedSite};
pub use wire::code_name;

/// The environment variable from which `provision` reads the CA passphrase
/// when it is set (for scripts and tests); otherwise it asks on the
/// terminal.
pub const PASSPHRASE_ENV: &str = "PROVISION_PASSPHRASE";
