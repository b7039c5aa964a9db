//! Enrollment over the network and factory reset, from the outside: a real
//! swtpm, the `appliance` and `provision` binaries, the stock tritonclient.
//!
//! The enrollment-mode calls that `provision` would never make (wrong codes,
//! other services) go through [`provisioning::enroll::pinned_channel`]: the
//! same TLS 1.3 channel, pinned to the printed fingerprint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use provisioning::admin::ApplianceAddress;
use provisioning::enroll::{Fingerprint, pinned_channel};
use tests::{ADMIN, Appliance};
use tonic::Code;
use wire::enroll::BeginRequest;
use wire::enroll::enrollment_client::EnrollmentClient;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn address(app: &Appliance) -> ApplianceAddress {
    app.address.to_string().parse().unwrap()
}

/// `Begin` with `code`, straight over the pinned channel.
fn begin(app: &Appliance, fingerprint: &str, code: &str) -> Result<String, tonic::Status> {
    let pin: Fingerprint = fingerprint.parse().unwrap();
    runtime().block_on(async {
        let channel = pinned_channel(&address(app), pin).await.unwrap();
        EnrollmentClient::new(channel)
            .begin(BeginRequest {
                code: code.to_owned(),
                dns: vec!["localhost".into()],
                ip: vec!["127.0.0.1".into()],
            })
            .await
            .map(|r| r.into_inner().csr_pem)
    })
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A code other than `code` (same alphabet and shape).
fn wrong(code: &str) -> String {
    let mut chars: Vec<char> = code.chars().collect();
    chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[test]
fn an_appliance_enrolls_over_the_network_then_serves_the_stock_client() {
    let mut app = Appliance::unenrolled("", "");
    app.launch();
    let (fingerprint, code) = app.enrollment_prompt();
    assert!(app.log_text().contains("ENROLLMENT MODE"));
    assert!(app.log_text().contains("in the TPM (not exportable)"));

    // Enrollment mode serves nothing else, over any credentials.
    let pin: Fingerprint = fingerprint.parse().unwrap();
    runtime().block_on(async {
        let channel = pinned_channel(&address(&app), pin).await.unwrap();
        let live = wire::inference::grpc_inference_service_client::GrpcInferenceServiceClient::new(
            channel.clone(),
        )
        .server_live(wire::inference::ServerLiveRequest {})
        .await
        .unwrap_err();
        assert_eq!(live.code(), Code::Unimplemented, "{live:?}");
        let models = wire::admin::admin_client::AdminClient::new(channel.clone())
            .list_models(wire::admin::ListModelsRequest {})
            .await
            .unwrap_err();
        assert_eq!(models.code(), Code::Unimplemented, "{models:?}");
        let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            health.status(),
            tonic_health::pb::health_check_response::ServingStatus::NotServing
        );
        let status = EnrollmentClient::new(channel)
            .status(wire::enroll::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.state, "enrolling");
    });
    // The stock client, with the site's admin certificate, gets nowhere:
    // the appliance's certificate is not the site's yet.
    let admin = app.admin_certs();
    let out = app.provision(&["model", "list"]);
    assert!(!out.status.success(), "{}", text(&out));

    // A wrong fingerprint is refused before anything is sent.
    let other = Fingerprint::of(b"another certificate").to_string();
    let out = app.enroll(&other, &code);
    assert!(!out.status.success());
    assert!(text(&out).contains("fingerprint"), "{}", text(&out));
    assert!(
        !app.log_text().contains("Enroll.Begin"),
        "the code was tried"
    );

    let out = app.enroll(&fingerprint, &code);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("enrolled appliance `box-1` of site `e2e-site`"),
        "{said}"
    );
    assert!(said.contains("in the TPM (not exportable)"), "{said}");
    assert!(said.contains("update root installed"), "{said}");
    app.wait_for_line("enrolled: appliance `box-1`", 0);

    // Operational on the same port, without a restart: the admin grant
    // and the update root work, and so does the stock client.
    app.load_reference_models();
    let client = app.client("analytics-app");
    app.grant("analytics-app", "digits");
    let report = app.triton(&client, &["call", "infer"]);
    assert_eq!(report["code"], "OK", "{report}");

    // Enrollment never comes back: not for the same fingerprint, not
    // after a restart.
    let (_, newest) = app.enrollment_prompt();
    let out = app.enroll(&fingerprint, &newest);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not in enrollment mode"),
        "{}",
        text(&out)
    );
    let printed = app.stdout_lines().len();
    app.stop();
    app.launch();
    assert!(
        !app.stdout_lines()[printed..]
            .iter()
            .any(|l| l.starts_with("enrollment")),
        "{:?}",
        app.stdout_lines()
    );
    let report = app.triton(&client, &["call", "infer"]);
    assert_eq!(report["code"], "OK", "{report}");

    // Every attempt is in the audit log (never the code).
    let out = app.provision(&["audit", "export"]);
    let audit = text(&out);
    assert!(audit.contains("Enroll.Begin"), "{audit}");
    assert!(audit.contains("Enroll.Complete"), "{audit}");
    assert!(!audit.contains(&code.replace('-', "")) && !audit.contains(&code));
    let _ = admin;
}

#[test]
fn the_code_is_single_use_and_five_wrong_attempts_replace_it() {
    let mut app = Appliance::unenrolled("", "");
    app.launch();
    let (fingerprint, first) = app.enrollment_prompt();

    for left in (1..=4).rev() {
        let e = begin(&app, &fingerprint, &wrong(&first)).unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(
            e.message().contains(&format!("{left} attempts left")),
            "{e:?}"
        );
    }
    let printed = app.stdout_lines().len();
    let e = begin(&app, &fingerprint, &wrong(&first)).unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("replaced"), "{e:?}");
    let second = app.wait_for_line("enrollment code: ", printed);
    let second = second.split_whitespace().next().unwrap().to_owned();
    assert_ne!(second, first);

    // The old code is dead; the new one works, once, typed loosely.
    let e = begin(&app, &fingerprint, &first).unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let csr = begin(&app, &fingerprint, &second.to_lowercase().replace('-', " ")).unwrap();
    assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    let e = begin(&app, &fingerprint, &second).unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Enrolment with the next code printed still works end to end.
    let (_, third) = app.enrollment_prompt();
    let out = app.enroll(&fingerprint, &third);
    assert!(out.status.success(), "{}", text(&out));
    let out = app.provision(&["audit", "export"]);
    let audit = text(&out);
    assert!(
        audit.matches("Enroll.Begin").count() >= 9,
        "every attempt is audited: {audit}"
    );
}

#[test]
fn an_expired_code_is_refused_and_replaced() {
    let mut app = Appliance::unenrolled("", "[enrollment]\ncode_lifetime_s = 2\n");
    app.launch();
    let (fingerprint, code) = app.enrollment_prompt();
    std::thread::sleep(Duration::from_millis(2500));
    let printed = app.stdout_lines().len();
    let e = begin(&app, &fingerprint, &code).unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("expired"), "{e:?}");
    let fresh = app.wait_for_line("enrollment code: ", printed);
    let fresh = fresh.split_whitespace().next().unwrap().to_owned();
    assert!(begin(&app, &fingerprint, &fresh).is_ok());
}

#[test]
fn a_factory_reset_shreds_everything_and_returns_to_enrollment() {
    let mut app = Appliance::start("");
    let admin = app.admin_certs();
    let report = app.triton(&admin, &["status"]);
    assert_eq!(report["live"], true);

    // Refused while the daemon runs (it holds the store), and without a
    // confirmation; nothing is destroyed either time.
    let out = app.appliance(&["factory-reset", "--confirm"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("is the daemon stopped?"),
        "{}",
        text(&out)
    );
    assert_eq!(app.triton(&admin, &["status"])["live"], true);
    app.stop();
    let out = app.appliance(&["factory-reset"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));

    // What a disk image taken before the reset would hold.
    let data = app.dir.path().join("data");
    let image = app.dir.path().join("image");
    test_support::copy_dir(&data, &image);

    let out = app.appliance(&["factory-reset", "--confirm"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("TPM destroyed the store's root key"),
        "{}",
        text(&out)
    );
    assert!(!data.join("db").exists());

    // Nothing on the old disk decrypts on this very TPM.
    let backend = keystore::TpmBackend::new(&app.tpm.tcti(), "sha256:16".parse().unwrap()).unwrap();
    let err = keystore::Store::open(&image, Box::new(backend)).unwrap_err();
    assert!(matches!(err, keystore::Error::ForeignDevice), "{err:?}");

    // The next start is enrollment mode with a new identity; the old
    // clients are refused.
    app.launch();
    let (fingerprint, _) = app.enrollment_prompt();
    assert!(fingerprint.starts_with("SHA256:"));
    let out = app.provision(&["model", "list"]);
    assert!(!out.status.success(), "{}", text(&out));
    let probe = std::process::Command::new(test_support::venv_python())
        .arg(test_support::workspace_root().join("tests/python/oip_client.py"))
        .arg("--url")
        .arg(app.address.to_string())
        .arg("--certs")
        .arg(&admin)
        .arg("status")
        .output()
        .unwrap();
    assert!(!probe.status.success(), "{}", text(&probe));
    assert_eq!(ADMIN, "ops-admin");
}
