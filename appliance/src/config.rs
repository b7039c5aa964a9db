//! The daemon's configuration: one TOML file, read into typed structs and
//! checked before any port is bound. `appliance.example.toml` at the
//! repository root is the commented reference.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration that could not be used. The message names the file and
/// the key.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The configuration file.
    pub path: PathBuf,
    /// What is wrong, naming the key.
    pub message: String,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The listener and its protection.
    pub server: ServerConfig,
    /// Where keys and data live.
    pub keystore: KeystoreConfig,
    /// The inference engine.
    #[serde(default)]
    pub inference: InferenceConfig,
    /// Defaults for client grants.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Model installation: signed updates and the development escape hatch.
    #[serde(default)]
    pub models: ModelsConfig,
    /// What the daemon logs.
    #[serde(default)]
    pub log: LogConfig,
    /// How long the audit log keeps records.
    #[serde(default)]
    pub audit: AuditConfig,
    /// First start without an identity: the enrollment code.
    #[serde(default)]
    pub enrollment: EnrollmentConfig,
}

/// Enrollment mode (first start, or after a factory reset).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollmentConfig {
    /// How long an enrollment code is valid, in seconds; an expired code is
    /// replaced by a new one, shown on the console and in the log.
    pub code_lifetime_s: u64,
}

impl Default for EnrollmentConfig {
    fn default() -> Self {
        EnrollmentConfig {
            code_lifetime_s: 15 * 60,
        }
    }
}

/// Audit retention: records beyond either bound are pruned (a checkpoint
/// keeps the chain verifiable). Export what must be kept longer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Records older than this many days are pruned.
    pub retain_days: u64,
    /// At most this many records are kept (each costs about 900 bytes of
    /// disk and, in the store's index and page table, about 300 bytes of
    /// memory, measured under load).
    pub retain_records: u64,
    /// Archive records (JSON lines, one file per UTC day) before pruning
    /// them; false drops them.
    pub archive: bool,
    /// Where the archive goes (default: `<data_dir>/audit-archive`).
    pub archive_dir: Option<PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retain_days: 90,
            // Pruned records go to the archive first, so the store's window
            // can be short; each kept record costs ~300 bytes of memory, so
            // 10 000 is ~3 MiB (100 000 took ~28 MiB and broke DESIGN §9's
            // memory bound under load).
            retain_records: 10_000,
            archive: true,
            archive_dir: None,
        }
    }
}

/// The per-call log line (the audit log records every call regardless).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogCalls {
    /// Every call.
    All,
    /// Calls that did not end OK (the default: a busy appliance's log then
    /// grows with its problems, not its traffic).
    #[default]
    Failures,
    /// None.
    None,
}

/// What the daemon writes to its log.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Which calls get a log line.
    pub calls: LogCalls,
}

/// How models get onto the appliance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// Accept raw ONNX uploads (`provision model load`), which skip the
    /// vendor's signature, freshness and the trial. Development only.
    pub allow_unsigned: bool,
    /// How long an update waits for the next file (or chunk) from a pushed
    /// repository or a mirror before giving up, in seconds.
    pub update_stall_timeout_s: u64,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            allow_unsigned: false,
            update_stall_timeout_s: 60,
        }
    }
}

/// The mTLS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on, e.g. `0.0.0.0:8443`.
    pub listen: SocketAddr,
    /// Lowest TLS version: "1.3" (default) or "1.2" (then ECDHE+AEAD only).
    #[serde(default = "default_min_tls")]
    pub min_tls_version: String,
    /// Largest gRPC message accepted or sent, and largest REST request
    /// body, in bytes.
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    /// Request bytes the server holds at once, across all connections, in
    /// MiB (from the first byte until the answer is sent); a request that
    /// would go beyond is refused RESOURCE_EXHAUSTED.
    #[serde(default = "default_max_inflight_mb")]
    pub max_inflight_mb: usize,
    /// Open connections beyond this are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A client that has not finished its TLS handshake by then is dropped
    /// (and an HTTP/1.1 client that has not finished a request header).
    #[serde(default = "default_handshake_ms")]
    pub handshake_timeout_ms: u64,
    /// A connection with no open request for this long is closed (HTTP/2
    /// keep-alive pings do not count as activity).
    #[serde(default = "default_idle_s")]
    pub idle_timeout_s: u64,
    /// How often the server pings a connection to detect a dead peer.
    #[serde(default = "default_keepalive_interval_s")]
    pub keepalive_interval_s: u64,
    /// How long it waits for the ping's answer before closing.
    #[serde(default = "default_keepalive_timeout_s")]
    pub keepalive_timeout_s: u64,
    /// A connection whose client has taken none of a finished response for
    /// this long (its receive window stays shut) is closed, and the memory
    /// its answers hold is freed.
    #[serde(default = "default_stall_s")]
    pub stall_timeout_s: u64,
    /// Most concurrent requests (HTTP/2 streams) on one connection.
    #[serde(default = "default_streams")]
    pub max_concurrent_streams: u32,
    /// How long a graceful shutdown waits for requests in flight.
    #[serde(default = "default_drain_s")]
    pub shutdown_grace_s: u64,
}

/// Which key backend protects the store, and where the store lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoreConfig {
    /// The data directory (sled database and encrypted blobs).
    pub data_dir: PathBuf,
    /// "tpm" or "insecure-software".
    pub backend: String,
    /// TPM: the TCTI, e.g. `device:/dev/tpmrm0`.
    pub tcti: Option<String>,
    /// TPM: the PCRs the key is sealed to, e.g. `sha256:7`.
    pub pcrs: Option<String>,
    /// Insecure software backend: the root key file.
    pub insecure_root_key: Option<PathBuf>,
    /// The store's page cache, in MiB: an upper bound on the memory it keeps
    /// for recently read or written records.
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
    /// Free space (MiB) the store keeps in reserve: below it, calls are
    /// refused rather than recorded into a full disk.
    #[serde(default = "default_min_free_mb")]
    pub min_free_mb: u64,
}

/// The inference engine's pool and request bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceConfig {
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Requests waiting for a worker beyond this get RESOURCE_EXHAUSTED.
    pub queue: usize,
    /// Largest element count of one input's declared shape.
    pub max_input_elements: u64,
    /// Most strings in one text request.
    pub max_text_items: u64,
    /// Where the CPU's int8 kernels are slow, run integer matrix products
    /// as exact float ones (faster; 4x the weight memory).
    pub int8_as_float: bool,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        let limits = inference::Limits::default();
        InferenceConfig {
            workers: 0,
            queue: 256,
            max_input_elements: limits.max_input_elements,
            max_text_items: limits.max_text_items,
            int8_as_float: limits.int8_as_float,
        }
    }
}

/// Defaults applied to grants that do not set their own rate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Sustained requests per second per client.
    pub default_rate_per_second: f64,
    /// Burst per client.
    pub default_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            default_rate_per_second: 100.0,
            default_burst: 200,
        }
    }
}

fn default_min_free_mb() -> u64 {
    256
}
fn default_cache_mb() -> u64 {
    // Grants, lines and models are held in memory anyway; the cache mostly
    // holds audit records on their way to disk. 32 MiB cost 13 MiB more
    // resident memory on the soak bench than 8 and served no faster.
    8
}
fn default_min_tls() -> String {
    "1.3".into()
}
fn default_max_message() -> usize {
    16 << 20
}
fn default_max_inflight_mb() -> usize {
    256
}
fn default_max_connections() -> usize {
    1024
}
fn default_handshake_ms() -> u64 {
    10_000
}
fn default_idle_s() -> u64 {
    300
}
fn default_keepalive_interval_s() -> u64 {
    60
}
fn default_keepalive_timeout_s() -> u64 {
    20
}
fn default_stall_s() -> u64 {
    30
}
fn default_streams() -> u32 {
    64
}
fn default_drain_s() -> u64 {
    30
}

/// The key backend, parsed.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A TPM through `tcti`, sealing to `pcrs`.
    Tpm {
        /// TCTI string.
        tcti: String,
        /// PCR selection.
        pcrs: keystore::PcrSelection,
    },
    /// The development-only software backend.
    InsecureSoftware {
        /// Root key file.
        root_key: PathBuf,
    },
}

/// TLS versions the listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinTls {
    /// TLS 1.3 only.
    Tls13,
    /// TLS 1.2 (ECDHE + AEAD suites only) and 1.3.
    Tls12,
}

impl Config {
    /// Reads and checks `path`. Every error names the file and the key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        Config::parse(path, &text)
    }

    /// Parses and checks `text`, read from `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            path: path.to_path_buf(),
            message,
        };
        let config: Config = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        config.check().map_err(err)?;
        Ok(config)
    }

    /// Semantic checks serde cannot express.
    fn check(&self) -> Result<(), String> {
        self.min_tls()?;
        self.backend()?;
        let s = &self.server;
        if s.max_message_bytes < 1024 || s.max_message_bytes > (1 << 30) {
            return Err("server.max_message_bytes: must be between 1 KiB and 1 GiB".into());
        }
        if s.max_inflight_mb == 0 || s.max_inflight_mb > (1 << 20) {
            return Err("server.max_inflight_mb: must be between 1 and 1048576".into());
        }
        if s.max_connections == 0 {
            return Err("server.max_connections: must be at least 1".into());
        }
        if s.keepalive_interval_s == 0 || s.keepalive_timeout_s == 0 {
            return Err(
                "server.keepalive_interval_s and keepalive_timeout_s must be positive".into(),
            );
        }
        if s.handshake_timeout_ms == 0
            || s.idle_timeout_s == 0
            || s.stall_timeout_s == 0
            || s.max_concurrent_streams == 0
        {
            return Err(
                "server.handshake_timeout_ms, idle_timeout_s, stall_timeout_s and \
                 max_concurrent_streams must be positive"
                    .into(),
            );
        }
        if self.models.update_stall_timeout_s == 0 || self.models.update_stall_timeout_s > 3600 {
            return Err("models.update_stall_timeout_s: must be between 1 and 3600".into());
        }
        if self.keystore.cache_mb == 0 || self.keystore.cache_mb > 65_536 {
            return Err("keystore.cache_mb: must be between 1 and 65536".into());
        }
        if self.audit.retain_days == 0 || self.audit.retain_days > 36_500 {
            return Err("audit.retain_days: must be between 1 and 36500".into());
        }
        if self.audit.retain_records < 10 {
            return Err("audit.retain_records: must be at least 10".into());
        }
        if self.inference.queue == 0 {
            return Err("inference.queue: must be at least 1".into());
        }
        if self.enrollment.code_lifetime_s == 0 || self.enrollment.code_lifetime_s > 7 * 86_400 {
            return Err("enrollment.code_lifetime_s: must be between 1 and 604800".into());
        }
        let rate = self.limits.default_rate_per_second;
        if !rate.is_finite() || rate <= 0.0 || self.limits.default_burst == 0 {
            return Err(
                "limits.default_rate_per_second and limits.default_burst must be positive".into(),
            );
        }
        Ok(())
    }

    /// The lowest TLS version.
    pub fn min_tls(&self) -> Result<MinTls, String> {
        match self.server.min_tls_version.as_str() {
            "1.3" => Ok(MinTls::Tls13),
            "1.2" => Ok(MinTls::Tls12),
            other => Err(format!(
                "server.min_tls_version: `{other}` is not \"1.3\" or \"1.2\""
            )),
        }
    }

    /// The key backend.
    pub fn backend(&self) -> Result<Backend, String> {
        let k = &self.keystore;
        match k.backend.as_str() {
            "tpm" => {
                let tcti = k
                    .tcti
                    .clone()
                    .ok_or("keystore.tcti: required with backend = \"tpm\"")?;
                let pcrs = k
                    .pcrs
                    .as_deref()
                    .ok_or("keystore.pcrs: required with backend = \"tpm\"")?
                    .parse()
                    .map_err(|e| format!("keystore.pcrs: {e}"))?;
                Ok(Backend::Tpm { tcti, pcrs })
            }
            "insecure-software" => Ok(Backend::InsecureSoftware {
                root_key: k.insecure_root_key.clone().ok_or(
                    "keystore.insecure_root_key: required with backend = \"insecure-software\"",
                )?,
            }),
            other => Err(format!(
                "keystore.backend: `{other}` is not \"tpm\" or \"insecure-software\""
            )),
        }
    }

    /// Engine limits.
    pub fn engine_limits(&self) -> inference::Limits {
        inference::Limits {
            max_input_elements: self.inference.max_input_elements,
            max_text_items: self.inference.max_text_items,
            int8_as_float: self.inference.int8_as_float,
        }
    }

    /// Handshake deadline.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.server.handshake_timeout_ms)
    }

    /// What the audit log keeps.
    pub fn audit_retention(&self) -> crate::audit::Retention {
        crate::audit::Retention {
            max_age: Duration::from_secs(self.audit.retain_days * 86_400),
            max_records: self.audit.retain_records,
            data_dir: self.keystore.data_dir.clone(),
            min_free_bytes: self.keystore.min_free_mb << 20,
            archive: self.audit.archive.then(|| {
                self.audit
                    .archive_dir
                    .clone()
                    .unwrap_or_else(|| self.keystore.data_dir.join("audit-archive"))
            }),
        }
    }

    /// Idle deadline.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.server.idle_timeout_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    const MINIMAL: &str = r#"
        [server]
        listen = "127.0.0.1:0"
        [keystore]
        data_dir = "/tmp/x"
        backend = "tpm"
        tcti = "swtpm:host=127.0.0.1,port=2321"
        pcrs = "sha256:7"
    "#;

    #[test]
    fn the_reference_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../appliance.example.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.min_tls().unwrap(), MinTls::Tls13);
    }

    #[test]
    fn errors_name_the_key() {
        assert!(parse(MINIMAL).is_ok());
        let cases = [
            (MINIMAL.replace("listen", "listne"), "listne"),
            (MINIMAL.replace("\"tpm\"", "\"hsm\""), "keystore.backend"),
            (MINIMAL.replace("sha256:7", "sha256:99"), "keystore.pcrs"),
            (MINIMAL.replace("pcrs = \"sha256:7\"", ""), "keystore.pcrs"),
            (
                format!("{MINIMAL}\n[inference]\nqueue = 0\n"),
                "inference.queue",
            ),
            (
                format!("{MINIMAL}\n[enrollment]\ncode_lifetime_s = 0\n"),
                "enrollment.code_lifetime_s",
            ),
            (
                MINIMAL.replace("[keystore]", "min_tls_version = \"1.1\"\n[keystore]"),
                "server.min_tls_version",
            ),
        ];
        for (text, key) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(key), "expected {key} in: {err}");
        }
    }

    const EXAMPLE: &str = include_str!("../../appliance.example.toml");

    proptest::proptest! {
        /// Any text: a configuration or an error naming the file, never a
        /// panic.
        #[test]
        fn arbitrary_text_is_refused_by_name(text in "\\PC{0,400}") {
            let path = Path::new("/etc/appliance/x.toml");
            if let Err(e) = Config::parse(path, &text) {
                proptest::prop_assert!(e.to_string().starts_with("/etc/appliance/x.toml: "));
            }
        }

        /// The reference file with one line dropped or one value replaced:
        /// accepted (a default applies) or refused with the file and, for a
        /// bad value, the key named.
        #[test]
        fn a_damaged_reference_config_is_refused_by_key(
            line in proptest::prelude::any::<proptest::sample::Index>(),
            drop in proptest::bool::ANY,
            value in "[-a-z0-9\".:/ ]{0,12}",
        ) {
            let lines: Vec<&str> = EXAMPLE.lines().collect();
            let at = line.index(lines.len());
            let mut changed: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
            let key = lines[at].split_once(" = ").map(|(k, _)| k.trim().to_owned());
            if drop {
                changed.remove(at);
            } else if let Some(key) = &key {
                changed[at] = format!("{key} = {value}");
            }
            let path = Path::new("appliance.toml");
            match Config::parse(path, &changed.join("\n")) {
                Ok(_) => {}
                Err(e) => {
                    let text = e.to_string();
                    proptest::prop_assert!(text.starts_with("appliance.toml: "), "{}", text);
                    if let (false, Some(key)) = (drop, key) {
                        let last = key.rsplit('.').next().unwrap_or(&key).to_owned();
                        proptest::prop_assert!(
                            text.contains(&last) || text.contains("line"),
                            "{} does not name {}: {}", key, last, text
                        );
                    }
                }
            }
        }
    }
}
