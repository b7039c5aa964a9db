//! File writing with explicit modes and durability (through `durable`),
//! with this crate's errors.

use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Mode of files holding private keys.
pub(crate) const PRIVATE: u32 = durable::PRIVATE;
/// Mode of certificates, CRLs and bookkeeping files.
pub(crate) const PUBLIC: u32 = durable::PUBLIC;
/// Mode of every directory we create.
pub(crate) const PRIVATE_DIR: u32 = 0o700;

/// Creates `dir` (and missing parents) with mode 0700. An existing
/// directory is left as it is.
pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
        .map_err(|e| Error::io("create directory", dir, e))
}

/// Writes a file that must not exist yet.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    durable::write_new(path, bytes, mode).map_err(|e| {
        if e.kind() == ErrorKind::AlreadyExists {
            Error::OutputExists {
                path: path.to_path_buf(),
            }
        } else {
            Error::io("write", path, e)
        }
    })
}

/// Replaces (or creates) a file atomically.
pub(crate) fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    durable::replace(path, bytes, mode).map_err(|e| Error::io("replace", path, e))
}

/// Reads a whole file, refusing anything longer than `max` bytes.
pub(crate) fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    if bytes.len() as u64 > max {
        return Err(Error::bad_object(
            path,
            format!("larger than {max} bytes; not a file this tool wrote"),
        ));
    }
    Ok(bytes)
}
