//! The stock Triton client against the appliance, and what the appliance
//! keeps of it: an audit record per call, nothing of the payload on disk or
//! in its logs, models that survive a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use test_support::files_under;
use tests::{ADMIN, Appliance};

#[test]
fn the_stock_triton_client_is_served_over_mtls() {
    let mut app = Appliance::start("");
    app.load_reference_models();
    let client = app.client("analytics-app");
    app.grant("analytics-app", "digits,minilm");

    let report = app.triton(
        &client,
        &["check", test_support::models_dir().to_str().unwrap()],
    );
    assert_eq!(report["live"], true);
    assert_eq!(report["ready"], true);
    assert_eq!(report["model_ready"]["digits"], true);
    assert_eq!(report["model_ready"]["minilm"], true);
    assert_eq!(
        report["metadata"]["digits"]["inputs"],
        serde_json::json!([["input", "FP32", [-1, 1, 8, 8]]])
    );
    assert_eq!(
        report["metadata"]["minilm"]["inputs"],
        serde_json::json!([["text", "BYTES", [-1]]])
    );
    assert_eq!(report["metadata"]["digits"]["platform"], "tract_onnx");
    // The int8 CNN's held-out accuracy, through the wire, batch 450.
    let accuracy = report["digits_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 97.0, "accuracy {accuracy}");
    assert_eq!(report["digits_single_matches_batch"], true);
    let sims: Vec<f64> = serde_json::from_value(report["minilm_similarities"].clone()).unwrap();
    for (got, want) in sims.iter().zip([0.6660, 0.1046, 0.1411]) {
        assert!((got - want).abs() <= 0.03, "{sims:?}");
    }

    // The classification extension, as tritonclient asks for it
    // (`class_count`): the top k of each row as "score:index", highest
    // first, the score printed as Triton does.
    let models = test_support::models_dir();
    let report = app.triton(&client, &["classify", models.to_str().unwrap(), "3"]);
    assert_eq!(report["shape"], serde_json::json!([5, 3]), "{report}");
    let logits: Vec<Vec<f64>> = serde_json::from_value(report["logits"].clone()).unwrap();
    let top: Vec<Vec<String>> = serde_json::from_value(report["top"].clone()).unwrap();
    for (row, classes) in logits.iter().zip(&top) {
        let mut previous = f64::INFINITY;
        for class in classes {
            let (score, index) = class.split_once(':').unwrap();
            assert_eq!(score.split_once('.').unwrap().1.len(), 6, "{class}");
            let (score, index): (f64, usize) = (score.parse().unwrap(), index.parse().unwrap());
            assert!((score - row[index]).abs() < 1e-5, "{class} vs {row:?}");
            assert!(score <= previous, "{classes:?}");
            previous = score;
        }
        let argmax = (0..row.len())
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        assert!(classes[0].ends_with(&format!(":{argmax}")), "{classes:?}");
    }
    // More classes than the output has: all of them.
    let report = app.triton(&client, &["classify", models.to_str().unwrap(), "20"]);
    assert_eq!(report["shape"], serde_json::json!([5, 10]), "{report}");

    // Models, grants and the audit log survive a restart (all in the
    // TPM-sealed keystore).
    app.stop();
    app.launch();
    let report = app.triton(&client, &["call", "infer"]);
    assert_eq!(report["code"], "OK", "{report}");
}

#[test]
fn payloads_reach_neither_disk_nor_logs_and_every_call_is_audited() {
    let mut app = Appliance::start("");
    app.load_reference_models();
    let client = app.client("clinic-app");
    app.grant("clinic-app", "digits,minilm");

    // Markers a scan can find in raw, hex or base64 form.
    let text_marker = "patient-7c41e9d2-confidential";
    let report = app.triton(&client, &["infer-text", text_marker, "second sentence"]);
    assert_eq!(report["code"], "OK", "{report}");
    let byte_marker = "c0ffee5a17e0bead";
    let report = app.triton(
        &client,
        &[
            "raw",
            "digits",
            "input",
            "FP32",
            "1,1,8,8",
            "256",
            "--fill",
            byte_marker,
        ],
    );
    assert_eq!(report["code"], "OK", "{report}");
    // A failing request with a marker: its error must not echo the bytes.
    let report = app.triton(
        &client,
        &[
            "raw",
            "digits",
            "input",
            "FP32",
            "1,1,8,8",
            "255",
            "--fill",
            byte_marker,
        ],
    );
    assert_eq!(report["code"], "INVALID_ARGUMENT", "{report}");
    assert!(!report["message"].as_str().unwrap().contains("c0ffee"));

    let admin_calls = app.provision_ok(&["audit", "export"]);
    app.stop();

    let b64 = |b: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b)
    };
    let marker_bytes = hex::decode(byte_marker).unwrap();
    let needles: Vec<Vec<u8>> = vec![
        text_marker.as_bytes().to_vec(),
        hex::encode(text_marker).into_bytes(),
        b64(text_marker.as_bytes()).into_bytes(),
        marker_bytes.repeat(2),
        byte_marker.as_bytes().to_vec(),
        b64(&marker_bytes.repeat(3)).into_bytes(),
    ];
    let data = app.dir.path().join("data");
    let mut scanned = 0;
    for (path, bytes) in files_under(&data)
        .into_iter()
        .chain([(app.log.clone(), std::fs::read(&app.log).unwrap())])
    {
        scanned += 1;
        for needle in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "payload marker found in {}",
                path.display()
            );
        }
    }
    assert!(scanned > 3);
    // Nothing the daemon wrote is readable by other users, whatever the
    // umask it was started under (this test's is the usual 022).
    for (path, _) in files_under(&data) {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
        let dir = path.parent().unwrap();
        let mode = std::fs::metadata(dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", dir.display());
    }

    // Every call of this test is in the audit log, with the client's name.
    let records: Vec<serde_json::Value> = admin_calls
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let infer: Vec<_> = records
        .iter()
        .filter(|r| r["rpc"] == "ModelInfer" && r["client"] == "clinic-app")
        .collect();
    assert_eq!(infer.len(), 3, "{records:?}");
    assert_eq!(infer[2]["outcome"], "INVALID_ARGUMENT");
    assert!(
        records
            .iter()
            .any(|r| r["rpc"] == "UpdateModels" && r["client"] == ADMIN)
    );
    assert!(records.iter().any(|r| r["rpc"] == "PutGrant"));

    let (ok, out) = app.audit_verify();
    assert!(ok, "{out}");
    assert!(out.contains("hash chain verified"), "{out}");

    // Flip one byte of one audit record on disk: detected, and named.
    flip_audit_byte(&data);
    let (ok, out) = app.audit_verify();
    assert!(!ok, "a flipped byte went unnoticed: {out}");
    // Record ids are keyed hashes, so the flipped record may be any one,
    // the head record included; either way the damage is named.
    assert!(out.contains("audit log damaged"), "{out}");
    assert!(out.contains("failed authentication"), "{out}");
}

/// Flips a byte in the middle of some record of the largest record tree
/// (the audit log, by far, in this test).
fn flip_audit_byte(data: &std::path::Path) {
    let db = test_support::open_raw_database(data);
    let tree = db
        .tree_names()
        .into_iter()
        .filter(|n| n.len() == 32)
        .map(|n| db.open_tree(n).unwrap())
        .max_by_key(|t| t.len())
        .unwrap();
    let (key, value) = tree.iter().nth(2).unwrap().unwrap();
    let mut value = value.to_vec();
    let middle = value.len() / 2;
    value[middle] ^= 0x20;
    tree.insert(key, value).unwrap();
    db.flush().unwrap();
}
