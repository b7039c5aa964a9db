//! A repository an operator pushes over the admin service: the appliance
//! pulls each file piece by piece (`FetchFile`) over the `UpdateModels`
//! stream and the client answers each request with one `RepositoryFile`.
//!
//! Pulling keeps every bound on the appliance's side: it asks only for the
//! files the TUF workflow needs, at most [`CHUNK`] bytes at a time, never
//! more than the verifier's size limits allow, and gives up when the client
//! stalls. The client cannot send anything it was not asked for.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use images::tuf::source::RepositorySource;
use tokio::sync::mpsc::Sender;
use tonic::Status;
use wire::admin::{FetchFile, RepositoryFile, UpdateEvent, update_event};

/// Largest piece asked for at once (less if `server.max_message_bytes`
/// is smaller).
pub const CHUNK: u64 = 1 << 20;
/// Room left in a message for the framing around a piece.
const FRAMING: u64 = 1024;

/// The appliance's side of a pushed repository.
#[derive(Clone)]
pub struct PushSource {
    inner: Arc<Inner>,
}

struct Inner {
    events: Sender<Result<UpdateEvent, Status>>,
    answers: Mutex<Receiver<Result<RepositoryFile, String>>>,
    chunk: u64,
    runtime: tokio::runtime::Handle,
    stall: Duration,
    client: String,
}

impl PushSource {
    /// A source that asks through `events` and reads answers (or why the
    /// client's stream ended) from `answers`, waiting at most `stall` for
    /// each, in pieces that fit `max_message` bytes.
    pub fn new(
        events: Sender<Result<UpdateEvent, Status>>,
        answers: Receiver<Result<RepositoryFile, String>>,
        runtime: tokio::runtime::Handle,
        stall: Duration,
        max_message: usize,
        client: &str,
    ) -> PushSource {
        PushSource {
            inner: Arc::new(Inner {
                events,
                answers: Mutex::new(answers),
                chunk: CHUNK.min((max_message as u64).saturating_sub(FRAMING).max(256)),
                runtime,
                stall,
                client: client.to_owned(),
            }),
        }
    }
}

impl Inner {
    /// Asks for `length` bytes of `path` from `offset`; blocking.
    fn ask(&self, path: &str, offset: u64, length: u64) -> images::Result<RepositoryFile> {
        let closed = || images::Error::Source("the client closed the update stream".into());
        let request = UpdateEvent {
            event: Some(update_event::Event::Fetch(FetchFile {
                path: path.to_owned(),
                offset,
                length,
            })),
        };
        self.runtime
            .block_on(self.events.send_timeout(Ok(request), self.stall))
            .map_err(|_| closed())?;
        let answer = self
            .answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv_timeout(self.stall)
            .map_err(|e| match e {
                RecvTimeoutError::Timeout => images::Error::Source(format!(
                    "the client sent nothing for {} s while pushing {path}",
                    self.stall.as_secs()
                )),
                RecvTimeoutError::Disconnected => closed(),
            })?
            .map_err(|why| images::Error::Source(format!("the update stream failed: {why}")))?;
        if answer.path != path || answer.offset != offset || answer.data.len() as u64 > length {
            return Err(images::Error::Source(format!(
                "the client answered a request for {path} with another piece"
            )));
        }
        Ok(answer)
    }
}

impl RepositorySource for PushSource {
    fn describe(&self) -> String {
        format!("repository pushed by {}", self.inner.client)
    }

    fn metadata(&self, name: &str, max: u64) -> images::Result<Option<Vec<u8>>> {
        let path = format!("metadata/{name}");
        let mut bytes = Vec::new();
        loop {
            // One byte past the bound tells an oversized file apart.
            let want = self.inner.chunk.min(max + 1 - bytes.len() as u64);
            let answer = self.inner.ask(&path, bytes.len() as u64, want)?;
            if answer.missing {
                return Ok(None);
            }
            bytes.extend_from_slice(&answer.data);
            if bytes.len() as u64 > max {
                return Err(images::Error::Untrusted(format!(
                    "{path} is larger than its bound of {max} bytes"
                )));
            }
            if answer.eof {
                return Ok(Some(bytes));
            }
            if answer.data.is_empty() {
                return Err(images::Error::Source(format!(
                    "the client sent an empty piece of {path} without ending it"
                )));
            }
        }
    }

    fn target(&self, name: &str) -> images::Result<Box<dyn Read + Send>> {
        Ok(Box::new(PushReader {
            inner: self.inner.clone(),
            path: format!("targets/{name}"),
            offset: 0,
            buffer: Vec::new(),
            at: 0,
            eof: false,
        }))
    }
}

/// Streams one pushed target, a piece at a time.
struct PushReader {
    inner: Arc<Inner>,
    path: String,
    offset: u64,
    buffer: Vec<u8>,
    at: usize,
    eof: bool,
}

impl Read for PushReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.buffer.len() {
            if self.eof {
                return Ok(0);
            }
            let answer = self
                .inner
                .ask(&self.path, self.offset, self.inner.chunk)
                .map_err(|e| io::Error::other(e.to_string()))?;
            if answer.missing {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("the pushed repository has no {}", self.path),
                ));
            }
            if answer.data.is_empty() && !answer.eof {
                return Err(io::Error::other(format!(
                    "the client sent an empty piece of {} without ending it",
                    self.path
                )));
            }
            self.offset += answer.data.len() as u64;
            self.eof = answer.eof;
            self.buffer = answer.data;
            self.at = 0;
        }
        let n = buf.len().min(self.buffer.len() - self.at);
        buf[..n].copy_from_slice(&self.buffer[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
