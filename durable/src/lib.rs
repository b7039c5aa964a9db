//! Crash-safe file writes, the one copy every crate uses.
//!
//! Files are created with their final mode (never world-readable first and
//! narrowed afterwards) and fsynced before a call returns. Replacing a file
//! goes through a temporary file beside it, a rename and a directory fsync,
//! so a crash leaves the old content or the new, never a mix and never a
//! missing file.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Mode of files holding secrets.
pub const PRIVATE: u32 = 0o600;
/// Mode of files anyone may read (certificates, public metadata).
pub const PUBLIC: u32 = 0o644;

/// Writes a file that must not exist yet (`ErrorKind::AlreadyExists` if it
/// does), fsyncs it and its directory.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    sync_parent(path)
}

/// Replaces (or creates) `path` atomically with `bytes`, with `mode`.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temporary_beside(path)?;
    // A leftover from a crash is ours to remove.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let written = write_new(&tmp, bytes, mode).and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_parent(path)
}

/// The temporary name [`replace`] writes through: `.<name>.tmp` beside
/// `path`, so a reader of the directory can tell it from real files.
pub fn temporary_beside(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(".tmp");
    Ok(path.with_file_name(tmp))
}

/// fsyncs the directory holding `path`, so a create, rename or removal in
/// it is durable (a file's own fsync does not cover its directory entry).
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replace_writes_with_the_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        replace(&path, b"one", PRIVATE).unwrap();
        replace(&path, b"two", PRIVATE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_leftover_temporary_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(temporary_beside(&path).unwrap(), b"half").unwrap();
        replace(&path, b"whole", PUBLIC).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"whole");
        assert!(!temporary_beside(&path).unwrap().exists());
    }

    #[test]
    fn write_new_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert.pem");
        write_new(&path, b"a", PUBLIC).unwrap();
        let err = write_new(&path, b"b", PUBLIC).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"a");
    }
}
