//! A site: its CA, what it issued, what it revoked, and its CRL.
//!
//! Layout of a site directory (directories 0700):
//!
//! ```text
//! <site>/site.toml       name, creation time, CRL number, CRL lifetime   0644
//! <site>/ca.pem          the site CA certificate                         0644
//! <site>/ca.key.enc      the CA's PKCS#8 key, passphrase-encrypted       0600
//!                        (format: crate::keyfile)
//! <site>/crl.pem         the current CRL, signed by the CA               0644
//! <site>/revoked.toml    every revocation: serial, kind, name, time      0644
//! <site>/issued/         a copy of every certificate issued, named       0644
//!                        <kind>-<name>-<serial hex>.pem
//! ```
//!
//! [`Site::open`] reads the public parts; [`Site::unlock`] decrypts the CA
//! key with the operator's passphrase and gives an [`UnlockedSite`], the
//! only thing that can issue, revoke and sign CRLs.
//!
//! Serial numbers are random (see [`Serial`]), so the site keeps no serial
//! counter; `site.toml` keeps the number of the last CRL instead. Two
//! `provision` processes changing the same site at the same moment are not
//! guarded against.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateRevocationListParams, DistinguishedName, DnType, IsCa,
    KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData, RevokedCertParams, SerialNumber,
    SignatureAlgorithm, SigningKey,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
use zeroize::{Zeroize, Zeroizing};

use crate::cert::{
    CertKind, CertificateRequest, IssuedCert, LeafKey, LeafSpec, Serial, ServerNames, SubjectKey,
    Usage, Validity, generate_leaf_key, random_serial, rcgen_serial, spiffe_id,
};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::keyfile::{Passphrase, SealedKey};
use crate::names::{ApplianceId, ClientName, SiteName};

/// Version of `site.toml` and `revoked.toml` this build writes and reads.
const FORMAT: u64 = 1;
/// The CA certificate's lifetime.
const CA_DAYS: i64 = 3653;
/// Default time between a CRL's thisUpdate and nextUpdate. Sites that push
/// CRLs more often may lower `crl_days` in site.toml.
const DEFAULT_CRL_DAYS: u32 = 30;
/// Upper bound for reading any site file: they are all small.
const MAX_FILE: u64 = 16 * 1024 * 1024;

const SITE_TOML: &str = "site.toml";
const CA_PEM: &str = "ca.pem";
const CA_KEY: &str = "ca.key.enc";
const CRL_PEM: &str = "crl.pem";
const REVOKED_TOML: &str = "revoked.toml";
const ISSUED: &str = "issued";

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
struct SiteConfig {
    /// File format version.
    format: u64,
    /// The site name (SPIFFE trust domain).
    name: String,
    /// When `site init` ran, RFC 3339.
    created: String,
    /// Number of the newest CRL signed (crl.pem holds it, or a newer
    /// number was reserved and crl.pem is one behind after a crash).
    crl_number: u64,
    /// Days from a CRL's thisUpdate to its nextUpdate.
    #[serde(default = "default_crl_days")]
    crl_days: u32,
}

fn default_crl_days() -> u32 {
    DEFAULT_CRL_DAYS
}

#[derive(Serialize, Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct RevokedFile {
    format: u64,
    #[serde(default)]
    revoked: Vec<RevokedEntry>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct RevokedEntry {
    serial: String,
    kind: String,
    name: String,
    revoked_at: String,
}

/// One revoked certificate, as recorded in `revoked.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Revocation {
    /// Serial number of the revoked certificate.
    pub serial: Serial,
    /// Client or appliance.
    pub kind: CertKind,
    /// Client name or appliance id.
    pub name: String,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
}

/// One certificate in `issued/`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IssuedRecord {
    /// Client or appliance.
    pub kind: CertKind,
    /// Client name or appliance id.
    pub name: String,
    /// Serial number.
    pub serial: Serial,
    /// The PEM file.
    pub path: PathBuf,
}

/// What `crl.pem` says, read back with an X.509 parser.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CrlInfo {
    /// The issuer's distinguished name.
    pub issuer: String,
    /// The CRL number extension.
    pub number: Option<u64>,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    pub next_update: Option<OffsetDateTime>,
    /// Revoked serials with their revocation dates.
    pub revoked: Vec<(Serial, OffsetDateTime)>,
}

/// An opened site: its public files. Needs no passphrase.
#[derive(Debug)]
pub struct Site {
    dir: PathBuf,
    config: SiteConfig,
    name: SiteName,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    /// The CA's subject key identifier, written into every CRL as its
    /// authority key identifier.
    ca_key_id: Vec<u8>,
}

impl Site {
    /// Creates a new site in `dir`: a self-signed ECDSA P-256 CA (`<name>
    /// site CA`, CA:true with path length 0, keyCertSign + cRLSign, ten
    /// years), its key encrypted under `passphrase`, an empty CRL, and the
    /// bookkeeping files. `dir` may exist only if it is empty; an existing
    /// site is never overwritten.
    pub fn init(dir: &Path, name: &SiteName, passphrase: &Passphrase) -> Result<UnlockedSite> {
        passphrase.check_new()?;
        if dir.join(SITE_TOML).exists() || dir.join(CA_KEY).exists() {
            return Err(Error::SiteExists {
                dir: dir.to_path_buf(),
            });
        }
        if dir.exists() {
            let mut entries = fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
            if entries.next().is_some() {
                return Err(Error::DirectoryNotEmpty {
                    dir: dir.to_path_buf(),
                });
            }
        }
        fsutil::create_dir(dir)?;

        let key = CaKey(
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(Error::generate("generate the CA key"))?,
        );
        let now = OffsetDateTime::now_utc();
        let mut params = rcgen::CertificateParams::default();
        params.not_before = now - crate::cert::CLOCK_SKEW;
        params.not_after = now + Duration::days(CA_DAYS);
        params.serial_number = Some(rcgen_serial(&random_serial()?));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{name} site CA"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.key_identifier_method = KeyIdMethod::Sha256;
        let ca = params
            .self_signed(&key)
            .map_err(Error::generate("self-sign the CA certificate"))?;

        let pkcs8 = Zeroizing::new(key.0.serialize_der());
        let sealed = SealedKey::seal(&pkcs8, passphrase)?;
        fsutil::write_new(&dir.join(CA_KEY), &sealed.to_bytes(), fsutil::PRIVATE)?;
        fsutil::write_new(&dir.join(CA_PEM), ca.pem().as_bytes(), fsutil::PUBLIC)?;
        fsutil::create_dir(&dir.join(ISSUED))?;
        let empty = RevokedFile {
            format: FORMAT,
            revoked: Vec::new(),
        };
        write_toml(&dir.join(REVOKED_TOML), REVOKED_HEADER, &empty)?;
        let config = SiteConfig {
            format: FORMAT,
            name: name.to_string(),
            created: now
                .replace_nanosecond(0)
                .unwrap_or(now)
                .format(&Rfc3339)
                .map_err(|_| Error::Crypto("formatting the creation time"))?,
            crl_number: 0,
            crl_days: DEFAULT_CRL_DAYS,
        };
        write_toml(&dir.join(SITE_TOML), SITE_HEADER, &config)?;

        let mut site = Site::open(dir)?.unlock_with_key(key)?;
        site.sign_crl()?;
        Ok(site)
    }

    /// Opens an existing site's public parts.
    pub fn open(dir: &Path) -> Result<Site> {
        let toml_path = dir.join(SITE_TOML);
        if !toml_path.exists() {
            return Err(Error::NotASite {
                dir: dir.to_path_buf(),
            });
        }
        let text = read_text(&toml_path)?;
        let config: SiteConfig =
            toml::from_str(&text).map_err(|e| Error::site_file(&toml_path, e.to_string()))?;
        if config.format != FORMAT {
            return Err(Error::UnsupportedFormat {
                path: toml_path,
                version: config.format,
                known: FORMAT,
            });
        }
        let name = SiteName::new(&config.name)
            .map_err(|e| Error::site_file(&toml_path, format!("field `name`: {e}")))?;
        if !(1..=366).contains(&config.crl_days) {
            return Err(Error::site_file(
                &toml_path,
                "field `crl_days`: 1 to 366 expected",
            ));
        }

        let ca_path = dir.join(CA_PEM);
        let ca_pem = read_text(&ca_path)?;
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| Error::bad_object(&ca_path, format!("no PEM CERTIFICATE found ({e})")))?;
        let ca_key_id = {
            let (_, ca) = X509Certificate::from_der(&ca_der).map_err(|e| {
                Error::bad_object(&ca_path, format!("not a valid certificate ({e})"))
            })?;
            if !ca.is_ca() {
                return Err(Error::bad_object(&ca_path, "not a CA certificate"));
            }
            subject_key_id(&ca).ok_or_else(|| {
                Error::bad_object(&ca_path, "the CA certificate has no subject key identifier")
            })?
        };
        Ok(Site {
            dir: dir.to_path_buf(),
            config,
            name,
            ca_der,
            ca_pem,
            ca_key_id,
        })
    }

    /// Decrypts the CA key with the operator's passphrase. A wrong
    /// passphrase gives [`Error::WrongPassphrase`] ("wrong passphrase (or
    /// the CA key file is damaged)").
    pub fn unlock(self, passphrase: &Passphrase) -> Result<UnlockedSite> {
        let key_path = self.dir.join(CA_KEY);
        let bytes = fsutil::read_limited(&key_path, 64 * 1024)?;
        let pkcs8 = SealedKey::parse(&bytes, &key_path)?.open(passphrase, &key_path)?;
        let key = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
            &rcgen::PKCS_ECDSA_P256_SHA256,
        )
        .map_err(|_| Error::KeyFile {
            path: key_path.clone(),
            detail: "decrypted, but not a P-256 PKCS#8 key",
        })?;
        self.unlock_with_key(CaKey(key))
    }

    fn unlock_with_key(self, key: CaKey) -> Result<UnlockedSite> {
        let key_path = self.dir.join(CA_KEY);
        let (_, ca) = X509Certificate::from_der(&self.ca_der)
            .map_err(|e| Error::bad_object(&self.dir.join(CA_PEM), e.to_string()))?;
        if ca.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
            return Err(Error::KeyMismatch { path: key_path });
        }
        let issuer = rcgen::Issuer::from_ca_cert_der(&self.ca_der, key)
            .map_err(Error::generate("load the CA certificate as issuer"))?;
        Ok(UnlockedSite { site: self, issuer })
    }

    /// The site directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The site name (SPIFFE trust domain).
    pub fn name(&self) -> &SiteName {
        &self.name
    }

    /// When the site was created, as recorded (RFC 3339).
    pub fn created(&self) -> &str {
        &self.config.created
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The current CRL (`crl.pem`), PEM text.
    pub fn crl_pem(&self) -> Result<String> {
        read_text(&self.dir.join(CRL_PEM))
    }

    /// The current CRL, DER (what rustls' verifiers and the appliance's
    /// InstallCrl take).
    pub fn crl_der(&self) -> Result<CertificateRevocationListDer<'static>> {
        let path = self.dir.join(CRL_PEM);
        let pem = self.crl_pem()?;
        CertificateRevocationListDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| Error::bad_object(&path, format!("no PEM X509 CRL found ({e})")))
    }

    /// Reads the current CRL back with an X.509 parser.
    pub fn crl_info(&self) -> Result<CrlInfo> {
        let path = self.dir.join(CRL_PEM);
        let der = self.crl_der()?;
        let (_, crl) = x509_parser::parse_x509_crl(&der)
            .map_err(|e| Error::bad_object(&path, format!("not a valid CRL ({e})")))?;
        let number = crl.crl_number().and_then(|n| {
            let bytes = n.to_bytes_be();
            (bytes.len() <= 8).then(|| bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
        });
        Ok(CrlInfo {
            issuer: crl.issuer().to_string(),
            number,
            this_update: crl.last_update().to_datetime(),
            next_update: crl.next_update().map(|t| t.to_datetime()),
            revoked: crl
                .iter_revoked_certificates()
                .map(|r| {
                    (
                        Serial::from_der_integer(r.raw_serial()),
                        r.revocation_date.to_datetime(),
                    )
                })
                .collect(),
        })
    }

    /// Every revocation recorded in `revoked.toml`.
    pub fn revocations(&self) -> Result<Vec<Revocation>> {
        let path = self.dir.join(REVOKED_TOML);
        let file = self.read_revoked()?;
        file.revoked
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let field = |f: &str, msg: String| {
                    Error::site_file(&path, format!("entry {} field `{f}`: {msg}", i + 1))
                };
                Ok(Revocation {
                    serial: e
                        .serial
                        .parse()
                        .map_err(|x: ident::NameError| field("serial", x.to_string()))?,
                    kind: CertKind::parse(&e.kind)
                        .ok_or_else(|| field("kind", "`client` or `appliance` expected".into()))?,
                    name: e.name.clone(),
                    revoked_at: OffsetDateTime::parse(&e.revoked_at, &Rfc3339)
                        .map_err(|x| field("revoked_at", x.to_string()))?,
                })
            })
            .collect()
    }

    /// Every certificate recorded in `issued/`, in file-name order.
    pub fn issued(&self) -> Result<Vec<IssuedRecord>> {
        let dir = self.dir.join(ISSUED);
        let mut out = Vec::new();
        let entries = fs::read_dir(&dir).map_err(|e| Error::io("read directory", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read directory", &dir, e))?;
            let path = entry.path();
            let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            // Temporary files of an interrupted write start with a dot.
            let Some(stem) = file.strip_suffix(".pem").filter(|_| !file.starts_with('.')) else {
                continue;
            };
            out.push(parse_record_name(stem, &path)?);
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn read_revoked(&self) -> Result<RevokedFile> {
        let path = self.dir.join(REVOKED_TOML);
        let text = read_text(&path)?;
        let file: RevokedFile =
            toml::from_str(&text).map_err(|e| Error::site_file(&path, e.to_string()))?;
        if file.format != FORMAT {
            return Err(Error::UnsupportedFormat {
                path,
                version: file.format,
                known: FORMAT,
            });
        }
        Ok(file)
    }
}

/// A site whose CA key is decrypted: it can issue, revoke and sign CRLs.
/// The key is zeroized when this is dropped; `Debug` does not show it.
#[derive(Debug)]
pub struct UnlockedSite {
    site: Site,
    issuer: rcgen::Issuer<'static, CaKey>,
}

impl std::ops::Deref for UnlockedSite {
    type Target = Site;
    fn deref(&self) -> &Site {
        &self.site
    }
}

impl UnlockedSite {
    /// The site's public parts.
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// Issues a client certificate with a fresh P-256 key: EKU clientAuth
    /// only, URI SAN `spiffe://<site>/client/<name>`, CN = name.
    pub fn issue_client(&mut self, name: &ClientName, validity: Validity) -> Result<IssuedCert> {
        self.issue_client_with(name, validity, Usage::ClientAuth)
    }

    /// Like [`UnlockedSite::issue_client`] with an explicit extended key
    /// usage: `Usage::ServerAuth` makes a certificate the appliance must
    /// refuse as a client certificate (for tests).
    pub fn issue_client_with(
        &mut self,
        name: &ClientName,
        validity: Validity,
        usage: Usage,
    ) -> Result<IssuedCert> {
        let spec = LeafSpec {
            site: self.site.name.as_str(),
            kind: CertKind::Client,
            name: name.as_str(),
            usage,
            validity,
            names: None,
        };
        self.issue(&spec, SubjectKey::Generate)
    }

    /// Issues an appliance's server certificate: EKU serverAuth only, URI
    /// SAN `spiffe://<site>/appliance/<id>` plus the DNS and IP SANs, CN =
    /// id. The key is generated here or taken from a verified CSR.
    pub fn issue_appliance(
        &mut self,
        id: &ApplianceId,
        names: &ServerNames,
        key: SubjectKey,
        validity: Validity,
    ) -> Result<IssuedCert> {
        let spec = LeafSpec {
            site: self.site.name.as_str(),
            kind: CertKind::Appliance,
            name: id.as_str(),
            usage: Usage::ServerAuth,
            validity,
            names: Some(names),
        };
        self.issue(&spec, key)
    }

    /// Convenience for [`UnlockedSite::issue_appliance`] with a CSR.
    pub fn issue_appliance_from_csr(
        &mut self,
        id: &ApplianceId,
        names: &ServerNames,
        csr: CertificateRequest,
        validity: Validity,
    ) -> Result<IssuedCert> {
        self.issue_appliance(id, names, SubjectKey::Csr(csr), validity)
    }

    fn issue(&self, spec: &LeafSpec<'_>, key: SubjectKey) -> Result<IssuedCert> {
        let serial = random_serial()?;
        let params = spec.params(&serial)?;
        let (cert, key_pem, key_der) = match key {
            SubjectKey::Generate => {
                let LeafKey { key, pem, der } = generate_leaf_key()?;
                let cert = params
                    .signed_by(&*key, &self.issuer)
                    .map_err(Error::generate("sign the certificate"))?;
                (cert, Some(pem), Some(der))
            }
            SubjectKey::Csr(csr) => {
                let cert = params
                    .signed_by(&csr.key, &self.issuer)
                    .map_err(Error::generate("sign the certificate"))?;
                (cert, None, None)
            }
        };
        let pem = cert.pem();
        let record = self.site.dir.join(ISSUED).join(format!(
            "{}-{}-{}.pem",
            spec.kind.as_str(),
            spec.name,
            serial.to_hex()
        ));
        fsutil::write_new(&record, pem.as_bytes(), fsutil::PUBLIC)?;
        Ok(IssuedCert {
            kind: spec.kind,
            name: spec.name.to_owned(),
            serial,
            der: cert.der().clone(),
            pem,
            key_pem,
            key_der,
            ca_pem: self.site.ca_pem.clone(),
            record,
        })
    }

    /// Revokes every certificate issued to client `name` that is not
    /// revoked yet, then signs a new CRL. Returns the serials newly
    /// revoked (empty if all were revoked already, in which case no new CRL
    /// is signed). A client the site never issued to is an error.
    pub fn revoke_client(&mut self, name: &ClientName) -> Result<Vec<Serial>> {
        let expected_uri = spiffe_id(&self.site.name, CertKind::Client, name.as_str())?;
        let records: Vec<IssuedRecord> = self
            .site
            .issued()?
            .into_iter()
            .filter(|r| r.kind == CertKind::Client && r.name == name.as_str())
            .collect();
        if records.is_empty() {
            return Err(Error::NotIssued(format!(
                "the site {} never issued a certificate to client `{name}`",
                self.site.name
            )));
        }
        // Trust the certificate, not its file name.
        for r in &records {
            check_record(r, &expected_uri)?;
        }
        self.revoke_records(&records)
    }

    /// Revokes one certificate by serial (any kind) and signs a new CRL.
    /// Returns false if it was revoked already.
    pub fn revoke_serial(&mut self, serial: &Serial) -> Result<bool> {
        let record = self
            .site
            .issued()?
            .into_iter()
            .find(|r| &r.serial == serial)
            .ok_or_else(|| {
                Error::NotIssued(format!(
                    "the site {} never issued a certificate with serial {serial}",
                    self.site.name
                ))
            })?;
        let expected = spiffe_id(&self.site.name, record.kind, &record.name)?;
        check_record(&record, &expected)?;
        Ok(!self.revoke_records(&[record])?.is_empty())
    }

    fn revoke_records(&mut self, records: &[IssuedRecord]) -> Result<Vec<Serial>> {
        let mut file = self.site.read_revoked()?;
        let already: Vec<Serial> = self
            .site
            .revocations()?
            .into_iter()
            .map(|r| r.serial)
            .collect();
        let now = OffsetDateTime::now_utc();
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let stamp = now
            .format(&Rfc3339)
            .map_err(|_| Error::Crypto("formatting the revocation time"))?;
        let mut newly = Vec::new();
        for r in records {
            if already.contains(&r.serial) || newly.contains(&r.serial) {
                continue;
            }
            file.revoked.push(RevokedEntry {
                serial: r.serial.to_hex(),
                kind: r.kind.as_str().to_owned(),
                name: r.name.clone(),
                revoked_at: stamp.clone(),
            });
            newly.push(r.serial.clone());
        }
        if newly.is_empty() {
            return Ok(newly);
        }
        // revoked.toml is the source of truth: written first, so a crash
        // before the CRL is signed is repaired by `crl update`.
        write_toml(&self.site.dir.join(REVOKED_TOML), REVOKED_HEADER, &file)?;
        self.sign_crl()?;
        Ok(newly)
    }

    /// Signs a new CRL listing every revocation, with the next CRL number,
    /// thisUpdate now and nextUpdate `crl_days` (30 by default) later, and
    /// writes it to `crl.pem`.
    pub fn sign_crl(&mut self) -> Result<()> {
        let revoked = self.site.revocations()?;
        let number = self.site.config.crl_number.checked_add(1).ok_or_else(|| {
            Error::site_file(
                &self.site.dir.join(SITE_TOML),
                "field `crl_number` overflows",
            )
        })?;
        // Reserve the number before using it: a crash in between skips a
        // number (harmless) instead of reusing one.
        self.site.config.crl_number = number;
        write_toml(
            &self.site.dir.join(SITE_TOML),
            SITE_HEADER,
            &self.site.config,
        )?;
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::days(i64::from(self.site.config.crl_days)),
            crl_number: SerialNumber::from_slice(&minimal_be(number)),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|r| RevokedCertParams {
                    serial_number: rcgen_serial(&r.serial),
                    revocation_time: r.revoked_at,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::PreSpecified(self.site.ca_key_id.clone()),
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(Error::generate("sign the CRL"))?;
        let pem = crl.pem().map_err(Error::generate("encode the CRL"))?;
        fsutil::replace(&self.site.dir.join(CRL_PEM), pem.as_bytes(), fsutil::PUBLIC)
    }
}

/// The CA's signing key. Zeroizes rcgen's copy of the PKCS#8 document on
/// drop (ring's parsed key has no zeroizing drop of its own).
struct CaKey(KeyPair);

impl Drop for CaKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        PublicKeyData::der_bytes(&self.0)
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        PublicKeyData::algorithm(&self.0)
    }
}

impl SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg)
    }
}

const SITE_HEADER: &str = "\
# A provision site. Written by `provision`; do not edit except `crl_days`
# (days from a CRL's thisUpdate to its nextUpdate, 1 to 366).
# Serial numbers are random, so there is no serial counter here;
# crl_number is the number of the newest CRL signed.
";

const REVOKED_HEADER: &str = "\
# Certificates revoked by this site, the source of crl.pem.
# Written by `provision client revoke`; do not edit.
";

fn write_toml<T: Serialize>(path: &Path, header: &str, value: &T) -> Result<()> {
    let body = toml::to_string(value).map_err(|e| Error::site_file(path, e.to_string()))?;
    let text = format!("{header}{body}");
    fsutil::replace(path, text.as_bytes(), fsutil::PUBLIC)
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = fsutil::read_limited(path, MAX_FILE)?;
    String::from_utf8(bytes).map_err(|_| Error::bad_object(path, "not UTF-8 text"))
}

fn minimal_be(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(7);
    bytes[start..].to_vec()
}

fn subject_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

/// `<kind>-<name>-<serial hex>`: kind before the first dash, serial after
/// the last (names may contain dashes, serials do not).
fn parse_record_name(stem: &str, path: &Path) -> Result<IssuedRecord> {
    let bad = || {
        Error::bad_object(
            path,
            "unexpected file in issued/ (expected <kind>-<name>-<serial hex>.pem)",
        )
    };
    let (kind, rest) = stem.split_once('-').ok_or_else(bad)?;
    let (name, serial) = rest.rsplit_once('-').ok_or_else(bad)?;
    let kind = CertKind::parse(kind).ok_or_else(bad)?;
    ClientName::new(name).map_err(|_| bad())?;
    let serial: Serial = serial.parse().map_err(|_| bad())?;
    Ok(IssuedRecord {
        kind,
        name: name.to_owned(),
        serial,
        path: path.to_path_buf(),
    })
}

/// Checks that an `issued/` file holds the certificate its name says.
fn check_record(record: &IssuedRecord, expected_uri: &str) -> Result<()> {
    let pem = read_text(&record.path)?;
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| Error::bad_object(&record.path, format!("no PEM CERTIFICATE ({e})")))?;
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|e| Error::bad_object(&record.path, format!("not a certificate ({e})")))?;
    let serial = Serial::from_der_integer(cert.raw_serial());
    let uri_ok = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value
                .general_names
                .iter()
                .any(|n| matches!(n, GeneralName::URI(u) if *u == expected_uri))
        });
    if serial != record.serial || !uri_ok {
        return Err(Error::bad_object(
            &record.path,
            "the certificate does not match its file name (serial or URI SAN differ)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn record_names() {
        let p = Path::new("issued/x.pem");
        let r = parse_record_name("client-billing-app-4abc", p).unwrap();
        assert_eq!(r.kind, CertKind::Client);
        assert_eq!(r.name, "billing-app");
        assert_eq!(r.serial.to_hex(), "4abc");
        assert!(parse_record_name("client-4abc", p).is_err());
        assert!(parse_record_name("server-a-4abc", p).is_err());
        assert!(parse_record_name("client-A-4abc", p).is_err());
    }

    #[test]
    fn minimal_big_endian() {
        assert_eq!(minimal_be(0), vec![0]);
        assert_eq!(minimal_be(1), vec![1]);
        assert_eq!(minimal_be(0x1234), vec![0x12, 0x34]);
    }
}
