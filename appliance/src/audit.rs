//! The audit log: one record per call (who, what, when, outcome, sizes,
//! latency; never payload), appended to a hash chain in the encrypted store.
//!
//! Each record carries SHA-256(previous hash ‖ record), and a head record
//! holds the count and the last hash, so a changed, moved, removed or
//! reordered record, and a cut tail, are all detected by [`verify`]. Every
//! record is also sealed by the keystore (AES-GCM), so a flipped byte fails
//! authentication before the chain is even consulted.
//!
//! Records are written by one thread in batches (group commit): a call's
//! response does not wait for its audit record's fsync. A power cut can
//! lose the records of the last few milliseconds' calls, never the chain's
//! integrity; the next start resumes the chain from what is on disk.
//!
//! Fail-closed: when a batch cannot be written, the log turns unhealthy,
//! every new call is refused (UNAVAILABLE) until it is written, and the
//! writer retries that same batch, so the chain never has a gap.
//!
//! Retention: records older than `retain_days`, or beyond the newest
//! `retain_records`, are pruned in atomic steps that also write a
//! checkpoint (the first record kept and the hash of the one before it), so
//! the chain stays verifiable from the checkpoint on.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use keystore::{Store, Tree};
use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};

use crate::error::AppError;

const TREE: &str = "audit";
const PURPOSE: &str = "audit";
const HEAD: &[u8] = b"head";
const CHECKPOINT: &[u8] = b"checkpoint";
/// Most records pruned in one atomic step.
const PRUNE_STEP: u64 = 4096;
/// How long a failed batch waits before it is written again.
const RETRY: std::time::Duration = std::time::Duration::from_millis(500);
/// Records waiting for the writer beyond this make callers wait: audit
/// records are never dropped.
const QUEUE: usize = 65_536;
/// Most records per group commit.
const BATCH: usize = 1024;

/// What a call reports to the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Client name, or `-` when the certificate did not identify one.
    pub client: String,
    /// RPC name, e.g. `ModelInfer`.
    pub rpc: String,
    /// Model name, if the call named one.
    pub model: String,
    /// Model version as asked for.
    pub version: String,
    /// Status code name, e.g. `OK`.
    pub outcome: String,
    /// Request size in bytes.
    pub bytes_in: u64,
    /// Response size in bytes.
    pub bytes_out: u64,
    /// Time spent in the server.
    pub latency_us: u64,
    /// Why, for outcomes that need a reason (update refusals and
    /// rollbacks). Never payload. Left out of records without one, so
    /// records written before it existed hash as they did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// A record as stored: the event, its place and time, and its chain link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the log, from 0.
    pub sequence: u64,
    /// Unix time in milliseconds.
    pub time_ms: u64,
    /// The call.
    #[serde(flatten)]
    pub event: Event,
    /// Hex SHA-256 of the previous record's hash and this record.
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Head {
    count: u64,
    last_hash: String,
}

/// Where the chain starts after a prune: the first record kept and the
/// chain hash of the record before it (pruned).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    first: u64,
    previous_hash: String,
    /// When the last prune happened (Unix ms).
    pruned_at_ms: u64,
}

/// How long records are kept, and the disk space they may not eat into.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Records older than this are pruned.
    pub max_age: std::time::Duration,
    /// At most this many records are kept.
    pub max_records: u64,
    /// The data directory, whose filesystem is watched.
    pub data_dir: std::path::PathBuf,
    /// Below this much free space no record is written and calls are
    /// refused, before the store itself would fail (sled treats a failed
    /// write as fatal until it is reopened).
    pub min_free_bytes: u64,
    /// Where records are archived before they are pruned (None: pruned
    /// records are dropped).
    pub archive: Option<std::path::PathBuf>,
}

/// Free bytes on the filesystem holding `dir`, for an unprivileged writer.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// The all-zero hash the chain starts from.
fn genesis() -> String {
    "0".repeat(64)
}

/// The chain hash of a record: over the previous hash and every field but
/// the hash itself.
fn chain_hash(previous: &str, sequence: u64, time_ms: u64, event: &Event) -> String {
    // Strings and integers only: serialising cannot fail. Were it ever to,
    // the hash would not match on verification, never silently pass.
    let body = serde_json::to_vec(&(sequence, time_ms, event))
        .unwrap_or_else(|_| b"unserialisable".to_vec());
    let mut input = previous.as_bytes().to_vec();
    input.extend_from_slice(&body);
    hex(digest(&SHA256, &input).as_ref())
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

enum Message {
    /// Boxed: the channel allocates and touches every slot up front, so a
    /// slot the size of an `Event` would cost the queue ~11 MiB resident.
    Event(Box<Event>),
    /// Acknowledged once everything sent before it is durable.
    Flush(SyncSender<()>),
    /// Write what came before, then end the writer (shutdown: work still
    /// running on the pool must not keep the process alive).
    Stop,
}

/// Sends events to the writer thread.
#[derive(Clone)]
pub struct AuditLog {
    sender: SyncSender<Message>,
    /// False while a batch cannot be written: calls are then refused.
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Batches that failed to write, and records pruned (for metrics).
    stats: std::sync::Arc<Stats>,
}

/// Counters the writer keeps for metrics.
#[derive(Default)]
pub struct Stats {
    /// Batch writes that failed.
    pub write_failures: std::sync::atomic::AtomicU64,
    /// Records removed by retention.
    pub pruned: std::sync::atomic::AtomicU64,
}

/// The writer thread.
pub struct AuditWriter {
    thread: Option<JoinHandle<()>>,
}

impl AuditLog {
    /// Starts the writer on `store`, resuming the chain where it ends, and
    /// pruning under `retention`.
    pub fn start(store: &Store, retention: Retention) -> Result<(AuditLog, AuditWriter), AppError> {
        let tree = store.tree(TREE, PURPOSE)?;
        let (mut count, mut last) = match tree.get(HEAD)? {
            Some(bytes) => {
                let head: Head = serde_json::from_slice(&bytes)
                    .map_err(|e| AppError::Internal(format!("audit head: {e}")))?;
                (head.count, head.last_hash)
            }
            None => (0, genesis()),
        };
        // Records made durable after the last head update (a crash between
        // the two) extend the chain if they link correctly.
        while let Some(record) = read(&tree, count)? {
            if record.sequence != count
                || record.hash != chain_hash(&last, count, record.time_ms, &record.event)
            {
                break;
            }
            last = record.hash;
            count += 1;
        }
        let (sender, receiver) = sync_channel(QUEUE);
        let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let stats = std::sync::Arc::new(Stats::default());
        let writer = Writer {
            tree,
            count,
            last,
            retention,
            healthy: healthy.clone(),
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(&receiver))
            .map_err(|e| AppError::Internal(format!("audit writer: {e}")))?;
        Ok((
            AuditLog {
                sender,
                healthy,
                stats,
            },
            AuditWriter {
                thread: Some(thread),
            },
        ))
    }

    /// Queues an event. Waits only if the writer is far behind.
    pub fn record(&self, event: Event) {
        match self.sender.try_send(Message::Event(Box::new(event))) {
            Ok(()) => {}
            Err(TrySendError::Full(message)) => {
                // Backpressure rather than loss; rare (the queue is large).
                let _ = self.sender.send(message);
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!("audit writer stopped; an audit record could not be written");
            }
        }
    }

    /// Whether records are being written; when not, calls are refused.
    pub fn healthy(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The writer's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Makes everything recorded so far durable and ends the writer; later
    /// records are refused (and logged).
    pub fn stop(&self) {
        let _ = self.sender.send(Message::Stop);
    }

    /// Blocks until every event recorded before this call is durable.
    pub fn flush(&self) {
        let (tx, rx) = sync_channel(1);
        if self.sender.send(Message::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

impl AuditWriter {
    /// Waits for the writer to end (once every `AuditLog` is dropped).
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread's state: the chain's end, and what it keeps.
struct Writer {
    tree: Tree,
    count: u64,
    last: String,
    retention: Retention,
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stats: std::sync::Arc<Stats>,
}

impl Writer {
    fn run(mut self, receiver: &Receiver<Message>) {
        let mut stopping = false;
        let mut next_prune = std::time::Instant::now();
        while !stopping {
            let Ok(first) = receiver.recv() else { break };
            let mut events = Vec::with_capacity(16);
            let mut waiting = Vec::new();
            for message in std::iter::once(first).chain(receiver.try_iter().take(BATCH - 1)) {
                match message {
                    Message::Event(event) => events.push(*event),
                    Message::Flush(ack) => waiting.push(ack),
                    Message::Stop => {
                        stopping = true;
                        break;
                    }
                }
            }
            if !events.is_empty() {
                self.append(events);
            }
            for ack in waiting {
                let _ = ack.send(());
            }
            // Retention: on every batch while over the count, and at least
            // once a minute for age.
            if self.count.saturating_sub(self.first()) > self.retention.max_records
                || std::time::Instant::now() >= next_prune
            {
                self.prune();
                next_prune = std::time::Instant::now() + std::time::Duration::from_secs(60);
            }
        }
    }

    /// Chains and writes one batch; until it is written, retries it and
    /// keeps the log marked unhealthy (new calls are refused meanwhile).
    fn append(&mut self, events: Vec<Event>) {
        let time_ms = now_ms();
        let mut last = self.last.clone();
        let mut records = Vec::with_capacity(events.len());
        for (i, event) in events.into_iter().enumerate() {
            let sequence = self.count + i as u64;
            let hash = chain_hash(&last, sequence, time_ms, &event);
            last.clone_from(&hash);
            records.push(Record {
                sequence,
                time_ms,
                event,
                hash,
            });
        }
        let head = Head {
            count: self.count + records.len() as u64,
            last_hash: last.clone(),
        };
        let mut failed = false;
        loop {
            // Never let the store meet a full disk: hold the batch instead.
            let free = free_bytes(&self.retention.data_dir).unwrap_or(u64::MAX);
            let attempt = if free < self.retention.min_free_bytes {
                Err(AppError::Unavailable(format!(
                    "{} MiB free on the data directory's filesystem, below keystore.min_free_mb \
                     ({} MiB)",
                    free >> 20,
                    self.retention.min_free_bytes >> 20
                )))
            } else {
                self.write(&records, &head)
            };
            match attempt {
                Ok(()) => break,
                Err(e) => {
                    self.stats
                        .write_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if !failed {
                        tracing::error!(error = %e, records = records.len(),
                            "AUDIT LOG UNWRITABLE: refusing calls until these records are written");
                    }
                    failed = true;
                    self.healthy
                        .store(false, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(RETRY);
                }
            }
        }
        if failed {
            tracing::warn!("audit log writable again; serving calls");
            self.healthy
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.count = head.count;
        self.last = last;
    }

    fn write(&self, records: &[Record], head: &Head) -> Result<(), AppError> {
        let mut rows = Vec::with_capacity(records.len() + 1);
        for record in records {
            rows.push((record.sequence.to_be_bytes().to_vec(), to_json(record)?));
        }
        rows.push((HEAD.to_vec(), to_json(head)?));
        self.tree
            .put_all(rows.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))?;
        Ok(())
    }

    /// The first record kept (after the last prune).
    fn first(&self) -> u64 {
        checkpoint(&self.tree).ok().flatten().map_or(0, |c| c.first)
    }

    /// Removes what retention no longer keeps, one atomic step (records
    /// and the new checkpoint together) at a time.
    fn prune(&mut self) {
        let cutoff_ms = now_ms().saturating_sub(self.retention.max_age.as_millis() as u64);
        loop {
            let (mut first, mut previous) = match checkpoint(&self.tree) {
                Ok(Some(c)) => (c.first, c.previous_hash),
                Ok(None) => (0, genesis()),
                Err(e) => {
                    tracing::error!(error = %e, "audit checkpoint unreadable; not pruning");
                    return;
                }
            };
            let keep_from_count = self.count.saturating_sub(self.retention.max_records);
            let mut doomed = Vec::new();
            let mut archived = Vec::new();
            while first < self.count && (doomed.len() as u64) < PRUNE_STEP {
                let record = match read(&self.tree, first) {
                    Ok(Some(r)) => r,
                    _ => break,
                };
                if first >= keep_from_count && record.time_ms >= cutoff_ms {
                    break;
                }
                previous.clone_from(&record.hash);
                doomed.push(first.to_be_bytes());
                archived.push(record);
                first += 1;
            }
            if doomed.is_empty() {
                return;
            }
            // Archived and on disk before anything is removed: a crash in
            // between archives some records twice (their sequence numbers
            // tell), never loses one.
            if let Some(dir) = &self.retention.archive
                && let Err(e) = archive(dir, &archived)
            {
                self.stats
                    .write_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(
                    error = %e,
                    dir = %dir.display(),
                    "archiving audit records failed; not pruning"
                );
                return;
            }
            let cp = Checkpoint {
                first,
                previous_hash: previous,
                pruned_at_ms: now_ms(),
            };
            let Ok(bytes) = to_json(&cp) else { return };
            match self.tree.apply(
                [(CHECKPOINT, bytes.as_slice())],
                doomed.iter().map(|k| &k[..]),
            ) {
                Ok(()) => {
                    self.stats
                        .pruned
                        .fetch_add(doomed.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(
                        pruned = doomed.len(),
                        first_kept = first,
                        "audit records pruned by retention"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "pruning the audit log failed");
                    return;
                }
            }
        }
    }
}

/// Appends `records` to today's archive file (`audit-YYYY-MM-DD.jsonl`,
/// UTC, mode 0600, one record per line as `verify` reads them) and fsyncs
/// it.
fn archive(dir: &std::path::Path, records: &[Record]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let day = time::OffsetDateTime::now_utc().date();
    let path = dir.join(format!("audit-{day}.jsonl"));
    let created = !path.exists();
    let mut lines = Vec::with_capacity(records.len() * 256);
    for record in records {
        serde_json::to_writer(&mut lines, record)?;
        lines.push(b'\n');
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(&lines)?;
    file.sync_data()?;
    if created {
        durable::sync_parent(&path)?;
    }
    Ok(())
}

/// JSON for what the writer stores; an error, never silently empty.
fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, AppError> {
    serde_json::to_vec(value).map_err(|e| AppError::Internal(format!("audit record: {e}")))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn checkpoint(tree: &Tree) -> Result<Option<Checkpoint>, AppError> {
    match tree.get(CHECKPOINT)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| AppError::Internal(format!("audit checkpoint: {e}"))),
    }
}

fn read(tree: &Tree, sequence: u64) -> Result<Option<Record>, AppError> {
    match tree.get(&sequence.to_be_bytes())? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| AppError::Internal(format!("audit record {sequence}: {e}"))),
    }
}

/// Records from `from` on, in order, stopping at the first gap.
pub fn export(store: &Store, from: u64) -> Result<Vec<Record>, AppError> {
    let tree = store.tree(TREE, PURPOSE)?;
    let mut out = Vec::new();
    // Records before the checkpoint were pruned by retention.
    let first = checkpoint(&tree)?.map_or(0, |c| c.first);
    let mut sequence = from.max(first);
    while let Some(record) = read(&tree, sequence)? {
        out.push(record);
        sequence += 1;
    }
    Ok(out)
}

/// Checks the whole chain from the checkpoint (if records were pruned) to
/// the head. Returns the range checked, or the first broken link in words.
pub fn verify(store: &Store, archive: Option<&std::path::Path>) -> Result<Verified, String> {
    let tree = store.tree(TREE, PURPOSE).map_err(|e| e.to_string())?;
    let head: Option<Head> = match tree.get(HEAD) {
        Ok(Some(bytes)) => Some(
            serde_json::from_slice(&bytes)
                .map_err(|_| "the audit head does not parse".to_owned())?,
        ),
        Ok(None) => None,
        Err(e) => return Err(format!("the audit head: {e}")),
    };
    let (mut sequence, mut last) = match checkpoint(&tree) {
        Ok(Some(c)) => (c.first, c.previous_hash),
        Ok(None) => (0, genesis()),
        Err(e) => return Err(format!("the audit checkpoint: {e}")),
    };
    let mut first = sequence;
    let mut archived = 0;
    if let Some(dir) = archive.filter(|d| d.exists()) {
        let records = read_archive(dir)?;
        // Archived after the checkpoint was written: a crash between
        // archiving and pruning; the store's copy is the one checked.
        let records: Vec<&Record> = records.iter().filter(|r| r.sequence < sequence).collect();
        if let Some((head, rest)) = records.split_first() {
            // Archive files an operator has shipped away leave an anchor
            // that cannot be checked: the chain is verified from the first
            // record still archived.
            let mut previous = if head.sequence == 0 {
                let expected = chain_hash(&genesis(), 0, head.time_ms, &head.event);
                if head.hash != expected {
                    return Err("archived record 0 does not match its chain hash".into());
                }
                head.hash.clone()
            } else {
                head.hash.clone()
            };
            let mut at = head.sequence;
            for record in rest {
                if record.sequence != at + 1 {
                    return Err(format!(
                        "archived records {} to {} are missing",
                        at + 1,
                        record.sequence - 1
                    ));
                }
                if record.hash
                    != chain_hash(&previous, record.sequence, record.time_ms, &record.event)
                {
                    return Err(format!(
                        "archived record {} does not match its chain hash",
                        record.sequence
                    ));
                }
                previous.clone_from(&record.hash);
                at = record.sequence;
            }
            if at + 1 != sequence || previous != last {
                return Err(format!(
                    "the archive ends at record {at} but the store's checkpoint continues from \
                     record {sequence} with another chain hash"
                ));
            }
            archived = sequence - head.sequence;
            first = head.sequence;
        }
    }
    loop {
        let record = match tree.get(&sequence.to_be_bytes()) {
            Ok(Some(bytes)) => serde_json::from_slice::<Record>(&bytes)
                .map_err(|_| format!("record {sequence} does not parse"))?,
            Ok(None) => break,
            Err(e) => return Err(format!("record {sequence}: {e}")),
        };
        if record.sequence != sequence {
            return Err(format!(
                "record {sequence} claims to be record {}",
                record.sequence
            ));
        }
        if record.hash != chain_hash(&last, sequence, record.time_ms, &record.event) {
            return Err(format!("record {sequence} does not match its chain hash"));
        }
        last = record.hash;
        sequence += 1;
    }
    if let Some(head) = head {
        if sequence < head.count {
            return Err(format!(
                "record {sequence} is missing (the log should hold {} records)",
                head.count
            ));
        }
        if sequence == head.count && last != head.last_hash {
            return Err("the last record does not match the audit head".into());
        }
    } else if sequence > 0 {
        return Err("the audit head is missing".into());
    }
    Ok(Verified {
        first,
        end: sequence,
        archived,
    })
}

/// Every record in the archive files of `dir`, by sequence. A record
/// archived twice (a crash between archiving and pruning) must be the same
/// both times.
fn read_archive(dir: &std::path::Path) -> Result<Vec<Record>, String> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("the archive {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    let mut records = std::collections::BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("the archive file {}: {e}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let record: Record = serde_json::from_str(line)
                .map_err(|_| format!("{} line {} does not parse", file.display(), n + 1))?;
            if let Some(earlier) = records.insert(record.sequence, record.clone())
                && earlier != record
            {
                return Err(format!(
                    "record {} is archived twice with different content",
                    record.sequence
                ));
            }
        }
    }
    Ok(records.into_values().collect())
}

/// What [`verify`] checked: records `first..end` (those before `first` were
/// pruned by retention; the chain is anchored at the checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The first record checked (archived or kept).
    pub first: u64,
    /// One past the last record.
    pub end: u64,
    /// How many of the records checked came from the archive.
    pub archived: u64,
}

/// RFC 3339 UTC time of a record.
pub fn rfc3339(time_ms: u64) -> String {
    let nanos = i128::from(time_ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_queue_costs_little_memory_while_empty() {
        // std's bounded channel allocates and initialises all its slots at
        // creation: every slot is resident from the start.
        let slots = QUEUE * (size_of::<Message>() + 8);
        assert!(slots <= 2 << 20, "{slots} bytes for an empty queue");
    }

    fn event() -> impl Strategy<Value = Event> {
        (
            "[a-z-]{1,12}",
            "[A-Za-z]{1,16}",
            "[a-z0-9.]{0,10}",
            "[0-9]{0,3}",
            "[A-Z_]{2,20}",
            any::<(u64, u64, u64)>(),
            "[ -~]{0,20}",
        )
            .prop_map(
                |(
                    client,
                    rpc,
                    model,
                    version,
                    outcome,
                    (bytes_in, bytes_out, latency_us),
                    detail,
                )| {
                    Event {
                        client,
                        rpc,
                        model,
                        version,
                        outcome,
                        bytes_in,
                        bytes_out,
                        latency_us,
                        detail,
                    }
                },
            )
    }

    proptest! {
        /// Whatever bytes the store hands back, the record decoders return
        /// an error or a value, never panic.
        #[test]
        fn stored_bytes_never_panic_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = serde_json::from_slice::<Record>(&bytes);
            let _ = serde_json::from_slice::<Head>(&bytes);
            let _ = serde_json::from_slice::<Checkpoint>(&bytes);
        }

        /// Any one changed byte of a stored record either fails to parse,
        /// fails its chain hash, or leaves the record as it was.
        #[test]
        fn a_changed_record_never_verifies_as_another(
            event in event(),
            sequence in 0u64..1_000_000,
            time_ms in any::<u64>(),
            at in any::<prop::sample::Index>(),
            xor in 1u8..=255,
        ) {
            let previous = genesis();
            let record = Record {
                sequence,
                time_ms,
                hash: chain_hash(&previous, sequence, time_ms, &event),
                event,
            };
            let mut bytes = serde_json::to_vec(&record).unwrap();
            let i = at.index(bytes.len());
            bytes[i] ^= xor;
            if let Ok(changed) = serde_json::from_slice::<Record>(&bytes) {
                let links = changed.hash
                    == chain_hash(&previous, changed.sequence, changed.time_ms, &changed.event);
                prop_assert!(!links || changed == record, "{:?} verified", changed);
            }
        }
    }
}
