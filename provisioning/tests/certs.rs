//! Issued certificates and CRLs, checked with real parsers and verifiers:
//! x509-parser for content and signatures, rustls-webpki (through rustls'
//! `WebPkiClientVerifier` / `WebPkiServerVerifier`) for chains, names,
//! usages, validity and revocation, and a real TLS 1.3 handshake.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use common::{SITE, client_verifier, new_site, server_verifier};
use provisioning::{
    ApplianceId, CertificateRequest, ClientName, Error, IssuedCert, ServerNames, SubjectKey, Usage,
    Validity,
};
use rcgen::PublicKeyData;
use rustls::client::danger::ServerCertVerifier;
use rustls::{CertificateError, Error as TlsError};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

fn client(name: &str) -> ClientName {
    ClientName::new(name).unwrap()
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> X509Certificate<'a> {
    X509Certificate::from_der(der).unwrap().1
}

fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => format!("URI:{u}"),
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::IPAddress(b) => {
                let ip: IpAddr = match b.len() {
                    4 => <[u8; 4]>::try_from(*b).unwrap().into(),
                    _ => <[u8; 16]>::try_from(*b).unwrap().into(),
                };
                format!("IP:{ip}")
            }
            other => format!("other:{other:?}"),
        })
        .collect()
}

fn verify_client(
    ca: &CertificateDer<'static>,
    crls: Vec<rustls_pki_types::CertificateRevocationListDer<'static>>,
    cert: &IssuedCert,
) -> Result<(), TlsError> {
    client_verifier(ca, crls)
        .verify_client_cert(cert.cert_der(), &[], UnixTime::now())
        .map(|_| ())
}

fn is_cert_error(e: &TlsError, want: fn(&CertificateError) -> bool) -> bool {
    matches!(e, TlsError::InvalidCertificate(c) if want(c))
}

#[test]
fn client_certificate_chains_and_names_exactly_its_client() {
    let (_tmp, mut site) = new_site();
    let cert = site
        .issue_client(&client("billing"), Validity::days(30).unwrap())
        .unwrap();
    let ca = site.ca_der().clone();
    verify_client(&ca, vec![site.crl_der().unwrap()], &cert).unwrap();

    let x = parse(cert.cert_der());
    assert_eq!(sans(&x), [format!("URI:spiffe://{SITE}/client/billing")]);
    assert_eq!(x.subject().to_string(), "CN=billing");
    let eku = x.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth);
    assert!(!eku.server_auth && !eku.any && !eku.code_signing && eku.other.is_empty());
    assert!(!x.is_ca());
    // Signed by the CA.
    let (_, ca_x) = X509Certificate::from_der(&ca).unwrap();
    x.verify_signature(Some(ca_x.public_key())).unwrap();
    // A positive serial of at least 64 bits.
    let serial = x.raw_serial();
    assert!(serial[0] & 0x80 == 0 && serial.len() >= 8);
    assert_eq!(cert.serial().as_bytes(), serial);
    // The record in issued/ is this certificate.
    assert_eq!(
        std::fs::read_to_string(cert.record_path()).unwrap(),
        cert.cert_pem()
    );
    // The key that came with it is the certificate's key.
    let key = rcgen::KeyPair::from_pem(cert.key_pem().unwrap()).unwrap();
    assert_eq!(
        x.tbs_certificate.subject_pki.raw,
        key.subject_public_key_info().as_slice()
    );
}

#[test]
fn serials_are_unique() {
    let (_tmp, mut site) = new_site();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let c = site
            .issue_client(&client("many"), Validity::days(1).unwrap())
            .unwrap();
        assert!(seen.insert(c.serial().clone()));
    }
    assert_eq!(site.issued().unwrap().len(), 20);
}

#[test]
fn appliance_certificate_is_server_only_and_valid_for_its_names() {
    let (_tmp, mut site) = new_site();
    let names = ServerNames::new(
        &["box.acme.example".into()],
        &["10.0.0.7".parse().unwrap(), "::1".parse().unwrap()],
    )
    .unwrap();
    let cert = site
        .issue_appliance(
            &ApplianceId::new("box1").unwrap(),
            &names,
            SubjectKey::Generate,
            Validity::days(30).unwrap(),
        )
        .unwrap();
    let ca = site.ca_der().clone();
    let x = parse(cert.cert_der());
    assert_eq!(
        sans(&x),
        [
            format!("URI:spiffe://{SITE}/appliance/box1"),
            "DNS:box.acme.example".into(),
            "IP:10.0.0.7".into(),
            "IP:::1".into(),
        ]
    );
    let eku = x.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth && !eku.any && eku.other.is_empty());

    let verifier = server_verifier(&ca);
    let check = |name: ServerName<'static>| {
        verifier.verify_server_cert(cert.cert_der(), &[], &name, &[], UnixTime::now())
    };
    check(ServerName::try_from("box.acme.example").unwrap()).unwrap();
    check(ServerName::try_from("10.0.0.7").unwrap()).unwrap();
    check(ServerName::try_from("::1").unwrap()).unwrap();
    let wrong = check(ServerName::try_from("other.acme.example").unwrap()).unwrap_err();
    assert!(
        is_cert_error(&wrong, |c| matches!(
            c,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        )),
        "{wrong:?}"
    );
    check(ServerName::try_from("10.0.0.8").unwrap()).unwrap_err();

    // It is no client certificate.
    let err = verify_client(&ca, vec![], &cert).unwrap_err();
    assert!(
        is_cert_error(&err, |c| matches!(
            c,
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. }
        )),
        "{err:?}"
    );
}

#[test]
fn a_server_auth_only_client_certificate_is_refused_as_a_client() {
    let (_tmp, mut site) = new_site();
    let cert = site
        .issue_client_with(
            &client("confused"),
            Validity::days(1).unwrap(),
            Usage::ServerAuth,
        )
        .unwrap();
    let x = parse(cert.cert_der());
    let eku = x.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    let err = verify_client(site.ca_der(), vec![], &cert).unwrap_err();
    assert!(
        is_cert_error(&err, |c| matches!(
            c,
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. }
        )),
        "{err:?}"
    );
}

#[test]
fn revocation_reaches_a_crl_that_webpki_enforces() {
    let (_tmp, mut site) = new_site();
    let v = || Validity::days(30).unwrap();
    let alice1 = site.issue_client(&client("alice"), v()).unwrap();
    let alice2 = site.issue_client(&client("alice"), v()).unwrap();
    let bob = site.issue_client(&client("bob"), v()).unwrap();
    let ca = site.ca_der().clone();
    assert_eq!(site.crl_info().unwrap().number, Some(1));

    let mut revoked = site.revoke_client(&client("alice")).unwrap();
    revoked.sort();
    let mut expected = vec![alice1.serial().clone(), alice2.serial().clone()];
    expected.sort();
    assert_eq!(revoked, expected);

    // The CRL, read with x509-parser: signed by the CA, right issuer,
    // number incremented, dates, the revoked serials and nothing else.
    let crl_der = site.crl_der().unwrap();
    let (rest, crl) = x509_parser::parse_x509_crl(&crl_der).unwrap();
    assert!(rest.is_empty());
    let (_, ca_x) = X509Certificate::from_der(&ca).unwrap();
    crl.verify_signature(ca_x.public_key()).unwrap();
    assert_eq!(crl.issuer(), ca_x.subject());
    let number = crl.crl_number().unwrap().to_bytes_be();
    assert_eq!(number, [2]);
    let this = crl.last_update().to_datetime();
    let next = crl.next_update().unwrap().to_datetime();
    assert!((OffsetDateTime::now_utc() - this).abs() < Duration::minutes(5));
    assert_eq!((next - this).whole_days(), 30);
    let mut listed: Vec<Vec<u8>> = crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial().to_vec())
        .collect();
    listed.sort();
    let mut want: Vec<Vec<u8>> = expected.iter().map(|s| s.as_bytes().to_vec()).collect();
    want.sort();
    assert_eq!(listed, want);
    // The authority key identifier is the CA's subject key identifier, which
    // is how webpki matches CRL and issuer.
    let aki = crl
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .unwrap();
    let ski = ca_x
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .unwrap();
    assert_eq!(aki, ski);
    // PEM and DER are the same CRL.
    assert!(
        site.crl_pem()
            .unwrap()
            .starts_with("-----BEGIN X509 CRL-----")
    );

    // rustls-webpki with that CRL refuses both of alice's certificates as
    // revoked and still accepts bob's.
    for cert in [&alice1, &alice2] {
        let err = verify_client(&ca, vec![crl_der.clone()], cert).unwrap_err();
        assert!(
            is_cert_error(&err, |c| matches!(c, CertificateError::Revoked)),
            "{err:?}"
        );
        assert!(err.to_string().to_lowercase().contains("revoked"), "{err}");
    }
    verify_client(&ca, vec![crl_der.clone()], &bob).unwrap();
    // Without the CRL alice would pass: the CRL is what refuses her.
    verify_client(&ca, vec![], &alice1).unwrap();

    // Revoking again changes nothing.
    assert!(site.revoke_client(&client("alice")).unwrap().is_empty());
    assert_eq!(site.crl_info().unwrap().number, Some(2));
    // A client never issued to is an error.
    let err = site.revoke_client(&client("nobody")).unwrap_err();
    assert!(matches!(err, Error::NotIssued(_)), "{err:?}");

    // `crl update` re-signs with the next number and the same entries.
    site.sign_crl().unwrap();
    let info = site.crl_info().unwrap();
    assert_eq!(info.number, Some(3));
    assert_eq!(info.revoked.len(), 2);
    let err = verify_client(&ca, vec![site.crl_der().unwrap()], &alice2).unwrap_err();
    assert!(is_cert_error(&err, |c| matches!(
        c,
        CertificateError::Revoked
    )));

    // Revocation by serial, e.g. of an appliance certificate.
    assert!(site.revoke_serial(bob.serial()).unwrap());
    assert!(!site.revoke_serial(bob.serial()).unwrap());
    verify_client(&ca, vec![site.crl_der().unwrap()], &bob).unwrap_err();
    assert_eq!(site.revocations().unwrap().len(), 3);
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused() {
    let (_tmp, mut site) = new_site();
    let now = OffsetDateTime::now_utc();
    let expired = site
        .issue_client(
            &client("old"),
            Validity::between(now - Duration::days(10), now - Duration::days(1)).unwrap(),
        )
        .unwrap();
    let future = site
        .issue_client(
            &client("early"),
            Validity::between(now + Duration::days(1), now + Duration::days(10)).unwrap(),
        )
        .unwrap();
    let ca = site.ca_der().clone();
    let err = verify_client(&ca, vec![], &expired).unwrap_err();
    assert!(
        is_cert_error(&err, |c| matches!(
            c,
            CertificateError::Expired | CertificateError::ExpiredContext { .. }
        )),
        "{err:?}"
    );
    let err = verify_client(&ca, vec![], &future).unwrap_err();
    assert!(
        is_cert_error(&err, |c| matches!(
            c,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
        )),
        "{err:?}"
    );
    let x = parse(expired.cert_der());
    assert_eq!(
        x.validity().not_after.timestamp(),
        (now - Duration::days(1)).unix_timestamp()
    );
}

#[test]
fn appliance_certificate_from_a_csr_certifies_the_csr_key_only() {
    let (tmp, mut site) = new_site();
    // The CSR asks for a subject and a name of its own; both are ignored.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "evil");
    let csr_pem = params.serialize_request(&key).unwrap().pem().unwrap();
    let path = tmp.path().join("box.csr");
    let csr = CertificateRequest::from_pem(csr_pem.as_bytes(), &path).unwrap();
    assert_eq!(
        csr.public_key_der(),
        key.subject_public_key_info().as_slice()
    );

    let names = ServerNames::new(&["box.acme.example".into()], &[]).unwrap();
    let cert = site
        .issue_appliance_from_csr(
            &ApplianceId::new("box2").unwrap(),
            &names,
            csr,
            Validity::days(30).unwrap(),
        )
        .unwrap();
    assert!(cert.key_pem().is_none());
    let x = parse(cert.cert_der());
    assert_eq!(
        x.tbs_certificate.subject_pki.raw,
        key.subject_public_key_info().as_slice()
    );
    assert_eq!(
        sans(&x),
        [
            format!("URI:spiffe://{SITE}/appliance/box2"),
            "DNS:box.acme.example".to_owned()
        ]
    );
    assert_eq!(x.subject().to_string(), "CN=box2");
    server_verifier(site.ca_der())
        .verify_server_cert(
            cert.cert_der(),
            &[],
            &ServerName::try_from("box.acme.example").unwrap(),
            &[],
            UnixTime::now(),
        )
        .unwrap();
    // Only ca.pem and cert.pem are written for a CSR.
    let out = tmp.path().join("out");
    let written = cert.write_bundle(&out).unwrap();
    assert_eq!(written.len(), 2);
    assert!(!out.join("key.pem").exists());

    // Ed25519 keys are accepted too.
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let ed_csr = rcgen::CertificateParams::default()
        .serialize_request(&ed)
        .unwrap();
    CertificateRequest::from_der(ed_csr.der(), &path).unwrap();
}

#[test]
fn a_csr_with_a_broken_signature_is_refused() {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec!["box.example".to_owned()])
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let der = csr.der().to_vec();
    let path = std::path::Path::new("box.csr");
    CertificateRequest::from_der(&der, path).unwrap();

    // Flip a bit in the signed part: the signature no longer matches.
    let pos = der.windows(11).position(|w| w == b"box.example").unwrap();
    let mut tampered = der.clone();
    tampered[pos] ^= 0x01;
    let err = CertificateRequest::from_der(&tampered, path).unwrap_err();
    assert!(matches!(err, Error::CsrSignature { .. }), "{err:?}");
    assert!(err.to_string().contains("box.csr"));

    // Flip a bit in the signature itself.
    let mut bad_sig = der.clone();
    let last = bad_sig.len() - 2;
    bad_sig[last] ^= 0x01;
    assert!(CertificateRequest::from_der(&bad_sig, path).is_err());

    // The CSR of one key with the signature of another.
    let other = rcgen::KeyPair::generate().unwrap();
    let other_csr = rcgen::CertificateParams::new(vec!["box.example".to_owned()])
        .unwrap()
        .serialize_request(&other)
        .unwrap();
    let (_, a) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
    let (_, b) =
        x509_parser::certification_request::X509CertificationRequest::from_der(other_csr.der())
            .unwrap();
    let info_a = a.certification_request_info.raw;
    let info_b = b.certification_request_info.raw;
    let swapped: Vec<u8> = {
        let s = other_csr.der().to_vec();
        let at = s.windows(info_b.len()).position(|w| w == info_b).unwrap();
        let mut s2 = s.clone();
        s2.splice(at..at + info_b.len(), info_a.iter().copied());
        s2
    };
    let err = CertificateRequest::from_der(&swapped, path).unwrap_err();
    assert!(matches!(err, Error::CsrSignature { .. }), "{err:?}");

    // Garbage and PEM without a CSR.
    assert!(matches!(
        CertificateRequest::from_der(b"not der", path),
        Err(Error::BadObject { .. })
    ));
    assert!(
        CertificateRequest::from_pem(
            b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
            path
        )
        .is_err()
    );
}

#[test]
fn bundles_are_never_overwritten() {
    let (tmp, mut site) = new_site();
    let out = tmp.path().join("bundle");
    let first = site
        .issue_client(&client("app"), Validity::days(1).unwrap())
        .unwrap();
    let written = first.write_bundle(&out).unwrap();
    let names: Vec<_> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["ca.pem", "cert.pem", "key.pem"]);
    let second = site
        .issue_client(&client("app"), Validity::days(1).unwrap())
        .unwrap();
    let err = second.write_bundle(&out).unwrap_err();
    assert!(matches!(err, Error::OutputExists { .. }), "{err:?}");
    assert_eq!(
        std::fs::read_to_string(out.join("cert.pem")).unwrap(),
        first.cert_pem()
    );
}

/// A full TLS 1.3 handshake in memory between the appliance's certificate
/// and a client's, both as issued, with the site's CRL on the server side.
fn handshake(
    server_cert: &IssuedCert,
    client_cert: &IssuedCert,
    ca: &CertificateDer<'static>,
    crl: rustls_pki_types::CertificateRevocationListDer<'static>,
    server_name: &str,
) -> Result<(), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(client_verifier(ca, vec![crl]))
        .with_single_cert(
            vec![server_cert.cert_der().clone()],
            server_cert.key_der().unwrap(),
        )
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![client_cert.cert_der().clone()],
            client_cert.key_der().unwrap(),
        )
        .unwrap();
    let mut server = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
    let mut client = rustls::ClientConnection::new(
        Arc::new(client_config),
        ServerName::try_from(server_name.to_owned()).unwrap(),
    )
    .unwrap();
    for _ in 0..10 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            server.read_tls(&mut slice).unwrap();
        }
        server.process_new_packets()?;
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            client.read_tls(&mut slice).unwrap();
        }
        client.process_new_packets()?;
        if !client.is_handshaking() && !server.is_handshaking() {
            assert_eq!(
                server.protocol_version(),
                Some(rustls::ProtocolVersion::TLSv1_3)
            );
            return Ok(());
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn issued_keys_and_certificates_work_in_a_tls13_handshake() {
    let (_tmp, mut site) = new_site();
    let names = ServerNames::new(&["box.acme.example".into()], &[]).unwrap();
    let server = site
        .issue_appliance(
            &ApplianceId::new("box").unwrap(),
            &names,
            SubjectKey::Generate,
            Validity::days(1).unwrap(),
        )
        .unwrap();
    let good = site
        .issue_client(&client("good"), Validity::days(1).unwrap())
        .unwrap();
    let gone = site
        .issue_client(&client("gone"), Validity::days(1).unwrap())
        .unwrap();
    site.revoke_client(&client("gone")).unwrap();
    let ca = site.ca_der().clone();
    let crl = site.crl_der().unwrap();
    handshake(&server, &good, &ca, crl.clone(), "box.acme.example").unwrap();
    let err = handshake(&server, &gone, &ca, crl, "box.acme.example").unwrap_err();
    assert!(
        is_cert_error(&err, |c| matches!(c, CertificateError::Revoked)),
        "{err:?}"
    );
}
