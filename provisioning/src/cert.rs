//! What goes into a certificate: serial numbers, validity, key usage, the
//! subject key (generated here or taken from a CSR), and the issued result.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509CertificationRequest};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::names::SiteName;

/// How far `not_before` is set into the past, so a certificate is valid at
/// once on an appliance whose clock is a little behind the operator's.
pub const CLOCK_SKEW: Duration = Duration::minutes(5);
/// Longest validity `Validity::days` accepts (ten years and a bit).
pub const MAX_DAYS: u32 = 3660;

pub use ident::Serial;

/// A fresh random serial of 126 bits: 16 bytes whose first byte is in
/// `0x40..=0x7f`, so the DER integer is positive, never shortened, and
/// always 16 bytes long (RFC 5280 asks for at most 20 and at least 64 bits
/// of randomness is the CA/B forum's rule).
pub(crate) fn random_serial() -> Result<Serial> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Crypto("serial number generation"))?;
    bytes[0] = (bytes[0] & 0x3f) | 0x40;
    Ok(Serial::from_der_integer(&bytes))
}

pub(crate) fn rcgen_serial(serial: &Serial) -> SerialNumber {
    SerialNumber::from_slice(serial.as_bytes())
}

/// A certificate's validity period.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Validity {
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl Validity {
    /// From [`CLOCK_SKEW`] ago until `days` days from now (1 ..=
    /// [`MAX_DAYS`]).
    pub fn days(days: u32) -> Result<Self> {
        if !(1..=MAX_DAYS).contains(&days) {
            return Err(Error::invalid(
                "--days",
                &days.to_string(),
                format!("1 to {MAX_DAYS} expected"),
            ));
        }
        let now = OffsetDateTime::now_utc();
        Ok(Self {
            not_before: now - CLOCK_SKEW,
            not_after: now + Duration::days(i64::from(days)),
        })
    }

    /// An explicit period, e.g. one that is already over or not yet begun
    /// (for tests of expiry handling). `not_after` must be later than
    /// `not_before`; both must lie in the years 1950 ..= 9999.
    pub fn between(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<Self> {
        let range = 1950..=9999;
        if !range.contains(&not_before.year()) || !range.contains(&not_after.year()) {
            return Err(Error::invalid(
                "validity",
                &format!("{not_before} .. {not_after}"),
                "years 1950 to 9999 expected",
            ));
        }
        if not_after <= not_before {
            return Err(Error::invalid(
                "validity",
                &format!("{not_before} .. {not_after}"),
                "not_after must be later than not_before",
            ));
        }
        Ok(Self {
            not_before,
            not_after,
        })
    }

    /// Start of the period.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// End of the period.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
}

/// The one extended key usage a leaf certificate gets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Usage {
    /// `clientAuth` only: an app or operator calling the appliance.
    ClientAuth,
    /// `serverAuth` only: an appliance's TLS server certificate. A client
    /// certificate made with this usage must be refused by the appliance.
    ServerAuth,
}

impl Usage {
    fn eku(self) -> ExtendedKeyUsagePurpose {
        match self {
            Usage::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
            Usage::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
        }
    }
}

/// Which kind of identity a certificate names; the first segment of its
/// SPIFFE path and of its file name under `issued/`.
pub use ident::Kind as CertKind;

/// The SPIFFE id of an identity of `site`, as the URI SAN holds it.
pub fn spiffe_id(site: &SiteName, kind: CertKind, name: &str) -> Result<String> {
    Ok(ident::SpiffeId::new(site, kind, name)?.to_string())
}

/// The DNS names and IP addresses an appliance's server certificate is
/// valid for. At least one of either.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ServerNames {
    dns: Vec<String>,
    ips: Vec<IpAddr>,
}

impl ServerNames {
    /// Checks each DNS name (a syntactically valid host name, no wildcard;
    /// stored lower-case) and requires at least one name or address.
    pub fn new(dns: &[String], ips: &[IpAddr]) -> Result<Self> {
        let mut checked = Vec::with_capacity(dns.len());
        for name in dns {
            if name.contains('*')
                || name.parse::<IpAddr>().is_ok()
                || rustls_pki_types::DnsName::try_from(name.as_str()).is_err()
            {
                return Err(Error::invalid(
                    "--dns",
                    name,
                    "a host name such as appliance.example.internal (no wildcard; IP addresses go in --ip)",
                ));
            }
            checked.push(name.to_ascii_lowercase());
        }
        if checked.is_empty() && ips.is_empty() {
            return Err(Error::invalid(
                "--dns/--ip",
                "",
                "an appliance certificate needs at least one --dns name or --ip address",
            ));
        }
        Ok(Self {
            dns: checked,
            ips: ips.to_vec(),
        })
    }

    /// The DNS names.
    pub fn dns(&self) -> &[String] {
        &self.dns
    }

    /// The IP addresses.
    pub fn ips(&self) -> &[IpAddr] {
        &self.ips
    }
}

/// A certificate signing request whose self-signature has been verified.
/// Only its public key is used: the subject and any extensions it asks for
/// are ignored (the site decides names and usages).
#[derive(Clone, Debug)]
pub struct CertificateRequest {
    pub(crate) key: rcgen::SubjectPublicKeyInfo,
    spki_der: Vec<u8>,
}

impl CertificateRequest {
    /// Parses a PEM `CERTIFICATE REQUEST` and verifies its signature.
    /// `origin` names the file in error messages.
    pub fn from_pem(pem: &[u8], origin: &Path) -> Result<Self> {
        let der = CertificateSigningRequestDer::from_pem_slice(pem).map_err(|e| {
            Error::bad_object(origin, format!("no PEM CERTIFICATE REQUEST found ({e})"))
        })?;
        Self::from_der(der.as_ref(), origin)
    }

    /// Parses a DER CSR and verifies its signature. Accepts ECDSA P-256 and
    /// P-384 and Ed25519 keys.
    pub fn from_der(der: &[u8], origin: &Path) -> Result<Self> {
        let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|e| {
            Error::bad_object(
                origin,
                format!("not a valid certificate signing request ({e})"),
            )
        })?;
        if !rest.is_empty() {
            return Err(Error::bad_object(
                origin,
                "trailing bytes after the certificate signing request",
            ));
        }
        csr.verify_signature().map_err(|_| Error::CsrSignature {
            path: origin.to_path_buf(),
        })?;
        let spki_der = csr.certification_request_info.subject_pki.raw.to_vec();
        let unsupported = || {
            Error::bad_object(
                origin,
                "unsupported key type in the CSR; use ECDSA P-256 (or P-384, Ed25519)",
            )
        };
        let key = rcgen::SubjectPublicKeyInfo::from_der(&spki_der).map_err(|_| unsupported())?;
        let alg = key.algorithm();
        if alg != &rcgen::PKCS_ECDSA_P256_SHA256
            && alg != &rcgen::PKCS_ECDSA_P384_SHA384
            && alg != &rcgen::PKCS_ED25519
        {
            return Err(unsupported());
        }
        Ok(Self { key, spki_der })
    }

    /// The requested public key as a DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        &self.spki_der
    }
}

/// Where an issued certificate's key comes from.
#[derive(Debug)]
#[non_exhaustive]
pub enum SubjectKey {
    /// Generate a fresh ECDSA P-256 key here; it is returned in
    /// [`IssuedCert::key_pem`].
    Generate,
    /// Certify the key of a verified CSR; the private key stays wherever
    /// the CSR was made (a TPM, say).
    Csr(CertificateRequest),
}

/// Everything that describes a leaf certificate except the issuer.
pub(crate) struct LeafSpec<'a> {
    pub(crate) site: &'a str,
    pub(crate) kind: CertKind,
    pub(crate) name: &'a str,
    pub(crate) usage: Usage,
    pub(crate) validity: Validity,
    pub(crate) names: Option<&'a ServerNames>,
}

impl LeafSpec<'_> {
    pub(crate) fn params(&self, serial: &Serial) -> Result<rcgen::CertificateParams> {
        let mut params = rcgen::CertificateParams::default();
        params.not_before = self.validity.not_before;
        params.not_after = self.validity.not_after;
        params.serial_number = Some(rcgen_serial(serial));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.name);
        params.distinguished_name = dn;
        let uri = spiffe_id(&SiteName::new(self.site)?, self.kind, self.name)?;
        let mut sans = vec![SanType::URI(
            uri.as_str()
                .try_into()
                .map_err(Error::generate("encode the URI SAN"))?,
        )];
        if let Some(names) = self.names {
            for dns in &names.dns {
                sans.push(SanType::DnsName(
                    dns.as_str()
                        .try_into()
                        .map_err(Error::generate("encode a DNS SAN"))?,
                ));
            }
            sans.extend(names.ips.iter().copied().map(SanType::IpAddress));
        }
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![self.usage.eku()];
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }
}

/// A certificate just issued by the site CA, with its key if the key was
/// generated here.
pub struct IssuedCert {
    pub(crate) kind: CertKind,
    pub(crate) name: String,
    pub(crate) serial: Serial,
    pub(crate) der: CertificateDer<'static>,
    pub(crate) pem: String,
    pub(crate) key_pem: Option<Zeroizing<String>>,
    pub(crate) key_der: Option<Zeroizing<Vec<u8>>>,
    pub(crate) ca_pem: String,
    pub(crate) record: PathBuf,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("serial", &self.serial)
            .field("has_key", &self.key_pem.is_some())
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl IssuedCert {
    /// Client or appliance.
    pub fn kind(&self) -> CertKind {
        self.kind
    }

    /// The client name or appliance id.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The serial number.
    pub fn serial(&self) -> &Serial {
        &self.serial
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    /// The site CA certificate, PEM (what a peer needs as its trust root).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The generated private key as PKCS#8 PEM, if the key was generated
    /// here ([`SubjectKey::Generate`]).
    pub fn key_pem(&self) -> Option<&str> {
        self.key_pem.as_ref().map(|k| k.as_str())
    }

    /// The generated private key, DER, for rustls.
    pub fn key_der(&self) -> Option<PrivateKeyDer<'static>> {
        self.key_der
            .as_ref()
            .and_then(|k| PrivateKeyDer::try_from(k.to_vec()).ok())
    }

    /// The copy of the certificate kept in the site's `issued/` directory.
    pub fn record_path(&self) -> &Path {
        &self.record
    }

    /// Writes `ca.pem` and `cert.pem` (0644) and, if the key was generated
    /// here, `key.pem` (0600) into `out`, creating it (0700) if needed.
    /// These are the three files the stock Triton client takes as
    /// `root_certificates`, `certificate_chain` and `private_key`. Refuses
    /// to overwrite any of them; returns the paths written.
    pub fn write_bundle(&self, out: &Path) -> Result<Vec<PathBuf>> {
        check_bundle_target(out, self.key_pem.is_some())?;
        fsutil::create_dir(out)?;
        let mut files: Vec<(&str, &[u8], u32)> = vec![
            ("ca.pem", self.ca_pem.as_bytes(), fsutil::PUBLIC),
            ("cert.pem", self.pem.as_bytes(), fsutil::PUBLIC),
        ];
        if let Some(key) = &self.key_pem {
            files.push(("key.pem", key.as_bytes(), fsutil::PRIVATE));
        }
        let mut written = Vec::new();
        for (name, bytes, mode) in files {
            let path = out.join(name);
            fsutil::write_new(&path, bytes, mode)?;
            written.push(path);
        }
        Ok(written)
    }
}

/// Checks that [`IssuedCert::write_bundle`] would not overwrite anything in
/// `out`, so the CLI can refuse before it issues (and records) a
/// certificate nobody receives.
pub fn check_bundle_target(out: &Path, with_key: bool) -> Result<()> {
    let names: &[&str] = if with_key {
        &["ca.pem", "cert.pem", "key.pem"]
    } else {
        &["ca.pem", "cert.pem"]
    };
    for name in names {
        let path = out.join(name);
        if path.symlink_metadata().is_ok() {
            return Err(Error::OutputExists { path });
        }
    }
    if out.exists() && !out.is_dir() {
        return Err(Error::bad_object(out, "exists and is not a directory"));
    }
    Ok(())
}

/// A freshly generated leaf key with its PKCS#8 encodings, all zeroized
/// on drop.
pub(crate) struct LeafKey {
    pub(crate) key: Zeroizing<KeyPair>,
    pub(crate) pem: Zeroizing<String>,
    pub(crate) der: Zeroizing<Vec<u8>>,
}

/// Generates an ECDSA P-256 key for a leaf certificate.
pub(crate) fn generate_leaf_key() -> Result<LeafKey> {
    let key = Zeroizing::new(KeyPair::generate().map_err(Error::generate("generate a P-256 key"))?);
    let pem = Zeroizing::new(key.serialize_pem());
    let der = Zeroizing::new(key.serialize_der());
    Ok(LeafKey { key, pem, der })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn random_serials_are_positive_and_distinct() {
        let a = random_serial().unwrap();
        let b = random_serial().unwrap();
        assert_ne!(a, b);
        for s in [a, b] {
            assert_eq!(s.as_bytes().len(), 16);
            assert!(s.as_bytes()[0] >= 0x40 && s.as_bytes()[0] < 0x80);
            assert_eq!(s.to_hex().parse::<Serial>().unwrap(), s);
        }
    }

    #[test]
    fn validity_rules() {
        assert!(Validity::days(0).is_err());
        assert!(Validity::days(MAX_DAYS + 1).is_err());
        let v = Validity::days(1).unwrap();
        assert!(v.not_before() < OffsetDateTime::now_utc());
        let now = OffsetDateTime::now_utc();
        assert!(Validity::between(now, now).is_err());
        assert!(Validity::between(now, now - Duration::days(1)).is_err());
        assert!(Validity::between(now - Duration::days(2), now - Duration::days(1)).is_ok());
    }

    #[test]
    fn server_names_rules() {
        assert!(ServerNames::new(&[], &[]).is_err());
        assert!(ServerNames::new(&["*.example".into()], &[]).is_err());
        assert!(ServerNames::new(&["a b".into()], &[]).is_err());
        assert!(ServerNames::new(&["10.0.0.1".into()], &[]).is_err());
        let n = ServerNames::new(&["Box.Example".into()], &["10.0.0.1".parse().unwrap()]).unwrap();
        assert_eq!(n.dns(), ["box.example"]);
    }
}
