//! Signed model updates (guarantee G6): verify a TUF repository against the
//! vendor's root, stage the chosen image in a new slot while re-encrypting
//! it, trial it (load, golden vectors, latency and memory budgets), switch
//! traffic to it atomically, then commit. Any failure before the commit
//! rolls back by itself, is audited with its reason, and marks the image's
//! digest as rejected.
//!
//! State per model line lives in the encrypted store (tree `updates`):
//!
//! ```text
//! trust          TrustedMetadata: the verified TUF metadata, byte-exact
//! line/<name>    LineState: active and previous images, a pending
//!                install, the release floor, rejected digests
//! ```
//!
//! Images live as encrypted blobs `update/<line>/<slot>/<part>` under the
//! line's data key; a slot number is never reused. Crash safety follows
//! from the order of durable writes: the pending slot is recorded before
//! any of its blobs, and the commit is one record write. A restart that
//! finds a pending install discards it, so after a `kill -9` at any moment
//! either the old release serves or the new one is committed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use images::image::{read_manifest, read_parts};
use images::manifest::{ApplianceVersion, Manifest, PartKind};
use images::tuf::source::RepositorySource;
use images::tuf::verify::{Refreshed, TargetEntry, TrustedMetadata, Verifier};
use images::vectors::{Golden, resident_bytes};
use inference::{Model, ModelSource};
use serde::{Deserialize, Serialize};

use crate::audit::Event;
use crate::error::AppError;
use crate::models;
use crate::state::AppState;

const TREE: &str = "updates";
const PURPOSE: &str = "metadata";
const TRUST: &[u8] = b"trust";
/// Rejected digests remembered per line (newest kept).
const MAX_REJECTED: usize = 32;

/// An image installed in a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// The slot holding its blobs.
    pub slot: u64,
    /// Its release counter.
    pub release: u64,
    /// The model version clients see.
    pub version: u64,
    /// The lowest release its manifest allows rolling back to.
    pub min_release: u64,
    /// Hex SHA-256 of the whole image (the signed target).
    pub digest: String,
    /// The TUF target name it came from.
    pub target: String,
    /// Whether it has a tokenizer part.
    pub has_tokenizer: bool,
}

/// An install that has not committed yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The slot being written.
    pub slot: u64,
    /// The release being installed.
    pub release: u64,
    /// Hex SHA-256 of the image.
    pub digest: String,
    /// "staging" or "trial".
    pub phase: String,
}

/// Everything the appliance keeps about one model line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineState {
    /// The line's name.
    pub name: String,
    /// What serves.
    pub active: Option<Installed>,
    /// What served before, kept for `rollback`.
    pub previous: Option<Installed>,
    /// An install in progress (a restart discards it).
    pub pending: Option<Pending>,
    /// The release floor: never install or roll back below it. Raised only
    /// at commit, to the committed image's `min_release`.
    pub floor: u64,
    /// The next unused slot number.
    pub next_slot: u64,
    /// Digests (hex) of images that failed; never tried again.
    pub rejected: Vec<String>,
    /// Slots whose blobs are to be deleted.
    pub garbage: Vec<u64>,
    /// What happened last, for `provision model list`.
    pub last: String,
}

/// How one model line's update ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// A new release was committed and serves.
    Installed,
    /// Nothing newer was offered; the line is unchanged.
    Current,
    /// Refused or rolled back; the line is unchanged.
    Refused,
}

impl OutcomeKind {
    /// Lower-case name for the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Installed => "installed",
            OutcomeKind::Current => "current",
            OutcomeKind::Refused => "refused",
        }
    }
}

/// One line's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The model line.
    pub model: String,
    /// What happened.
    pub kind: OutcomeKind,
    /// The release offered (0 if none).
    pub release: u64,
    /// Its model version (0 if none).
    pub version: u64,
    /// The release serving afterwards (0 if none).
    pub serving_release: u64,
    /// One sentence for the operator.
    pub message: String,
}

/// What an update reports while it runs.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The repository's metadata verified.
    Verified {
        /// Where it came from.
        source: String,
        /// Versions of root, timestamp, snapshot, targets.
        versions: [u64; 4],
        /// When the first role expires (RFC 3339), and which.
        expires: (String, String),
        /// How many targets it lists.
        targets: usize,
    },
    /// A step of one line's install.
    Step {
        /// The model line.
        model: String,
        /// What happened.
        message: String,
    },
    /// A line's result.
    Outcome(Outcome),
}

/// Who asked for an update and which lines.
#[derive(Debug, Clone)]
pub struct UpdateRequest {
    /// The admin client's name (audited).
    pub client: String,
    /// Lines to update; empty for every line the repository holds.
    pub models: Vec<String>,
}

/// The update machinery of a running appliance.
pub struct Updates {
    verifier: Box<dyn Verifier>,
    /// One update or rollback at a time.
    busy: Mutex<()>,
    /// What each line is doing now ("verifying", "staging", "trial").
    phases: Mutex<HashMap<String, &'static str>>,
}

impl std::fmt::Debug for Updates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updates").finish_non_exhaustive()
    }
}

/// A line's state as `provision model list` shows it.
#[derive(Debug, Clone)]
pub struct LineView {
    /// The persisted state.
    pub state: LineState,
    /// "verifying", "staging", "trial", "serving", "rolled back: …", or
    /// "empty".
    pub phase: String,
}

fn line_key(name: &str) -> Vec<u8> {
    format!("line/{name}").into_bytes()
}

fn slot_blob(line: &str, slot: u64, part: PartKind) -> String {
    format!("update/{line}/{slot}/{}", part.as_str())
}

/// Why an install failed, and whether the image itself is to blame (then
/// its digest is rejected for good).
struct Failure {
    error: AppError,
    image_at_fault: bool,
}

impl Failure {
    fn image(error: impl Into<AppError>) -> Failure {
        Failure {
            error: error.into(),
            image_at_fault: true,
        }
    }
}

impl From<images::Error> for Failure {
    fn from(e: images::Error) -> Failure {
        use images::Error as E;
        // A source that fails or a stream cut short says nothing about the
        // image; bytes that do not match say everything.
        let image_at_fault = match &e {
            E::Source(_) | E::Io { .. } | E::Key { .. } => false,
            E::Stream { source, .. } => source.kind() == std::io::ErrorKind::InvalidData,
            _ => true,
        };
        Failure {
            error: AppError::Update(e),
            image_at_fault,
        }
    }
}

impl From<AppError> for Failure {
    fn from(error: AppError) -> Failure {
        Failure {
            error,
            image_at_fault: false,
        }
    }
}

impl From<keystore::Error> for Failure {
    fn from(e: keystore::Error) -> Failure {
        Failure::from(AppError::from(e))
    }
}

impl Updates {
    /// Updates verified by `verifier`.
    pub fn new(verifier: Box<dyn Verifier>) -> Updates {
        Updates {
            verifier,
            busy: Mutex::new(()),
            phases: Mutex::new(HashMap::new()),
        }
    }

    fn set_phase(&self, line: &str, phase: Option<&'static str>) {
        let mut phases = self.phases.lock().unwrap_or_else(PoisonError::into_inner);
        match phase {
            Some(p) => phases.insert(line.to_owned(), p),
            None => phases.remove(line),
        };
    }

    /// Every line, with what it is doing now.
    pub fn lines(&self, state: &AppState) -> Result<Vec<LineView>, AppError> {
        let phases = self
            .phases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut out: Vec<LineView> = load_lines(state)?
            .into_values()
            .map(|line| {
                let phase = match (phases.get(&line.name), &line.active) {
                    (Some(p), _) => (*p).to_owned(),
                    (None, _)
                        if line.last.starts_with("rolled back")
                            || line.last.starts_with("removed") =>
                    {
                        line.last.clone()
                    }
                    (None, Some(_)) => "serving".to_owned(),
                    (None, None) => "empty".to_owned(),
                };
                LineView { state: line, phase }
            })
            .collect();
        out.sort_by(|a, b| a.state.name.cmp(&b.state.name));
        Ok(out)
    }

    /// At start, before serving: discards installs a crash interrupted,
    /// deletes leftover slots, and loads every line's active image.
    /// Blocking. Returns how many lines serve.
    pub fn restore(&self, state: &AppState) -> Result<usize, AppError> {
        let mut serving = 0;
        for (_, mut line) in load_lines(state)? {
            let mut changed = false;
            if let Some(p) = line.pending.take() {
                remove_slot(state, &line.name, p.slot);
                line.last = format!(
                    "rolled back: release {} was interrupted by a restart during its {}",
                    p.release, p.phase
                );
                tracing::warn!(model = %line.name, release = p.release, phase = %p.phase,
                    "an update was interrupted by a restart; rolled back");
                audit_step(
                    state,
                    "-",
                    "UpdateRollback",
                    &line.name,
                    &format!("release {} sha256:{}", p.release, short(&p.digest)),
                    Err(&line.last),
                );
                changed = true;
            }
            if !line.garbage.is_empty() {
                for slot in std::mem::take(&mut line.garbage) {
                    remove_slot(state, &line.name, slot);
                }
                changed = true;
            }
            if changed {
                save_line(state, &line)?;
            }
            if let Some(active) = &line.active {
                match load_slot(state, &line.name, active) {
                    Ok((model, _)) => {
                        state
                            .registry
                            .replace_line(&line.name, active.version, Arc::new(model));
                        serving += 1;
                    }
                    Err(e) => {
                        tracing::error!(model = %line.name, release = active.release, error = %e,
                            "the committed image failed to load");
                        state
                            .registry
                            .set_failed(&line.name, active.version, &e.to_string());
                    }
                }
            }
        }
        Ok(serving)
    }

    /// Runs one update from `source`. Blocking; one at a time. An error
    /// means the repository itself was refused (nothing changed); per-line
    /// results are reported through `progress` and returned.
    pub fn update(
        &self,
        state: &AppState,
        source: Arc<dyn RepositorySource>,
        request: &UpdateRequest,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Vec<Outcome>, AppError> {
        let _busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        let tree = state.store.tree(TREE, PURPOSE)?;
        let trusted = match tree.get(TRUST)? {
            Some(bytes) => TrustedMetadata::from_bytes(&bytes)?,
            None => {
                return Err(AppError::Refused(
                    "no update root is installed: install the vendor's root.json with \
                     `appliance identity install --update-root FILE`"
                        .into(),
                ));
            }
        };
        let lines = load_lines(state)?;
        for name in lines.keys().chain(&request.models) {
            self.set_phase(name, Some("verifying"));
        }
        let started = Instant::now();
        let refreshed = self.verifier.refresh(&trusted, source.clone());
        for name in lines.keys().chain(&request.models) {
            self.set_phase(name, None);
        }
        let refreshed = match refreshed {
            Ok(r) => r,
            Err(e) => {
                let reason = e.to_string();
                audit_step(
                    state,
                    &request.client,
                    "UpdateVerify",
                    "",
                    &source.describe(),
                    Err(&reason),
                );
                let error = match e {
                    images::Error::Source(why) => {
                        AppError::Unavailable(format!("{why}; {}", serving_summary(&lines)))
                    }
                    other => {
                        AppError::Refused(format!("refused: {other}; {}", serving_summary(&lines)))
                    }
                };
                let code = crate::error::code_name(crate::error::to_status(&error).code());
                state
                    .metrics
                    .observe("UpdateVerify", code, "", started.elapsed());
                return Err(error);
            }
        };
        // TUF: the new metadata is trusted from here on, whatever becomes
        // of the targets.
        tree.put(TRUST, &refreshed.trusted.to_bytes())?;
        let v = refreshed.versions;
        let verified = format!(
            "root v{} timestamp v{} snapshot v{} targets v{}",
            v.root, v.timestamp, v.snapshot, v.targets
        );
        audit_step(
            state,
            &request.client,
            "UpdateVerify",
            "",
            &verified,
            Ok(()),
        );
        state
            .metrics
            .observe("UpdateVerify", "OK", "", started.elapsed());
        progress(Progress::Verified {
            source: source.describe(),
            versions: [v.root, v.timestamp, v.snapshot, v.targets],
            expires: (
                images::tuf::tuf_time(refreshed.expires.0),
                refreshed.expires.1.to_owned(),
            ),
            targets: refreshed.targets.len(),
        });

        let newest = newest_per_line(&refreshed);
        let mut wanted: Vec<String> = if request.models.is_empty() {
            newest.keys().cloned().collect()
        } else {
            request.models.clone()
        };
        wanted.sort();
        wanted.dedup();
        let mut outcomes = Vec::new();
        for name in wanted {
            let line = lines.get(&name).cloned().unwrap_or_else(|| LineState {
                name: name.clone(),
                next_slot: 1,
                ..LineState::default()
            });
            let outcome = match newest.get(&name) {
                None => Outcome {
                    model: name.clone(),
                    kind: OutcomeKind::Refused,
                    release: 0,
                    version: 0,
                    serving_release: line.active.as_ref().map_or(0, |a| a.release),
                    message: format!("the repository holds no image of model `{name}`"),
                },
                Some(candidate) => self.install_line(
                    state,
                    &refreshed,
                    source.as_ref(),
                    candidate,
                    line,
                    &request.client,
                    progress,
                ),
            };
            progress(Progress::Outcome(outcome.clone()));
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// Installs `candidate` on `line` unless it is not newer, was rejected,
    /// or is below the floor.
    #[allow(clippy::too_many_arguments)]
    fn install_line(
        &self,
        state: &AppState,
        refreshed: &Refreshed,
        source: &dyn RepositorySource,
        candidate: &Candidate,
        mut line: LineState,
        client: &str,
        progress: &mut dyn FnMut(Progress),
    ) -> Outcome {
        let name = line.name.clone();
        let serving = line.active.as_ref().map_or(0, |a| a.release);
        let outcome = |kind, message: String, serving_release| Outcome {
            model: name.clone(),
            kind,
            release: candidate.release,
            version: candidate.version,
            serving_release,
            message,
        };
        let still = |serving: u64| match serving {
            0 => format!("`{name}` has no release installed"),
            r => format!("still serving {name} release {r}"),
        };
        let digest = candidate.entry.sha256.hex();
        if candidate.release == serving {
            let message = format!("{name} release {serving} is already installed");
            return outcome(OutcomeKind::Current, message, serving);
        }
        // Refused before anything is staged: said, audited, nothing changes.
        let refusal = if candidate.release < serving {
            // A validly signed but older release: never installed (G6).
            Some(format!(
                "the repository's newest {name} is release {}, below the installed release {serving}",
                candidate.release
            ))
        } else if line.rejected.contains(&digest) {
            Some(format!(
                "{name} release {} ({}) failed before and is not tried again",
                candidate.release, candidate.entry.sha256
            ))
        } else if candidate.release < line.floor {
            Some(format!(
                "{name} release {} is below the release floor {}",
                candidate.release, line.floor
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            let message = format!("refused: {reason}; {}", still(serving));
            let label = release_label(candidate.release, &digest);
            audit_step(state, client, "UpdateInstall", &name, &label, Err(&message));
            return outcome(OutcomeKind::Refused, message, serving);
        }

        let started = Instant::now();
        let label = release_label(candidate.release, &digest);
        match self.install(state, refreshed, source, candidate, &mut line, progress) {
            Ok(installed) => {
                let message = format!(
                    "installed {name} release {} (version {})",
                    installed.release, installed.version
                );
                audit_step(state, client, "UpdateCommit", &name, &label, Ok(()));
                state.audit.flush();
                state
                    .metrics
                    .observe("UpdateCommit", "OK", &name, started.elapsed());
                tracing::info!(model = %name, release = installed.release, version = installed.version,
                    digest = %digest, "update committed");
                outcome(OutcomeKind::Installed, message, installed.release)
            }
            Err(failure) => {
                self.set_phase(&name, None);
                let reason = failure.error.to_string();
                // Undo what the install left: its slot and pending record.
                if let Some(p) = line.pending.take() {
                    remove_slot(state, &name, p.slot);
                }
                if failure.image_at_fault {
                    line.rejected.push(digest.clone());
                    if line.rejected.len() > MAX_REJECTED {
                        line.rejected.remove(0);
                    }
                }
                line.last = format!("rolled back: release {}: {reason}", candidate.release);
                if let Err(e) = save_line(state, &line) {
                    tracing::error!(model = %name, error = %e, "recording a rollback failed");
                }
                let message = format!("refused: {reason}; {}", still(serving));
                audit_step(
                    state,
                    client,
                    "UpdateRollback",
                    &name,
                    &label,
                    Err(&message),
                );
                state.audit.flush();
                state.metrics.observe(
                    "UpdateRollback",
                    "FAILED_PRECONDITION",
                    &name,
                    started.elapsed(),
                );
                tracing::warn!(model = %name, release = candidate.release, reason = %reason,
                    "update rolled back");
                outcome(OutcomeKind::Refused, message, serving)
            }
        }
    }

    /// Stage → trial → switch → commit.
    fn install(
        &self,
        state: &AppState,
        refreshed: &Refreshed,
        source: &dyn RepositorySource,
        candidate: &Candidate,
        line: &mut LineState,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Installed, Failure> {
        let name = line.name.clone();
        let step = |progress: &mut dyn FnMut(Progress), message: String| {
            progress(Progress::Step {
                model: name.clone(),
                message,
            })
        };
        if models::has_unsigned(&state.store, &name)? {
            return Err(AppError::Refused(format!(
                "model `{name}` holds unsigned uploads; unload them before installing signed images"
            ))
            .into());
        }
        self.set_phase(&name, Some("staging"));
        let mut reader = refreshed.open_target(source, candidate.entry)?;
        let manifest = read_manifest(&mut reader)?;
        check_manifest(&manifest, candidate, line)?;

        let slot = line.next_slot.max(1);
        line.next_slot = slot + 1;
        line.pending = Some(Pending {
            slot,
            release: manifest.release,
            digest: candidate.entry.sha256.hex(),
            phase: "staging".into(),
        });
        save_line(state, line)?;
        let purpose = models::purpose(&name);
        read_parts(&mut reader, &manifest, |_, part, bytes| {
            let mut blob = state
                .store
                .create_blob(&slot_blob(&name, slot, part.kind), &purpose)
                .map_err(|e| images::Error::Source(format!("staging: {e}")))?;
            std::io::copy(bytes, &mut blob).map_err(|source| images::Error::Stream {
                what: format!("image part {}", part.kind.as_str()),
                source,
            })?;
            blob.commit()
                .map_err(|e| images::Error::Source(format!("staging: {e}")))?;
            Ok(())
        })?;
        step(
            progress,
            format!(
                "staged release {} ({} bytes, {}), re-encrypted under the line's key",
                manifest.release, candidate.entry.length, candidate.entry.sha256
            ),
        );

        let installed = Installed {
            slot,
            release: manifest.release,
            version: manifest.version,
            min_release: manifest.min_release,
            digest: candidate.entry.sha256.hex(),
            target: candidate.entry.name.clone(),
            has_tokenizer: manifest.part(PartKind::Tokenizer).is_some(),
        };
        if let Some(p) = line.pending.as_mut() {
            p.phase = "trial".into();
        }
        save_line(state, line)?;
        self.set_phase(&name, Some("trial"));
        let before = resident_bytes();
        let (model, golden) = load_slot(state, &name, &installed).map_err(Failure::image)?;
        let report = golden
            .check(&model)
            .map_err(|e| Failure::image(AppError::Update(e)))?;
        let grown = resident_bytes()
            .zip(before)
            .map(|(a, b)| a.saturating_sub(b));
        if let Some(budget) = manifest.latency_budget_ms {
            let ms = report.worst_latency.as_secs_f64() * 1e3;
            if ms > budget as f64 {
                return Err(Failure::image(AppError::Update(images::Error::Budget(
                    format!(
                        "trial: the slowest golden case took {ms:.1} ms, over the {budget} ms latency budget"
                    ),
                ))));
            }
        }
        if let (Some(budget), Some(grown)) = (manifest.memory_budget_mb, grown) {
            if grown > budget << 20 {
                return Err(Failure::image(AppError::Update(images::Error::Budget(
                    format!(
                        "trial: loading took {} MiB of memory, over the {budget} MiB budget",
                        grown >> 20
                    ),
                ))));
            }
        }
        step(
            progress,
            format!(
                "trial passed: {} golden case(s) within tolerance (max |diff| {:.2e}), slowest {:.1} ms, memory +{} MiB{}",
                report.cases,
                report.max_abs_diff,
                report.worst_latency.as_secs_f64() * 1e3,
                grown.map_or("?".into(), |g| (g >> 20).to_string()),
                int8_note(&model)
            ),
        );

        // Switch: new requests go to the new model; requests in flight keep
        // their Arc to the old one. Then commit. A crash between the two
        // restarts on the old release, which is what the client was told.
        let old_model = state.registry.get(&name, None).ok();
        state
            .registry
            .replace_line(&name, installed.version, Arc::new(model));
        if let Some(previous) = line.previous.take() {
            line.garbage.push(previous.slot);
        }
        line.previous = line.active.take();
        line.active = Some(installed.clone());
        line.pending = None;
        line.floor = line.floor.max(installed.min_release);
        line.last = format!("serving release {} since its commit", installed.release);
        if let Err(e) = save_line(state, line) {
            // Not committed: put the old model back, as a restart would.
            match old_model {
                Some(m) => state.registry.replace_line(&name, m.version(), m),
                None => {
                    state.registry.unload(&name, installed.version);
                }
            }
            line.active = line.previous.take();
            return Err(Failure::from(e));
        }
        self.set_phase(&name, None);
        for slot in std::mem::take(&mut line.garbage) {
            remove_slot(state, &name, slot);
        }
        let _ = save_line(state, line);
        Ok(installed)
    }

    /// Switches `name` back to its previous image: never below the floor,
    /// and only if that image still passes its golden vectors. The image
    /// rolled back from is rejected from then on. Blocking.
    pub fn rollback(
        &self,
        state: &AppState,
        name: &str,
        client: &str,
    ) -> Result<Installed, AppError> {
        let _busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        let result = self.rollback_locked(state, name, client);
        let (code, detail) = match &result {
            Ok(i) => ("OK", release_label(i.release, &i.digest)),
            Err(_) => ("FAILED_PRECONDITION", String::new()),
        };
        match &result {
            Ok(_) => audit_step(state, client, "UpdateRollback", name, &detail, Ok(())),
            Err(e) => audit_step(
                state,
                client,
                "UpdateRollback",
                name,
                "",
                Err(&e.to_string()),
            ),
        }
        state.audit.flush();
        state
            .metrics
            .observe("UpdateRollback", code, name, started.elapsed());
        result
    }

    fn rollback_locked(
        &self,
        state: &AppState,
        name: &str,
        client: &str,
    ) -> Result<Installed, AppError> {
        let mut line = load_lines(state)?
            .remove(name)
            .ok_or_else(|| AppError::NotFound(format!("no signed model line `{name}`")))?;
        let active = line
            .active
            .clone()
            .ok_or_else(|| AppError::Refused(format!("`{name}` has no release installed")))?;
        let previous = line.previous.clone().ok_or_else(|| {
            AppError::Refused(format!(
                "no previous release of `{name}` is kept (it serves release {}, and the last install or \
                 rollback replaced the one before)",
                active.release
            ))
        })?;
        if previous.release < line.floor {
            return Err(AppError::Refused(format!(
                "refusing to roll `{name}` back to release {}: below the release floor {} (declared by \
                 the image of release {})",
                previous.release, line.floor, active.release
            )));
        }
        let (model, golden) = load_slot(state, name, &previous)?;
        golden.check(&model).map_err(|e| {
            AppError::Refused(format!(
                "release {} no longer passes its golden vectors: {e}",
                previous.release
            ))
        })?;
        state
            .registry
            .replace_line(name, previous.version, Arc::new(model));
        line.rejected.push(active.digest.clone());
        if line.rejected.len() > MAX_REJECTED {
            line.rejected.remove(0);
        }
        line.garbage.push(active.slot);
        line.active = Some(previous.clone());
        line.previous = None;
        line.last = format!(
            "rolled back by {client} from release {} to release {}",
            active.release, previous.release
        );
        save_line(state, &line)?;
        for slot in std::mem::take(&mut line.garbage) {
            remove_slot(state, name, slot);
        }
        let _ = save_line(state, &line);
        tracing::info!(
            model = name,
            from = active.release,
            to = previous.release,
            client,
            "rolled back"
        );
        Ok(previous)
    }
}

impl Updates {
    /// Removes a signed model line: it stops serving (requests in flight
    /// finish), its images and record are deleted, and its data key is
    /// shredded, so no copy of the disk can decrypt them afterwards.
    /// Blocking. Returns false if there was no such line.
    pub fn remove_line(
        &self,
        state: &AppState,
        name: &str,
        client: &str,
    ) -> Result<bool, AppError> {
        let _busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(mut line) = load_lines(state)?.remove(name) else {
            return Ok(false);
        };
        if line.active.is_none() && line.previous.is_none() && line.last.starts_with("removed") {
            return Ok(false);
        }
        for installed in [&line.active, &line.previous].into_iter().flatten() {
            state.registry.unload(name, installed.version);
        }
        let slots = line
            .active
            .iter()
            .chain(&line.previous)
            .map(|i| i.slot)
            .chain(line.pending.iter().map(|p| p.slot))
            .chain(line.garbage.iter().copied());
        for slot in slots {
            remove_slot(state, name, slot);
        }
        // The record stays, emptied: the floor and the rejected digests
        // still hold if the line is installed again.
        line.active = None;
        line.previous = None;
        line.pending = None;
        line.garbage.clear();
        line.last = format!("removed by {client}; its data key was shredded");
        save_line(state, &line)?;
        state.store.shred(&models::purpose(name))?;
        audit_step(state, client, "RemoveModelLine", name, "", Ok(()));
        state.audit.flush();
        tracing::info!(
            model = name,
            client,
            "model line removed; its data key was shredded"
        );
        Ok(true)
    }
}

/// Installs the vendor's root.json as the update trust anchor. Refused if
/// one is installed already: from then on the root changes only through
/// TUF root rotation in an update. Blocking.
pub fn install_root(store: &keystore::Store, root_json: &[u8]) -> Result<u64, AppError> {
    let trusted = TrustedMetadata::from_root(root_json)?;
    let tree = store.tree(TREE, PURPOSE)?;
    if let Some(existing) = tree.get(TRUST)? {
        let existing = TrustedMetadata::from_bytes(&existing)?;
        return Err(AppError::Refused(format!(
            "an update root (version {}) is installed already; it changes only through root \
             rotation in a signed update",
            existing.root_version()
        )));
    }
    tree.put(TRUST, &trusted.to_bytes())?;
    Ok(trusted.root_version())
}

/// Whether an update root is installed, and its version.
pub fn root_version(store: &keystore::Store) -> Result<Option<u64>, AppError> {
    let tree = store.tree(TREE, PURPOSE)?;
    Ok(match tree.get(TRUST)? {
        Some(bytes) => Some(TrustedMetadata::from_bytes(&bytes)?.root_version()),
        None => None,
    })
}

/// Whether a signed line of this name exists (raw uploads must not share it).
pub fn has_line(store: &keystore::Store, name: &str) -> Result<bool, AppError> {
    Ok(store.tree(TREE, PURPOSE)?.get(&line_key(name))?.is_some())
}

struct Candidate<'a> {
    entry: &'a TargetEntry,
    release: u64,
    version: u64,
}

/// The newest release per model line among the repository's targets.
/// Targets without our custom fields are not model images and are skipped.
fn newest_per_line(refreshed: &Refreshed) -> BTreeMap<String, Candidate<'_>> {
    let mut newest: BTreeMap<String, Candidate<'_>> = BTreeMap::new();
    for entry in &refreshed.targets {
        let custom = &entry.custom;
        let (Some(model), Some(release), Some(version)) = (
            custom.get("model").and_then(|v| v.as_str()),
            custom.get("release").and_then(|v| v.as_u64()),
            custom.get("version").and_then(|v| v.as_u64()),
        ) else {
            continue;
        };
        if newest.get(model).is_none_or(|c| c.release < release) {
            newest.insert(
                model.to_owned(),
                Candidate {
                    entry,
                    release,
                    version,
                },
            );
        }
    }
    newest
}

/// The image must be what the signed metadata says it is, for this line
/// and this appliance, and newer than what runs.
fn check_manifest(
    manifest: &Manifest,
    candidate: &Candidate,
    line: &LineState,
) -> Result<(), Failure> {
    let refuse = |reason: String| Err(Failure::image(AppError::Refused(reason)));
    if manifest.name.as_str() != line.name {
        return refuse(format!(
            "the image is for model line `{}`, not `{}`",
            manifest.name, line.name
        ));
    }
    if manifest.release != candidate.release || manifest.version != candidate.version {
        return refuse(format!(
            "the image says release {} version {}, its signed metadata release {} version {}",
            manifest.release, manifest.version, candidate.release, candidate.version
        ));
    }
    let ours = ApplianceVersion::current();
    if manifest.min_appliance > ours {
        return refuse(format!(
            "the image needs appliance software {} or newer; this is {ours}",
            manifest.min_appliance
        ));
    }
    if let Some(active) = &line.active {
        if manifest.release <= active.release {
            return refuse(format!(
                "release {} is not newer than the installed release {}",
                manifest.release, active.release
            ));
        }
    }
    if manifest.release < line.floor {
        return refuse(format!(
            "release {} is below the release floor {}",
            manifest.release, line.floor
        ));
    }
    Ok(())
}

/// For an int8 model, which kernels run it here, said plainly when they are
/// the slow ones, and how many of its products run as exact float ones.
fn int8_note(model: &Model) -> String {
    let mut note = String::new();
    if model.int8_as_float() > 0 {
        note.push_str(&format!(
            "; {} int8 matrix products run as f32 (this CPU has no fast int8 kernels)",
            model.int8_as_float()
        ));
    }
    if model.is_int8() {
        note.push_str(&format!("; int8 on {}", inference::Int8Kernels::native()));
    }
    note
}

/// Loads a slot's model and golden vectors from the store.
fn load_slot(
    state: &AppState,
    line: &str,
    installed: &Installed,
) -> Result<(Model, Golden), AppError> {
    let read = |part| models::read_blob(&state.store, &slot_blob(line, installed.slot, part));
    let onnx = read(PartKind::Onnx)?;
    let tokenizer = installed
        .has_tokenizer
        .then(|| read(PartKind::Tokenizer))
        .transpose()?;
    let vectors = read(PartKind::Vectors)?;
    let golden = Golden::parse(&vectors)?;
    let model = Model::load(
        line,
        installed.version,
        ModelSource {
            onnx: &onnx,
            tokenizer_json: tokenizer.as_ref().map(|t| t.as_slice()),
        },
        state.config.engine_limits(),
    )?;
    Ok((model, golden))
}

fn remove_slot(state: &AppState, line: &str, slot: u64) {
    for part in [PartKind::Onnx, PartKind::Tokenizer, PartKind::Vectors] {
        if let Err(e) = state.store.remove_blob(&slot_blob(line, slot, part)) {
            tracing::error!(model = line, slot, error = %e, "removing an image slot failed");
        }
    }
}

fn load_lines(state: &AppState) -> Result<BTreeMap<String, LineState>, AppError> {
    let tree = state.store.tree(TREE, PURPOSE)?;
    let mut out = BTreeMap::new();
    for record in tree.iter() {
        let (key, value) = record?;
        if key.starts_with(b"line/") {
            let line: LineState = serde_json::from_slice(&value)
                .map_err(|e| AppError::Internal(format!("model line record: {e}")))?;
            out.insert(line.name.clone(), line);
        }
    }
    Ok(out)
}

fn save_line(state: &AppState, line: &LineState) -> Result<(), AppError> {
    let bytes = serde_json::to_vec(line)
        .map_err(|e| AppError::Internal(format!("model line record: {e}")))?;
    state
        .store
        .tree(TREE, PURPOSE)?
        .put(&line_key(&line.name), &bytes)?;
    Ok(())
}

fn serving_summary(lines: &BTreeMap<String, LineState>) -> String {
    let serving: Vec<String> = lines
        .values()
        .filter_map(|l| {
            l.active
                .as_ref()
                .map(|a| format!("{} release {}", l.name, a.release))
        })
        .collect();
    if serving.is_empty() {
        "nothing was installed".into()
    } else {
        format!("still serving {}", serving.join(", "))
    }
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

fn release_label(release: u64, digest: &str) -> String {
    format!("release {release} sha256:{}", short(digest))
}

/// Records one update step in the audit log.
fn audit_step(
    state: &AppState,
    client: &str,
    rpc: &str,
    model: &str,
    what: &str,
    result: Result<(), &str>,
) {
    let (outcome, detail) = match result {
        Ok(()) => ("OK".to_owned(), String::new()),
        Err(reason) => (
            "FAILED_PRECONDITION".to_owned(),
            crate::state::clip_detail(reason),
        ),
    };
    state.audit.record(Event {
        client: client.to_owned(),
        rpc: rpc.to_owned(),
        model: model.to_owned(),
        version: what.to_owned(),
        outcome,
        bytes_in: 0,
        bytes_out: 0,
        latency_us: 0,
        detail,
    });
}
