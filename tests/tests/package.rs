//! The Debian package, for real: `scripts/package` builds it from the dev
//! binaries `scripts/test` has built (no release build), its contents are
//! checked, dpkg installs it on this machine, the INSTALLED daemon starts as
//! user `appliance` with the packaged configuration (only the listen address
//! and the TPM changed: a swtpm on loopback instead of /dev/tpmrm0), is
//! enrolled over the network and serves the stock tritonclient, and dpkg
//! purges it. The package and the user are removed whatever happens.
//!
//! Installs system-wide: needs root (CI runs as root) and owns the package
//! `appliance`, the user `appliance` and /var/lib/appliance on this machine;
//! a copy left by an aborted run is purged first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use provisioning::{ClientName, Passphrase, Site, SiteName, Usage, Validity};
use test_support::{Swtpm, Vendor, venv_python, workspace_root};
use tests::binary;

const CONFIG: &str = "/etc/appliance/appliance.toml";
const STATE: &str = "/var/lib/appliance";
const UNIT: &str = "/usr/lib/systemd/system/appliance.service";
const PASSPHRASE: &str = "package test passphrase";
const ADMIN: &str = "pkg-admin";
const APP: &str = "pkg-app";

/// Every man page the package must carry: one per visible subcommand.
const MAN_PAGES: &[&str] = &[
    "appliance",
    "appliance-run",
    "appliance-identity",
    "appliance-identity-csr",
    "appliance-identity-install",
    "appliance-audit",
    "appliance-audit-verify",
    "appliance-factory-reset",
];

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `program args`, which must succeed; its stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "appliance"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("installed"))
}

fn user_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn group_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["group", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Everything the test puts on the machine, removed when dropped (the
/// test passed or not): the daemon, the package (purged), the user and its
/// group.
struct Machine {
    daemon: Option<Child>,
}

impl Machine {
    /// Takes the machine, purging what an aborted run left.
    fn take() -> Machine {
        let machine = Machine { daemon: None };
        machine.clean();
        machine
    }

    fn clean(&self) {
        if is_installed() || Path::new(CONFIG).exists() {
            let _ = Command::new("dpkg")
                .args(["--purge", "appliance"])
                .stdout(Stdio::null())
                .status();
        }
        if user_exists("appliance") {
            let _ = Command::new("userdel").arg("appliance").status();
        }
        if group_exists("appliance") {
            let _ = Command::new("groupdel").arg("appliance").status();
        }
    }

    fn stop_daemon(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.daemon.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.clean();
    }
}

/// A file's mode, owner and group as `dpkg-deb --contents` lists it.
fn listed<'a>(contents: &'a str, path: &str) -> &'a str {
    contents
        .lines()
        .find(|l| l.ends_with(&format!(" .{path}")))
        .unwrap_or_else(|| panic!("{path} not in the package:\n{contents}"))
}

fn check_contents(deb: &Path) {
    let deb = deb.to_str().unwrap();
    let info = run("dpkg-deb", &["--info", deb]);
    let arch = run("dpkg", &["--print-architecture"]);
    for wanted in [
        "Package: appliance",
        &format!("Architecture: {}", arch.trim()),
        "Section: net",
        "Maintainer: ",
        "Description: ",
    ] {
        assert!(info.contains(wanted), "no `{wanted}` in:\n{info}");
    }
    let depends = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends:\n{info}"));
    // dpkg-shlibdeps found the TSS libraries the binary links (they bring
    // tpm-udev, hence the tss group); adduser runs in postinst.
    for wanted in ["libc6", "libtss2-esys", "adduser"] {
        assert!(
            depends.contains(wanted),
            "{wanted} not in Depends: {depends}"
        );
    }
    for script in ["postinst", "postrm", "prerm", "conffiles"] {
        assert!(info.contains(&format!(" {script}")), "no {script}:\n{info}");
    }
    let extracted = tempfile::tempdir().unwrap();
    run(
        "dpkg-deb",
        &["--control", deb, extracted.path().to_str().unwrap()],
    );
    let conffiles = std::fs::read_to_string(extracted.path().join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), CONFIG, "conffiles");
    let postinst = std::fs::read_to_string(extracted.path().join("postinst")).unwrap();
    // The unit is installed but neither enabled nor started (an upgrade
    // keeps it enabled if the operator enabled it, and restarts it if it ran).
    assert!(
        postinst.contains("deb-systemd-helper debian-installed appliance.service"),
        "{postinst}"
    );
    assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");

    let contents = run("dpkg-deb", &["--contents", deb]);
    let expect = |path: &str, mode: &str| {
        let line = listed(&contents, path);
        assert!(line.starts_with(&format!("{mode} 0/0 ")), "{path}: {line}");
    };
    expect("/usr/bin/appliance", "-rwxr-xr-x");
    expect(CONFIG, "-rw-r--r--");
    expect(UNIT, "-rw-r--r--");
    expect("/usr/share/doc/appliance/README.md", "-rw-r--r--");
    expect("/usr/share/doc/appliance/copyright", "-rw-r--r--");
    for page in MAN_PAGES {
        expect(&format!("/usr/share/man/man1/{page}.1.gz"), "-rw-r--r--");
    }
    expect(
        "/usr/share/bash-completion/completions/appliance",
        "-rw-r--r--",
    );
    expect("/usr/share/zsh/vendor-completions/_appliance", "-rw-r--r--");
    expect(
        "/usr/share/fish/vendor_completions.d/appliance.fish",
        "-rw-r--r--",
    );
    // Nothing else: no stray man page (generate-assets, a packagers'
    // command outside the documented CLI, has none), no build leftovers.
    let files: Vec<&str> = contents.lines().filter(|l| !l.starts_with('d')).collect();
    assert_eq!(
        files.len(),
        8 + MAN_PAGES.len(),
        "unexpected files:\n{}",
        files.join("\n")
    );
}

/// Renders every installed man page with `man -l`, which must print the
/// page and no groff warning.
fn check_man_pages() {
    for page in MAN_PAGES {
        let path = format!("/usr/share/man/man1/{page}.1.gz");
        let out = Command::new("man")
            .args(["--warnings", "-l", &path])
            .env("MANWIDTH", "80")
            .output()
            .expect("man (Debian package man-db)");
        let rendered = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "man -l {path}: {}", text(&out));
        assert!(
            out.stderr.is_empty(),
            "man -l {path} warned: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            rendered.contains("NAME") && rendered.contains(page),
            "{path} rendered as:\n{rendered}"
        );
    }
    let run_page = run("man", &["-l", "/usr/share/man/man1/appliance-run.1.gz"]);
    assert!(run_page.contains("--config"), "{run_page}");
    // The bash completion loads and completes the subcommands (and knows
    // nothing of generate-assets).
    let complete = run(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/appliance \
             && COMP_WORDS=(appliance id) COMP_CWORD=1 && _appliance appliance id appliance \
             && echo \"${COMPREPLY[@]}\"",
        ],
    );
    assert_eq!(complete.trim(), "identity");
    for file in [
        "/usr/share/bash-completion/completions/appliance",
        "/usr/share/zsh/vendor-completions/_appliance",
        "/usr/share/fish/vendor_completions.d/appliance.fish",
    ] {
        let script = std::fs::read_to_string(file).unwrap();
        assert!(
            script.contains("factory-reset") && !script.contains("generate-assets"),
            "{file}"
        );
    }
}

/// The installed system: user, group, state directory, unit.
fn check_installed() {
    let passwd = run("getent", &["passwd", "appliance"]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    let gid: u32 = fields[3].parse().unwrap();
    assert!(uid < 1000, "not a system user: {passwd}");
    assert_eq!(fields[5], STATE, "{passwd}");
    assert!(fields[6].ends_with("nologin"), "{passwd}");
    let group = run("getent", &["group", "appliance"]);
    assert_eq!(
        group.split(':').nth(2).unwrap().parse::<u32>().unwrap(),
        gid,
        "{group}"
    );
    if group_exists("tss") {
        let groups = run("id", &["-nG", "appliance"]);
        assert!(
            groups.split_whitespace().any(|g| g == "tss"),
            "appliance not in tss: {groups}"
        );
    }
    let state = std::fs::metadata(STATE).unwrap();
    assert!(state.is_dir());
    assert_eq!(state.mode() & 0o7777, 0o700, "{STATE} mode");
    assert_eq!((state.uid(), state.gid()), (uid, gid), "{STATE} owner");

    assert_eq!(
        std::fs::read_to_string(CONFIG).unwrap(),
        std::fs::read_to_string(workspace_root().join("appliance.example.toml")).unwrap(),
        "the packaged configuration is the reference one"
    );
    assert_eq!(
        std::fs::read_to_string(UNIT).unwrap(),
        std::fs::read_to_string(workspace_root().join("packaging/appliance.service")).unwrap()
    );
    let out = Command::new("systemd-analyze")
        .args(["verify", UNIT])
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}",
        text(&out)
    );
    assert!(
        !Path::new("/etc/systemd/system/multi-user.target.wants/appliance.service").exists(),
        "the unit was enabled on install"
    );
    let version = run("/usr/bin/appliance", &["--version"]);
    assert!(version.starts_with("appliance 0."), "{version}");
}

/// The packaged configuration with the only changes a test needs: loopback
/// on a free port instead of 0.0.0.0:8443, and the swtpm instead of
/// /dev/tpmrm0. Everything else (state in /var/lib/appliance, PCR 7, limits,
/// logging) is as shipped.
fn point_config_at(tcti: &str) {
    let shipped = std::fs::read_to_string(CONFIG).unwrap();
    let mut config = shipped.clone();
    for (from, to) in [
        (
            "\nlisten = \"0.0.0.0:8443\"\n",
            "\nlisten = \"127.0.0.1:0\"\n".to_owned(),
        ),
        (
            "\ntcti = \"device:/dev/tpmrm0\"\n",
            format!("\ntcti = \"{tcti}\"\n"),
        ),
    ] {
        assert_eq!(config.matches(from).count(), 1, "{from:?} in:\n{shipped}");
        config = config.replace(from, &to);
    }
    std::fs::write(CONFIG, config).unwrap();
}

/// Lines the daemon prints on stdout, as they come.
fn lines_of(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(lines: &Receiver<String>, prefix: &str, log: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return rest.to_owned();
                }
            }
            Err(_) => panic!(
                "no `{prefix}` line from the daemon; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ),
        }
    }
}

/// `provision` as the site's admin against `address`; must succeed.
fn provision(address: &str, admin: &Path, args: &[&str]) -> String {
    let out = Command::new(binary("provision"))
        .args(args)
        .args(["--appliance", address, "--admin"])
        .arg(admin)
        .output()
        .unwrap();
    assert!(out.status.success(), "provision {args:?}: {}", text(&out));
    text(&out)
}

#[test]
fn the_debian_package_installs_serves_as_its_user_and_purges() {
    // The effective uid, from /proc (no libc call in a forbid(unsafe) crate).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap();
    assert_eq!(
        euid, "0",
        "this test installs a package: run it as root (CI does)"
    );
    let mut machine = Machine::take();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();

    // Build: the packager's own command, on the binaries already built.
    let deb = dir.path().join("appliance.deb");
    let appliance_bin = binary("appliance");
    let target_dir = appliance_bin.parent().unwrap().parent().unwrap();
    let out = Command::new(workspace_root().join("scripts/package"))
        .args(["--profile", "dev", "--no-build", "--fast", "--output"])
        .arg(&deb)
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/package: {}", text(&out));
    assert!(deb.exists(), "no .deb: {}", text(&out));
    check_contents(&deb);
    let built = started.elapsed();

    // Install for real.
    let out = Command::new("dpkg")
        .arg("-i")
        .arg(&deb)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap();
    assert!(out.status.success(), "dpkg -i: {}", text(&out));
    assert!(is_installed());
    check_installed();
    check_man_pages();

    // Start the installed daemon as its user, as the unit's ExecStart does
    // (with the unit's UMask=0077: the daemon relies on it).
    let tpm = Swtpm::start(&dir.path().join("swtpm"));
    point_config_at(&tpm.tcti());
    let log = dir.path().join("appliance.log");
    let mut daemon = Command::new("sh")
        .args([
            "-c",
            "umask 0077 && exec \"$@\"",
            "sh",
            "setpriv",
            "--reuid=appliance",
            "--regid=appliance",
            "--init-groups",
            "/usr/bin/appliance",
            "run",
            "--config",
            CONFIG,
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("TSS2_LOG", "all+NONE")
        .current_dir("/")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut daemon);
    let pid = daemon.id();
    machine.daemon = Some(daemon);
    let address = next_line(&lines, "listening on ", &log);
    let fingerprint = next_line(&lines, "enrollment mode: certificate fingerprint ", &log);
    let code = next_line(&lines, "enrollment code: ", &log);
    let code = code.split_whitespace().next().unwrap().to_owned();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = run("id", &["-u", "appliance"]);
    let uids = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert!(
        uids.iter().all(|u| *u == uid.trim()),
        "daemon uids {uids:?}, appliance is {uid}"
    );

    // Enroll it over the network, as an operator would.
    let site_dir = dir.path().join("site");
    let site_name: SiteName = "pkg-site".parse().unwrap();
    let mut site = Site::init(
        &site_dir,
        &site_name,
        &Passphrase::new(PASSPHRASE.to_owned()),
    )
    .unwrap();
    let mut bundle = |name: &str| {
        let out = dir.path().join("clients").join(name);
        let client: ClientName = name.parse().unwrap();
        site.issue_client_with(&client, Validity::days(1).unwrap(), Usage::ClientAuth)
            .unwrap()
            .write_bundle(&out)
            .unwrap();
        out
    };
    let admin = bundle(ADMIN);
    let app = bundle(APP);
    let vendor = Vendor::new(&binary("model-image"), &dir.path().join("vendor"), &[]);
    let digits = vendor.build("digits", "digits_cnn_qoperator.onnx", 1, 1, &[]);
    vendor.add(&[&digits], &[]);
    let out = Command::new(binary("provision"))
        .args(["device", "enroll", "--site"])
        .arg(&site_dir)
        .args(["--address", &address, "--fingerprint", &fingerprint])
        .args(["--code", &code, "--name", "box-1"])
        .args(["--ip", "127.0.0.1", "--dns", "localhost", "--admin", ADMIN])
        .arg("--update-root")
        .arg(vendor.root_json())
        .env("PROVISION_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    assert!(out.status.success(), "enroll: {}", text(&out));
    next_line(&lines, "enrolled: appliance `box-1`", &log);

    // A signed model update, a grant, and a call from the stock client.
    let repo = vendor.repo();
    let said = provision(
        &address,
        &admin,
        &["model", "update", "--repo", repo.to_str().unwrap()],
    );
    assert!(said.contains("installed digits release 1"), "{said}");
    provision(
        &address,
        &admin,
        &[
            "grant",
            "--client",
            APP,
            "--models",
            "digits",
            "--rate",
            "100/s",
            "--quota",
            "unlimited",
        ],
    );
    let out = Command::new(venv_python())
        .arg(workspace_root().join("tests/python/oip_client.py"))
        .args(["--url", &address, "--certs"])
        .arg(&app)
        .args(["call", "infer"])
        .output()
        .unwrap();
    assert!(out.status.success(), "oip_client: {}", text(&out));
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(report["code"], "OK", "{report}");

    // What the daemon wrote is its user's alone.
    let appliance_uid: u32 = uid.trim().parse().unwrap();
    for entry in walk(Path::new(STATE)) {
        let meta = std::fs::symlink_metadata(&entry).unwrap();
        assert_eq!(meta.uid(), appliance_uid, "{} owner", entry.display());
        assert_eq!(
            meta.mode() & 0o077,
            0,
            "{} is open to others",
            entry.display()
        );
    }

    let status = machine.stop_daemon().unwrap();
    assert!(
        status.success(),
        "daemon exited with {status}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // Purge: nothing of the package is left (the user stays, per Debian
    // policy, and the guard removes it).
    let out = Command::new("dpkg")
        .args(["--purge", "appliance"])
        .output()
        .unwrap();
    assert!(out.status.success(), "dpkg --purge: {}", text(&out));
    assert!(!is_installed());
    for gone in ["/usr/bin/appliance", CONFIG, "/etc/appliance", UNIT, STATE] {
        assert!(!Path::new(gone).exists(), "{gone} left after purge");
    }
    assert!(user_exists("appliance"), "purge removed the user");
    drop(machine);
    assert!(!user_exists("appliance") && !group_exists("appliance"));
    eprintln!(
        "package built and checked in {:.1} s; whole test {:.1} s",
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// Every file and directory under `dir` (itself included).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() {
            let entries: Vec<PathBuf> = std::fs::read_dir(&out[i])
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            out.extend(entries);
        }
        i += 1;
    }
    out
}
