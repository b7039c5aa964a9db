//! `tuf-client`, the appliance's verifier behind the TUF conformance
//! client protocol (init / refresh / download, exit 0 or 1, byte-exact
//! trusted metadata in the metadata directory), against repositories served
//! over HTTP on loopback: one made by python-tuf, one by `model-image`.
//! Expiry is tested the way the conformance suite does it, under faketime.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use test_support::Vendor;
use tests::{HttpServer, binary, python_tuf_repo, vendor};

struct Client {
    metadata: PathBuf,
    targets: PathBuf,
    url: String,
}

impl Client {
    fn new(dir: &Path, server: &HttpServer) -> Client {
        Client {
            metadata: dir.join("client-metadata"),
            targets: dir.join("client-targets"),
            url: server.url(),
        }
    }

    fn run(&self, wrapper: &[&str], args: &[&str]) -> Output {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(binary("tuf-client"));
                c
            }
            None => Command::new(binary("tuf-client")),
        };
        cmd.arg("--metadata-dir").arg(&self.metadata);
        cmd.args(args);
        cmd.output().unwrap()
    }

    fn init(&self, root: &Path) -> Output {
        self.run(&[], &["init", root.to_str().unwrap()])
    }

    fn refresh_under(&self, wrapper: &[&str]) -> Output {
        let metadata = format!("{}/metadata", self.url);
        self.run(wrapper, &["--metadata-url", &metadata, "refresh"])
    }

    fn download(&self, names: &[&str]) -> Output {
        let metadata = format!("{}/metadata", self.url);
        let targets = format!("{}/targets", self.url);
        let mut args = vec![
            "--metadata-url",
            &metadata,
            "--target-base-url",
            &targets,
            "--target-dir",
            self.targets.to_str().unwrap(),
        ];
        for n in names {
            args.extend_from_slice(&["--target-name", n]);
        }
        args.push("download");
        self.run(&[], &args)
    }

    fn file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.metadata.join(name)).unwrap()
    }

    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.metadata)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fails(out: &Output, why: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "should fail ({why}): {err}");
    assert!(err.contains(why), "failed, but not for `{why}`: {err}");
}

#[test]
fn a_python_tuf_repository_refreshes_and_downloads_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let image = vendor()
        .dir
        .join("images")
        .join("digits-digits_cnn_qoperator.onnx-r1.img");
    python_tuf_repo(&repo, &[&image], &[]);
    let server = HttpServer::start(&repo);
    let client = Client::new(dir.path(), &server);

    ok(&client.init(&repo.join("metadata/1.root.json")));
    assert_eq!(client.files(), ["root.json"]);
    ok(&client.refresh_under(&[]));
    assert_eq!(
        client.files(),
        [
            "root.json",
            "snapshot.json",
            "targets.json",
            "timestamp.json"
        ]
    );
    let served = |f: &str| std::fs::read(repo.join("metadata").join(f)).unwrap();
    assert_eq!(client.file("root.json"), served("1.root.json"));
    assert_eq!(client.file("timestamp.json"), served("timestamp.json"));
    assert_eq!(client.file("snapshot.json"), served("1.snapshot.json"));
    assert_eq!(client.file("targets.json"), served("1.targets.json"));

    ok(&client.download(&["digits-r1.img"]));
    let got = std::fs::read(client.targets.join("digits-r1.img")).unwrap();
    assert_eq!(got, std::fs::read(&image).unwrap());
    // Already present with the right hash: nothing is fetched again.
    ok(&client.download(&["digits-r1.img"]));
    // A target that is not in the metadata fails.
    fails(&client.download(&["missing.img"]), "not in the repository");
    // A tampered target fails and is not kept.
    let target = std::fs::read_dir(repo.join("targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    let mut bytes = std::fs::read(&target).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&target, bytes).unwrap();
    std::fs::remove_file(client.targets.join("digits-r1.img")).unwrap();
    fails(
        &client.download(&["digits-r1.img"]),
        "does not match the sha256",
    );
    assert!(!client.targets.join("digits-r1.img").exists());
}

#[test]
fn rotation_rollback_and_expiry_follow_the_specification() {
    let dir = tempfile::tempdir().unwrap();
    let v: Vendor = vendor().copy_to(&dir.path().join("vendor"));
    let server = HttpServer::start(&v.repo());
    let client = Client::new(dir.path(), &server);
    ok(&client.init(&v.root_json()));
    ok(&client.refresh_under(&[]));
    let first_timestamp = client.file("timestamp.json");

    // A cross-signed root rotation is followed.
    v.repo_cmd("rotate-root", &[]);
    ok(&client.refresh_under(&[]));
    assert_eq!(
        client.file("root.json"),
        std::fs::read(v.repo().join("metadata/2.root.json")).unwrap()
    );

    // A replayed older timestamp is a rollback; the trusted files stay.
    v.repo_cmd("refresh", &[]);
    ok(&client.refresh_under(&[]));
    let current = std::fs::read(v.repo().join("metadata/timestamp.json")).unwrap();
    std::fs::write(v.repo().join("metadata/timestamp.json"), &first_timestamp).unwrap();
    fails(&client.refresh_under(&[]), "rollback");
    assert_eq!(
        client.file("timestamp.json"),
        current,
        "the trusted files stay"
    );
    std::fs::write(v.repo().join("metadata/timestamp.json"), &current).unwrap();
    ok(&client.refresh_under(&[]));

    // Eight days on (faketime), the 7-day timestamp has expired.
    fails(
        &client.refresh_under(&["faketime", "-f", "+8d"]),
        "timestamp expired at",
    );
    // Two years on, the root has too.
    fails(
        &client.refresh_under(&["faketime", "-f", "+730d"]),
        "expired",
    );
    // Today it is fine.
    ok(&client.refresh_under(&[]));
    // Bad usage and a missing root are failures, not crashes.
    let empty = Client::new(&dir.path().join("empty"), &server);
    fails(&empty.refresh_under(&[]), "run init");
    fails(
        &empty.init(&dir.path().join("no-such-root.json")),
        "reading",
    );
}
