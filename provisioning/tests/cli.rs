//! The `provision` binary itself, driven as an operator's script would:
//! PROVISION_PASSPHRASE set, files and modes checked, exit codes checked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

const PASS: &str = "cli passphrase 1234";

fn provision(args: &[&str], passphrase: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_provision"));
    cmd.args(args).env_remove("PROVISION_PASSPHRASE");
    if let Some(p) = passphrase {
        cmd.env("PROVISION_PASSPHRASE", p);
    }
    // No terminal: a missing passphrase must fail, not hang.
    cmd.stdin(std::process::Stdio::null());
    cmd.output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn cert_serial_and_uri(path: &Path) -> (String, Vec<String>) {
    let pem = std::fs::read(path).unwrap();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(&pem)
        .map(|d: rustls_pki_types::CertificateDer<'static>| d)
        .unwrap();
    let (_, x) = X509Certificate::from_der(&der).unwrap();
    let uris = x
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect();
    (hex::encode(x.raw_serial()), uris)
}

#[test]
fn site_init_client_issue_and_revoke() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");

    let out = provision(
        &["site", "init", "--dir", p(&site), "--name", "plant-7"],
        Some(PASS),
    );
    let text = ok(&out);
    assert!(text.contains("created site plant-7"), "{text}");
    assert_eq!(mode(&site), 0o700);
    assert_eq!(mode(&site.join("ca.key.enc")), 0o600);
    assert_eq!(mode(&site.join("issued")), 0o700);
    for f in ["ca.pem", "crl.pem", "site.toml", "revoked.toml"] {
        assert!(site.join(f).is_file(), "{f}");
    }

    // A second init is refused and leaves the key alone.
    let key_before = std::fs::read(site.join("ca.key.enc")).unwrap();
    let out = provision(
        &["site", "init", "--dir", p(&site), "--name", "plant-7"],
        Some(PASS),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("already holds a site"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(site.join("ca.key.enc")).unwrap(), key_before);

    // Issue a client bundle: exactly the three files Triton's client takes.
    let bundle = tmp.path().join("billing");
    let text = ok(&provision(
        &[
            "client",
            "issue",
            "--site",
            p(&site),
            "--name",
            "billing",
            "--out",
            p(&bundle),
            "--days",
            "30",
        ],
        Some(PASS),
    ));
    assert!(
        text.contains("issued client certificate for billing"),
        "{text}"
    );
    let mut files: Vec<String> = std::fs::read_dir(&bundle)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["ca.pem", "cert.pem", "key.pem"]);
    assert_eq!(mode(&bundle.join("key.pem")), 0o600);
    assert_eq!(mode(&bundle), 0o700);
    assert_eq!(
        std::fs::read(bundle.join("ca.pem")).unwrap(),
        std::fs::read(site.join("ca.pem")).unwrap()
    );
    let (serial, uris) = cert_serial_and_uri(&bundle.join("cert.pem"));
    assert_eq!(uris, ["spiffe://plant-7/client/billing"]);
    assert!(
        site.join("issued")
            .join(format!("client-billing-{serial}.pem"))
            .is_file()
    );

    // Issuing into the same directory again is refused before anything is
    // issued.
    let out = provision(
        &[
            "client",
            "issue",
            "--site",
            p(&site),
            "--name",
            "billing",
            "--out",
            p(&bundle),
        ],
        Some(PASS),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("refusing to overwrite"));
    assert_eq!(std::fs::read_dir(site.join("issued")).unwrap().count(), 1);

    // Wrong passphrase: clear message, exit 1, nothing revoked.
    let out = provision(
        &["client", "revoke", "--site", p(&site), "--name", "billing"],
        Some("not the passphrase"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("wrong passphrase (or the CA key file is damaged)"),
        "{}",
        stderr(&out)
    );

    // No passphrase and no terminal: fails, pointing at the variable.
    let out = provision(
        &["client", "revoke", "--site", p(&site), "--name", "billing"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("PROVISION_PASSPHRASE"),
        "{}",
        stderr(&out)
    );

    // Revoke: the CRL lists the serial.
    let crl_before = std::fs::read(site.join("crl.pem")).unwrap();
    let text = ok(&provision(
        &["client", "revoke", "--site", p(&site), "--name", "billing"],
        Some(PASS),
    ));
    assert!(text.contains(&serial), "{text}");
    assert_ne!(std::fs::read(site.join("crl.pem")).unwrap(), crl_before);
    assert_eq!(mode(&site.join("crl.pem")), 0o644);
    let shown = ok(&provision(&["crl", "show", "--site", p(&site)], None));
    assert!(
        shown.contains(&serial) && shown.contains("client billing"),
        "{shown}"
    );
    assert!(shown.contains("CRL number      2"), "{shown}");
    let listed = ok(&provision(&["client", "list", "--site", p(&site)], None));
    assert!(listed.contains("revoked"), "{listed}");

    // crl update re-signs with the next number.
    ok(&provision(
        &["crl", "update", "--site", p(&site)],
        Some(PASS),
    ));
    let shown = ok(&provision(&["crl", "show", "--site", p(&site)], None));
    assert!(shown.contains("CRL number      3"), "{shown}");
    let summary = ok(&provision(&["site", "show", "--site", p(&site)], None));
    assert!(
        summary.contains("plant-7") && summary.contains("revoked         1"),
        "{summary}"
    );
}

#[test]
fn appliance_issue_with_generated_key_and_with_csr() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    ok(&provision(
        &["site", "init", "--dir", p(&site), "--name", "plant-8"],
        Some(PASS),
    ));
    let out_dir = tmp.path().join("box");
    ok(&provision(
        &[
            "appliance",
            "issue",
            "--site",
            p(&site),
            "--name",
            "box1",
            "--dns",
            "box1.plant-8.internal",
            "--ip",
            "127.0.0.1",
            "--generate-key",
            "--out",
            p(&out_dir),
        ],
        Some(PASS),
    ));
    assert_eq!(mode(&out_dir.join("key.pem")), 0o600);
    let (_, uris) = cert_serial_and_uri(&out_dir.join("cert.pem"));
    assert_eq!(uris, ["spiffe://plant-8/appliance/box1"]);

    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec!["ignored.example".to_owned()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let csr_path = tmp.path().join("box2.csr");
    std::fs::write(&csr_path, csr).unwrap();
    let out2 = tmp.path().join("box2");
    ok(&provision(
        &[
            "appliance",
            "issue",
            "--site",
            p(&site),
            "--name",
            "box2",
            "--dns",
            "box2.plant-8.internal",
            "--csr",
            p(&csr_path),
            "--out",
            p(&out2),
        ],
        Some(PASS),
    ));
    assert!(out2.join("cert.pem").is_file() && out2.join("ca.pem").is_file());
    assert!(!out2.join("key.pem").exists());

    // A tampered CSR is refused.
    let mut bytes = std::fs::read(&csr_path).unwrap();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(&bytes)
        .map(|d: rustls_pki_types::CertificateSigningRequestDer<'static>| d)
        .unwrap();
    let mut der = der.as_ref().to_vec();
    let pos = der
        .windows(15)
        .position(|w| w == b"ignored.example")
        .unwrap();
    der[pos] ^= 1;
    let body = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der);
    bytes =
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n")
            .into_bytes();
    std::fs::write(&csr_path, bytes).unwrap();
    let out = provision(
        &[
            "appliance",
            "issue",
            "--site",
            p(&site),
            "--name",
            "box3",
            "--dns",
            "b.internal",
            "--csr",
            p(&csr_path),
            "--out",
            p(&tmp.path().join("box3")),
        ],
        Some(PASS),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("signature does not verify"),
        "{}",
        stderr(&out)
    );

    // Neither --csr nor --generate-key, or both: usage errors.
    for extra in [&[][..], &["--csr", "x", "--generate-key"][..]] {
        let mut args = vec![
            "appliance",
            "issue",
            "--site",
            p(&site),
            "--name",
            "box4",
            "--dns",
            "b.internal",
            "--out",
            "x",
        ];
        args.extend_from_slice(extra);
        let out = provision(&args, Some(PASS));
        assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    }
}

#[test]
fn usage_errors_exit_64() {
    let cases: &[&[&str]] = &[
        &[
            "client", "issue", "--site", "s", "--name", "Bad_Name", "--out", "o",
        ],
        &["site", "init", "--dir", "d"],
        &["frobnicate"],
        &[
            "grant",
            "--appliance",
            "h:1",
            "--admin",
            "a",
            "--client",
            "c",
            "--rate",
            "fast",
            "--quota",
            "1/day",
        ],
        &[
            "grant",
            "--appliance",
            "h:1",
            "--admin",
            "a",
            "--client",
            "c",
            "--rate",
            "1/s",
            "--quota",
            "0/day",
        ],
        &[
            "crl",
            "push",
            "--site",
            "s",
            "--appliance",
            "nohost",
            "--admin",
            "a",
        ],
        &[
            "client", "issue", "--site", "s", "--name", "n", "--out", "o", "--days", "0",
        ],
    ];
    for args in cases {
        let out = provision(args, Some(PASS));
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
    }
    // A weak passphrase for a new site is a usage error too.
    let tmp = tempfile::tempdir().unwrap();
    let out = provision(
        &[
            "site",
            "init",
            "--dir",
            p(&tmp.path().join("s")),
            "--name",
            "s",
        ],
        Some("short"),
    );
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
}

#[test]
fn an_unreachable_appliance_is_a_clear_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    ok(&provision(
        &["site", "init", "--dir", p(&site), "--name", "plant-9"],
        Some(PASS),
    ));
    let admin = tmp.path().join("admin");
    ok(&provision(
        &[
            "client",
            "issue",
            "--site",
            p(&site),
            "--name",
            "ops",
            "--out",
            p(&admin),
        ],
        Some(PASS),
    ));
    // Port 1 on loopback: nothing listens there.
    let out = provision(
        &[
            "crl",
            "push",
            "--site",
            p(&site),
            "--appliance",
            "127.0.0.1:1",
            "--admin",
            p(&admin),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot connect to the appliance at 127.0.0.1:1"),
        "{}",
        stderr(&out)
    );
    // A world-readable admin key is refused before connecting.
    std::fs::set_permissions(
        admin.join("key.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = provision(
        &[
            "model",
            "list",
            "--appliance",
            "127.0.0.1:1",
            "--admin",
            p(&admin),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
}

/// Every command's `--help` explains itself: what it reads and writes, and
/// the passphrase variable where the CA key is used.
#[test]
fn help_for_every_command() {
    let top = ok(&provision(&["--help"], None));
    assert!(
        top.contains("PROVISION_PASSPHRASE") && top.contains("64"),
        "{top}"
    );
    let with_passphrase: &[&[&str]] = &[
        &["site", "init"],
        &["appliance", "issue"],
        &["client", "issue"],
        &["client", "revoke"],
        &["crl", "update"],
    ];
    let without: &[&[&str]] = &[
        &["site", "show"],
        &["client", "list"],
        &["crl", "show"],
        &["crl", "push"],
        &["grant"],
        &["grant", "list"],
        &["grant", "delete"],
        &["audit", "export"],
        &["model", "update"],
        &["model", "rollback"],
        &["model", "remove"],
        &["model", "load"],
        &["model", "list"],
        &["model", "unload"],
    ];
    for (cmds, needs_pass) in [(with_passphrase, true), (without, false)] {
        for cmd in cmds {
            let mut args = cmd.to_vec();
            args.push("--help");
            let text = ok(&provision(&args, None));
            assert!(
                text.contains("Reads:") || text.contains("Writes"),
                "{cmd:?} help names no files:\n{text}"
            );
            if needs_pass {
                assert!(text.contains("PROVISION_PASSPHRASE"), "{cmd:?}:\n{text}");
            }
        }
    }
    for group in ["site", "appliance", "client", "crl", "audit", "model"] {
        ok(&provision(&[group, "--help"], None));
    }
}
