//! The model image container: one file holding a manifest and its parts.
//!
//! ```text
//! image    = magic "APMODEL\0" (8) | container version u16 BE (= 1)
//!          | manifest length u32 BE | manifest (JSON, ≤ 64 KiB)
//!          | part 1 | part 2 | …       (in manifest order, exact lengths)
//! ```
//!
//! Nothing follows the last part. Each part's length and SHA-256 are in the
//! manifest, and the whole file's length and SHA-256 are in the signed TUF
//! targets metadata, so a reader checks every byte twice: against the
//! manifest as it streams, and against the signed digest at the end.
//!
//! [`read_image`] streams: a part is handed to a sink as a reader that
//! yields exactly its declared bytes and fails (before its end-of-file) if
//! they do not hash to the declared digest. An image never needs to be in
//! memory whole.

use std::io::{self, Read, Write};

use crate::error::{Error, Result};
use crate::manifest::{Digest, MAX_MANIFEST_LEN, Manifest, Part, PartKind};

/// First bytes of every image.
pub const MAGIC: &[u8; 8] = b"APMODEL\0";
/// The container layout this code writes and reads.
pub const CONTAINER_VERSION: u16 = 1;
const HEADER_LEN: usize = MAGIC.len() + 2 + 4;

/// Writes an image: the header, `manifest`, then `parts` (which must be the
/// manifest's parts in order, with matching lengths and digests).
pub fn write_image(out: &mut impl Write, manifest: &Manifest, parts: &[&[u8]]) -> Result<()> {
    if parts.len() != manifest.parts.len() {
        return Err(Error::format(
            "image",
            "part count differs from the manifest",
        ));
    }
    for (declared, bytes) in manifest.parts.iter().zip(parts) {
        if declared.length != bytes.len() as u64 || declared.sha256 != Digest::of(bytes) {
            return Err(Error::format(
                "image",
                format!("part {} differs from the manifest", declared.kind.as_str()),
            ));
        }
    }
    let manifest_bytes = manifest.to_bytes()?;
    let stream = |source| Error::Stream {
        what: "writing the image".into(),
        source,
    };
    out.write_all(MAGIC).map_err(stream)?;
    out.write_all(&CONTAINER_VERSION.to_be_bytes())
        .map_err(stream)?;
    out.write_all(&(manifest_bytes.len() as u32).to_be_bytes())
        .map_err(stream)?;
    out.write_all(&manifest_bytes).map_err(stream)?;
    for bytes in parts {
        out.write_all(bytes).map_err(stream)?;
    }
    Ok(())
}

/// The manifest of a part list: lengths and digests of `parts`.
pub fn describe_parts(parts: &[(PartKind, &[u8])]) -> Vec<Part> {
    parts
        .iter()
        .map(|(kind, bytes)| Part {
            kind: *kind,
            length: bytes.len() as u64,
            sha256: Digest::of(bytes),
        })
        .collect()
}

/// Reads the header and manifest of an image from `input`, leaving it at
/// the first part.
pub fn read_manifest(input: &mut impl Read) -> Result<Manifest> {
    let mut header = [0u8; HEADER_LEN];
    read_exact(input, &mut header, "image header")?;
    if &header[..MAGIC.len()] != MAGIC {
        return Err(Error::format("image", "not a model image (bad magic)"));
    }
    let version = u16::from_be_bytes([header[8], header[9]]);
    if version != CONTAINER_VERSION {
        return Err(Error::format(
            "image",
            format!(
                "container version {version} is not supported (this appliance reads {CONTAINER_VERSION})"
            ),
        ));
    }
    let len = u32::from_be_bytes([header[10], header[11], header[12], header[13]]) as usize;
    if len > MAX_MANIFEST_LEN {
        return Err(Error::format(
            "image",
            format!("manifest of {len} bytes, over the bound of {MAX_MANIFEST_LEN}"),
        ));
    }
    let mut manifest = vec![0u8; len];
    read_exact(input, &mut manifest, "image manifest")?;
    Manifest::parse(&manifest)
}

/// Reads a whole image from `input`: the manifest, then each part, handed
/// to `sink` as a reader of exactly that part's bytes that fails if they
/// do not match the manifest. Whatever the sink leaves unread is read and
/// checked all the same. Fails if anything follows the last part.
pub fn read_image<R: Read>(
    mut input: R,
    sink: impl FnMut(&Manifest, &Part, &mut dyn Read) -> Result<()>,
) -> Result<Manifest> {
    let manifest = read_manifest(&mut input)?;
    read_parts(input, &manifest, sink)?;
    Ok(manifest)
}

/// The rest of [`read_image`], after [`read_manifest`] has read `manifest`
/// from `input`.
pub fn read_parts<R: Read>(
    mut input: R,
    manifest: &Manifest,
    mut sink: impl FnMut(&Manifest, &Part, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    for part in &manifest.parts {
        let mut reader = PartReader::new(&mut input, part);
        sink(manifest, part, &mut reader)?;
        io::copy(&mut reader, &mut io::sink()).map_err(|source| Error::Stream {
            what: format!("image part {}", part.kind.as_str()),
            source,
        })?;
    }
    // One more read: nothing may follow the last part, and a verifying
    // reader underneath checks its own length and digest here.
    let mut extra = [0u8; 1];
    let n = read_some(&mut input, &mut extra).map_err(|source| Error::Stream {
        what: "image".into(),
        source,
    })?;
    if n != 0 {
        return Err(Error::format("image", "bytes after the last part"));
    }
    Ok(())
}

/// A reader of one part: exactly `length` bytes from the image, whose
/// SHA-256 is checked before end-of-file is reported.
struct PartReader<'a, R: Read> {
    input: &'a mut R,
    kind: PartKind,
    length: u64,
    left: u64,
    expected: Digest,
    hash: Option<ring::digest::Context>,
}

impl<'a, R: Read> PartReader<'a, R> {
    fn new(input: &'a mut R, part: &Part) -> Self {
        PartReader {
            input,
            kind: part.kind,
            length: part.length,
            left: part.length,
            expected: part.sha256,
            hash: Some(ring::digest::Context::new(&ring::digest::SHA256)),
        }
    }
}

impl<R: Read> Read for PartReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // First end-of-file: check the digest once.
            if let Some(hash) = self.hash.take() {
                if hash.finish().as_ref() != self.expected.0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "does not match its manifest digest".to_owned(),
                    ));
                }
            }
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = read_some(self.input, &mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "image ends {} bytes into its {} part of {} bytes",
                    self.length - self.left,
                    self.kind.as_str(),
                    self.length
                ),
            ));
        }
        self.left -= n as u64;
        if let Some(hash) = self.hash.as_mut() {
            hash.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// `read`, retried on interruption.
fn read_some(input: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match input.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn read_exact(input: &mut impl Read, buf: &mut [u8], what: &'static str) -> Result<()> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::format(what, "truncated"),
        _ => Error::Stream {
            what: what.into(),
            source: e,
        },
    })
}
