//! G2's limits: a client over its rate or its daily quota gets
//! RESOURCE_EXHAUSTED saying which limit, and is served again once the
//! bucket refills or the operator raises the quota.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tests::Appliance;

#[test]
fn rate_and_quota_limits_trip_and_recover() {
    let mut app = Appliance::start("");
    app.load_reference_models();
    let certs = app.client("bursty-app");

    app.provision_ok(&[
        "grant",
        "--client",
        "bursty-app",
        "--models",
        "digits",
        "--rate",
        "2/s",
        "--burst",
        "3",
        "--quota",
        "unlimited",
    ]);
    let counts = app.triton(&certs, &["flood", "12"]);
    let ok = counts["OK"].as_u64().unwrap_or(0);
    let exhausted = counts["RESOURCE_EXHAUSTED"].as_u64().unwrap_or(0);
    assert!(ok >= 3 && exhausted >= 5, "{counts}");
    let message = counts["messages"]["RESOURCE_EXHAUSTED"].as_str().unwrap();
    assert!(
        message.contains("rate limit of 2 requests per second"),
        "{message}"
    );

    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(app.triton(&certs, &["call", "infer"])["code"], "OK");

    app.provision_ok(&[
        "grant",
        "--client",
        "bursty-app",
        "--models",
        "digits",
        "--rate",
        "1000/s",
        "--quota",
        "5/day",
    ]);
    let counts = app.triton(&certs, &["flood", "8"]);
    assert_eq!(counts["OK"], 5, "{counts}");
    assert_eq!(counts["RESOURCE_EXHAUSTED"], 3, "{counts}");
    let message = counts["messages"]["RESOURCE_EXHAUSTED"].as_str().unwrap();
    assert!(
        message.contains("daily quota of 5 requests exhausted"),
        "{message}"
    );

    // The operator raises the quota: served again.
    app.provision_ok(&[
        "grant",
        "--client",
        "bursty-app",
        "--models",
        "digits",
        "--rate",
        "1000/s",
        "--quota",
        "100/day",
    ]);
    assert_eq!(app.triton(&certs, &["call", "infer"])["code"], "OK");
}
