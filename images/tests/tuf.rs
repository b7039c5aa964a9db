//! The vendor's repository (made by the real `model-image` binary) read by
//! the appliance's verifier (tough behind our wrapper), and every attack of
//! TUF's threat model against it: each must be refused with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use images::image::read_image;
use images::tuf::keys::SigningKey;
use images::tuf::repo::sign;
use images::tuf::source::{DirSource, RepositorySource};
use images::tuf::verify::{Refreshed, ToughVerifier, TrustedMetadata, Verifier};
use serde_json::Value;
use test_support::Vendor;

const TOOL: &str = env!("CARGO_BIN_EXE_model-image");

fn vendor(dir: &Path, keys_args: &[&str]) -> Vendor {
    let v = Vendor::new(Path::new(TOOL), &dir.join("vendor"), keys_args);
    let image = v.build("digits", "digits_mlp_qoperator.onnx", 1, 1, &[]);
    v.add(&[&image], &[]);
    v
}

fn trusted(v: &Vendor) -> TrustedMetadata {
    TrustedMetadata::from_root(&std::fs::read(v.root_json()).unwrap()).unwrap()
}

fn refresh(trusted: &TrustedMetadata, repo: &Path) -> Result<Refreshed, String> {
    let source: Arc<dyn RepositorySource> = Arc::new(DirSource::new(repo));
    ToughVerifier::with_default_scratch()
        .refresh(trusted, source)
        .map_err(|e| e.to_string())
}

fn refused(trusted: &TrustedMetadata, repo: &Path, why: &str) {
    match refresh(trusted, repo) {
        Ok(_) => panic!("accepted a repository that should be refused ({why})"),
        Err(e) => assert!(
            e.to_lowercase().contains(&why.to_lowercase()),
            "refused, but not for `{why}`: {e}"
        ),
    }
}

fn metadata(repo: &Path, file: &str) -> PathBuf {
    repo.join("metadata").join(file)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Re-signs `signed` with the vendor's key for `role` and writes it.
fn resign(v: &Vendor, role: &str, signed: &Value, path: &Path) {
    let key = SigningKey::load(&v.keys().join(format!("{role}.pk8"))).unwrap();
    std::fs::write(path, sign(signed, &[&key]).unwrap()).unwrap();
}

fn target_file(repo: &Path) -> PathBuf {
    std::fs::read_dir(repo.join("targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".digits-r1.img"))
        .unwrap()
}

#[test]
fn a_vendor_repository_verifies_and_its_image_streams_whole() {
    let dir = tempfile::tempdir().unwrap();
    let v = vendor(dir.path(), &[]);
    let t = trusted(&v);
    let r = refresh(&t, &v.repo()).unwrap();
    assert_eq!(r.versions.root, 1);
    assert_eq!(r.versions.targets, 2, "init made v1, add made v2");
    assert_eq!(r.targets.len(), 1);
    let target = &r.targets[0];
    assert_eq!(target.name, "digits-r1.img");
    assert_eq!(target.custom["model"], "digits");
    assert_eq!(target.custom["release"], 1);
    // The stored metadata is byte-exact what the repository holds.
    assert_eq!(
        r.trusted.timestamp.as_deref().unwrap(),
        std::fs::read(metadata(&v.repo(), "timestamp.json")).unwrap()
    );
    let source = DirSource::new(&v.repo());
    let reader = r.open_target(&source, target).unwrap();
    let mut parts = Vec::new();
    let manifest = read_image(reader, |_, part, bytes| {
        let mut n = Vec::new();
        bytes.read_to_end(&mut n).unwrap();
        parts.push((part.kind, n.len()));
        Ok(())
    })
    .unwrap();
    assert_eq!(manifest.name.as_str(), "digits");
    assert_eq!(parts.len(), 2, "onnx and vectors");

    // A second refresh of the same repository changes nothing.
    let again = refresh(&r.trusted, &v.repo()).unwrap();
    assert_eq!(again.trusted, r.trusted);
    // The stored form round-trips.
    assert_eq!(
        TrustedMetadata::from_bytes(&r.trusted.to_bytes()).unwrap(),
        r.trusted
    );
}

#[test]
fn tampered_and_overlong_targets_are_refused_while_streaming() {
    let dir = tempfile::tempdir().unwrap();
    let v = vendor(dir.path(), &[]);
    let r = refresh(&trusted(&v), &v.repo()).unwrap();
    let file = target_file(&v.repo());
    let original = std::fs::read(&file).unwrap();
    let source = DirSource::new(&v.repo());
    let stream = |r: &Refreshed| -> String {
        let reader = r.open_target(&source, &r.targets[0]).unwrap();
        read_image(reader, |_, _, bytes| {
            std::io::copy(bytes, &mut std::io::sink()).map_err(|source| images::Error::Stream {
                what: "test".into(),
                source,
            })?;
            Ok(())
        })
        .unwrap_err()
        .to_string()
    };

    // A flipped byte deep in the ONNX part: its manifest digest fails first.
    let mut bad = original.clone();
    let at = bad.len() - 2000;
    bad[at] ^= 0x55;
    std::fs::write(&file, &bad).unwrap();
    let e = stream(&r);
    assert!(e.contains("does not match"), "{e}");

    // Endless data: the signed length is the bound.
    let mut long = original.clone();
    long.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&file, &long).unwrap();
    let e = stream(&r);
    assert!(
        e.contains("bytes after the last part") || e.contains("longer than"),
        "{e}"
    );

    // Short data.
    std::fs::write(&file, &original[..original.len() / 2]).unwrap();
    let e = stream(&r);
    assert!(e.contains("ends"), "{e}");
}

#[test]
fn expired_metadata_is_refused_naming_the_role_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let v = vendor(dir.path(), &[]);
    v.repo_cmd("refresh", &["--timestamp-expires", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    refused(&trusted(&v), &v.repo(), "timestamp expired at 20");

    v.repo_cmd("refresh", &["--snapshot", "--snapshot-expires", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    refused(&trusted(&v), &v.repo(), "snapshot expired at");
}

#[test]
fn replayed_older_metadata_is_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let v = vendor(dir.path(), &[]);
    let old_timestamp = std::fs::read(metadata(&v.repo(), "timestamp.json")).unwrap();
    let first = refresh(&trusted(&v), &v.repo()).unwrap();
    let image = v.build("digits", "digits_mlp_qoperator.onnx", 2, 1, &[]);
    v.add(&[&image], &[]);
    let second = refresh(&first.trusted, &v.repo()).unwrap();
    assert_eq!(second.targets.len(), 2);
    // A mirror that serves the earlier timestamp (freeze / replay).
    std::fs::write(metadata(&v.repo(), "timestamp.json"), &old_timestamp).unwrap();
    refused(
        &second.trusted,
        &v.repo(),
        "rollback: found version 2 of timestamp",
    );
}

#[test]
fn a_timestamp_resigned_at_the_same_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = vendor(dir.path(), &[]);
    let r = refresh(&trusted(&v), &v.repo()).unwrap();
    let path = metadata(&v.repo(), "timestamp.json");
    let mut signed = read_json(&path)["signed"].clone();
    signed["expires"] = Value::from("2099-01-01T00:00:00Z");
    resign(&v, "timestamp", &signed, &path);
    refused(&r.trusted, &v.repo(), "signed again with different content");
}

#[test]
fn mix_and_match_snapshots_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = vendor(dir.path(), &[]);
    // The timestamp names snapshot v2 by hash; serve v1's bytes as v2.
    let one = std::fs::read(metadata(&v.repo(), "1.snapshot.json")).unwrap();
    std::fs::write(metadata(&v.repo(), "2.snapshot.json"), one).unwrap();
    refused(&trusted(&v), &v.repo(), "snapshot");
}

#[test]
fn signatures_by_untrusted_keys_or_under_threshold_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = vendor(dir.path(), &["--root-keys", "2", "--root-threshold", "2"]);
    let t = trusted(&v);
    refresh(&t, &v.repo()).unwrap();

    // A timestamp signed by a key the root does not list.
    let path = metadata(&v.repo(), "timestamp.json");
    let mut signed = read_json(&path)["signed"].clone();
    signed["version"] = Value::from(signed["version"].as_u64().unwrap() + 1);
    let stranger = SigningKey::generate(&dir.path().join("stranger.pk8")).unwrap();
    std::fs::write(&path, sign(&signed, &[&stranger]).unwrap()).unwrap();
    refused(&t, &v.repo(), "signature threshold");

    // A root signed by one of its two required keys.
    let root = read_json(&v.root_json());
    let mut one_signature = root.clone();
    one_signature["signatures"] = Value::Array(vec![root["signatures"][0].clone()]);
    let e = TrustedMetadata::from_root(&serde_json::to_vec(&one_signature).unwrap()).unwrap_err();
    assert!(e.to_string().contains("threshold"), "{e}");
}

#[test]
fn root_rotation_is_followed_only_when_cross_signed() {
    let dir = tempfile::tempdir().unwrap();
    let v = vendor(dir.path(), &[]);
    let t = trusted(&v);
    v.repo_cmd("rotate-root", &[]);
    let r = refresh(&t, &v.repo()).unwrap();
    assert_eq!(
        r.versions.root, 2,
        "the appliance follows a cross-signed rotation"
    );

    // Version 3 signed only by its own new keys, not by version 2's.
    let v3 = metadata(&v.repo(), "3.root.json");
    v.repo_cmd("rotate-root", &[]);
    let rotated = read_json(&v3);
    let new_key = SigningKey::load(&v.keys().join("root-1.pk8")).unwrap();
    std::fs::write(&v3, sign(&rotated["signed"], &[&new_key]).unwrap()).unwrap();
    refused(&r.trusted, &v.repo(), "root");
}

#[test]
fn oversized_metadata_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = vendor(dir.path(), &[]);
    let path = metadata(&v.repo(), "timestamp.json");
    let mut signed = read_json(&path)["signed"].clone();
    signed["padding"] = Value::from("x".repeat(100 * 1024));
    resign(&v, "timestamp", &signed, &path);
    refused(&trusted(&v), &v.repo(), "bound");
}

#[test]
fn a_repository_signed_by_another_vendor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ours = vendor(&dir.path().join("ours"), &[]);
    let theirs = vendor(&dir.path().join("theirs"), &[]);
    refused(&trusted(&ours), &theirs.repo(), "signature threshold");
}
