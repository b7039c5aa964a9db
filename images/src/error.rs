//! The crate's one error type.

use std::path::PathBuf;

/// What went wrong with an image, a repository or an update.
///
/// Messages name the file, field or role and the reason; they never carry
/// model or payload bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Malformed bytes: an image, a manifest, golden vectors, metadata.
    #[error("{what}: {reason}")]
    Format {
        /// What was being read.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A stream (an image, a target) failed while being read or written.
    #[error("{what}: {source}")]
    Stream {
        /// What was being streamed.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The engine refused or failed on the model.
    #[error(transparent)]
    Model(#[from] inference::Error),
    /// The model ran but does not answer its golden vectors.
    #[error("golden vector {case}: {reason}")]
    Golden {
        /// Which case (0-based).
        case: usize,
        /// What differed.
        reason: String,
    },
    /// The model is over a budget its manifest declares.
    #[error("{0}")]
    Budget(String),
    /// The update repository is not trustworthy: bad signature, expired or
    /// rolled-back metadata, a target that does not match its metadata.
    #[error("{0}")]
    Untrusted(String),
    /// The repository could not be reached or did not hold a file.
    #[error("{0}")]
    Source(String),
    /// A signing key is missing, unreadable or of the wrong kind.
    #[error("key {}: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A repository operation cannot be done as asked.
    #[error("{0}")]
    Repository(String),
}

impl Error {
    pub(crate) fn format(what: &'static str, reason: impl Into<String>) -> Error {
        Error::Format {
            what,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
