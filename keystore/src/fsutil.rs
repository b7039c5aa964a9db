//! Small durable-filesystem helpers.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Creates `dir` and its parents, readable by the owner only.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir, e))
}

/// fsyncs the directory holding `path`, so a rename or create in it is
/// durable (a file's own fsync does not cover its directory entry).
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    durable::sync_parent(path).map_err(|e| Error::io(path, e))
}

/// Removes a file if it exists, durably.
pub(crate) fn remove_file_durably(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_parent(path)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}
