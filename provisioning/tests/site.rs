//! The site directory: creation, the encrypted CA key, refusing to
//! overwrite, file modes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{PASS, SITE, new_site, pass};
use provisioning::keyfile::SealedKey;
use provisioning::{Error, Passphrase, Site, SiteName};
use rcgen::PublicKeyData;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_then_unlock_with_the_right_passphrase_only() {
    let (tmp, site) = new_site();
    let dir = tmp.path().join("site");
    assert_eq!(site.name().as_str(), SITE);
    drop(site);

    let unlocked = Site::open(&dir).unwrap().unlock(&pass()).unwrap();
    assert_eq!(unlocked.name().as_str(), SITE);

    let err = Site::open(&dir)
        .unwrap()
        .unlock(&Passphrase::new("correct horse battery stapler"))
        .unwrap_err();
    assert!(matches!(err, Error::WrongPassphrase { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("wrong passphrase (or the CA key file is damaged)"),
        "{msg}"
    );
    assert!(msg.contains("ca.key.enc"), "{msg}");
    assert!(!msg.contains(PASS));
}

#[test]
fn the_key_file_holds_no_plaintext_key() {
    let (tmp, site) = new_site();
    let dir = tmp.path().join("site");
    let key_path = dir.join("ca.key.enc");
    let file = std::fs::read(&key_path).unwrap();

    // Decrypt it through the documented format to get the real PKCS#8.
    let pkcs8 = SealedKey::parse(&file, &key_path)
        .unwrap()
        .open(&pass(), &key_path)
        .unwrap();
    let key = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
    let (_, ca) = X509Certificate::from_der(site.ca_der()).unwrap();
    assert_eq!(
        ca.tbs_certificate.subject_pki.raw,
        key.subject_public_key_info().as_slice(),
        "the encrypted key is the CA's key"
    );

    // No 16-byte window of the PKCS#8 document (which holds the private
    // scalar) appears in the file, nor does its PEM body.
    for window in pkcs8.windows(16) {
        assert!(
            !file.windows(16).any(|w| w == window),
            "plaintext key bytes found in ca.key.enc"
        );
    }
    let pem = key.serialize_pem();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!String::from_utf8_lossy(&file).contains(&body[..32]));
    assert_eq!(mode(&key_path), 0o600);
}

#[test]
fn a_site_is_never_overwritten() {
    let (tmp, _site) = new_site();
    let dir = tmp.path().join("site");
    let before = std::fs::read(dir.join("ca.key.enc")).unwrap();
    let err = Site::init(&dir, &SiteName::new("other").unwrap(), &pass()).unwrap_err();
    assert!(matches!(err, Error::SiteExists { .. }), "{err:?}");
    assert!(err.to_string().contains("refusing to overwrite"));
    assert_eq!(std::fs::read(dir.join("ca.key.enc")).unwrap(), before);

    // A directory with other files is refused too; an empty one is fine.
    let busy = tmp.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), b"x").unwrap();
    let err = Site::init(&busy, &SiteName::new("b").unwrap(), &pass()).unwrap_err();
    assert!(matches!(err, Error::DirectoryNotEmpty { .. }), "{err:?}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    Site::init(&empty, &SiteName::new("e").unwrap(), &pass()).unwrap();
}

#[test]
fn weak_passphrases_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("site");
    let err = Site::init(
        &dir,
        &SiteName::new("s").unwrap(),
        &Passphrase::new("short"),
    )
    .unwrap_err();
    assert!(matches!(err, Error::WeakPassphrase(_)), "{err:?}");
    assert!(err.is_usage());
    assert!(!dir.exists());
}

#[test]
fn files_and_modes() {
    let (tmp, _site) = new_site();
    let dir = tmp.path().join("site");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("issued")), 0o700);
    assert_eq!(mode(&dir.join("ca.key.enc")), 0o600);
    for public in ["ca.pem", "crl.pem", "site.toml", "revoked.toml"] {
        assert_eq!(mode(&dir.join(public)), 0o644, "{public}");
    }
    let toml = std::fs::read_to_string(dir.join("site.toml")).unwrap();
    assert!(toml.contains("name = \"acme.example\""), "{toml}");
    assert!(toml.contains("crl_number = 1"), "{toml}");
    // No temporary files left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

#[test]
fn the_ca_certificate() {
    let (_tmp, site) = new_site();
    let (_, ca) = X509Certificate::from_der(site.ca_der()).unwrap();
    assert_eq!(ca.subject().to_string(), "CN=acme.example site CA");
    assert_eq!(ca.subject(), ca.issuer());
    ca.verify_signature(None).unwrap();
    let bc = ca.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    let ku = ca.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    assert!(!ku.digital_signature());
    let validity = ca.validity();
    let years =
        (validity.not_after.to_datetime() - validity.not_before.to_datetime()).whole_days() / 365;
    assert_eq!(years, 10);
    assert!(validity.not_before.to_datetime() <= OffsetDateTime::now_utc());
    // ECDSA P-256.
    assert_eq!(
        ca.tbs_certificate
            .subject_pki
            .algorithm
            .algorithm
            .to_id_string(),
        "1.2.840.10045.2.1"
    );
}

#[test]
fn damaged_key_files_are_reported_by_name() {
    let (tmp, _site) = new_site();
    let dir = tmp.path().join("site");
    let key_path = dir.join("ca.key.enc");
    let good = std::fs::read(&key_path).unwrap();

    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    std::fs::write(&key_path, &flipped).unwrap();
    let err = Site::open(&dir).unwrap().unlock(&pass()).unwrap_err();
    assert!(matches!(err, Error::WrongPassphrase { .. }), "{err:?}");

    std::fs::write(&key_path, &good[..20]).unwrap();
    let err = Site::open(&dir).unwrap().unlock(&pass()).unwrap_err();
    assert!(matches!(err, Error::KeyFile { .. }), "{err:?}");
    assert!(err.to_string().contains("ca.key.enc"));
}

#[test]
fn a_key_from_another_site_is_detected() {
    let (tmp_a, _a) = new_site();
    let (tmp_b, _b) = new_site();
    let a = tmp_a.path().join("site");
    let b = tmp_b.path().join("site");
    std::fs::copy(b.join("ca.key.enc"), a.join("ca.key.enc")).unwrap();
    let err = Site::open(&a).unwrap().unlock(&pass()).unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err:?}");
}

#[test]
fn opening_something_that_is_not_a_site() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Site::open(tmp.path()).unwrap_err();
    assert!(matches!(err, Error::NotASite { .. }), "{err:?}");

    let (tmp, _site) = new_site();
    let dir = tmp.path().join("site");
    std::fs::write(
        dir.join("site.toml"),
        "format = 1\nname = \"Bad Name\"\ncreated = \"x\"\ncrl_number = 1\n",
    )
    .unwrap();
    let err = Site::open(&dir).unwrap_err().to_string();
    assert!(err.contains("site.toml") && err.contains("`name`"), "{err}");
}
