//! The appliance's side: refresh trusted TUF metadata from a source, and
//! stream a target checked against it.
//!
//! [`ToughVerifier`] runs the TUF client workflow with the `tough` crate
//! and hardens it where a source read of tough 0.24 showed gaps:
//!
//! - tough's datastore writes are plain writes and a stored timestamp that
//!   fails to parse silently disables its rollback check, so the caller
//!   keeps the trusted metadata ([`TrustedMetadata`], raw bytes) itself and
//!   every refresh re-seeds a fresh scratch datastore from it;
//! - tough never reads a stored root back, so the newest trusted root is
//!   passed in as the trust anchor;
//! - tough re-serialises what it verifies; the bytes kept here are the ones
//!   fetched, captured by our transport, so the stored metadata is
//!   byte-exact;
//! - tough accepts a timestamp of the trusted version with different
//!   content; this refuses it, and checks every role's version against the
//!   trusted one again after tough has.
//!
//! tough is async; this module is not. Each refresh runs tough on a private
//! current-thread runtime, and sources (which block) run on its blocking
//! pool.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use tough::{Repository, RepositoryLoader, TransportError, TransportErrorKind};

use super::source::{RepositorySource, read_bounded};
use crate::error::{Error, Result};
use crate::manifest::Digest;

/// Bounds on metadata sizes (TUF's "endless data" defence). Generous for
/// top-level roles holding a few hundred images.
pub const MAX_ROOT_LEN: u64 = 512 * 1024;
/// Largest timestamp.json accepted.
pub const MAX_TIMESTAMP_LEN: u64 = 64 * 1024;
/// Largest snapshot.json accepted.
pub const MAX_SNAPSHOT_LEN: u64 = 1 << 20;
/// Largest targets.json accepted.
pub const MAX_TARGETS_LEN: u64 = 8 << 20;
/// Most root versions followed in one refresh.
const MAX_ROOT_UPDATES: u64 = 64;

/// The metadata an appliance trusts, as the exact bytes it verified.
/// Persist it atomically (the appliance keeps it in its encrypted store).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedMetadata {
    /// The newest trusted root.json.
    pub root: Vec<u8>,
    /// The newest trusted timestamp.json, once a refresh has succeeded.
    pub timestamp: Option<Vec<u8>>,
    /// The snapshot it names.
    pub snapshot: Option<Vec<u8>>,
    /// The targets the snapshot names.
    pub targets: Option<Vec<u8>>,
}

impl std::fmt::Debug for TrustedMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedMetadata")
            .field("root_version", &version(&self.root))
            .field(
                "timestamp_version",
                &self.timestamp.as_deref().and_then(version),
            )
            .finish_non_exhaustive()
    }
}

impl TrustedMetadata {
    /// Trust anchored in `root` (the vendor's root.json, installed at setup):
    /// checks that it is a root signed by a threshold of its own keys.
    pub fn from_root(root: &[u8]) -> Result<TrustedMetadata> {
        if root.len() as u64 > MAX_ROOT_LEN {
            return Err(Error::Untrusted("root.json is over 512 KiB".into()));
        }
        let signed: tough::schema::Signed<tough::schema::Root> = serde_json::from_slice(root)
            .map_err(|e| Error::Untrusted(format!("root.json is not TUF root metadata: {e}")))?;
        signed.signed.verify_role(&signed).map_err(|e| {
            Error::Untrusted(format!("root.json is not signed by its own keys: {e}"))
        })?;
        Ok(TrustedMetadata {
            root: root.to_vec(),
            timestamp: None,
            snapshot: None,
            targets: None,
        })
    }

    /// The trusted root's version.
    pub fn root_version(&self) -> u64 {
        version(&self.root).unwrap_or(0)
    }

    /// The stored form: `TUFTRUST` | version 1 | four fields (root,
    /// timestamp, snapshot, targets), each a u32 BE length (`u32::MAX` for
    /// none) and its bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.root.len());
        out.extend_from_slice(TRUST_MAGIC);
        out.push(1);
        for field in [
            Some(&self.root),
            self.timestamp.as_ref(),
            self.snapshot.as_ref(),
            self.targets.as_ref(),
        ] {
            match field {
                Some(bytes) => {
                    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                    out.extend_from_slice(bytes);
                }
                None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
            }
        }
        out
    }

    /// Parses [`TrustedMetadata::to_bytes`]; each field is bounded by its
    /// role's size limit.
    pub fn from_bytes(bytes: &[u8]) -> Result<TrustedMetadata> {
        let bad = |reason: &str| Error::format("trusted metadata", reason.to_owned());
        let rest = bytes
            .strip_prefix(TRUST_MAGIC.as_slice())
            .and_then(|r| r.strip_prefix(&[1u8]))
            .ok_or_else(|| bad("unknown format"))?;
        let mut rest = rest;
        let mut fields: Vec<Option<Vec<u8>>> = Vec::with_capacity(4);
        for max in [
            MAX_ROOT_LEN,
            MAX_TIMESTAMP_LEN,
            MAX_SNAPSHOT_LEN,
            MAX_TARGETS_LEN,
        ] {
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| bad("truncated"))?;
            let len = u32::from_be_bytes(*len);
            rest = tail;
            if len == u32::MAX {
                fields.push(None);
                continue;
            }
            if u64::from(len) > max || len as usize > rest.len() {
                return Err(bad("a field is over its bound or truncated"));
            }
            let (field, tail) = rest.split_at(len as usize);
            fields.push(Some(field.to_vec()));
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(bad("bytes after the last field"));
        }
        let mut fields = fields.into_iter();
        let root = fields.next().flatten().ok_or_else(|| bad("no root"))?;
        Ok(TrustedMetadata {
            root,
            timestamp: fields.next().flatten(),
            snapshot: fields.next().flatten(),
            targets: fields.next().flatten(),
        })
    }
}

const TRUST_MAGIC: &[u8; 8] = b"TUFTRUST";

/// A target as the verified targets metadata describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetEntry {
    /// Its (flat) name.
    pub name: String,
    /// Its exact length.
    pub length: u64,
    /// Its SHA-256.
    pub sha256: Digest,
    /// The `custom` object (for model images: model, version, release).
    pub custom: serde_json::Map<String, Value>,
}

/// Versions of the four top-level roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoleVersions {
    /// root.
    pub root: u64,
    /// timestamp.
    pub timestamp: u64,
    /// snapshot.
    pub snapshot: u64,
    /// targets.
    pub targets: u64,
}

/// The result of a successful refresh.
#[derive(Debug, Clone)]
pub struct Refreshed {
    /// The new trusted metadata: persist it before acting on any target.
    pub trusted: TrustedMetadata,
    /// The versions verified.
    pub versions: RoleVersions,
    /// When the first of the four roles expires, and which.
    pub expires: (OffsetDateTime, &'static str),
    /// Whether targets live under `<sha256>.<name>`.
    pub consistent_snapshot: bool,
    /// Every target, sorted by name.
    pub targets: Vec<TargetEntry>,
}

impl Refreshed {
    /// The file name of `target` in the repository's `targets/`.
    pub fn target_file(&self, target: &TargetEntry) -> String {
        if self.consistent_snapshot {
            format!("{}.{}", target.sha256.hex(), target.name)
        } else {
            target.name.clone()
        }
    }

    /// Opens `target` from `source` as a reader that yields at most its
    /// declared length and fails, before reporting end-of-file, unless the
    /// bytes are exactly the declared length and digest.
    pub fn open_target(
        &self,
        source: &dyn RepositorySource,
        target: &TargetEntry,
    ) -> Result<VerifiedTarget<Box<dyn Read + Send>>> {
        let reader = source.target(&self.target_file(target))?;
        Ok(VerifiedTarget::new(reader, target))
    }
}

/// The TUF client workflow behind our own interface.
pub trait Verifier: Send + Sync {
    /// Refreshes `trusted` from `source` (TUF §5: root chain, timestamp,
    /// snapshot, targets, with signatures, thresholds, versions, expiry and
    /// sizes checked). An error names the role and the reason.
    fn refresh(
        &self,
        trusted: &TrustedMetadata,
        source: Arc<dyn RepositorySource>,
    ) -> Result<Refreshed>;
}

/// [`Verifier`] on tough.
#[derive(Debug, Clone)]
pub struct ToughVerifier {
    scratch: PathBuf,
}

impl ToughVerifier {
    /// A verifier whose per-refresh scratch datastores live under
    /// `scratch` (removed after each refresh; they hold only copies of
    /// public metadata). `/dev/shm` keeps them off disks.
    pub fn new(scratch: &Path) -> ToughVerifier {
        ToughVerifier {
            scratch: scratch.into(),
        }
    }

    /// A verifier with scratch space in `/dev/shm` when it exists, else
    /// the system's temporary directory.
    pub fn with_default_scratch() -> ToughVerifier {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            ToughVerifier::new(shm)
        } else {
            ToughVerifier::new(&std::env::temp_dir())
        }
    }
}

/// The base URL our transport answers for; never fetched over a network.
const BASE: &str = "tuf-source://repository/";

impl Verifier for ToughVerifier {
    fn refresh(
        &self,
        trusted: &TrustedMetadata,
        source: Arc<dyn RepositorySource>,
    ) -> Result<Refreshed> {
        let scratch = tempfile::Builder::new()
            .prefix("tuf-datastore-")
            .tempdir_in(&self.scratch)
            .map_err(|e| Error::io(&self.scratch, e))?;
        // The previous refresh's timestamp and snapshot, for tough's own
        // rollback checks; root is passed in directly.
        for (file, bytes) in [
            ("timestamp.json", &trusted.timestamp),
            ("snapshot.json", &trusted.snapshot),
        ] {
            if let Some(bytes) = bytes {
                let path = scratch.path().join(file);
                std::fs::write(&path, bytes).map_err(|e| Error::io(path, e))?;
            }
        }
        let captured = Arc::new(Mutex::new(HashMap::new()));
        let refusal = Arc::new(Mutex::new(None));
        let failure = Arc::new(Mutex::new(None));
        let transport = Transport {
            source: source.clone(),
            captured: captured.clone(),
            refusal: refusal.clone(),
            failure: failure.clone(),
        };
        let base = url::Url::parse(BASE).map_err(|e| Error::Source(e.to_string()))?;
        let loader = RepositoryLoader::new(
            &trusted.root,
            base.join("metadata/")
                .map_err(|e| Error::Source(e.to_string()))?,
            base.join("targets/")
                .map_err(|e| Error::Source(e.to_string()))?,
        )
        .transport(transport)
        .datastore(scratch.path())
        .limits(tough::Limits {
            max_root_size: MAX_ROOT_LEN,
            max_targets_size: MAX_TARGETS_LEN,
            max_timestamp_size: MAX_TIMESTAMP_LEN,
            max_snapshot_size: MAX_SNAPSHOT_LEN,
            max_root_updates: MAX_ROOT_UPDATES,
        })
        .expiration_enforcement(tough::ExpirationEnforcement::Safe);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Source(format!("starting the verifier's runtime: {e}")))?;
        let loaded = runtime.block_on(loader.load());
        let captured =
            std::mem::take(&mut *captured.lock().unwrap_or_else(PoisonError::into_inner));
        // A file the source refused as oversized fails the refresh even
        // where tough would carry on (it treats an unreadable next root as
        // "no newer root").
        if let Some(why) = refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(Error::Untrusted(why));
        }
        let failure = failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let repo = loaded.map_err(|e| describe_failure(&e, &captured, failure))?;
        drop(runtime);
        finish(trusted, &repo, &captured)
    }
}

/// Builds the new trusted state from what tough verified and the bytes our
/// transport captured, and applies the checks tough leaves out.
fn finish(
    trusted: &TrustedMetadata,
    repo: &Repository,
    captured: &HashMap<String, Vec<u8>>,
) -> Result<Refreshed> {
    let versions = RoleVersions {
        root: repo.root().signed.version.get(),
        timestamp: repo.timestamp().signed.version.get(),
        snapshot: repo.snapshot().signed.version.get(),
        targets: repo.targets().signed.version.get(),
    };
    let consistent = repo.root().signed.consistent_snapshot;
    if repo.targets().signed.delegations.is_some() {
        return Err(Error::Untrusted(
            "targets metadata delegates to other roles; this appliance accepts top-level roles only"
                .into(),
        ));
    }
    let pick = |file: String| -> Result<Vec<u8>> {
        captured.get(&file).cloned().ok_or_else(|| {
            Error::Untrusted(format!(
                "{file} was verified but its bytes were not captured"
            ))
        })
    };
    let root = if versions.root == trusted.root_version() {
        trusted.root.clone()
    } else {
        pick(format!("{}.root.json", versions.root))?
    };
    let timestamp = pick("timestamp.json".into())?;
    let role_file = |role: &str, v: u64| match consistent {
        true => format!("{v}.{role}.json"),
        false => format!("{role}.json"),
    };
    let snapshot = pick(role_file("snapshot", versions.snapshot))?;
    let targets = pick(role_file("targets", versions.targets))?;
    // The captured bytes must be what tough verified.
    for (bytes, want, role) in [
        (&root, versions.root, "root"),
        (&timestamp, versions.timestamp, "timestamp"),
        (&snapshot, versions.snapshot, "snapshot"),
        (&targets, versions.targets, "targets"),
    ] {
        if version(bytes) != Some(want) {
            return Err(Error::Untrusted(format!(
                "{role} metadata changed while it was being verified"
            )));
        }
    }
    // Rollback, checked against our own record as well as tough's.
    let old = |bytes: &Option<Vec<u8>>| bytes.as_deref().and_then(version).unwrap_or(0);
    for (role, new, previous) in [
        ("root", versions.root, trusted.root_version()),
        ("timestamp", versions.timestamp, old(&trusted.timestamp)),
        ("snapshot", versions.snapshot, old(&trusted.snapshot)),
        ("targets", versions.targets, old(&trusted.targets)),
    ] {
        if new < previous {
            return Err(Error::Untrusted(format!(
                "{role} metadata version {new} is older than the trusted version {previous} (rollback)"
            )));
        }
    }
    if let Some(old_timestamp) = &trusted.timestamp {
        if versions.timestamp == old(&trusted.timestamp) && *old_timestamp != timestamp {
            return Err(Error::Untrusted(format!(
                "timestamp version {} was signed again with different content",
                versions.timestamp
            )));
        }
    }
    let mut targets_list = Vec::new();
    for (name, target) in repo.targets().signed.targets_iter() {
        let raw = name.raw();
        if !super::source::is_flat_name(raw) {
            return Err(Error::Untrusted(format!(
                "target name {:?} is not flat; this appliance accepts flat names only",
                raw.chars().take(80).collect::<String>()
            )));
        }
        let digest: &[u8] = target.hashes.sha256.as_ref();
        let sha256 = <[u8; 32]>::try_from(digest)
            .map(Digest)
            .map_err(|_| Error::Untrusted(format!("target {raw}: sha256 is not 32 bytes")))?;
        targets_list.push(TargetEntry {
            name: raw.to_owned(),
            length: target.length,
            sha256,
            custom: target.custom.clone().into_iter().collect(),
        });
    }
    targets_list.sort_by(|a, b| a.name.cmp(&b.name));
    let expiries = [
        (repo.root().signed.expires, "root"),
        (repo.timestamp().signed.expires, "timestamp"),
        (repo.snapshot().signed.expires, "snapshot"),
        (repo.targets().signed.expires, "targets"),
    ];
    let (first, role) = expiries
        .iter()
        .min_by_key(|(t, _)| *t)
        .copied()
        .unwrap_or(expiries[0]);
    let expires = OffsetDateTime::from_unix_timestamp(first.as_second())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    Ok(Refreshed {
        trusted: TrustedMetadata {
            root,
            timestamp: Some(timestamp),
            snapshot: Some(snapshot),
            targets: Some(targets),
        },
        versions,
        expires: (expires, role),
        consistent_snapshot: consistent,
        targets: targets_list,
    })
}

/// A failed refresh, said plainly: the role, the reason, and for expiry
/// the time it expired. `source_failure` is set when the source itself
/// could not deliver a file (then the repository was not judged at all).
fn describe_failure(
    error: &tough::error::Error,
    captured: &HashMap<String, Vec<u8>>,
    source_failure: Option<String>,
) -> Error {
    use tough::error::Error as E;
    if let E::ExpiredMetadata { role, .. } = error {
        let role = role.to_string();
        let expired = captured
            .iter()
            .filter(|(name, _)| {
                name.as_str() == format!("{role}.json") || name.ends_with(&format!(".{role}.json"))
            })
            .filter_map(|(_, bytes)| expires_of(bytes))
            .max();
        return Error::Untrusted(match expired {
            Some(at) => format!("{role} expired at {at}"),
            None => format!("{role} metadata has expired"),
        });
    }
    if matches!(
        error,
        E::OlderMetadata { .. } | E::OlderSnapshotInTimestamp { .. }
    ) {
        return Error::Untrusted(format!("rollback: {}", chain(error)));
    }
    // tough reports sizes and digests that do not match as transport
    // errors too; only what our source failed to deliver is one.
    if let (E::Transport { .. }, Some(why)) = (error, source_failure) {
        return Error::Source(why);
    }
    Error::Untrusted(chain(error))
}

/// An error and its causes on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out.replace(BASE, "")
}

/// `signed.version` of a metadata file.
fn version(bytes: &[u8]) -> Option<u64> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    v.get("signed")?.get("version")?.as_u64()
}

/// `signed.expires` of a metadata file.
fn expires_of(bytes: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    Some(v.get("signed")?.get("expires")?.as_str()?.to_owned())
}

/// tough's transport: metadata from our source, blocking calls on the
/// runtime's blocking pool, every file's bytes captured.
#[derive(Clone)]
struct Transport {
    source: Arc<dyn RepositorySource>,
    captured: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    /// The first file the source refused as untrustworthy, and why.
    refusal: Arc<Mutex<Option<String>>>,
    /// The first file the source failed to deliver, and why.
    failure: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("source", &self.source.describe())
            .finish_non_exhaustive()
    }
}

#[tough::async_trait]
impl tough::Transport for Transport {
    async fn fetch(&self, url: url::Url) -> Result<tough::TransportStream, TransportError> {
        let Some(name) = url
            .as_str()
            .strip_prefix(BASE)
            .and_then(|p| p.strip_prefix("metadata/"))
            .map(str::to_owned)
        else {
            return Err(TransportError::new(
                TransportErrorKind::UnsupportedUrlScheme,
                url,
            ));
        };
        let max = match name.as_str() {
            "timestamp.json" => MAX_TIMESTAMP_LEN,
            n if n.ends_with(".root.json") => MAX_ROOT_LEN,
            n if n.ends_with("snapshot.json") => MAX_SNAPSHOT_LEN,
            _ => MAX_TARGETS_LEN,
        };
        let source = self.source.clone();
        let wanted = name.clone();
        let fetched = tokio::task::spawn_blocking(move || source.metadata(&wanted, max))
            .await
            .map_err(|e| TransportError::new_with_cause(TransportErrorKind::Other, &url, e))?;
        match fetched {
            Ok(Some(bytes)) => {
                self.captured
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(name, bytes.clone());
                let chunk: Result<tough::Bytes, TransportError> = Ok(tough::Bytes::from(bytes));
                Ok(Box::pin(futures_util::stream::iter([chunk])))
            }
            Ok(None) => Err(TransportError::new(TransportErrorKind::FileNotFound, url)),
            Err(e) => {
                // Remember the first refusal (oversized) or failure (the
                // source could not deliver) for the error the caller sees.
                let first = match e {
                    Error::Untrusted(_) => &self.refusal,
                    _ => &self.failure,
                };
                first
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert_with(|| e.to_string());
                Err(TransportError::new_with_cause(
                    TransportErrorKind::Other,
                    &url,
                    e.to_string(),
                ))
            }
        }
    }
}

/// A target reader bounded by its declared length and checked against its
/// declared digest before end-of-file is reported.
pub struct VerifiedTarget<R: Read> {
    inner: R,
    name: String,
    length: u64,
    read: u64,
    expected: Digest,
    hash: Option<ring::digest::Context>,
}

impl<R: Read> VerifiedTarget<R> {
    /// Wraps `inner`, the bytes of `target`.
    pub fn new(inner: R, target: &TargetEntry) -> Self {
        VerifiedTarget {
            inner,
            name: target.name.clone(),
            length: target.length,
            read: 0,
            expected: target.sha256,
            hash: Some(ring::digest::Context::new(&ring::digest::SHA256)),
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }
}

impl<R: Read> Read for VerifiedTarget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.read == self.length {
            // Anything more than declared is an endless-data attack.
            let mut probe = [0u8; 1];
            let extra = loop {
                match self.inner.read(&mut probe) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            if extra != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "target {} is longer than the {} bytes its signed metadata declares",
                        self.name, self.length
                    ),
                ));
            }
            if let Some(hash) = self.hash.take() {
                if hash.finish().as_ref() != self.expected.0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "target {} does not match the sha256 its signed metadata declares",
                            self.name
                        ),
                    ));
                }
            }
            return Ok(0);
        }
        let left = self.length - self.read;
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "target {} ends after {} of its {} declared bytes",
                    self.name, self.read, self.length
                ),
            ));
        }
        self.read += n as u64;
        if let Some(hash) = self.hash.as_mut() {
            hash.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Reads metadata for a trusted root given as a file (tools).
pub fn read_root_file(path: &Path) -> Result<TrustedMetadata> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let bytes = read_bounded(file, MAX_ROOT_LEN, &path.display().to_string())?;
    TrustedMetadata::from_root(&bytes)
}
