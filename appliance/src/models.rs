//! The model lifecycle: models are installed into the keystore (encrypted
//! blobs under a per-model-line key), loaded into the registry, and
//! reloaded from the keystore at every start. A model never exists
//! decrypted on disk.

use std::io::{Read, Write};

use inference::{Limits, ModelSource, Readiness, Registry};
use keystore::Store;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::AppError;

const INDEX: &str = "models";
const INDEX_PURPOSE: &str = "metadata";
/// Largest model accepted (ONNX plus tokenizer).
pub const MAX_MODEL_BYTES: usize = 1 << 30;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Installed {
    name: String,
    version: u64,
    has_tokenizer: bool,
}

/// A model name, as the protocol and the store accept it: `ident`'s rule,
/// shared with provisioning and signed images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelName(ident::ModelName);

impl ModelName {
    /// `[A-Za-z0-9._-]{1,64}`, not starting with a dot.
    pub fn parse(name: &str) -> Result<ModelName, AppError> {
        ident::ModelName::new(name)
            .map(ModelName)
            .map_err(|e| AppError::InvalidArgument(e.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// The data-key purpose of a model line: its blobs, raw or signed, are
/// sealed under it.
pub(crate) fn purpose(name: &str) -> String {
    format!("model/{name}")
}

fn blob(name: &str, version: u64, part: &str) -> String {
    format!("model/{name}/{version}/{part}")
}

/// Whether unsigned uploads of line `name` are installed.
pub(crate) fn has_unsigned(store: &Store, name: &str) -> Result<bool, AppError> {
    for record in store.tree(INDEX, INDEX_PURPOSE)?.iter() {
        let (_, value) = record?;
        let entry: Installed = serde_json::from_slice(&value)
            .map_err(|e| AppError::Internal(format!("model index: {e}")))?;
        if entry.name == name {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Loads a model (refusing it if the engine cannot run it), then stores it
/// encrypted so it survives restarts. Blocking.
pub fn install(
    store: &Store,
    registry: &Registry,
    limits: Limits,
    name: &ModelName,
    version: u64,
    onnx: &[u8],
    tokenizer_json: Option<&[u8]>,
) -> Result<(), AppError> {
    if crate::updates::has_line(store, name.as_str())? {
        return Err(AppError::Refused(format!(
            "model `{}` is installed from signed images; an unsigned upload may not replace it",
            name.as_str()
        )));
    }
    let source = ModelSource {
        onnx,
        tokenizer_json,
    };
    registry.load(name.as_str(), version, source, limits)?;
    let name = name.as_str();
    let mut parts = vec![("onnx", onnx)];
    parts.extend(tokenizer_json.map(|t| ("tokenizer", t)));
    for (part, bytes) in parts {
        let mut writer = store.create_blob(&blob(name, version, part), &purpose(name))?;
        writer
            .write_all(bytes)
            .map_err(|e| AppError::Internal(format!("writing model: {e}")))?;
        writer.commit()?;
    }
    let entry = Installed {
        name: name.to_owned(),
        version,
        has_tokenizer: tokenizer_json.is_some(),
    };
    let bytes = serde_json::to_vec(&entry).map_err(|e| AppError::Internal(e.to_string()))?;
    store
        .tree(INDEX, INDEX_PURPOSE)?
        .put(format!("{name}/{version}").as_bytes(), &bytes)?;
    tracing::info!(model = name, version, "model installed");
    Ok(())
}

/// Removes a model version from the registry and the store. Blocking.
pub fn remove(
    store: &Store,
    registry: &Registry,
    name: &ModelName,
    version: u64,
) -> Result<bool, AppError> {
    let name = name.as_str();
    if crate::updates::has_line(store, name)? {
        return Err(AppError::Refused(format!(
            "model `{name}` is installed from signed images; roll it back or install a newer \
             release instead"
        )));
    }
    let unloaded = registry.unload(name, version);
    let existed = store
        .tree(INDEX, INDEX_PURPOSE)?
        .remove(format!("{name}/{version}").as_bytes())?;
    store.remove_blob(&blob(name, version, "onnx"))?;
    store.remove_blob(&blob(name, version, "tokenizer"))?;
    // The line's last version gone: destroy its data key, so a copy of
    // the disk taken before cannot decrypt the model either.
    if existed && !has_unsigned(store, name)? {
        store.shred(&purpose(name))?;
        tracing::info!(
            model = name,
            "model line removed; its data key was shredded"
        );
    }
    Ok(unloaded || existed)
}

/// Loads every installed model into the registry. A model that fails to
/// load is left in the registry as failed, with its reason. Blocking.
pub fn restore_all(store: &Store, registry: &Registry, limits: Limits) -> Result<usize, AppError> {
    let mut loaded = 0;
    for record in store.tree(INDEX, INDEX_PURPOSE)?.iter() {
        let (_, value) = record?;
        let entry: Installed = serde_json::from_slice(&value)
            .map_err(|e| AppError::Internal(format!("model index: {e}")))?;
        let onnx = read_blob(store, &blob(&entry.name, entry.version, "onnx"))?;
        let tokenizer = entry
            .has_tokenizer
            .then(|| read_blob(store, &blob(&entry.name, entry.version, "tokenizer")))
            .transpose()?;
        let source = ModelSource {
            onnx: &onnx,
            tokenizer_json: tokenizer.as_ref().map(|t| t.as_slice()),
        };
        match registry.load(&entry.name, entry.version, source, limits) {
            Ok(_) => loaded += 1,
            Err(e) => {
                tracing::error!(model = %entry.name, version = entry.version, error = %e, "model failed to load");
                // Installed and promised, but not servable: not ready.
                registry.set_failed(&entry.name, entry.version, &e.to_string());
            }
        }
    }
    Ok(loaded)
}

/// A whole blob, decrypted into memory that is wiped when dropped.
pub(crate) fn read_blob(store: &Store, name: &str) -> Result<Zeroizing<Vec<u8>>, AppError> {
    let mut reader = store.open_blob(name)?;
    let mut bytes = Zeroizing::new(Vec::new());
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| AppError::Internal(format!("reading model {name}: {e}")))?;
    Ok(bytes)
}

/// (name, version, state) of every model the registry knows.
pub fn list(registry: &Registry) -> Vec<(String, u64, Readiness)> {
    registry.list()
}
