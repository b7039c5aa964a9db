//! End-to-end tests of the appliance from the outside: a real swtpm, the
//! `appliance` and `provision` binaries, the stock `tritonclient` package,
//! certificates from our own provisioning code, loopback only.
//!
//! [`Appliance`] runs the whole enrollment as an operator would (site CA,
//! CSR from the appliance's keystore, certificate, install, first admin) and
//! starts the daemon on an ephemeral port.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // fixtures fail loudly

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use provisioning::{
    ApplianceId, CertificateRequest, ClientName, Passphrase, ServerNames, Site, SiteName,
    UnlockedSite, Validity,
};
use std::sync::{Arc, Mutex, OnceLock};

use tempfile::TempDir;
use test_support::{Swtpm, Vendor, venv_python, workspace_root};

/// The site name every test appliance belongs to.
pub const SITE: &str = "e2e-site";
/// The administrator every fixture creates.
pub const ADMIN: &str = "ops-admin";
const PASSPHRASE: &str = "end-to-end test passphrase";

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("process {pid} is gone ({e}): did it crash?"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| {
            // A zombie (exited, not yet reaped) has no memory lines.
            let state = status.lines().find(|l| l.starts_with("State:"));
            panic!("process {pid} has exited ({state:?}): did it crash?")
        })
}

/// The JSON object on the last line a test client printed.
pub fn last_json(out: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(out);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no JSON ({e}): {text}"))
}

/// A binary of the workspace, built by `cargo build --workspace --bins`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} missing: build it first (`cargo build --workspace --bins`; scripts/test does)",
        path.display()
    );
    path
}

/// A running appliance with its site, TPM and data directory.
pub struct Appliance {
    /// Everything lives in here.
    pub dir: TempDir,
    /// The TPM.
    pub tpm: Swtpm,
    /// The site CA, unlocked.
    pub site: UnlockedSite,
    /// Where the daemon listens.
    pub address: SocketAddr,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its log (stderr).
    pub log: PathBuf,
    stdout: Arc<Mutex<Vec<String>>>,
    child: Option<Child>,
}

/// The vendor every fixture trusts, made once per test binary: keys and a
/// repository holding the reference models as signed images, `digits`
/// (int8 CNN) and `minilm` (int8, with its tokenizer), both release 1,
/// version 1. Lives in `target/tmp/e2e-vendor-<test binary>`, remade at each
/// run.
pub fn vendor() -> &'static Vendor {
    static VENDOR: OnceLock<Vendor> = OnceLock::new();
    VENDOR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_string_lossy().into_owned();
        let dir = workspace_root()
            .join("target/tmp")
            .join(format!("e2e-vendor-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        let v = Vendor::new(&binary("model-image"), &dir, &[]);
        let digits = v.build("digits", "digits_cnn_qoperator.onnx", 1, 1, &[]);
        let minilm = v.build("minilm", "minilm_dynamic.onnx", 1, 1, &[]);
        v.add(&[&digits, &minilm], &[]);
        v
    })
}

impl Appliance {
    /// An enrolled appliance, started, with no models and one admin; it
    /// trusts [`vendor`]'s update root. `extra` is appended to the
    /// `[server]` section of its configuration.
    pub fn start(extra_server_config: &str) -> Appliance {
        Appliance::start_with(extra_server_config, "", Some(&vendor().root_json()))
    }

    /// As [`Appliance::start`], with `extra_config` appended after the
    /// configuration's last section (e.g. a `[models]` table) and the given
    /// update root (none: signed updates are refused).
    pub fn start_with(
        extra_server_config: &str,
        extra_config: &str,
        update_root: Option<&Path>,
    ) -> Appliance {
        let mut fixture = Appliance::unenrolled(extra_server_config, extra_config);
        // Enrollment by files: CSR from the appliance's TPM-held key, signed
        // by the CA, installed. (`enrollment.rs` tests the network way.)
        let config = fixture.config.clone();
        let csr = config.with_file_name("appliance.csr");
        run_ok(
            appliance_cmd(&config)
                .args([
                    "identity",
                    "csr",
                    "--ip",
                    "127.0.0.1",
                    "--dns",
                    "localhost",
                    "--out",
                ])
                .arg(&csr),
        );
        let request = CertificateRequest::from_pem(&std::fs::read(&csr).unwrap(), &csr).unwrap();
        let names =
            ServerNames::new(&["localhost".to_owned()], &["127.0.0.1".parse().unwrap()]).unwrap();
        let id: ApplianceId = "box-1".parse().unwrap();
        let cert = fixture
            .site
            .issue_appliance_from_csr(&id, &names, request, Validity::days(30).unwrap())
            .unwrap();
        let cert_path = config.with_file_name("appliance-cert.pem");
        std::fs::write(&cert_path, cert.cert_pem()).unwrap();
        let mut install = appliance_cmd(&config);
        install
            .args(["identity", "install", "--cert"])
            .arg(&cert_path)
            .arg("--ca")
            .arg(fixture.site.dir().join("ca.pem"))
            .args(["--admin", ADMIN]);
        if let Some(root) = update_root {
            install.arg("--update-root").arg(root);
        }
        run_ok(&mut install);
        fixture.launch();
        fixture
    }

    /// An appliance with its site, TPM, configuration and admin client
    /// bundle, never started: its first [`Appliance::launch`] is in
    /// enrollment mode. `extra_server_config` and `extra_config` as for
    /// [`Appliance::start_with`].
    pub fn unenrolled(extra_server_config: &str, extra_config: &str) -> Appliance {
        let dir = tempfile::tempdir().unwrap();
        let tpm = Swtpm::start(&dir.path().join("swtpm"));
        let site_name: SiteName = SITE.parse().unwrap();
        let pass = Passphrase::new(PASSPHRASE.to_owned());
        let site = Site::init(&dir.path().join("site"), &site_name, &pass).unwrap();

        let config = dir.path().join("appliance.toml");
        // Tests read the per-call log lines unless they say otherwise.
        let log = if extra_config.contains("[log]") {
            ""
        } else {
            "[log]\ncalls = \"all\"\n"
        };
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n{extra_server_config}\n\
                 [keystore]\ndata_dir = \"{}\"\nbackend = \"tpm\"\ntcti = \"{}\"\npcrs = \"sha256:16\"\n\
                 [inference]\nworkers = 2\n{log}{extra_config}\n",
                dir.path().join("data").display(),
                tpm.tcti()
            ),
        )
        .unwrap();
        let log = dir.path().join("appliance.log");
        let mut fixture = Appliance {
            dir,
            tpm,
            site,
            address: "127.0.0.1:0".parse().unwrap(),
            config,
            log,
            stdout: Arc::new(Mutex::new(Vec::new())),
            child: None,
        };
        fixture.client(ADMIN);
        fixture
    }

    /// Every line the daemon has printed on stdout, across launches.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits (up to 60 s) for a stdout line starting with `prefix` among
    /// the lines after the first `after`; returns the rest of that line.
    pub fn wait_for_line(&self, prefix: &str, after: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = self
                .stdout_lines()
                .iter()
                .skip(after)
                .find_map(|l| l.strip_prefix(prefix).map(str::to_owned));
            if let Some(rest) = found {
                return rest;
            }
            assert!(
                Instant::now() < deadline,
                "no `{prefix}` line on stdout; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The enrollment certificate's fingerprint and the newest code the
    /// daemon printed.
    pub fn enrollment_prompt(&self) -> (String, String) {
        let fingerprint = self.wait_for_line("enrollment mode: certificate fingerprint ", 0);
        self.wait_for_line("enrollment code: ", 0);
        let code = self
            .stdout_lines()
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("enrollment code: "))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_owned();
        (fingerprint, code)
    }

    /// `provision device enroll` for this fixture (appliance `box-1`, names
    /// 127.0.0.1 and localhost, admin [`ADMIN`], update root of
    /// [`vendor`]), with `fingerprint` and `code`.
    pub fn enroll(&self, fingerprint: &str, code: &str) -> Output {
        Command::new(binary("provision"))
            .args(["device", "enroll", "--site"])
            .arg(self.site.dir())
            .arg("--address")
            .arg(self.address.to_string())
            .args([
                "--fingerprint",
                fingerprint,
                "--code",
                code,
                "--name",
                "box-1",
            ])
            .args(["--ip", "127.0.0.1", "--dns", "localhost", "--admin", ADMIN])
            .arg("--update-root")
            .arg(vendor().root_json())
            .env("PROVISION_PASSPHRASE", PASSPHRASE)
            .output()
            .unwrap()
    }

    /// Runs an `appliance` maintenance command (`--config` added).
    pub fn appliance(&self, args: &[&str]) -> Output {
        appliance_cmd(&self.config).args(args).output().unwrap()
    }

    /// Starts the daemon and waits for its "listening on" line.
    pub fn launch(&mut self) {
        self.launch_wrapped(&[]);
    }

    /// As [`Appliance::launch`], under a wrapper command (e.g. `strace`);
    /// [`Appliance::pid`] is then the wrapper's.
    pub fn launch_wrapped(&mut self, wrapper: &[&str]) {
        self.launch_with(wrapper, &[]);
    }

    /// As [`Appliance::launch`], with extra environment variables (e.g.
    /// systemd's `NOTIFY_SOCKET`).
    pub fn launch_with_env(&mut self, env: &[(&str, &str)]) {
        self.launch_with(&[], env);
    }

    /// As [`Appliance::launch`], under a wrapper and with extra environment
    /// variables.
    pub fn launch_with(&mut self, wrapper: &[&str], env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = appliance_cmd_under(&self.config, wrapper);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .env(
                "APPLIANCE_LOG",
                "info,tss_esapi=warn,appliance::server=debug,appliance::oip=debug",
            )
            .args(["run"])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = self.stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(address) = line.strip_prefix("listening on ") {
                    let _ = tx.send(address.to_owned());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let address = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("appliance did not start; log:\n{}", self.log_text()));
        self.address = address.parse().unwrap();
        self.child = Some(child);
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(daemon_pid(&child).to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(
                        status.success(),
                        "appliance exited with {status}; log:\n{}",
                        self.log_text()
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "appliance did not stop on SIGTERM; log:\n{}",
                    self.log_text()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The process id of the daemon.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The bundle directory of client `name` (ca.pem, cert.pem, key.pem),
    /// issued on first use, valid for a day.
    pub fn client(&mut self, name: &str) -> PathBuf {
        self.client_with(
            name,
            Validity::days(1).unwrap(),
            provisioning::Usage::ClientAuth,
        )
    }

    /// A client bundle with explicit validity and key usage.
    pub fn client_with(
        &mut self,
        name: &str,
        validity: Validity,
        usage: provisioning::Usage,
    ) -> PathBuf {
        let out = self.dir.path().join("clients").join(name);
        if !out.exists() {
            let client: ClientName = name.parse().unwrap();
            let cert = self
                .site
                .issue_client_with(&client, validity, usage)
                .unwrap();
            cert.write_bundle(&out).unwrap();
        }
        out
    }

    /// Runs `provision` with `--appliance` and `--admin` filled in.
    pub fn provision(&self, args: &[&str]) -> Output {
        let admin = self.dir.path().join("clients").join(ADMIN);
        let mut cmd = Command::new(binary("provision"));
        cmd.args(args)
            .arg("--appliance")
            .arg(self.address.to_string())
            .arg("--admin")
            .arg(&admin);
        cmd.output().unwrap()
    }

    /// `provision` that must succeed.
    pub fn provision_ok(&self, args: &[&str]) -> String {
        let out = self.provision(args);
        assert!(
            out.status.success(),
            "provision {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Installs the reference models from [`vendor`]'s signed repository:
    /// `digits` (int8 CNN) and `minilm` (int8, with its tokenizer),
    /// release 1, version 1. Returns what `provision model update` printed.
    pub fn load_reference_models(&self) -> String {
        self.update_from(&vendor().repo(), &[])
    }

    /// `provision model update --repo <repo> <extra>`, which must succeed.
    pub fn update_from(&self, repo: &Path, extra: &[&str]) -> String {
        let mut args = vec!["model", "update", "--repo", repo.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.provision_ok(&args)
    }

    /// `provision model update --repo <repo> <extra>` that must fail; its
    /// stdout and stderr.
    pub fn update_refused(&self, repo: &Path, extra: &[&str]) -> String {
        let mut args = vec!["model", "update", "--repo", repo.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = self.provision(&args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "update should be refused: {text}"
        );
        text
    }

    /// Grants `client` the given models with generous limits.
    pub fn grant(&self, client: &str, models: &str) {
        self.provision_ok(&[
            "grant",
            "--client",
            client,
            "--models",
            models,
            "--rate",
            "1000/s",
            "--quota",
            "unlimited",
        ]);
    }

    /// Grants `client` every model with no practical rate limit, for load
    /// tests and benchmarks.
    pub fn grant_unlimited(&self, client: &str) {
        self.provision_ok(&[
            "grant",
            "--client",
            client,
            "--models",
            "*",
            "--rate",
            "1000000/s",
            "--burst",
            "1000000",
            "--quota",
            "unlimited",
        ]);
    }

    /// Rewrites the configuration file (the daemon reads it when launched).
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let config = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(&self.config, edit(config)).unwrap();
    }

    /// Runs the stock-client script as the client of bundle `certs`; returns
    /// its JSON output.
    pub fn triton(&self, certs: &Path, args: &[&str]) -> serde_json::Value {
        self.triton_with(certs, &[], args)
    }

    /// As [`Appliance::triton`], with extra options before the command.
    pub fn triton_with(&self, certs: &Path, options: &[&str], args: &[&str]) -> serde_json::Value {
        client_script(
            "oip_client.py",
            &self.address.to_string(),
            certs,
            options,
            args,
        )
    }

    /// Runs the stock HTTP-client script (`tests/python/rest_client.py`,
    /// REST over HTTP/1.1) as the client of bundle `certs`; returns its
    /// JSON output. It names the server `localhost`, as its certificate
    /// does.
    pub fn rest(&self, certs: &Path, args: &[&str]) -> serde_json::Value {
        let url = format!("localhost:{}", self.address.port());
        client_script("rest_client.py", &url, certs, &[], args)
    }

    /// `GET /metrics` with curl as the client of bundle `certs`: (HTTP
    /// status, body).
    pub fn metrics(&self, certs: &Path) -> (String, String) {
        let out = Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--http2",
                "--write-out",
                "\n%{http_code}",
            ])
            .arg("--cacert")
            .arg(certs.join("ca.pem"))
            .arg("--cert")
            .arg(certs.join("cert.pem"))
            .arg("--key")
            .arg(certs.join("key.pem"))
            .arg(format!("https://localhost:{}/metrics", self.address.port()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        (code.to_owned(), body.to_owned())
    }

    /// The administrator's certificate bundle.
    pub fn admin_certs(&self) -> PathBuf {
        self.dir.path().join("clients").join(ADMIN)
    }

    /// The frame-writing HTTP/2 client (`tests/python/h2_client.py`) as
    /// the client of bundle `certs`, ready to run.
    pub fn h2(&self, certs: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(venv_python());
        c.arg(workspace_root().join("tests/python/h2_client.py"))
            .arg("--url")
            .arg(self.address.to_string())
            .arg("--certs")
            .arg(certs)
            .args(args);
        c
    }

    /// The stock-client script as a running process (stdin and stdout
    /// piped), for calls that must interleave with the test.
    pub fn triton_process(&self, certs: &Path, args: &[&str]) -> Child {
        Command::new(venv_python())
            .arg(workspace_root().join("tests/python/oip_client.py"))
            .arg("--url")
            .arg(self.address.to_string())
            .arg("--certs")
            .arg(certs)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `appliance audit verify` (the daemon must be stopped): (ok, output).
    pub fn audit_verify(&self) -> (bool, String) {
        let out = appliance_cmd(&self.config)
            .args(["audit", "verify"])
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

/// The daemon's pid: the child itself, or under a wrapper the wrapper's
/// child.
/// Runs `tests/python/<script>` against `url` as the client of bundle
/// `certs` and returns the JSON object its last line prints; fails the test
/// if it fails.
fn client_script(
    script: &str,
    url: &str,
    certs: &Path,
    options: &[&str],
    args: &[&str],
) -> serde_json::Value {
    let out = Command::new(venv_python())
        .arg(workspace_root().join("tests/python").join(script))
        .arg("--url")
        .arg(url)
        .arg("--certs")
        .arg(certs)
        .args(options)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{script} {args:?} printed no JSON ({e}): {stdout}"))
}

fn daemon_pid(child: &Child) -> u32 {
    std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
        .ok()
        .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(child.id())
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(daemon_pid(&child).to_string())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `appliance --config <config>` after the subcommand words are added.
fn appliance_cmd(config: &Path) -> ConfigCommand {
    appliance_cmd_under(config, &[])
}

/// The same, run under `wrapper` (a program and its arguments) if given.
fn appliance_cmd_under(config: &Path, wrapper: &[&str]) -> ConfigCommand {
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(binary("appliance"));
            c
        }
        None => Command::new(binary("appliance")),
    };
    command.env("TSS2_LOG", "all+NONE");
    ConfigCommand {
        command,
        config: config.to_path_buf(),
        words: Vec::new(),
    }
}

/// A command whose `--config` goes after its subcommand words.
pub struct ConfigCommand {
    command: Command,
    config: PathBuf,
    words: Vec<std::ffi::OsString>,
}

impl ConfigCommand {
    fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(&mut self, args: I) -> &mut Self {
        self.words
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    fn arg(&mut self, arg: impl AsRef<std::ffi::OsStr>) -> &mut Self {
        self.words.push(arg.as_ref().to_owned());
        self
    }

    fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.command.env(key, value);
        self
    }

    fn stdout(&mut self, s: Stdio) -> &mut Self {
        self.command.stdout(s);
        self
    }

    fn stderr(&mut self, s: impl Into<Stdio>) -> &mut Self {
        self.command.stderr(s);
        self
    }

    fn prepared(&mut self) -> &mut Command {
        // Subcommand words first (e.g. `identity csr`), then --config, then
        // the rest: clap takes options after the subcommand path.
        let split = self
            .words
            .iter()
            .position(|w| w.to_str().is_some_and(|s| s.starts_with("--")))
            .unwrap_or(self.words.len());
        let (path, rest) = self.words.split_at(split);
        self.command
            .args(path)
            .arg("--config")
            .arg(&self.config)
            .args(rest);
        &mut self.command
    }

    fn spawn(&mut self) -> std::io::Result<Child> {
        self.prepared().spawn()
    }

    fn output(&mut self) -> std::io::Result<Output> {
        self.prepared().output()
    }
}

fn run_ok(cmd: &mut ConfigCommand) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "command failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A static HTTP server (Python's `http.server`) over a directory, on a
/// loopback port: a LAN mirror for update tests. Stopped when dropped.
pub struct HttpServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl HttpServer {
    /// Serves `dir`.
    pub fn start(dir: &Path) -> HttpServer {
        let mut child = Command::new(venv_python())
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let port = first
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("http.server said: {first}"));
        HttpServer { child, port }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A repository made by python-tuf (`tests/python/tuf_repo.py`, fresh keys)
/// holding `images`; `extra` goes to the script. Returns its root.json.
pub fn python_tuf_repo(repo: &Path, images: &[&Path], extra: &[&str]) -> PathBuf {
    let out = Command::new(venv_python())
        .arg(workspace_root().join("tests/python/tuf_repo.py"))
        .arg(repo)
        .args(images)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tuf_repo.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    PathBuf::from(made["root"].as_str().unwrap())
}
