//! The model registry: model lines, their versions, and each version's
//! readiness.
//!
//! Requests hold an `Arc<Model>` for their whole run, so unloading or
//! replacing a version never disturbs requests already in flight on it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use crate::error::{Error, Result};
use crate::model::{Limits, Model, ModelSource};

/// Whether a model version can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Being loaded and optimised.
    Loading,
    /// Serving.
    Ready,
    /// Loading failed; the reason says why.
    Failed(String),
}

impl std::fmt::Display for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Readiness::Loading => f.write_str("loading"),
            Readiness::Ready => f.write_str("ready"),
            Readiness::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

enum Slot {
    Loading,
    Ready(Arc<Model>),
    Failed(String),
}

impl Slot {
    fn readiness(&self) -> Readiness {
        match self {
            Slot::Loading => Readiness::Loading,
            Slot::Ready(_) => Readiness::Ready,
            Slot::Failed(why) => Readiness::Failed(why.clone()),
        }
    }
}

/// All models this process serves.
#[derive(Default)]
pub struct Registry {
    lines: RwLock<HashMap<String, BTreeMap<u64, Slot>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.list()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Loads `source` as version `version` of model `name`, blocking until
    /// it is ready or has failed. While it loads, the version reports
    /// `Loading`; other versions keep serving. Replaces an earlier load of
    /// the same version only once the new one is ready; a load that fails
    /// leaves the registry as it was.
    pub fn load(
        &self,
        name: &str,
        version: u64,
        source: ModelSource<'_>,
        limits: Limits,
    ) -> Result<Arc<Model>> {
        let replacing = {
            let mut lines = self.write();
            let versions = lines.entry(name.to_owned()).or_default();
            let replacing = matches!(versions.get(&version), Some(Slot::Ready(_)));
            if !replacing {
                versions.insert(version, Slot::Loading);
            }
            replacing
        };
        let result = Model::load(name, version, source, limits).map(Arc::new);
        let mut lines = self.write();
        let versions = lines.entry(name.to_owned()).or_default();
        match &result {
            Ok(model) => {
                versions.insert(version, Slot::Ready(model.clone()));
            }
            // A failed reload leaves the serving version in place.
            Err(_) if replacing => {}
            // A model that never loaded was never served: it leaves no
            // trace (the caller has the error), so a refused upload cannot
            // take the server out of readiness. `set_failed` records a
            // failure that should (a model installed earlier that no longer
            // loads).
            Err(_) => {
                versions.remove(&version);
                if versions.is_empty() {
                    lines.remove(name);
                }
            }
        }
        result
    }

    /// The model to serve for `name`: the given version, or the newest
    /// ready one when `version` is `None`.
    pub fn get(&self, name: &str, version: Option<u64>) -> Result<Arc<Model>> {
        let lines = self.read();
        let versions = lines.get(name).ok_or_else(|| Error::ModelNotFound {
            name: name.to_owned(),
        })?;
        match version {
            Some(v) => match versions.get(&v) {
                Some(Slot::Ready(model)) => Ok(model.clone()),
                Some(slot) => Err(Error::NotReady {
                    name: name.to_owned(),
                    version: v,
                    state: slot.readiness().to_string(),
                }),
                None => Err(Error::VersionNotFound {
                    name: name.to_owned(),
                    version: v.to_string(),
                }),
            },
            None => versions
                .values()
                .rev()
                .find_map(|slot| match slot {
                    Slot::Ready(model) => Some(model.clone()),
                    _ => None,
                })
                .ok_or_else(|| {
                    let (v, slot) = versions
                        .iter()
                        .next_back()
                        .map_or((0, Readiness::Loading), |(v, s)| (*v, s.readiness()));
                    Error::NotReady {
                        name: name.to_owned(),
                        version: v,
                        state: slot.to_string(),
                    }
                }),
        }
    }

    /// The readiness of a version (or of the newest version), if it exists.
    pub fn readiness(&self, name: &str, version: Option<u64>) -> Option<Readiness> {
        let lines = self.read();
        let versions = lines.get(name)?;
        match version {
            Some(v) => versions.get(&v).map(Slot::readiness),
            None if versions.values().any(|s| matches!(s, Slot::Ready(_))) => {
                Some(Readiness::Ready)
            }
            None => versions.values().next_back().map(Slot::readiness),
        }
    }

    /// Makes `model` the only version of line `name`, atomically: requests
    /// that start afterwards get it; requests in flight keep the model they
    /// hold.
    pub fn replace_line(&self, name: &str, version: u64, model: Arc<Model>) {
        let mut versions = BTreeMap::new();
        versions.insert(version, Slot::Ready(model));
        self.write().insert(name.to_owned(), versions);
    }

    /// Records that version `version` of `name` could not be loaded.
    pub fn set_failed(&self, name: &str, version: u64, why: &str) {
        self.write()
            .entry(name.to_owned())
            .or_default()
            .insert(version, Slot::Failed(why.to_owned()));
    }

    /// Removes a version. Requests running on it finish normally.
    pub fn unload(&self, name: &str, version: u64) -> bool {
        let mut lines = self.write();
        let Some(versions) = lines.get_mut(name) else {
            return false;
        };
        let removed = versions.remove(&version).is_some();
        if versions.is_empty() {
            lines.remove(name);
        }
        removed
    }

    /// Every (name, version, readiness), sorted.
    pub fn list(&self) -> Vec<(String, u64, Readiness)> {
        let lines = self.read();
        let mut out: Vec<_> = lines
            .iter()
            .flat_map(|(name, versions)| {
                versions
                    .iter()
                    .map(move |(v, s)| (name.clone(), *v, s.readiness()))
            })
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    /// Whether every loaded version is ready (none loading or failed).
    pub fn all_ready(&self) -> bool {
        self.read()
            .values()
            .flat_map(|v| v.values())
            .all(|s| matches!(s, Slot::Ready(_)))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, BTreeMap<u64, Slot>>> {
        self.lines.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, BTreeMap<u64, Slot>>> {
        self.lines.write().unwrap_or_else(PoisonError::into_inner)
    }
}
