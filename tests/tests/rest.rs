//! The REST/JSON form of the protocol on the gRPC port: the stock
//! `tritonclient.http` client (HTTP/1.1, JSON and binary tensors) and curl
//! as a user types it (HTTP/1.1 and HTTP/2), under the same mTLS, grants,
//! audit and metrics as gRPC; bad requests get the protocol's JSON errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use tests::Appliance;

/// curl against the appliance as the client of bundle `certs`: (HTTP
/// status, body). `options` come first (`--http1.1`, `-d`, …).
fn curl(app: &Appliance, certs: Option<&Path>, options: &[&str], path: &str) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--write-out", "\n%{http_code}"]);
    if let Some(certs) = certs {
        cmd.arg("--cacert")
            .arg(certs.join("ca.pem"))
            .arg("--cert")
            .arg(certs.join("cert.pem"))
            .arg("--key")
            .arg(certs.join("key.pem"));
    }
    let out = cmd
        .args(options)
        .arg(format!("https://localhost:{}{path}", app.address.port()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), body.to_owned())
}

fn error_of(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field: {body}"))
        .to_owned()
}

#[test]
fn the_stock_http_client_and_curl_are_served_over_mtls() {
    let mut app = Appliance::start("max_message_bytes = 65536\nhandshake_timeout_ms = 2000\n");
    app.load_reference_models();
    let client = app.client("web-app");
    app.grant("web-app", "digits,minilm");
    let models = test_support::models_dir();
    let models = models.to_str().unwrap();

    let report = app.rest(&client, &["check", models]);
    assert_eq!(report["live"], true, "{report}");
    assert_eq!(report["ready"], true);
    assert_eq!(report["model_ready"], true);
    assert_eq!(report["server"]["name"], "appliance");
    assert_eq!(report["metadata"]["platform"], "tract_onnx");
    assert_eq!(
        report["metadata"]["inputs"],
        serde_json::json!([{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}])
    );
    // JSON and binary tensors carry the same values, bit for bit.
    assert_eq!(report["json_logits"], report["binary_logits"]);
    let accuracy = report["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "accuracy {accuracy}");
    // The classification extension over REST: top 3, argmax first.
    let logits: Vec<Vec<f64>> = serde_json::from_value(report["json_logits"].clone()).unwrap();
    let top: Vec<Vec<String>> = serde_json::from_value(report["top"].clone()).unwrap();
    assert_eq!(top.len(), 5);
    for (row, classes) in logits.iter().zip(&top) {
        assert_eq!(classes.len(), 3);
        let argmax = (0..row.len())
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        assert!(classes[0].ends_with(&format!(":{argmax}")), "{classes:?}");
    }
    // BYTES in (JSON strings), embeddings out: MiniLM's similarities as
    // over gRPC.
    assert_eq!(report["embedding_shape"], serde_json::json!([3, 384]));
    let sims: Vec<f64> = serde_json::from_value(report["similarities"].clone()).unwrap();
    for (got, want) in sims.iter().zip([0.6660, 0.1046]) {
        assert!((got - want).abs() <= 0.03, "{sims:?}");
    }

    // curl as a user types it, over both HTTP versions.
    for version in ["--http1.1", "--http2"] {
        let (code, body) = curl(&app, Some(&client), &[version], "/v2/health/ready");
        assert_eq!(code, 200, "{version}: {body}");
        let (code, body) = curl(&app, Some(&client), &[version], "/v2");
        assert_eq!(code, 200, "{version}: {body}");
        let meta: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(meta["name"], "appliance");
        let request = r#"{"id":"r-1","inputs":[{"name":"input","shape":[1,1,8,8],
            "datatype":"FP32","data":[[[[0,0,5,13,9,1,0,0],[0,0,13,15,10,15,5,0],
            [0,3,15,2,0,11,8,0],[0,4,12,0,0,8,8,0],[0,5,8,0,0,9,8,0],[0,4,11,0,1,12,7,0],
            [0,2,14,5,10,12,0,0],[0,0,6,13,10,0,0,0]]]]}]}"#;
        let (code, body) = curl(
            &app,
            Some(&client),
            &[
                version,
                "-H",
                "Content-Type: application/json",
                "-d",
                request,
            ],
            "/v2/models/digits/infer",
        );
        assert_eq!(code, 200, "{version}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["id"], "r-1");
        assert_eq!(answer["model_name"], "digits");
        assert_eq!(answer["outputs"][0]["name"], "logits");
        assert_eq!(answer["outputs"][0]["shape"], serde_json::json!([1, 10]));
        assert_eq!(answer["outputs"][0]["data"].as_array().unwrap().len(), 10);
    }

    // Errors in the protocol's JSON form, with the right status.
    let post = |body: &str, path: &str| {
        curl(
            &app,
            Some(&client),
            &["--http1.1", "--data-binary", body],
            path,
        )
    };
    let marker = "secret-payload-5f3a";
    let cases: Vec<(u16, String, &str, &str)> = vec![
        (
            400,
            format!("{{\"inputs\": [\"{marker}\""),
            "/v2/models/digits/infer",
            "not a valid",
        ),
        (
            400,
            r#"{"inputs":[{"name":"input","shape":[1,1,8,8],"datatype":"FP32","data":["a"]}]}"#
                .into(),
            "/v2/models/digits/infer",
            "found a string",
        ),
        (
            400,
            format!(
                r#"{{"inputs":[{{"name":"input","shape":[1],"datatype":"FP32","data":{}1{}}}]}}"#,
                "[".repeat(5000),
                "]".repeat(5000)
            ),
            "/v2/models/digits/infer",
            "nested",
        ),
        (
            400,
            r#"{"inputs":[{"name":"input","shape":[1,1,8,8],"datatype":"FP32","data":[1,2]}]}"#
                .into(),
            "/v2/models/digits/infer",
            "input",
        ),
        (
            404,
            r#"{"inputs":[{"name":"input","shape":[1],"datatype":"FP32","data":[1]}]}"#.into(),
            "/v2/models/digits/versions/9/infer",
            "version",
        ),
        (403, "{}".into(), "/v2/models/secret/infer", "not granted"),
        (
            404,
            "{}".into(),
            "/v2/models/digits/explain",
            "no such endpoint",
        ),
        (405, "{}".into(), "/v2/models/digits", "use GET"),
    ];
    for (want, body, path, needle) in &cases {
        let (code, answer) = post(body, path);
        assert_eq!(code, *want, "{path}: {answer}");
        let message = error_of(&answer);
        assert!(message.contains(needle), "{path}: {message}");
        assert!(!message.contains(marker), "payload echoed: {message}");
    }
    // A body over server.max_message_bytes: 413, declared or streamed.
    let big = format!(
        r#"{{"inputs":[{{"name":"input","shape":[1],"datatype":"FP32","data":[{}0]}}]}}"#,
        "0,".repeat(40_000)
    );
    let big_file = app.dir.path().join("big.json");
    std::fs::write(&big_file, &big).unwrap();
    let at_file = format!("@{}", big_file.display());
    for options in [
        vec!["--http1.1", "--data-binary", at_file.as_str()],
        vec![
            "--http1.1",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            at_file.as_str(),
        ],
        vec!["--http2", "--data-binary", at_file.as_str()],
    ] {
        let (code, answer) = curl(&app, Some(&client), &options, "/v2/models/digits/infer");
        assert_eq!(code, 413, "{options:?}: {answer}");
        assert!(error_of(&answer).contains("server.max_message_bytes"));
    }
    // The stock client sees a refusal as an exception with the message.
    let other = app.client("other-app");
    app.grant("other-app", "minilm");
    let report = app.rest(&other, &["call", "infer"]);
    assert_eq!(report["ok"], false, "{report}");
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("not granted model `digits`"),
        "{report}"
    );
    // No client certificate: no TLS session, so no HTTP answer at all.
    let (code, _) = curl(
        &app,
        None,
        &[
            "--cacert",
            client.join("ca.pem").to_str().unwrap(),
            "--http1.1",
        ],
        "/v2/health/live",
    );
    assert_eq!(code, 0);
    // A certificate without a grant: 403 in the JSON form.
    let stranger = app.client("stranger");
    let (code, body) = curl(&app, Some(&stranger), &["--http1.1"], "/v2/health/live");
    assert_eq!(code, 403, "{body}");
    assert!(error_of(&body).contains("has no grant"));

    // A client that never finishes its HTTP/1.1 header is cut after
    // handshake_timeout_ms, not left to hold its connection.
    let slow = app.rest(&client, &["slow-header", "15"]);
    assert_eq!(slow["closed_by_server"], true, "{slow}");
    let after = slow["after_s"].as_f64().unwrap();
    assert!((1.5..10.0).contains(&after), "{slow}");

    // REST calls are audited and counted as the gRPC calls they mirror.
    let records = app.provision_ok(&["audit", "export"]);
    let web: Vec<serde_json::Value> = records
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["client"] == "web-app" && r["rpc"] == "ModelInfer")
        .collect();
    let outcome = |o: &str| web.iter().filter(|r| r["outcome"] == o).count();
    // check: 3 digits calls + 1 minilm; curl: 2; errors: 4 bad requests, 1
    // unknown version, 1 model not granted, 3 too large.
    assert_eq!(outcome("OK"), 6, "{web:?}");
    assert_eq!(outcome("INVALID_ARGUMENT"), 4, "{web:?}");
    assert_eq!(outcome("NOT_FOUND"), 1, "{web:?}");
    assert_eq!(outcome("PERMISSION_DENIED"), 1, "{web:?}");
    assert_eq!(outcome("RESOURCE_EXHAUSTED"), 3, "{web:?}");
    let admin = app.admin_certs();
    let (_, metrics) = app.metrics(&admin);
    assert!(
        metrics.contains("nv_inference_request_success{model=\"digits\",version=\"1\"} 5"),
        "{metrics}"
    );

    // REST against gRPC from the same client, same connection reuse.
    let figures = app.rest(&client, &["latency", models, "200"]);
    println!("REST vs gRPC, digits, one row, 200 calls each: {figures}");
    assert!(figures["rest_p50_ms"].as_f64().unwrap() > 0.0);

    // Nothing of the payload reached the log.
    app.stop();
    assert!(!app.log_text().contains(marker));
}
