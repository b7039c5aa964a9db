//! G1 and G2 from the outside: every kind of bad certificate is refused
//! (each after sending an RPC: with TLS 1.3 the client's handshake completes
//! before the server rejects its certificate), and a valid certificate
//! without a grant is PERMISSION_DENIED.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use provisioning::{ClientName, Passphrase, Site, SiteName, Usage, Validity};
use tests::Appliance;
use time::OffsetDateTime;

/// A bundle that trusts our site CA but presents `cert`/`key`.
fn bundle(app: &Appliance, name: &str, cert_pem: &str, key_pem: &str) -> PathBuf {
    let dir = app.dir.path().join("forged").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(app.site.dir().join("ca.pem"), dir.join("ca.pem")).unwrap();
    std::fs::write(dir.join("cert.pem"), cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), key_pem).unwrap();
    dir
}

fn refused(app: &Appliance, certs: &Path, options: &[&str]) -> serde_json::Value {
    let report = app.triton_with(certs, options, &["call", "live"]);
    assert_eq!(report["ok"], false, "accepted: {report}");
    report
}

/// A TLS-level refusal surfaces in gRPC as UNAVAILABLE (the connection
/// failed); an identity refusal as UNAUTHENTICATED.
fn assert_transport_refusal(report: &serde_json::Value) {
    let code = report["code"].as_str().unwrap();
    assert!(
        code == "UNAVAILABLE" || code == "UNAUTHENTICATED",
        "unexpected refusal: {report}"
    );
}

#[test]
fn bad_certificates_are_refused_and_ungranted_clients_denied() {
    let mut app = Appliance::start("");
    let good = app.client("good-app");
    app.grant("good-app", "*");
    assert_eq!(app.triton(&good, &["call", "live"])["code"], "OK");

    // No client certificate at all.
    assert_transport_refusal(&refused(&app, &good, &["--no-client-cert"]));

    // A certificate from another CA (another site with the same name).
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = Site::init(
        &other_dir.path().join("site"),
        &tests::SITE.parse::<SiteName>().unwrap(),
        &Passphrase::new("another site's passphrase".to_owned()),
    )
    .unwrap();
    let foreign = other
        .issue_client(
            &"good-app".parse::<ClientName>().unwrap(),
            Validity::days(1).unwrap(),
        )
        .unwrap();
    let certs = bundle(
        &app,
        "foreign",
        foreign.cert_pem(),
        foreign.key_pem().unwrap(),
    );
    assert_transport_refusal(&refused(&app, &certs, &[]));

    // Self-signed, claiming a granted identity.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        format!("spiffe://{}/client/good-app", tests::SITE)
            .try_into()
            .unwrap(),
    )];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let self_signed = params.self_signed(&key).unwrap();
    let certs = bundle(
        &app,
        "self-signed",
        &self_signed.pem(),
        &key.serialize_pem(),
    );
    assert_transport_refusal(&refused(&app, &certs, &[]));

    // Expired, and not yet valid.
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let expired = app.client_with(
        "expired-app",
        Validity::between(now - day * 10, now - day).unwrap(),
        Usage::ClientAuth,
    );
    app.grant("expired-app", "*");
    assert_transport_refusal(&refused(&app, &expired, &[]));
    let future = app.client_with(
        "future-app",
        Validity::between(now + day, now + day * 10).unwrap(),
        Usage::ClientAuth,
    );
    app.grant("future-app", "*");
    assert_transport_refusal(&refused(&app, &future, &[]));

    // A certificate for servers only (serverAuth EKU).
    let server_only = app.client_with("server-only", Validity::days(1).unwrap(), Usage::ServerAuth);
    app.grant("server-only", "*");
    assert_transport_refusal(&refused(&app, &server_only, &[]));

    // Valid, but no grant: PERMISSION_DENIED, naming the client.
    let nogrant = app.client("no-grant-app");
    let report = refused(&app, &nogrant, &[]);
    assert_eq!(report["code"], "PERMISSION_DENIED", "{report}");
    assert!(report["message"].as_str().unwrap().contains("no-grant-app"));

    // Granted one model only: the other is PERMISSION_DENIED.
    let narrow = app.client("narrow-app");
    app.grant("narrow-app", "minilm");
    let report = app.triton(&narrow, &["call", "metadata", "digits"]);
    assert_eq!(report["code"], "PERMISSION_DENIED", "{report}");

    // The good client is still served after all of that.
    assert_eq!(app.triton(&good, &["call", "live"])["code"], "OK");
}

#[test]
fn a_revoked_certificate_is_refused_after_a_crl_push_even_on_an_open_connection() {
    let mut app = Appliance::start("");
    let certs = app.client("soon-revoked");
    app.grant("soon-revoked", "*");

    // A client that keeps its connection open across the revocation.
    let mut python = app.triton_process(&certs, &["call-twice", "live"]);
    let mut lines = BufReader::new(python.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["first"]["code"], "OK", "{first}");

    app.site
        .revoke_client(&"soon-revoked".parse::<ClientName>().unwrap())
        .unwrap();
    let site = app.site.dir().to_str().unwrap().to_owned();
    let out = app.provision_ok(&["crl", "push", "--site", &site]);
    assert!(out.contains("(1 revoked)"), "{out}");

    // The open connection: its next request is refused.
    python.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let both: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(both["second"]["code"], "UNAUTHENTICATED", "{both}");
    assert!(
        both["second"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    python.wait().unwrap();

    // A new connection: refused at the handshake.
    std::thread::sleep(Duration::from_millis(100));
    assert_transport_refusal(&refused(&app, &certs, &[]));

    // The CRL survives a restart (it is kept in the keystore).
    app.stop();
    app.launch();
    assert_transport_refusal(&refused(&app, &certs, &[]));
}
