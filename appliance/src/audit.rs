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

/// The all-zero hash the chain starts from.
fn genesis() -> String {
    "0".repeat(64)
}

/// The chain hash of a record: over the previous hash and every field but
/// the hash itself.
fn chain_hash(previous: &str, sequence: u64, time_ms: u64, event: &Event) -> String {
    let body = serde_json::to_vec(&(sequence, time_ms, event)).unwrap_or_default();
    let mut input = previous.as_bytes().to_vec();
    input.extend_from_slice(&body);
    hex(digest(&SHA256, &input).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

enum Message {
    Event(Event),
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
}

/// The writer thread.
pub struct AuditWriter {
    thread: Option<JoinHandle<()>>,
}

impl AuditLog {
    /// Starts the writer on `store`, resuming the chain where it ends.
    pub fn start(store: &Store) -> Result<(AuditLog, AuditWriter), AppError> {
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
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_loop(&tree, &receiver, count, last))
            .map_err(|e| AppError::Internal(format!("audit writer: {e}")))?;
        Ok((
            AuditLog { sender },
            AuditWriter {
                thread: Some(thread),
            },
        ))
    }

    /// Queues an event. Waits only if the writer is far behind.
    pub fn record(&self, event: Event) {
        match self.sender.try_send(Message::Event(event)) {
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

fn write_loop(tree: &Tree, receiver: &Receiver<Message>, mut count: u64, mut last: String) {
    let mut stopping = false;
    while !stopping {
        let Ok(first) = receiver.recv() else { break };
        let mut records = Vec::with_capacity(16);
        let mut waiting = Vec::new();
        for message in std::iter::once(first).chain(receiver.try_iter().take(BATCH - 1)) {
            let event = match message {
                Message::Event(event) => event,
                Message::Flush(ack) => {
                    waiting.push(ack);
                    continue;
                }
                Message::Stop => {
                    stopping = true;
                    break;
                }
            };
            let time_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let hash = chain_hash(&last, count, time_ms, &event);
            last.clone_from(&hash);
            records.push((
                count.to_be_bytes(),
                serde_json::to_vec(&Record {
                    sequence: count,
                    time_ms,
                    event,
                    hash,
                })
                .unwrap_or_default(),
            ));
            count += 1;
        }
        if !records.is_empty() {
            let head = serde_json::to_vec(&Head {
                count,
                last_hash: last.clone(),
            })
            .unwrap_or_default();
            let writes = records
                .iter()
                .map(|(id, v)| (&id[..], v.as_slice()))
                .chain(std::iter::once((HEAD, head.as_slice())));
            if let Err(e) = tree.put_all(writes) {
                tracing::error!(error = %e, "audit records could not be written");
            }
        }
        for ack in waiting {
            let _ = ack.send(());
        }
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
    let mut sequence = from;
    while let Some(record) = read(&tree, sequence)? {
        out.push(record);
        sequence += 1;
    }
    Ok(out)
}

/// Checks the whole chain. Returns the number of records, or the first
/// broken link in words.
pub fn verify(store: &Store) -> Result<u64, String> {
    let tree = store.tree(TREE, PURPOSE).map_err(|e| e.to_string())?;
    let head: Option<Head> = match tree.get(HEAD) {
        Ok(Some(bytes)) => Some(
            serde_json::from_slice(&bytes)
                .map_err(|_| "the audit head does not parse".to_owned())?,
        ),
        Ok(None) => None,
        Err(e) => return Err(format!("the audit head: {e}")),
    };
    let mut last = genesis();
    let mut sequence = 0u64;
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
    Ok(sequence)
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
