//! The TLS posture, judged by an independent scanner (sslyze from PyPI):
//! nothing below TLS 1.2 (1.3 only by default), AEAD suites only, ECDHE key
//! exchange, client authentication required, no compression, no
//! client-initiated renegotiation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tests::Appliance;

fn sslyze(app: &Appliance, certs: Option<&Path>) -> Value {
    let out_file = app
        .dir
        .path()
        .join(format!("sslyze-{}.json", certs.is_some()));
    let mut cmd = Command::new(test_support::venv_python());
    cmd.args(["-m", "sslyze", &app.address.to_string(), "--json_out"])
        .arg(&out_file)
        .args([
            "--sslv2",
            "--sslv3",
            "--tlsv1",
            "--tlsv1_1",
            "--tlsv1_2",
            "--tlsv1_3",
        ])
        .args(["--compression", "--reneg", "--mozilla_config", "disable"]);
    if let Some(certs) = certs {
        cmd.arg("--cert")
            .arg(certs.join("cert.pem"))
            .arg("--key")
            .arg(certs.join("key.pem"));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "sslyze failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    report["server_scan_results"][0].clone()
}

fn accepted(scan: &Value, version: &str) -> Vec<String> {
    let result = &scan["scan_result"][format!("{version}_cipher_suites")]["result"];
    result["accepted_cipher_suites"]
        .as_array()
        .unwrap_or_else(|| panic!("{version} was not scanned: {result}"))
        .iter()
        .map(|s| s["cipher_suite"]["name"].as_str().unwrap().to_owned())
        .collect()
}

fn is_aead(suite: &str) -> bool {
    suite.contains("_GCM_") || suite.contains("CHACHA20_POLY1305")
}

fn assert_common_posture(scan: &Value) {
    for old in ["ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"] {
        assert!(accepted(scan, old).is_empty(), "{old} accepted");
    }
    let tls13 = accepted(scan, "tls_1_3");
    assert!(
        !tls13.is_empty() && tls13.iter().all(|s| is_aead(s)),
        "{tls13:?}"
    );
    let r = &scan["scan_result"];
    assert_eq!(
        r["tls_compression"]["result"]["supports_compression"],
        false
    );
    let reneg = &r["session_renegotiation"]["result"];
    assert_eq!(
        reneg["is_vulnerable_to_client_renegotiation_dos"], false,
        "{reneg}"
    );
    assert_eq!(reneg["client_renegotiations_success_count"], 0, "{reneg}");
}

#[test]
fn tls_posture_passes_an_independent_scanner() {
    let mut app = Appliance::start("");
    let certs = app.client("scanner");
    let scan = sslyze(&app, Some(&certs));
    assert_eq!(scan["connectivity_status"], "COMPLETED", "{scan}");
    assert_common_posture(&scan);
    assert!(
        accepted(&scan, "tls_1_2").is_empty(),
        "TLS 1.2 accepted by default"
    );

    // With TLS 1.2 allowed: ECDHE + AEAD suites only, and (visible to a
    // scanner only below 1.3) client authentication REQUIRED.
    let mut app = Appliance::start("min_tls_version = \"1.2\"\n");
    let certs = app.client("scanner");
    let scan = sslyze(&app, Some(&certs));
    assert_common_posture(&scan);
    let tls12 = accepted(&scan, "tls_1_2");
    assert!(!tls12.is_empty(), "TLS 1.2 was configured but not accepted");
    for suite in &tls12 {
        assert!(
            suite.contains("_ECDHE_") && is_aead(suite),
            "weak TLS 1.2 suite {suite}"
        );
    }
    let without_certificate = sslyze(&app, None);
    assert_eq!(
        without_certificate["connectivity_result"]["client_auth_requirement"], "REQUIRED",
        "{without_certificate}"
    );
}
