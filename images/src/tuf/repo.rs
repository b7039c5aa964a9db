//! The vendor's side: a key directory and a TUF repository of model images.
//!
//! Key directory (`model-image keys init DIR`), mode 0700:
//!
//! ```text
//! DIR/root-<i>.pk8        root keys (ed25519, PKCS#8 DER, 0600)
//! DIR/targets.pk8         the targets, snapshot and timestamp keys
//! DIR/snapshot.pk8
//! DIR/timestamp.pk8
//! DIR/root.json           the newest root; version 1 is what appliances install
//! DIR/retired/v<N>/       root keys replaced by `repo rotate-root`
//! ```
//!
//! Every command re-reads the repository's newest metadata from its files,
//! bumps the versions it changes, signs them, and writes each file
//! atomically (temporary file, fsync, rename), timestamp last, so a reader
//! never sees a timestamp that points at files not yet written.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::keys::SigningKey;
use super::{canonical, tuf_time};
use crate::error::{Error, Result};
use crate::image::read_manifest;
use crate::manifest::{Digest, Manifest};

/// The TUF specification version written into our metadata.
pub const SPEC_VERSION: &str = "1.0.31";

/// A metadata lifetime: `<n>d`, `<n>h`, `<n>m` or `<n>s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime(pub time::Duration);

impl FromStr for Lifetime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}`: expected a number and a unit, e.g. 7d, 12h, 30m, 45s");
        let (n, unit) = s.split_at(s.len().saturating_sub(1));
        let n: i64 = n.parse().map_err(|_| bad())?;
        if !(1..=36_500 * 86_400).contains(&n) {
            return Err(bad());
        }
        let seconds = match unit {
            "d" => n.checked_mul(86_400),
            "h" => n.checked_mul(3_600),
            "m" => n.checked_mul(60),
            "s" => Some(n),
            _ => None,
        }
        .filter(|s| *s <= 36_500 * 86_400)
        .ok_or_else(bad)?;
        Ok(Lifetime(time::Duration::seconds(seconds)))
    }
}

impl fmt::Display for Lifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0.whole_seconds())
    }
}

/// How long each role's metadata stays valid after it is signed.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// root.json.
    pub root: Lifetime,
    /// targets.json.
    pub targets: Lifetime,
    /// snapshot.json.
    pub snapshot: Lifetime,
    /// timestamp.json: how long a pushed repository stays installable
    /// without `repo refresh`.
    pub timestamp: Lifetime,
}

impl Default for Lifetimes {
    fn default() -> Self {
        let days = |d| Lifetime(time::Duration::days(d));
        Lifetimes {
            root: days(365),
            targets: days(90),
            snapshot: days(30),
            timestamp: days(7),
        }
    }
}

/// The vendor's key directory.
#[derive(Debug, Clone)]
pub struct KeyDir {
    dir: PathBuf,
}

/// The top-level roles besides root.
const ONLINE_ROLES: [&str; 3] = ["targets", "snapshot", "timestamp"];

impl KeyDir {
    /// The key directory at `dir` (not checked until used).
    pub fn new(dir: &Path) -> KeyDir {
        KeyDir { dir: dir.into() }
    }

    /// Creates the directory, `root_keys` root keys, one key per other role
    /// and the first root.json (version 1, root threshold `threshold`).
    pub fn init(dir: &Path, root_keys: usize, threshold: usize, root: Lifetime) -> Result<KeyDir> {
        check_threshold(root_keys, threshold)?;
        if dir.exists()
            && std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir, e))?
                .next()
                .is_some()
        {
            return Err(Error::Repository(format!(
                "{} exists and is not empty; keys are never overwritten",
                dir.display()
            )));
        }
        create_private_dir(dir)?;
        let keys = KeyDir::new(dir);
        let roots = (1..=root_keys)
            .map(|i| SigningKey::generate(&dir.join(format!("root-{i}.pk8"))))
            .collect::<Result<Vec<_>>>()?;
        for role in ONLINE_ROLES {
            SigningKey::generate(&dir.join(format!("{role}.pk8")))?;
        }
        let signed = keys.root_signed(1, root, &roots, threshold)?;
        let bytes = sign(&signed, &roots.iter().collect::<Vec<_>>())?;
        write_atomic(&dir.join("root.json"), &bytes)?;
        Ok(keys)
    }

    /// The newest root.json, as written.
    pub fn root_json(&self) -> Result<Vec<u8>> {
        let path = self.dir.join("root.json");
        std::fs::read(&path).map_err(|e| Error::io(path, e))
    }

    fn root_keys(&self) -> Result<Vec<SigningKey>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("root-") && n.ends_with(".pk8"))
            })
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(Error::Repository(format!(
                "no root keys (root-*.pk8) in {}",
                self.dir.display()
            )));
        }
        paths.iter().map(|p| SigningKey::load(p)).collect()
    }

    fn role_key(&self, role: &str) -> Result<SigningKey> {
        SigningKey::load(&self.dir.join(format!("{role}.pk8")))
    }

    /// The signed part of a root: `roots` with `threshold`, and this
    /// directory's keys for the other roles.
    fn root_signed(
        &self,
        version: u64,
        lifetime: Lifetime,
        roots: &[SigningKey],
        threshold: usize,
    ) -> Result<Value> {
        let mut keys = Map::new();
        let mut roles = Map::new();
        for k in roots {
            keys.insert(k.id().to_owned(), k.public_json());
        }
        roles.insert(
            "root".into(),
            json!({ "keyids": roots.iter().map(|k| k.id()).collect::<Vec<_>>(), "threshold": threshold }),
        );
        for role in ONLINE_ROLES {
            let k = self.role_key(role)?;
            keys.insert(k.id().to_owned(), k.public_json());
            roles.insert(role.into(), json!({ "keyids": [k.id()], "threshold": 1 }));
        }
        Ok(json!({
            "_type": "root",
            "spec_version": SPEC_VERSION,
            "version": version,
            "expires": expires(lifetime),
            "consistent_snapshot": true,
            "keys": keys,
            "roles": roles,
        }))
    }
}

/// What `repo add` put into the repository.
#[derive(Debug, Clone)]
pub struct AddedTarget {
    /// The target name.
    pub name: String,
    /// The image's manifest.
    pub manifest: Manifest,
    /// Its length.
    pub length: u64,
    /// Its digest.
    pub sha256: Digest,
}

/// Versions of the repository's newest metadata after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepoVersions {
    /// root.json.
    pub root: u64,
    /// targets.json.
    pub targets: u64,
    /// snapshot.json.
    pub snapshot: u64,
    /// timestamp.json.
    pub timestamp: u64,
}

/// A TUF repository of model images on disk.
#[derive(Debug, Clone)]
pub struct Repo {
    dir: PathBuf,
}

impl Repo {
    /// The repository at `dir`.
    pub fn new(dir: &Path) -> Repo {
        Repo { dir: dir.into() }
    }

    fn metadata(&self) -> PathBuf {
        self.dir.join("metadata")
    }

    /// Creates a repository signed by `keys`: their newest root, and empty
    /// targets, snapshot and timestamp (version 1).
    pub fn init(&self, keys: &KeyDir, lifetimes: Lifetimes) -> Result<RepoVersions> {
        let meta = self.metadata();
        if meta.exists() {
            return Err(Error::Repository(format!(
                "{} already holds a repository",
                self.dir.display()
            )));
        }
        create_public_dir(&self.dir)?;
        create_public_dir(&meta)?;
        create_public_dir(&self.dir.join("targets"))?;
        let root = keys.root_json()?;
        let version = signed_version(&root, "root.json")?;
        for v in 1..=version {
            // A key directory past rotations holds only its newest root;
            // the repository needs the whole chain from 1.
            let path = match v == version {
                true => None,
                false => Some(keys.dir.join("retired").join(format!("{v}.root.json"))),
            };
            let bytes = match path {
                None => root.clone(),
                Some(p) => std::fs::read(&p).map_err(|e| Error::io(p, e))?,
            };
            write_atomic(&meta.join(format!("{v}.root.json")), &bytes)?;
        }
        write_atomic(&meta.join("root.json"), &root)?;
        self.publish(keys, BTreeMap::new(), 1, lifetimes)
    }

    /// Adds images (replacing a target of the same name) and signs new
    /// targets, snapshot and timestamp. `progress` is told the bytes copied.
    pub fn add(
        &self,
        keys: &KeyDir,
        images: &[PathBuf],
        lifetimes: Lifetimes,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(Vec<AddedTarget>, RepoVersions)> {
        let (targets_version, targets) = self.current_targets()?;
        let mut entries: BTreeMap<String, Value> = targets
            .get("targets")
            .and_then(Value::as_object)
            .map(|m| m.clone().into_iter().collect())
            .unwrap_or_default();
        let mut added = Vec::new();
        for path in images {
            let target = self.copy_target(path, progress)?;
            entries.insert(
                target.name.clone(),
                json!({
                    "length": target.length,
                    "hashes": { "sha256": target.sha256.hex() },
                    "custom": {
                        "model": target.manifest.name.as_str(),
                        "version": target.manifest.version,
                        "release": target.manifest.release,
                    },
                }),
            );
            added.push(target);
        }
        let versions = self.publish(keys, entries, targets_version + 1, lifetimes)?;
        Ok((added, versions))
    }

    /// Re-signs the timestamp (new version, new expiry) so a repository
    /// stays installable; with `snapshot`, the snapshot too.
    pub fn refresh(
        &self,
        keys: &KeyDir,
        lifetimes: Lifetimes,
        snapshot: bool,
    ) -> Result<RepoVersions> {
        let meta = self.metadata();
        let timestamp = read_signed(&meta.join("timestamp.json"))?;
        let mut snapshot_version = meta_version(&timestamp, "snapshot.json")?;
        if snapshot {
            let old = read_signed(&meta.join(format!("{snapshot_version}.snapshot.json")))?;
            snapshot_version += 1;
            let signed = json!({
                "_type": "snapshot",
                "spec_version": SPEC_VERSION,
                "version": snapshot_version,
                "expires": expires(lifetimes.snapshot),
                "meta": old.get("meta").cloned().unwrap_or_else(|| json!({})),
            });
            let bytes = sign(&signed, &[&keys.role_key("snapshot")?])?;
            write_atomic(
                &meta.join(format!("{snapshot_version}.snapshot.json")),
                &bytes,
            )?;
        }
        self.write_timestamp(keys, snapshot_version, lifetimes)?;
        self.versions()
    }

    /// Replaces the root keys: new keys (`root_keys`, threshold
    /// `threshold`) in the key directory, the old ones moved to
    /// `retired/v<N>/`, and root version N+1 signed by both the old and the
    /// new keys, as TUF requires for clients to follow the rotation.
    pub fn rotate_root(
        &self,
        keys: &KeyDir,
        root_keys: usize,
        threshold: usize,
        lifetimes: Lifetimes,
    ) -> Result<RepoVersions> {
        check_threshold(root_keys, threshold)?;
        let old_keys = keys.root_keys()?;
        let old_root = keys.root_json()?;
        let version = signed_version(&old_root, "root.json")?;
        let retired = keys.dir.join("retired");
        create_private_dir(&retired)?;
        write_atomic(&retired.join(format!("{version}.root.json")), &old_root)?;
        let retired_keys = retired.join(format!("v{version}"));
        create_private_dir(&retired_keys)?;
        for k in &old_keys {
            let name = k.path().file_name().unwrap_or_default();
            std::fs::rename(k.path(), retired_keys.join(name))
                .map_err(|e| Error::io(k.path(), e))?;
        }
        let new_keys = (1..=root_keys)
            .map(|i| SigningKey::generate(&keys.dir.join(format!("root-{i}.pk8"))))
            .collect::<Result<Vec<_>>>()?;
        let signed = keys.root_signed(version + 1, lifetimes.root, &new_keys, threshold)?;
        let signers: Vec<&SigningKey> = old_keys.iter().chain(&new_keys).collect();
        let bytes = sign(&signed, &signers)?;
        let meta = self.metadata();
        write_atomic(&meta.join(format!("{}.root.json", version + 1)), &bytes)?;
        write_atomic(&meta.join("root.json"), &bytes)?;
        write_atomic(&keys.dir.join("root.json"), &bytes)?;
        self.versions()
    }

    /// The versions of the newest metadata.
    pub fn versions(&self) -> Result<RepoVersions> {
        let meta = self.metadata();
        let timestamp_bytes = read_file(&meta.join("timestamp.json"))?;
        let timestamp = signed_of(&timestamp_bytes, "timestamp.json")?;
        let snapshot_version = meta_version(&timestamp, "snapshot.json")?;
        let snapshot = read_signed(&meta.join(format!("{snapshot_version}.snapshot.json")))?;
        Ok(RepoVersions {
            root: self.newest_root()?,
            targets: meta_version(&snapshot, "targets.json")?,
            snapshot: snapshot_version,
            timestamp: version_of(&timestamp, "timestamp.json")?,
        })
    }

    fn newest_root(&self) -> Result<u64> {
        let meta = self.metadata();
        let mut newest = 0;
        for entry in std::fs::read_dir(&meta).map_err(|e| Error::io(&meta, e))? {
            let name = entry.map_err(|e| Error::io(&meta, e))?.file_name();
            let name = name.to_string_lossy();
            if let Some(v) = name
                .strip_suffix(".root.json")
                .and_then(|v| v.parse::<u64>().ok())
            {
                newest = newest.max(v);
            }
        }
        if newest == 0 {
            return Err(Error::Repository(format!(
                "{} holds no N.root.json",
                meta.display()
            )));
        }
        Ok(newest)
    }

    fn current_targets(&self) -> Result<(u64, Value)> {
        let v = self.versions()?;
        let targets = read_signed(&self.metadata().join(format!("{}.targets.json", v.targets)))?;
        Ok((v.targets, targets))
    }

    /// Copies an image into `targets/<sha256>.<name>`, checking it parses.
    fn copy_target(&self, path: &Path, progress: &mut dyn FnMut(u64)) -> Result<AddedTarget> {
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let manifest = read_manifest(&mut file).map_err(|e| match e {
            Error::Format { reason, .. } => {
                Error::Repository(format!("{} is not a model image: {reason}", path.display()))
            }
            other => other,
        })?;
        let name = format!("{}-r{}.img", manifest.name, manifest.release);
        let targets = self.dir.join("targets");
        let tmp = tempfile::NamedTempFile::new_in(&targets).map_err(|e| Error::io(&targets, e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(|e| Error::io(tmp.path(), e))?;
        }
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut out = tmp.as_file();
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 1 << 20];
        let mut length = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| Error::io(tmp.path(), e))?;
            length += n as u64;
            progress(n as u64);
        }
        out.sync_all().map_err(|e| Error::io(tmp.path(), e))?;
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(hash.finish().as_ref());
        let sha256 = Digest(sha256);
        let dest = targets.join(format!("{}.{name}", sha256.hex()));
        tmp.persist(&dest).map_err(|e| Error::io(&dest, e.error))?;
        durable::sync_parent(&dest).map_err(|e| Error::io(&dest, e))?;
        Ok(AddedTarget {
            name,
            manifest,
            length,
            sha256,
        })
    }

    /// Writes targets (version `targets_version`, `entries`), a new
    /// snapshot and a new timestamp.
    fn publish(
        &self,
        keys: &KeyDir,
        entries: BTreeMap<String, Value>,
        targets_version: u64,
        lifetimes: Lifetimes,
    ) -> Result<RepoVersions> {
        let meta = self.metadata();
        let targets = json!({
            "_type": "targets",
            "spec_version": SPEC_VERSION,
            "version": targets_version,
            "expires": expires(lifetimes.targets),
            "targets": entries,
        });
        let targets_bytes = sign(&targets, &[&keys.role_key("targets")?])?;
        write_atomic(
            &meta.join(format!("{targets_version}.targets.json")),
            &targets_bytes,
        )?;

        let snapshot_version = match read_file(&meta.join("timestamp.json")) {
            Ok(bytes) => meta_version(&signed_of(&bytes, "timestamp.json")?, "snapshot.json")? + 1,
            Err(_) => 1,
        };
        let snapshot = json!({
            "_type": "snapshot",
            "spec_version": SPEC_VERSION,
            "version": snapshot_version,
            "expires": expires(lifetimes.snapshot),
            "meta": { "targets.json": {
                "version": targets_version,
                "length": targets_bytes.len(),
                "hashes": { "sha256": Digest::of(&targets_bytes).hex() },
            } },
        });
        let snapshot_bytes = sign(&snapshot, &[&keys.role_key("snapshot")?])?;
        write_atomic(
            &meta.join(format!("{snapshot_version}.snapshot.json")),
            &snapshot_bytes,
        )?;
        self.write_timestamp(keys, snapshot_version, lifetimes)?;
        self.versions()
    }

    fn write_timestamp(
        &self,
        keys: &KeyDir,
        snapshot_version: u64,
        lifetimes: Lifetimes,
    ) -> Result<()> {
        let meta = self.metadata();
        let snapshot_bytes = read_file(&meta.join(format!("{snapshot_version}.snapshot.json")))?;
        let version = match read_file(&meta.join("timestamp.json")) {
            Ok(bytes) => version_of(&signed_of(&bytes, "timestamp.json")?, "timestamp.json")? + 1,
            Err(_) => 1,
        };
        let timestamp = json!({
            "_type": "timestamp",
            "spec_version": SPEC_VERSION,
            "version": version,
            "expires": expires(lifetimes.timestamp),
            "meta": { "snapshot.json": {
                "version": snapshot_version,
                "length": snapshot_bytes.len(),
                "hashes": { "sha256": Digest::of(&snapshot_bytes).hex() },
            } },
        });
        let bytes = sign(&timestamp, &[&keys.role_key("timestamp")?])?;
        write_atomic(&meta.join("timestamp.json"), &bytes)
    }
}

/// `{"signatures": […], "signed": signed}`, signed by every key given.
pub fn sign(signed: &Value, keys: &[&SigningKey]) -> Result<Vec<u8>> {
    let message = canonical(signed)?;
    let signatures: Vec<Value> = keys
        .iter()
        .map(|k| json!({ "keyid": k.id(), "sig": k.sign_hex(&message) }))
        .collect();
    canonical(&json!({ "signatures": signatures, "signed": signed }))
}

fn expires(lifetime: Lifetime) -> String {
    tuf_time(OffsetDateTime::now_utc() + lifetime.0)
}

fn check_threshold(keys: usize, threshold: usize) -> Result<()> {
    if keys == 0 || keys > 16 || threshold == 0 || threshold > keys {
        return Err(Error::Repository(format!(
            "root threshold {threshold} of {keys} keys: need 1 ≤ threshold ≤ keys ≤ 16"
        )));
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn read_signed(path: &Path) -> Result<Value> {
    let bytes = read_file(path)?;
    signed_of(&bytes, &path.display().to_string())
}

fn signed_of(bytes: &[u8], what: &str) -> Result<Value> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::Repository(format!("{what}: not JSON: {e}")))?;
    value
        .get("signed")
        .cloned()
        .ok_or_else(|| Error::Repository(format!("{what}: no `signed` object")))
}

fn signed_version(bytes: &[u8], what: &str) -> Result<u64> {
    version_of(&signed_of(bytes, what)?, what)
}

fn version_of(signed: &Value, what: &str) -> Result<u64> {
    signed
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::Repository(format!("{what}: no version")))
}

fn meta_version(signed: &Value, file: &str) -> Result<u64> {
    signed
        .get("meta")
        .and_then(|m| m.get(file))
        .and_then(|m| m.get("version"))
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::Repository(format!("no version of {file} in the metadata")))
}

/// Key directories are 0700.
fn create_private_dir(dir: &Path) -> Result<()> {
    create_dir(dir, 0o700)
}

/// Repository directories are 0755: a mirror serves them.
fn create_public_dir(dir: &Path) -> Result<()> {
    create_dir(dir, 0o755)
}

fn create_dir(dir: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| Error::io(dir, e))
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync,
/// rename, fsync of the directory.
/// Metadata is public (a mirror serves it), so files are 0644.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    durable::replace(path, bytes, durable::PUBLIC).map_err(|e| Error::io(path, e))
}
