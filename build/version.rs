//! Build script shared by the crates that ship binaries: puts the git
//! commit the binary was built from into `APPLIANCE_VERSION`, so every
//! `--version` says exactly which source it is (`0.1.0 (commit 1a2b3c4d5e6f)`).
//! Outside a git checkout (a source tarball) it says so instead of failing.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let commit = git(&["rev-parse", "--short=12", "HEAD"]);
    // A new commit (HEAD moves, or the branch it names does) reruns this.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
        println!("cargo:rerun-if-changed={dir}/packed-refs");
    }
    let described = match commit {
        Some(c) => format!("{version} (commit {c})"),
        None => format!("{version} (not built from a git checkout)"),
    };
    println!("cargo:rustc-env=APPLIANCE_VERSION={described}");
}
