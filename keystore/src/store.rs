//! The encrypted store: the key hierarchy and sealed records over sled.
//!
//! On-disk layout of a data directory:
//!
//! ```text
//! <dir>/db/      sled database
//!   tree "keys"  S            -> sealed KEK (backend kind, generation, backend blob)
//!                M            -> metadata DEK, wrapped by the KEK
//!                K <key id>   -> data key (DEK), wrapped by the KEK
//!                P <hash>     -> key id of the DEK for a purpose (purpose name hashed)
//!                X <key id>   -> tombstone of a shredded DEK
//!   tree <hash>  <hash>       -> sealed record (tree and record names hashed)
//! <dir>/blobs/<hash>          chunked AEAD files (see `blob.rs`)
//! ```
//!
//! Sealed records, wrapped data keys and blobs start with a format version
//! byte, which their associated data binds. Format 1 was written with ring's
//! AES-256-GCM, format 2 with RustCrypto's `aes-gcm`: the same cipher and
//! layout, so both are read and new writes are format 2 (a wrapped key of
//! format 2 also binds its version byte, which format 1 did not). The sealed
//! KEK's own envelope (`S`) holds no ciphertext of ours and stays at 1.
//!
//! Every write is flushed to disk before the call returns, so anything a
//! caller was told succeeded survives a crash or power cut.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use zeroize::Zeroizing;

use crate::backend::{BackendKind, IdentityKey, KeyBackend};
use crate::crypto::{AeadKey, IdHasher, NONCE_LEN, SecretKey, TAG_LEN, fill_random, random_nonce};
use crate::error::{Error, Result};
use crate::fsutil;

/// Format of records, wrapped keys and blobs written with ring (read only).
const FORMAT_V1: u8 = 1;
/// Format of records, wrapped keys and blobs written with `aes-gcm`.
const FORMAT_V2: u8 = 2;
/// The format every new record, wrapped key and blob is written in.
pub(crate) const FORMAT: u8 = FORMAT_V2;
/// Version of the sealed KEK's envelope (backend, generation, backend blob).
const SEALED_KEK_FORMAT: u8 = 1;
/// Length of a data key identifier (random, so it reveals nothing).
pub(crate) const KEY_ID_LEN: usize = 16;
/// The metadata key's fixed identifier.
const META_KEY_ID: [u8; KEY_ID_LEN] = [0; KEY_ID_LEN];

/// Largest record identifier accepted.
pub const MAX_ID_LEN: usize = 1024;
/// Largest record value accepted. Bigger payloads (models) go to blobs.
pub const MAX_VALUE_LEN: usize = 16 << 20;
/// sled's page cache unless configured: its own default (1 GiB) let the
/// cache grow with every audit record written, about 900 bytes a request.
pub const DEFAULT_CACHE_BYTES: u64 = 32 << 20;

const SEALED_KEK: &[u8] = b"S";
const META_DEK: &[u8] = b"M";
const DEK_PREFIX: u8 = b'K';
const PURPOSE_PREFIX: u8 = b'P';
const TOMBSTONE_PREFIX: u8 = b'X';

// The "v1" in these labels names the binding, not the format version.
const DEK_AAD: &[u8] = b"appliance keystore: data key v1";
const RECORD_AAD: &[u8] = b"appliance keystore: record v1";

/// Identifier of a data key.
pub(crate) type KeyId = [u8; KEY_ID_LEN];

/// An encrypted store in a data directory. Cheap to clone; all clones share
/// one database and one key cache.
#[derive(Clone)]
pub struct Store {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    db: sled::Db,
    keys: sled::Tree,
    /// Keyed hash for tree, record, purpose and blob names.
    pub(crate) ids: IdHasher,
    /// Serialises every change to the key hierarchy; holds the backend.
    hierarchy: Mutex<Hierarchy>,
    /// Unwrapped data keys by id, and the current key id of each purpose.
    cache: RwLock<KeyCache>,
}

struct Hierarchy {
    backend: Box<dyn KeyBackend>,
    kek: AeadKey,
    generation: u32,
}

#[derive(Default)]
struct KeyCache {
    by_id: HashMap<KeyId, Arc<AeadKey>>,
    by_purpose: HashMap<[u8; 32], KeyId>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store in `dir`, creating it (and a fresh key hierarchy
    /// sealed by `backend`) if the directory holds no store yet, with the
    /// default page cache ([`DEFAULT_CACHE_BYTES`]).
    pub fn open(dir: &Path, backend: Box<dyn KeyBackend>) -> Result<Store> {
        Store::open_with_cache(dir, backend, DEFAULT_CACHE_BYTES)
    }

    /// As [`Store::open`], with sled's page cache bounded to `cache_bytes`.
    pub fn open_with_cache(
        dir: &Path,
        mut backend: Box<dyn KeyBackend>,
        cache_bytes: u64,
    ) -> Result<Store> {
        fsutil::create_private_dir(dir)?;
        let db = open_db(&dir.join("db"), cache_bytes)?;
        let keys = db.open_tree("keys")?;

        let (kek, generation, meta) = match keys.get(SEALED_KEK)? {
            Some(sealed) => {
                let (kind, generation, blob) = parse_sealed_kek(&sealed)?;
                if kind != backend.kind() {
                    return Err(Error::BackendMismatch {
                        found: kind.name(),
                        expected: backend.kind().name(),
                    });
                }
                let kek = AeadKey::new(&backend.unseal(blob)?);
                let wrapped = keys
                    .get(META_DEK)?
                    .ok_or_else(|| Error::tampered("metadata key (missing)"))?;
                let meta = unwrap_dek(&kek, generation, &META_KEY_ID, &wrapped)?;
                (kek, generation, meta)
            }
            None => create_hierarchy(&db, &keys, backend.as_mut())?,
        };
        tracing::info!(
            dir = %dir.display(),
            backend = backend.kind().name(),
            kek_generation = generation,
            "keystore opened"
        );

        Ok(Store {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                db,
                keys,
                ids: IdHasher::new(&meta.derive(b"record ids")),
                hierarchy: Mutex::new(Hierarchy {
                    backend,
                    kek,
                    generation,
                }),
                cache: RwLock::new(KeyCache::default()),
            }),
        })
    }

    /// A named tree of records, whose new records are sealed under the data
    /// key of `purpose` (created on first use). Names are never stored in
    /// the clear.
    pub fn tree(&self, name: &str, purpose: &str) -> Result<Tree> {
        let tree_hash = self.shared.ids.hash(&[b"tree", name.as_bytes()]);
        let tree = self.shared.db.open_tree(tree_hash)?;
        Ok(Tree {
            store: self.clone(),
            tree,
            tree_hash,
            purpose: purpose.to_owned(),
        })
    }

    /// Destroys the data key of `purpose`: everything sealed under it becomes
    /// unreadable, durably, before this returns. The key-encryption key is
    /// then rotated, so a stale copy of the wrapped key (a backup, or a log
    /// segment the database has not compacted yet) no longer unwraps under
    /// the current KEK. Returns false if the purpose had no key.
    pub fn shred(&self, purpose: &str) -> Result<bool> {
        let purpose_hash = self.purpose_hash(purpose);
        let mut hierarchy = self.shared.lock_hierarchy();
        let Some(id) = self.shared.keys.get(purpose_key(&purpose_hash))? else {
            return Ok(false);
        };
        let id: KeyId = id
            .as_ref()
            .try_into()
            .map_err(|_| Error::tampered("data key index"))?;
        let mut batch = sled::Batch::default();
        batch.remove(purpose_key(&purpose_hash));
        batch.remove(dek_key(&id));
        batch.insert(tombstone_key(&id), &[][..]);
        self.shared.keys.apply_batch(batch)?;
        self.shared.db.flush()?;
        {
            let mut cache = self.shared.write_cache();
            cache.by_id.remove(&id);
            cache.by_purpose.remove(&purpose_hash);
        }
        tracing::info!("data key shredded");
        self.shared.rotate_locked(&mut hierarchy)?;
        Ok(true)
    }

    /// Replaces the key-encryption key: seals a fresh KEK with the backend
    /// and re-wraps every data key under it, in one atomic, flushed batch.
    /// Records and blobs are not touched.
    pub fn rotate_kek(&self) -> Result<()> {
        let mut hierarchy = self.shared.lock_hierarchy();
        self.shared.rotate_locked(&mut hierarchy)
    }

    /// The generation of the current key-encryption key (1 at creation,
    /// incremented by each rotation).
    pub fn kek_generation(&self) -> u32 {
        self.shared.lock_hierarchy().generation
    }

    /// The backend protecting this store.
    pub fn backend_kind(&self) -> BackendKind {
        self.shared.lock_hierarchy().backend.kind()
    }

    /// Creates a new identity key with the backend (inside the TPM, for the
    /// TPM backend) and returns its blob, for the caller to keep as a record.
    pub fn create_identity_key(&self) -> Result<Vec<u8>> {
        self.shared.lock_hierarchy().backend.create_identity_key()
    }

    /// Opens an identity key from a blob made by
    /// [`Store::create_identity_key`].
    pub fn open_identity_key(&self, blob: &[u8]) -> Result<Arc<dyn IdentityKey>> {
        self.shared.lock_hierarchy().backend.open_identity_key(blob)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Flushes everything to disk (writes already flush; this is for
    /// shutdown paths that want to be explicit).
    pub fn flush(&self) -> Result<()> {
        self.shared.db.flush()?;
        Ok(())
    }

    pub(crate) fn purpose_hash(&self, purpose: &str) -> [u8; 32] {
        self.shared.ids.hash(&[b"purpose", purpose.as_bytes()])
    }

    /// The current data key of `purpose`, created (and durably stored) if it
    /// has none.
    pub(crate) fn data_key_for(&self, purpose: &str) -> Result<(KeyId, Arc<AeadKey>)> {
        let purpose_hash = self.purpose_hash(purpose);
        if let Some(found) = self.cached_purpose(&purpose_hash) {
            return Ok(found);
        }
        // Creation is serialised so two writers cannot mint two keys for one
        // purpose (the loser's records would escape a later shred).
        let hierarchy = self.shared.lock_hierarchy();
        if let Some(id) = self.shared.keys.get(purpose_key(&purpose_hash))? {
            let id: KeyId = id
                .as_ref()
                .try_into()
                .map_err(|_| Error::tampered("data key index"))?;
            let key = self.load_data_key(&hierarchy, &id)?;
            self.shared
                .write_cache()
                .by_purpose
                .insert(purpose_hash, id);
            return Ok((id, key));
        }

        let mut id = [0u8; KEY_ID_LEN];
        fill_random(&mut id)?;
        let dek = SecretKey::random()?;
        let wrapped = wrap_dek(&hierarchy.kek, hierarchy.generation, &id, &dek)?;
        let mut batch = sled::Batch::default();
        batch.insert(dek_key(&id), wrapped);
        batch.insert(purpose_key(&purpose_hash), &id[..]);
        self.shared.keys.apply_batch(batch)?;
        self.shared.db.flush()?;

        let key = Arc::new(AeadKey::new(&dek));
        let mut cache = self.shared.write_cache();
        cache.by_id.insert(id, key.clone());
        cache.by_purpose.insert(purpose_hash, id);
        Ok((id, key))
    }

    fn cached_purpose(&self, purpose_hash: &[u8; 32]) -> Option<(KeyId, Arc<AeadKey>)> {
        let cache = self.shared.read_cache();
        let id = cache.by_purpose.get(purpose_hash)?;
        Some((*id, cache.by_id.get(id)?.clone()))
    }

    /// The data key with identifier `id`, unwrapped on first use.
    pub(crate) fn data_key(&self, id: &KeyId) -> Result<Arc<AeadKey>> {
        if let Some(key) = self.shared.read_cache().by_id.get(id) {
            return Ok(key.clone());
        }
        let hierarchy = self.shared.lock_hierarchy();
        self.load_data_key(&hierarchy, id)
    }

    /// Unwraps data key `id` and caches it; the caller holds the hierarchy.
    fn load_data_key(&self, hierarchy: &Hierarchy, id: &KeyId) -> Result<Arc<AeadKey>> {
        let Some(wrapped) = self.shared.keys.get(dek_key(id))? else {
            return Err(if self.shared.keys.contains_key(tombstone_key(id))? {
                Error::Shredded { what: "record" }
            } else {
                Error::tampered("record (unknown data key)")
            });
        };
        let dek = unwrap_dek(&hierarchy.kek, hierarchy.generation, id, &wrapped)?;
        let key = Arc::new(AeadKey::new(&dek));
        self.shared.write_cache().by_id.insert(*id, key.clone());
        Ok(key)
    }
}

impl Shared {
    fn lock_hierarchy(&self) -> MutexGuard<'_, Hierarchy> {
        // A panic while holding the lock cannot leave the hierarchy half
        // changed on disk (changes are single batches), so poisoning is moot.
        self.hierarchy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, KeyCache> {
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, KeyCache> {
        self.cache.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn rotate_locked(&self, hierarchy: &mut Hierarchy) -> Result<()> {
        let new_kek = SecretKey::random()?;
        let new_generation = hierarchy
            .generation
            .checked_add(1)
            .ok_or_else(|| Error::tampered("key hierarchy (generation overflow)"))?;
        let sealed = hierarchy.backend.seal(&new_kek)?;
        let new_aead = AeadKey::new(&new_kek);

        let mut batch = sled::Batch::default();
        batch.insert(
            SEALED_KEK,
            encode_sealed_kek(hierarchy.backend.kind(), new_generation, &sealed),
        );
        let meta = self
            .keys
            .get(META_DEK)?
            .ok_or_else(|| Error::tampered("metadata key (missing)"))?;
        let meta = unwrap_dek(&hierarchy.kek, hierarchy.generation, &META_KEY_ID, &meta)?;
        batch.insert(
            META_DEK,
            wrap_dek(&new_aead, new_generation, &META_KEY_ID, &meta)?,
        );
        for entry in self.keys.scan_prefix([DEK_PREFIX]) {
            let (k, wrapped) = entry?;
            let id: KeyId = k[1..]
                .try_into()
                .map_err(|_| Error::tampered("data key index"))?;
            let dek = unwrap_dek(&hierarchy.kek, hierarchy.generation, &id, &wrapped)?;
            batch.insert(k, wrap_dek(&new_aead, new_generation, &id, &dek)?);
        }
        self.keys.apply_batch(batch)?;
        self.db.flush()?;
        hierarchy.kek = new_aead;
        hierarchy.generation = new_generation;
        tracing::info!(
            kek_generation = new_generation,
            "key-encryption key rotated"
        );
        Ok(())
    }
}

/// A named collection of sealed records.
#[derive(Clone)]
pub struct Tree {
    store: Store,
    tree: sled::Tree,
    tree_hash: [u8; 32],
    purpose: String,
}

impl fmt::Debug for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tree").finish_non_exhaustive()
    }
}

/// A record value, zeroized when dropped.
pub type Value = Zeroizing<Vec<u8>>;

impl Tree {
    /// Seals `value` under this tree's data key and stores it under `id`,
    /// replacing any previous value. Durable when this returns.
    pub fn put(&self, id: &[u8], value: &[u8]) -> Result<()> {
        self.put_unflushed(id, value)?;
        self.store.flush()
    }

    /// Stores several records with one flush (group commit). All are durable
    /// when this returns; after a crash before it returns, any subset may be.
    pub fn put_all<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<()> {
        for (id, value) in records {
            self.put_unflushed(id, value)?;
        }
        self.store.flush()
    }

    /// Stores `puts` and removes `removes` atomically (all or none, even
    /// across a crash), then flushes. Durable when this returns.
    pub fn apply<'a>(
        &self,
        puts: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        removes: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (id, value) in puts {
            let (record_hash, sealed) = self.seal(id, value)?;
            batch.insert(&record_hash[..], sealed);
        }
        for id in removes {
            if id.len() <= MAX_ID_LEN {
                batch.remove(&self.record_hash(id)[..]);
            }
        }
        self.tree.apply_batch(batch)?;
        self.store.flush()
    }

    fn put_unflushed(&self, id: &[u8], value: &[u8]) -> Result<()> {
        let (record_hash, sealed) = self.seal(id, value)?;
        self.tree.insert(record_hash, sealed)?;
        Ok(())
    }

    /// The sealed form of a record and the hashed id it is stored under.
    fn seal(&self, id: &[u8], value: &[u8]) -> Result<([u8; 32], Vec<u8>)> {
        check_len("record id", id.len(), MAX_ID_LEN)?;
        check_len("record value", value.len(), MAX_VALUE_LEN)?;
        let (key_id, key) = self.store.data_key_for(&self.purpose)?;
        let record_hash = self.record_hash(id);
        let nonce = random_nonce()?;

        let mut body = Vec::with_capacity(2 + id.len() + value.len() + TAG_LEN);
        body.extend_from_slice(&(id.len() as u16).to_be_bytes());
        body.extend_from_slice(id);
        body.extend_from_slice(value);
        key.seal(
            nonce,
            &self.record_aad(&record_hash, &key_id, FORMAT),
            &mut body,
        );

        let mut sealed = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + body.len());
        sealed.push(FORMAT);
        sealed.extend_from_slice(&key_id);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&body);
        Ok((record_hash, sealed))
    }

    /// The value stored under `id`, if any.
    pub fn get(&self, id: &[u8]) -> Result<Option<Value>> {
        if id.len() > MAX_ID_LEN {
            return Ok(None);
        }
        let record_hash = self.record_hash(id);
        match self.tree.get(record_hash)? {
            None => Ok(None),
            Some(sealed) => {
                let (stored_id, value) = self.open_record(&record_hash, &sealed)?;
                // The hash binds the id already; this guards against a
                // collision-free but buggy caller mixing trees.
                if stored_id.as_slice() != id {
                    return Err(Error::tampered("record (identifier mismatch)"));
                }
                Ok(Some(value))
            }
        }
    }

    /// Removes the record under `id`. Durable when this returns.
    pub fn remove(&self, id: &[u8]) -> Result<bool> {
        if id.len() > MAX_ID_LEN {
            return Ok(false);
        }
        let existed = self.tree.remove(self.record_hash(id))?.is_some();
        self.store.flush()?;
        Ok(existed)
    }

    /// Every record as (id, value), in no particular order. A record that
    /// fails authentication is returned as an error in its place; the
    /// others are still returned.
    pub fn iter(&self) -> impl Iterator<Item = Result<(Vec<u8>, Value)>> + '_ {
        self.tree.iter().map(move |entry| {
            let (k, sealed) = entry?;
            let record_hash: [u8; 32] = k
                .as_ref()
                .try_into()
                .map_err(|_| Error::tampered("record (bad identifier)"))?;
            self.open_record(&record_hash, &sealed)
        })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether the tree has no records.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    fn record_hash(&self, id: &[u8]) -> [u8; 32] {
        self.store
            .shared
            .ids
            .hash(&[b"record", &self.tree_hash, id])
    }

    fn record_aad(&self, record_hash: &[u8; 32], key_id: &KeyId, format: u8) -> Vec<u8> {
        let mut aad = Vec::with_capacity(RECORD_AAD.len() + 32 + 32 + KEY_ID_LEN + 1);
        aad.extend_from_slice(RECORD_AAD);
        aad.extend_from_slice(&self.tree_hash);
        aad.extend_from_slice(record_hash);
        aad.extend_from_slice(key_id);
        aad.push(format);
        aad
    }

    fn open_record(&self, record_hash: &[u8; 32], sealed: &[u8]) -> Result<(Vec<u8>, Value)> {
        let header = 1 + KEY_ID_LEN + NONCE_LEN;
        if sealed.len() < header + 2 + TAG_LEN {
            return Err(Error::tampered("record (too short)"));
        }
        let format = sealed[0];
        if !known_format(format) {
            // Any other byte is damage: no later format exists.
            return Err(Error::tampered("record (unknown format version)"));
        }
        let key_id: KeyId = sealed[1..1 + KEY_ID_LEN]
            .try_into()
            .map_err(|_| Error::tampered("record"))?;
        let nonce: [u8; NONCE_LEN] = sealed[1 + KEY_ID_LEN..header]
            .try_into()
            .map_err(|_| Error::tampered("record"))?;
        let key = self.store.data_key(&key_id)?;
        let mut body = Zeroizing::new(sealed[header..].to_vec());
        let plain = key.open(
            nonce,
            &self.record_aad(record_hash, &key_id, format),
            &mut body,
            "record",
        )?;
        let id_len = usize::from(u16::from_be_bytes([plain[0], plain[1]]));
        if plain.len() < 2 + id_len {
            return Err(Error::tampered("record (bad length)"));
        }
        let id = plain[2..2 + id_len].to_vec();
        let value = Zeroizing::new(plain[2 + id_len..].to_vec());
        Ok((id, value))
    }
}

/// Opens sled, waiting briefly for the lock of a handle dropped a moment
/// ago: sled 0.34 releases its file lock from a background thread after
/// `Drop` returns (spacejam/sled#1234), so an immediate reopen in the same
/// process can see its own previous handle.
/// What [`factory_reset`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    /// The backend destroyed the root of the key hierarchy (the TPM's root
    /// key, or the software root key file): every copy of the data is now
    /// unreadable, wherever it is.
    pub root_destroyed: bool,
    /// A store was found in the directory (and removed).
    pub store_found: bool,
}

/// Crypto-shreds the store in `dir`: the backend destroys the root its KEK
/// is sealed under (and under which the identity key was made), then the
/// store's files are removed. Needs no unsealing, so it works when the PCR
/// policy no longer lets the store open. The store must not be open.
pub fn factory_reset(dir: &Path, mut backend: Box<dyn KeyBackend>) -> Result<Reset> {
    let db_dir = dir.join("db");
    let mut reset = Reset {
        root_destroyed: false,
        store_found: db_dir.exists(),
    };
    if reset.store_found {
        let sealed = {
            let db = open_db(&db_dir, DEFAULT_CACHE_BYTES)?;
            let keys = db.open_tree("keys")?;
            keys.get(SEALED_KEK)?
        };
        if let Some(sealed) = sealed {
            let (kind, _, blob) = parse_sealed_kek(&sealed)?;
            if kind != backend.kind() {
                return Err(Error::BackendMismatch {
                    found: kind.name(),
                    expected: backend.kind().name(),
                });
            }
            reset.root_destroyed = backend.destroy(blob)?;
        }
    }
    for sub in ["db", "blobs"] {
        match std::fs::remove_dir_all(dir.join(sub)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(dir.join(sub), e)),
        }
    }
    Ok(reset)
}

fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db> {
    const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
    let started = std::time::Instant::now();
    loop {
        // No background flusher: every write is flushed before it returns.
        match sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .cache_capacity(cache_bytes)
            .open()
        {
            // sled reports its lock as an `Other` error whose text names it.
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock") =>
            {
                if started.elapsed() > LOCK_WAIT {
                    return Err(Error::InUse {
                        dir: path.to_path_buf(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

fn check_len(what: &'static str, len: usize, limit: usize) -> Result<()> {
    if len > limit {
        return Err(Error::TooLarge { what, len, limit });
    }
    Ok(())
}

fn create_hierarchy(
    db: &sled::Db,
    keys: &sled::Tree,
    backend: &mut dyn KeyBackend,
) -> Result<(AeadKey, u32, SecretKey)> {
    // A store with records but no sealed key was damaged; never paper over
    // that by minting new keys.
    let has_data = !keys.is_empty()
        || db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() != b"keys" && n.as_ref() != b"__sled__default");
    if has_data {
        return Err(Error::tampered("key hierarchy (sealed key missing)"));
    }
    let generation = 1;
    let kek = SecretKey::random()?;
    let sealed = backend.seal(&kek)?;
    let kek = AeadKey::new(&kek);
    let meta = SecretKey::random()?;
    let mut batch = sled::Batch::default();
    batch.insert(
        SEALED_KEK,
        encode_sealed_kek(backend.kind(), generation, &sealed),
    );
    batch.insert(META_DEK, wrap_dek(&kek, generation, &META_KEY_ID, &meta)?);
    keys.apply_batch(batch)?;
    db.flush()?;
    tracing::info!(backend = backend.kind().name(), "new key hierarchy created");
    Ok((kek, generation, meta))
}

fn encode_sealed_kek(kind: BackendKind, generation: u32, blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + blob.len());
    out.push(SEALED_KEK_FORMAT);
    out.push(kind.to_byte());
    out.extend_from_slice(&generation.to_be_bytes());
    out.extend_from_slice(blob);
    out
}

fn parse_sealed_kek(bytes: &[u8]) -> Result<(BackendKind, u32, &[u8])> {
    if bytes.len() < 6 {
        return Err(Error::tampered("sealed key (too short)"));
    }
    if bytes[0] != SEALED_KEK_FORMAT {
        return Err(Error::UnsupportedFormat {
            what: "sealed key",
            version: bytes[0],
        });
    }
    let kind =
        BackendKind::from_byte(bytes[1]).ok_or_else(|| Error::tampered("sealed key (backend)"))?;
    let generation = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
    Ok((kind, generation, &bytes[6..]))
}

/// Whether this build reads records, wrapped keys and blobs of `format`.
pub(crate) fn known_format(format: u8) -> bool {
    matches!(format, FORMAT_V1 | FORMAT_V2)
}

fn dek_aad(format: u8, generation: u32, id: &KeyId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(DEK_AAD.len() + 4 + KEY_ID_LEN + 1);
    aad.extend_from_slice(DEK_AAD);
    aad.extend_from_slice(&generation.to_be_bytes());
    aad.extend_from_slice(id);
    // Format 1 did not bind its version byte here; later formats do.
    if format != FORMAT_V1 {
        aad.push(format);
    }
    aad
}

fn wrap_dek(kek: &AeadKey, generation: u32, id: &KeyId, dek: &SecretKey) -> Result<Vec<u8>> {
    let nonce = random_nonce()?;
    let mut body = dek.expose().to_vec();
    kek.seal(nonce, &dek_aad(FORMAT, generation, id), &mut body);
    let mut out = Vec::with_capacity(1 + NONCE_LEN + body.len());
    out.push(FORMAT);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

fn unwrap_dek(kek: &AeadKey, generation: u32, id: &KeyId, wrapped: &[u8]) -> Result<SecretKey> {
    if wrapped.len() != 1 + NONCE_LEN + 32 + TAG_LEN || !known_format(wrapped[0]) {
        return Err(Error::tampered("data key"));
    }
    let format = wrapped[0];
    let nonce: [u8; NONCE_LEN] = wrapped[1..1 + NONCE_LEN]
        .try_into()
        .map_err(|_| Error::tampered("data key"))?;
    let mut body = Zeroizing::new(wrapped[1 + NONCE_LEN..].to_vec());
    let plain = kek.open(
        nonce,
        &dek_aad(format, generation, id),
        &mut body,
        "data key",
    )?;
    SecretKey::from_slice(plain).ok_or_else(|| Error::tampered("data key"))
}

fn dek_key(id: &KeyId) -> Vec<u8> {
    prefixed(DEK_PREFIX, id)
}

fn purpose_key(hash: &[u8; 32]) -> Vec<u8> {
    prefixed(PURPOSE_PREFIX, hash)
}

fn tombstone_key(id: &KeyId) -> Vec<u8> {
    prefixed(TOMBSTONE_PREFIX, id)
}

fn prefixed(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::InsecureSoftwareBackend;
    use proptest::prelude::*;

    /// One store for all cases: opening sled per case would dominate.
    fn shared_tree() -> &'static Tree {
        static TREE: std::sync::OnceLock<(tempfile::TempDir, Tree)> = std::sync::OnceLock::new();
        &TREE
            .get_or_init(|| {
                let dir = tempfile::tempdir().unwrap();
                let backend = InsecureSoftwareBackend::open(&dir.path().join("root.key")).unwrap();
                let store = Store::open(&dir.path().join("data"), Box::new(backend)).unwrap();
                let tree = store.tree("t", "p").unwrap();
                (dir, tree)
            })
            .1
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Stored records come from disk: any bytes must give an error or a
        /// value, never a panic.
        #[test]
        fn record_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert!(shared_tree().open_record(&[0; 32], &bytes).is_err());
        }

        #[test]
        fn key_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let kek = AeadKey::new(&SecretKey::from_slice(&[1; 32]).unwrap());
            prop_assert!(unwrap_dek(&kek, 1, &[0; KEY_ID_LEN], &bytes).is_err());
            let _ = parse_sealed_kek(&bytes);
        }
    }
}
