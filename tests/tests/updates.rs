//! Signed model updates (G6) from the outside: the vendor's `model-image`,
//! the operator's `provision model update`, the appliance verifying,
//! trialling, switching and rolling back, and the stock tritonclient
//! calling the models throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use images::image::{describe_parts, read_image, write_image};
use images::manifest::{Manifest, PartKind};
use images::tuf::keys::SigningKey;
use images::tuf::repo::sign;
use test_support::{Vendor, models_dir};
use tests::{ADMIN, Appliance, HttpServer, binary, python_tuf_repo, vendor};

const CLIENT: &str = "app";

/// A private copy of the shared vendor, to change freely.
fn own_vendor(app: &Appliance) -> Vendor {
    vendor().copy_to(&app.dir.path().join("vendor"))
}

fn ready_client(app: &mut Appliance) -> PathBuf {
    let certs = app.client(CLIENT);
    app.grant(CLIENT, "*");
    certs
}

fn infer_ok(app: &Appliance, certs: &Path) {
    let r = app.triton(certs, &["call", "infer"]);
    assert_eq!(r["ok"], true, "digits must still answer: {r}");
}

/// (active release, state) of a line in `provision model list`.
fn line(app: &Appliance, name: &str) -> (String, String) {
    let text = app.provision_ok(&["model", "list"]);
    let row = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no line {name} in:\n{text}"));
    let fields: Vec<&str> = row.split_whitespace().collect();
    (fields[1].to_owned(), row.to_owned())
}

fn audit(app: &Appliance) -> Vec<serde_json::Value> {
    let out = app.dir.path().join("audit.jsonl");
    app.provision_ok(&["audit", "export", "--out", out.to_str().unwrap()]);
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn signed_images_install_serve_survive_a_restart_and_are_audited() {
    let mut app = Appliance::start("");
    assert!(app.provision_ok(&["model", "list"]).contains("no models"));
    let text = app.load_reference_models();
    assert!(
        text.contains("verified repository pushed by ops-admin"),
        "{text}"
    );
    assert!(text.contains("trial passed"), "{text}");
    assert!(
        text.contains("installed digits release 1 (version 1)"),
        "{text}"
    );
    assert!(
        text.contains("installed minilm release 1 (version 1)"),
        "{text}"
    );
    let certs = ready_client(&mut app);
    infer_ok(&app, &certs);
    let r = app.triton(&certs, &["infer-text", "The weather is lovely today."]);
    assert_eq!(r["ok"], true, "{r}");
    let (active, row) = line(&app, "digits");
    assert_eq!(active, "r1", "{row}");
    assert!(row.ends_with("serving"), "{row}");

    // A signed line is not unloaded behind the update machinery's back.
    let out = app.provision(&["model", "unload", "--name", "digits", "--version", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("installed from signed images"),
        "{err}"
    );

    // Pushing the same repository again changes nothing.
    let again = app.load_reference_models();
    assert!(
        again.contains("digits release 1 is already installed"),
        "{again}"
    );

    // Every step is in the audit log, with who asked.
    let records = audit(&app);
    let find = |rpc: &str, model: &str| {
        records
            .iter()
            .find(|r| r["rpc"] == rpc && r["model"] == model)
            .unwrap_or_else(|| panic!("no {rpc} record for `{model}`"))
    };
    assert_eq!(find("UpdateVerify", "")["client"], ADMIN);
    let commit = find("UpdateCommit", "digits");
    assert_eq!(commit["outcome"], "OK");
    assert!(
        commit["version"]
            .as_str()
            .unwrap()
            .starts_with("release 1 sha256:")
    );

    // A restart serves the committed releases from the encrypted store.
    app.stop();
    app.launch();
    infer_ok(&app, &certs);
    assert_eq!(line(&app, "minilm").0, "r1");
}

/// An image whose ONNX is not the model its golden vectors were recorded
/// with: valid, loadable, wrong.
fn wrong_weights(good: &Path, onnx: &Path, out: &Path, release: u64) {
    let mut parts: Vec<(PartKind, Vec<u8>)> = Vec::new();
    let manifest = read_image(std::fs::File::open(good).unwrap(), |_, part, bytes| {
        let mut b = Vec::new();
        bytes.read_to_end(&mut b).unwrap();
        parts.push((part.kind, b));
        Ok(())
    })
    .unwrap();
    parts[0].1 = std::fs::read(onnx).unwrap();
    let refs: Vec<(PartKind, &[u8])> = parts.iter().map(|(k, b)| (*k, b.as_slice())).collect();
    let manifest = Manifest {
        release,
        parts: describe_parts(&refs),
        ..manifest
    };
    let slices: Vec<&[u8]> = parts.iter().map(|(_, b)| b.as_slice()).collect();
    write_image(&mut std::fs::File::create(out).unwrap(), &manifest, &slices).unwrap();
}

#[test]
fn refused_images_leave_the_old_release_serving_and_say_why() {
    let mut app = Appliance::start("");
    let v = own_vendor(&app);
    app.update_from(&v.repo(), &["--model", "digits"]);
    let certs = ready_client(&mut app);
    infer_ok(&app, &certs);
    let still = "still serving digits release 1";

    // One vendor repository moving on, as a real one does (its versions only
    // grow), with something wrong at each step.
    let c = v.copy_to(&app.dir.path().join("moving"));
    let target_of = |release: u64| {
        std::fs::read_dir(c.repo().join("targets"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.to_string_lossy()
                    .ends_with(&format!("digits-r{release}.img"))
            })
            .unwrap()
    };

    // Tampered target bytes: the image is staged, fails, rolls back.
    let r2 = c.build("digits", "digits_cnn_qoperator.onnx", 2, 2, &[]);
    c.add(&[&r2], &[]);
    let mut bytes = std::fs::read(target_of(2)).unwrap();
    let at = bytes.len() - 3000;
    bytes[at] ^= 1;
    std::fs::write(target_of(2), bytes).unwrap();
    let text = app.update_refused(&c.repo(), &["--model", "digits"]);
    assert!(text.contains("does not match"), "{text}");
    assert!(text.contains(still), "{text}");

    // Endless data: a target longer than signed.
    let r3 = c.build("digits", "digits_cnn_qoperator.onnx", 3, 3, &[]);
    c.add(&[&r3], &[]);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(target_of(3))
        .unwrap();
    f.write_all(&vec![0u8; 1 << 20]).unwrap();
    let text = app.update_refused(&c.repo(), &["--model", "digits"]);
    assert!(
        text.contains("longer than") || text.contains("bytes after the last part"),
        "{text}"
    );

    // An image for a newer appliance.
    let r4 = c.build(
        "digits",
        "digits_cnn_qoperator.onnx",
        4,
        4,
        &["--min-appliance", "99.0.0"],
    );
    c.add(&[&r4], &[]);
    let text = app.update_refused(&c.repo(), &["--model", "digits"]);
    assert!(text.contains("needs appliance software 99.0.0"), "{text}");

    // Valid ONNX, wrong weights: the trial catches it, and the digest is
    // never tried again.
    let good = c.build("digits", "digits_cnn_qoperator.onnx", 5, 5, &[]);
    let bad = c.dir.join("images/digits-wrong-r5.img");
    wrong_weights(&good, &models_dir().join("digits_cnn.onnx"), &bad, 5);
    c.add(&[&bad], &[]);
    let text = app.update_refused(&c.repo(), &["--model", "digits"]);
    assert!(text.contains("golden vector 0"), "{text}");
    assert!(text.contains(still), "{text}");
    let text = app.update_refused(&c.repo(), &["--model", "digits"]);
    assert!(
        text.contains("failed before and is not tried again"),
        "{text}"
    );

    // Over its latency budget (a sentence takes far more than 1 ms).
    let slow = c.build(
        "minilm",
        "minilm_dynamic.onnx",
        2,
        2,
        &["--latency-budget-ms", "1"],
    );
    c.add(&[&slow], &[]);
    let text = app.update_refused(&c.repo(), &["--model", "minilm"]);
    assert!(text.contains("over the 1 ms latency budget"), "{text}");

    // A validly signed image with a lower release than the one serving:
    // release 7 arrives from a copy of the repository; the repository
    // itself then moves on with release 6 as its newest.
    let fork = c.copy_to(&app.dir.path().join("fork"));
    let r7 = fork.build("digits", "digits_cnn_qoperator.onnx", 7, 7, &[]);
    fork.add(&[&r7], &[]);
    app.update_from(&fork.repo(), &["--model", "digits"]);
    let r6 = c.build("digits", "digits_cnn_qoperator.onnx", 6, 6, &[]);
    c.add(&[&r6], &[]);
    c.repo_cmd("refresh", &[]);
    let text = app.update_refused(&c.repo(), &["--model", "digits"]);
    assert!(text.contains("below the installed release 7"), "{text}");

    // Through all of it: release 7 serves, every refusal is audited.
    infer_ok(&app, &certs);
    assert_eq!(line(&app, "digits").0, "r7");
    let records = audit(&app);
    let refusals: Vec<_> = records
        .iter()
        .filter(|r| r["rpc"].as_str().unwrap().starts_with("Update") && r["outcome"] != "OK")
        .collect();
    assert!(refusals.len() >= 7, "{refusals:?}");
    assert!(
        refusals
            .iter()
            .all(|r| r["client"] == ADMIN && !r["detail"].as_str().unwrap_or("").is_empty()),
        "{refusals:?}"
    );
    // The appliance is consistent after all of it.
    app.stop();
    let (ok, out) = app.audit_verify();
    assert!(ok, "{out}");
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn untrustworthy_metadata_is_refused_and_root_rotation_is_followed() {
    let mut app = Appliance::start("");
    let v = own_vendor(&app);
    app.update_from(&v.repo(), &["--model", "digits"]);
    let certs = ready_client(&mut app);
    let meta = |f: &str| v.repo().join("metadata").join(f);
    let mut refusals = 0;
    let mut refused = |why: &str| {
        let text = app.update_refused(&v.repo(), &[]);
        let lower = text.to_lowercase();
        assert!(
            lower.contains("refused:") && lower.contains(why),
            "not `{why}`: {text}"
        );
        assert!(text.contains("still serving digits release 1"), "{text}");
        infer_ok(&app, &certs);
        refusals += 1;
    };
    let expiring = |args: &[&str], role: &str| {
        v.repo_cmd("refresh", args);
        std::thread::sleep(Duration::from_millis(2100));
        format!("{role} expired at 20")
    };
    let image = vendor()
        .dir
        .join("images/digits-digits_cnn_qoperator.onnx-r1.img");

    // Expired timestamp, snapshot and targets.
    refused(&expiring(&["--timestamp-expires", "1s"], "timestamp"));
    refused(&expiring(
        &["--snapshot", "--snapshot-expires", "1s"],
        "snapshot",
    ));
    v.add(&[&image], &["--targets-expires", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    refused("targets expired at 20");
    v.add(&[&image], &[]);
    assert!(
        app.update_from(&v.repo(), &[])
            .contains("already installed")
    );

    // Replayed older metadata (freeze): a timestamp older than trusted.
    let old = std::fs::read(meta("timestamp.json")).unwrap();
    v.repo_cmd("refresh", &[]);
    app.update_from(&v.repo(), &[]);
    let current = std::fs::read(meta("timestamp.json")).unwrap();
    std::fs::write(meta("timestamp.json"), &old).unwrap();
    refused("rollback");
    std::fs::write(meta("timestamp.json"), &current).unwrap();

    // Mix and match: a snapshot other than the one the timestamp signs.
    let snapshot_version =
        read_json(&meta("timestamp.json"))["signed"]["meta"]["snapshot.json"]["version"]
            .as_u64()
            .unwrap();
    let newest = meta(&format!("{snapshot_version}.snapshot.json"));
    let kept = std::fs::read(&newest).unwrap();
    std::fs::copy(meta("1.snapshot.json"), &newest).unwrap();
    refused("snapshot");
    std::fs::write(&newest, kept).unwrap();

    // A timestamp signed by a key the root does not trust, and one padded
    // past its size bound (by the vendor's own key).
    let mut signed = read_json(&meta("timestamp.json"))["signed"].clone();
    signed["version"] = (signed["version"].as_u64().unwrap() + 1).into();
    let stranger = SigningKey::generate(&app.dir.path().join("stranger.pk8")).unwrap();
    std::fs::write(meta("timestamp.json"), sign(&signed, &[&stranger]).unwrap()).unwrap();
    refused("signature threshold");
    signed["padding"] = "x".repeat(100 * 1024).into();
    let key = SigningKey::load(&v.keys().join("timestamp.pk8")).unwrap();
    std::fs::write(meta("timestamp.json"), sign(&signed, &[&key]).unwrap()).unwrap();
    refused("bound");
    std::fs::write(meta("timestamp.json"), &current).unwrap();

    // A cross-signed root rotation is followed...
    v.repo_cmd("rotate-root", &[]);
    let text = app.update_from(&v.repo(), &[]);
    assert!(text.contains("root v2"), "{text}");
    // ...one signed only by its own new keys is not.
    v.repo_cmd("rotate-root", &[]);
    let v3 = meta("3.root.json");
    let rotated = read_json(&v3);
    let new_key = SigningKey::load(&v.keys().join("root-1.pk8")).unwrap();
    std::fs::write(&v3, sign(&rotated["signed"], &[&new_key]).unwrap()).unwrap();
    refused("root");

    // A repository from another vendor entirely.
    let other = Vendor::new(&binary("model-image"), &app.dir.path().join("other"), &[]);
    let text = app.update_refused(&other.repo(), &[]);
    assert!(text.contains("refused:"), "{text}");

    let records = audit(&app);
    let audited = records
        .iter()
        .filter(|r| r["rpc"] == "UpdateVerify" && r["outcome"] == "FAILED_PRECONDITION")
        .count();
    assert!(
        audited > refusals,
        "{audited} verification refusals audited, {refusals} seen"
    );
}

#[test]
fn rollback_goes_back_one_release_never_below_the_floor() {
    let mut app = Appliance::start("");
    let v = own_vendor(&app);
    app.update_from(&v.repo(), &["--model", "digits"]);
    let certs = ready_client(&mut app);
    let r2 = v.build("digits", "digits_cnn_qoperator.onnx", 2, 2, &[]);
    v.add(&[&r2], &[]);
    assert!(
        app.update_from(&v.repo(), &[])
            .contains("installed digits release 2 (version 2)")
    );
    let (_, row) = line(&app, "digits");
    assert!(row.contains("r2 (v2)") && row.contains("r1 (v1)"), "{row}");

    let text = app.provision_ok(&["model", "rollback", "digits"]);
    assert!(text.contains("serving release 1 (version 1)"), "{text}");
    infer_ok(&app, &certs);
    assert_eq!(line(&app, "digits").0, "r1");
    // The release rolled back from is not installed again.
    let text = app.update_refused(&v.repo(), &["--model", "digits"]);
    assert!(
        text.contains("failed before and is not tried again"),
        "{text}"
    );
    // Nothing left to roll back to.
    let out = app.provision(&["model", "rollback", "digits"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no previous release"));

    // Release 4 declares that nothing below 4 may run again.
    let r3 = v.build("digits", "digits_cnn_qoperator.onnx", 3, 3, &[]);
    v.add(&[&r3], &[]);
    app.update_from(&v.repo(), &["--model", "digits"]);
    let r4 = v.build(
        "digits",
        "digits_cnn_qoperator.onnx",
        4,
        4,
        &["--min-release", "4"],
    );
    v.add(&[&r4], &[]);
    app.update_from(&v.repo(), &["--model", "digits"]);
    let out = app.provision(&["model", "rollback", "digits"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("below the release floor 4"),
        "{err}"
    );
    let (_, row) = line(&app, "digits");
    assert!(
        row.contains("r4 (v4)") && row.split_whitespace().any(|f| f == "4"),
        "{row}"
    );
    infer_ok(&app, &certs);
    let records = audit(&app);
    assert!(
        records
            .iter()
            .any(|r| r["rpc"] == "UpdateRollback" && r["outcome"] == "OK")
    );
}

#[test]
fn unsigned_uploads_are_refused_unless_the_appliance_allows_them() {
    let app = Appliance::start("");
    let onnx = models_dir().join("digits_mlp.onnx");
    let args = [
        "model",
        "load",
        "--name",
        "raw",
        "--version",
        "1",
        "--onnx",
        onnx.to_str().unwrap(),
    ];
    let out = app.provision(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("FAILED_PRECONDITION") && err.contains("allow_unsigned"),
        "{err}"
    );
    drop(app);

    let mut dev = Appliance::start_with("", "[models]\nallow_unsigned = true\n", None);
    assert!(dev.provision_ok(&args).contains("ready"));
    assert!(dev.log_text().contains("UNSIGNED MODELS ALLOWED"));
    let certs = ready_client(&mut dev);
    let r = dev.triton(&certs, &["call", "metadata", "raw"]);
    assert_eq!(r["ok"], true, "{r}");
    // Without an update root, signed updates are refused, saying how to fix it.
    let text = dev.update_refused(&vendor().repo(), &[]);
    assert!(text.contains("--update-root"), "{text}");
}

#[test]
fn a_repository_made_by_python_tuf_verifies_and_installs() {
    let dir = tempfile::tempdir().unwrap();
    let images = vendor().dir.join("images");
    let repo = dir.path().join("repo");
    let root = python_tuf_repo(
        &repo,
        &[&images.join("digits-digits_cnn_qoperator.onnx-r1.img")],
        &[],
    );
    let mut app = Appliance::start_with("", "", Some(&root));
    let text = app.update_from(&repo, &[]);
    assert!(
        text.contains("installed digits release 1 (version 1)"),
        "{text}"
    );
    let certs = ready_client(&mut app);
    infer_ok(&app, &certs);

    // Mislabelled by a holder of the vendor's keys: the image's own
    // manifest names another line.
    let mislabelled = dir.path().join("mislabelled");
    let root = python_tuf_repo(
        &mislabelled,
        &[&images.join("minilm-minilm_dynamic.onnx-r1.img")],
        &["--claim-model", "digits"],
    );
    let other = Appliance::start_with("", "", Some(&root));
    let text = other.update_refused(&mislabelled, &[]);
    assert!(
        text.contains("the image is for model line `minilm`, not `digits`"),
        "{text}"
    );
}

/// The daemon's pid and a way to wait for it to be gone.
fn kill_9(app: &Appliance) {
    let pid = app.pid();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}/status")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map(|s| !s.contains("State:\tZ"))
            .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "pid {pid} survived SIGKILL");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn kill_9_at_random_moments_of_installs_leaves_one_complete_release() {
    let mut app = Appliance::start("");
    let v = own_vendor(&app);
    app.update_from(&v.repo(), &["--model", "digits"]);
    let certs = ready_client(&mut app);
    let update = |app: &Appliance| {
        Command::new(binary("provision"))
            .args(["model", "update", "--model", "digits", "--repo"])
            .arg(v.repo())
            .arg("--appliance")
            .arg(app.address.to_string())
            .arg("--admin")
            .arg(app.dir.path().join("clients").join(ADMIN))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // How long one whole install takes here: kills are spread over it.
    let r2 = v.build("digits", "digits_cnn_qoperator.onnx", 2, 2, &[]);
    v.add(&[&r2], &[]);
    let started = Instant::now();
    assert!(update(&app).wait().unwrap().success());
    let span = started.elapsed().as_millis() as u64 + 1;
    let mut serving = 2u64;
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let (mut after, mut before) = (0, 0);
    for round in 0..20u64 {
        let release = serving + 1;
        let r = v.build("digits", "digits_cnn_qoperator.onnx", release, release, &[]);
        v.add(&[&r], &[]);
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis((seed >> 33) % span);
        let mut child = update(&app);
        std::thread::sleep(delay);
        kill_9(&app);
        let _ = child.wait();
        app.launch();
        // Exactly one complete release serves: the old or the new one.
        let (active, row) = line(&app, "digits");
        assert!(
            active == format!("r{serving}") || active == format!("r{release}"),
            "round {round} (kill after {delay:?}): {row}"
        );
        // The state column follows the floor and two spaces.
        let state = row.rsplit("  ").next().unwrap();
        assert!(
            state == "serving" || state.starts_with("rolled back"),
            "{row}"
        );
        infer_ok(&app, &certs);
        if active == format!("r{release}") {
            serving = release;
            after += 1;
        } else {
            before += 1;
        }
    }
    println!("20 kills over a {span} ms install: {after} after the commit, {before} before");
    app.stop();
    let (ok, out) = app.audit_verify();
    assert!(ok, "{out}");
}

#[test]
fn no_request_fails_while_releases_swap_under_load() {
    let mut app = Appliance::start("");
    let v = own_vendor(&app);
    app.update_from(&v.repo(), &["--model", "digits"]);
    let certs = app.client(CLIENT);
    app.provision_ok(&[
        "grant",
        "--client",
        CLIENT,
        "--models",
        "*",
        "--rate",
        "100000/s",
        "--quota",
        "unlimited",
    ]);
    let r2 = v.build("digits", "digits_cnn_qoperator.onnx", 2, 2, &[]);
    v.add(&[&r2], &[]);
    let mut load = app.triton_process(&certs, &["load", "8"]);
    let mut stdout = BufReader::new(load.stdout.take().unwrap());
    let mut line_ = String::new();
    stdout.read_line(&mut line_).unwrap();
    assert_eq!(line_.trim(), "running");
    std::thread::sleep(Duration::from_millis(500));
    app.update_from(&v.repo(), &["--model", "digits"]);
    let committed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    std::thread::sleep(Duration::from_millis(1500));
    app.provision_ok(&["model", "rollback", "digits"]);
    let rolled_back = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    std::thread::sleep(Duration::from_millis(1500));
    load.stdin.take().unwrap().write_all(b"stop\n").unwrap();
    let mut json = String::new();
    stdout.read_line(&mut json).unwrap();
    load.wait().unwrap();
    let totals: serde_json::Value = serde_json::from_str(&json).unwrap();
    println!("swap under load: {totals}");
    assert_eq!(totals["errors"], serde_json::json!({}), "{totals}");
    assert!(totals["requests"].as_u64().unwrap() > 100, "{totals}");
    let v1 = &totals["versions"]["1"];
    let v2 = &totals["versions"]["2"];
    // Release 2 answered within 1 s of its commit, release 1 within 1 s of
    // the rollback; neither answered long after it was replaced.
    assert!(v2["first"].as_f64().unwrap() <= committed + 1.0, "{totals}");
    assert!(
        v2["last"].as_f64().unwrap() <= rolled_back + 1.0,
        "{totals}"
    );
    assert!(v1["last"].as_f64().unwrap() >= rolled_back, "{totals}");
}

#[test]
fn a_mirror_and_a_local_directory_are_sources_too() {
    let mut app = Appliance::start("");
    let repo = vendor().repo();
    // USB media: a directory on the appliance.
    let text = app.provision_ok(&[
        "model",
        "update",
        "--local-dir",
        repo.to_str().unwrap(),
        "--model",
        "digits",
    ]);
    assert!(text.contains("verified directory"), "{text}");
    assert!(text.contains("installed digits release 1"), "{text}");

    // A LAN mirror: any static HTTP server over the repository.
    let server = HttpServer::start(&repo);
    let url = server.url();
    let text = app.provision_ok(&["model", "update", "--mirror", &url, "--model", "minilm"]);
    assert!(text.contains(&format!("verified mirror {url}")), "{text}");
    assert!(text.contains("installed minilm release 1"), "{text}");
    drop(server);
    // An unreachable mirror is UNAVAILABLE, not a verification failure.
    let out = app.provision(&["model", "update", "--mirror", &url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&format!("{url}/metadata")),
        "{err}"
    );
    let certs = ready_client(&mut app);
    infer_ok(&app, &certs);
}

#[test]
fn removing_a_model_line_shreds_its_key_for_good() {
    let mut app = Appliance::start("");
    app.update_from(&vendor().repo(), &["--model", "digits"]);
    let certs = ready_client(&mut app);
    infer_ok(&app, &certs);
    let data = app.dir.path().join("data");
    // What a thief copying the disk now would hold.
    let copy = test_support::files_under(&data.join("blobs"));
    let text = app.provision_ok(&["model", "remove", "digits"]);
    assert!(text.contains("its data key was shredded"), "{text}");
    let r = app.triton(&certs, &["call", "infer"]);
    assert_eq!(r["code"], "NOT_FOUND", "{r}");
    let (_, row) = line(&app, "digits");
    assert!(row.contains("removed by ops-admin"), "{row}");
    app.stop();

    // The copy put back, read with this very TPM: the key is gone.
    for (path, bytes) in &copy {
        std::fs::write(path, bytes).unwrap();
    }
    let backend = keystore::TpmBackend::new(&app.tpm.tcti(), "sha256:16".parse().unwrap()).unwrap();
    let store = keystore::Store::open(&data, Box::new(backend)).unwrap();
    for part in ["onnx", "vectors"] {
        match store.open_blob(&format!("update/digits/1/{part}")) {
            Err(keystore::Error::Shredded { .. }) => {}
            other => panic!(
                "{part}: expected a shredded key, got {:?}",
                other.map(|_| "a readable blob")
            ),
        }
    }
    drop(store);
    // Installed again, it serves under a new key.
    app.launch();
    assert!(
        app.update_from(&vendor().repo(), &["--model", "digits"])
            .contains("installed digits release 1")
    );
    infer_ok(&app, &certs);
}
