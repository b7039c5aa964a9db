//! File writing with explicit modes and durability.
//!
//! Files are created with their final mode (never created world-readable and
//! narrowed afterwards) and fsynced before the call returns; replacing a
//! file goes through a temporary file, a rename and a directory fsync, so a
//! crash leaves the old or the new content, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// Mode of files holding private keys.
pub(crate) const PRIVATE: u32 = 0o600;
/// Mode of certificates, CRLs and bookkeeping files.
pub(crate) const PUBLIC: u32 = 0o644;
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
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == ErrorKind::AlreadyExists {
                Error::OutputExists {
                    path: path.to_path_buf(),
                }
            } else {
                Error::io("create", path, e)
            }
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("write", path, e))?;
    sync_parent(path)
}

/// Replaces (or creates) a file atomically.
pub(crate) fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::io("write", path, ErrorKind::InvalidInput.into()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    // A leftover from a crash is ours to remove.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", &tmp, e)),
    }
    write_new(&tmp, bytes, mode)?;
    fs::rename(&tmp, path).map_err(|e| Error::io("rename into place", path, e))?;
    sync_parent(path)
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

fn sync_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", parent, e))
}
