//! Large blobs (model files) as chunked AEAD files.
//!
//! A blob is written and read as a stream, 64 KiB at a time, so a 100 MB
//! model never exists decrypted on disk and never needs to be in memory whole.
//!
//! File format (the STREAM construction of Hoang, Reyhanitabar, Rogaway and
//! Vizár, "Online authenticated-encryption and its nonce-reuse
//! misuse-resistance", as `aead-stream`'s BE32 flavour):
//!
//! ```text
//! header  = "APBLOB" | version (1 byte) | key id (16) | random nonce prefix (7)
//! chunk i = AES-256-GCM(nonce = prefix | i as u32 BE | last flag, aad = header | name hash)
//! ```
//!
//! Every chunk but the last holds exactly [`CHUNK_LEN`] plaintext bytes; the
//! last holds fewer (possibly zero) and carries the last flag, so truncation,
//! reordering, and splicing chunks between files are all detected. The
//! header, version byte included, is in every chunk's associated data.
//!
//! Version 1 was written by our own STREAM code over ring, version 2 by
//! `aead-stream` over `aes-gcm`. The bytes are the same construction (BE32
//! is exactly the nonce layout version 1 used), so one reader opens both;
//! new blobs are version 2.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::crypto::{STREAM_PREFIX_LEN, StreamOpener, StreamSealer, TAG_LEN, fill_random};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::store::{FORMAT, KEY_ID_LEN, KeyId, Store, known_format};

/// Plaintext bytes per chunk.
pub const CHUNK_LEN: usize = 64 * 1024;
const MAGIC: &[u8; 6] = b"APBLOB";
const HEADER_LEN: usize = MAGIC.len() + 1 + KEY_ID_LEN + STREAM_PREFIX_LEN;

impl Store {
    /// Starts writing the blob `name`, sealed under the data key of
    /// `purpose`. Nothing is visible under `name` until
    /// [`BlobWriter::commit`]; then it atomically replaces any older blob.
    pub fn create_blob(&self, name: &str, purpose: &str) -> Result<BlobWriter> {
        let (key_id, key) = self.data_key_for(purpose)?;
        let name_hash = self.blob_hash(name);
        let dir = self.blobs_dir()?;
        let mut tmp_name = [0u8; 16];
        fill_random(&mut tmp_name)?;
        let tmp = dir.join(format!(".tmp-{}", hex(&tmp_name)));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;

        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.push(FORMAT);
        header.extend_from_slice(&key_id);
        let mut prefix = [0u8; STREAM_PREFIX_LEN];
        fill_random(&mut prefix)?;
        header.extend_from_slice(&prefix);

        let mut writer = BlobWriter {
            file: Some(file),
            tmp,
            dest: dir.join(hex(&name_hash)),
            sealer: Some(StreamSealer::new(&key, &prefix)),
            aad: aad(&header, &name_hash),
            buf: Zeroizing::new(Vec::with_capacity(CHUNK_LEN + TAG_LEN)),
        };
        let file = writer.file.as_mut().ok_or(Error::NoSuchBlob)?;
        file.write_all(&header)
            .map_err(|e| Error::io(&writer.tmp, e))?;
        Ok(writer)
    }

    /// Opens the blob `name` for streaming decryption.
    pub fn open_blob(&self, name: &str) -> Result<BlobReader> {
        let name_hash = self.blob_hash(name);
        let path = self.shared.dir.join("blobs").join(hex(&name_hash));
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NoSuchBlob),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut header = [0u8; HEADER_LEN];
        if read_full(&mut file, &mut header).map_err(|e| Error::io(&path, e))? < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if &header[..MAGIC.len()] != MAGIC {
            return Err(Error::tampered("blob header"));
        }
        if !known_format(header[MAGIC.len()]) {
            return Err(Error::tampered("blob header (unknown format version)"));
        }
        let key_id: KeyId = header[MAGIC.len() + 1..MAGIC.len() + 1 + KEY_ID_LEN]
            .try_into()
            .map_err(|_| Error::tampered("blob header"))?;
        let prefix: [u8; STREAM_PREFIX_LEN] = header[HEADER_LEN - STREAM_PREFIX_LEN..]
            .try_into()
            .map_err(|_| Error::tampered("blob header"))?;
        let key = self.data_key(&key_id).map_err(|e| match e {
            Error::Shredded { .. } => Error::Shredded { what: "blob" },
            other => other,
        })?;
        Ok(BlobReader {
            file,
            path,
            opener: Some(StreamOpener::new(&key, &prefix)),
            aad: aad(&header, &name_hash),
            index: 0,
            plain: Zeroizing::new(Vec::with_capacity(CHUNK_LEN + TAG_LEN)),
            pos: 0,
            done: false,
        })
    }

    /// Deletes the blob `name`, durably. Returns false if it did not exist.
    pub fn remove_blob(&self, name: &str) -> Result<bool> {
        let path = self
            .shared
            .dir
            .join("blobs")
            .join(hex(&self.blob_hash(name)));
        fsutil::remove_file_durably(&path)
    }

    fn blob_hash(&self, name: &str) -> [u8; 32] {
        self.shared.ids.hash(&[b"blob", name.as_bytes()])
    }

    fn blobs_dir(&self) -> Result<PathBuf> {
        let dir = self.shared.dir.join("blobs");
        fsutil::create_private_dir(&dir)?;
        Ok(dir)
    }
}

fn aad(header: &[u8], name_hash: &[u8; 32]) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(name_hash);
    aad
}

/// Streams plaintext into a sealed blob. Dropping it without
/// [`BlobWriter::commit`] discards everything written.
pub struct BlobWriter {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
    /// Taken by the last chunk's sealing, in `commit`.
    sealer: Option<StreamSealer>,
    aad: Vec<u8>,
    /// Plaintext of the chunk being filled; sealed in place when full.
    buf: Zeroizing<Vec<u8>>,
}

impl BlobWriter {
    /// Seals the buffered plaintext in place (the buffer has room for the
    /// tag, so no copy and no reallocation) and writes it out.
    fn seal_chunk(&mut self, last: bool) -> Result<()> {
        if last {
            let sealer = self.sealer.take().ok_or(Error::NoSuchBlob)?;
            sealer.seal_last(&self.aad, &mut self.buf)?;
        } else {
            let sealer = self.sealer.as_mut().ok_or(Error::NoSuchBlob)?;
            sealer.seal_next(&self.aad, &mut self.buf)?;
        }
        let file = self.file.as_mut().ok_or(Error::NoSuchBlob)?;
        let written = file
            .write_all(&self.buf)
            .map_err(|e| Error::io(&self.tmp, e));
        // The buffer is reused for the next chunk's plaintext; clear() keeps
        // its capacity (and Zeroizing wipes it when the writer goes).
        self.buf.clear();
        written
    }

    /// Seals the final chunk, makes the file durable and moves it into
    /// place. The blob is readable under its name once this returns.
    pub fn commit(mut self) -> Result<()> {
        self.seal_chunk(true)?;
        let file = self.file.take().ok_or(Error::NoSuchBlob)?;
        file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        drop(file);
        fs::rename(&self.tmp, &self.dest).map_err(|e| Error::io(&self.dest, e))?;
        fsutil::sync_parent(&self.dest)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            let take = (CHUNK_LEN - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            // A full chunk is never the final one: `commit` seals whatever
            // is left (possibly nothing), so the final chunk is always short.
            if self.buf.len() == CHUNK_LEN {
                self.seal_chunk(false).map_err(io::Error::other)?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Not committed: the partial file must not linger.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Streams the plaintext of a sealed blob, authenticating chunk by chunk.
/// A read fails (with an `InvalidData` error wrapping [`Error`]) at the
/// first chunk that does not authenticate; no unauthenticated byte is ever
/// returned.
pub struct BlobReader {
    file: File,
    path: PathBuf,
    /// Taken by the last chunk's opening.
    opener: Option<StreamOpener>,
    aad: Vec<u8>,
    /// Index of the next chunk, for messages.
    index: u64,
    plain: Zeroizing<Vec<u8>>,
    pos: usize,
    done: bool,
}

impl BlobReader {
    fn next_chunk(&mut self) -> Result<()> {
        self.plain.resize(CHUNK_LEN + TAG_LEN, 0);
        let n = read_full(&mut self.file, &mut self.plain).map_err(|e| Error::io(&self.path, e))?;
        // A full read is never the last chunk (the writer always ends with a
        // short one), so a short read is the last chunk or a truncation.
        let last = n < CHUNK_LEN + TAG_LEN;
        if last && n < TAG_LEN {
            return Err(Error::Truncated);
        }
        self.plain.truncate(n);
        let what = format!("blob chunk {}", self.index);
        self.index += 1;
        if last {
            let opener = self.opener.take().ok_or_else(|| Error::tampered(&what))?;
            opener.open_last(&self.aad, &mut self.plain, &what)?;
            self.done = true;
        } else {
            let opener = self.opener.as_mut().ok_or_else(|| Error::tampered(&what))?;
            opener.open_next(&self.aad, &mut self.plain, &what)?;
        }
        self.pos = 0;
        Ok(())
    }
}

impl Read for BlobReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
