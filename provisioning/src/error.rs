//! The one error type of this crate.
//!
//! Messages are written for an operator: they name the file, the flag or the
//! field that is wrong and, where it helps, what to do. They never contain a
//! passphrase or key material.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while provisioning.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What we were doing: "read", "write", "create directory", ...
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// `site init` was pointed at a directory that already holds a site.
    #[error(
        "{} already holds a site (site.toml or ca.key.enc exists); refusing to overwrite it",
        dir.display()
    )]
    SiteExists {
        /// The site directory.
        dir: PathBuf,
    },

    /// `site init` was pointed at a directory that holds other files.
    #[error("{} exists and is not empty; choose a new directory for the site", dir.display())]
    DirectoryNotEmpty {
        /// The directory.
        dir: PathBuf,
    },

    /// The directory is not a site made by `provision site init`.
    #[error("{} is not a site directory (no site.toml); create one with `provision site init`", dir.display())]
    NotASite {
        /// The directory.
        dir: PathBuf,
    },

    /// A site file (site.toml, revoked.toml) could not be understood.
    #[error("{}: {detail}", path.display())]
    SiteFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field where there is one.
        detail: String,
    },

    /// A file has a format version this build does not know.
    #[error("{}: unsupported format version {version} (this build knows {known})", path.display())]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u64,
        /// The version this build writes and reads.
        known: u64,
    },

    /// The CA key file did not decrypt: the passphrase is wrong, or the file
    /// was modified.
    #[error("wrong passphrase (or the CA key file is damaged): {}", path.display())]
    WrongPassphrase {
        /// The encrypted key file.
        path: PathBuf,
    },

    /// The encrypted CA key file is not in the expected format.
    #[error("{}: not a valid encrypted key file: {detail}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Which part is wrong.
        detail: &'static str,
    },

    /// The decrypted CA key is not the key of the site's CA certificate.
    #[error(
        "the key in {} does not belong to the CA certificate ca.pem beside it",
        path.display()
    )]
    KeyMismatch {
        /// The encrypted key file.
        path: PathBuf,
    },

    /// A new passphrase was refused.
    #[error("passphrase refused: {0}")]
    WeakPassphrase(&'static str),

    /// A name given on the command line or in a request is not acceptable.
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidName {
        /// Which kind of name: "client name", "site name", ...
        what: &'static str,
        /// The value (shortened when long).
        value: String,
        /// The rule it breaks.
        reason: &'static str,
    },

    /// A rate, quota, validity or address argument is not acceptable.
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidArgument {
        /// Which argument: "rate", "quota", "appliance address", ...
        what: &'static str,
        /// The value (shortened when long).
        value: String,
        /// What is expected.
        reason: String,
    },

    /// A PEM or DER object (certificate, key, CRL, CSR) could not be read.
    #[error("{}: {detail}", path.display())]
    BadObject {
        /// The file (or a description of where the bytes came from).
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },

    /// A certificate signing request's self-signature does not verify.
    #[error(
        "{}: the certificate signing request's signature does not verify; refusing it",
        path.display()
    )]
    CsrSignature {
        /// The CSR file.
        path: PathBuf,
    },

    /// Certificate or CRL generation failed inside rcgen.
    #[error("cannot {op}: {source}")]
    Generate {
        /// What we were making.
        op: &'static str,
        /// rcgen's error.
        source: rcgen::Error,
    },

    /// A cryptographic primitive failed (random number generation, key
    /// derivation). Nothing the operator did causes this.
    #[error("cryptographic failure during {0}")]
    Crypto(&'static str),

    /// An output file exists already; nothing was overwritten.
    #[error("{} exists; refusing to overwrite it (remove it or choose another --out)", path.display())]
    OutputExists {
        /// The file.
        path: PathBuf,
    },

    /// Revocation of a client or serial that the site never issued.
    #[error("{0}")]
    NotIssued(String),

    /// Building the TLS client or connecting to the appliance failed.
    #[error("cannot connect to the appliance at {addr}: {detail}")]
    Connect {
        /// `host:port` as given.
        addr: String,
        /// The transport's description, with its causes.
        detail: String,
    },

    /// The appliance answered an RPC with an error status.
    #[error("{rpc} failed: {}: {message}", wire::code_name(*code))]
    Rpc {
        /// The RPC, e.g. "PutGrant".
        rpc: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True for errors in what the operator typed (names, rates, quotas,
    /// validity, addresses): the CLI exits with code 64 for these.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::InvalidName { .. } | Error::InvalidArgument { .. } | Error::WeakPassphrase(_)
        )
    }

    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn bad_object(path: &Path, detail: impl Into<String>) -> Self {
        Error::BadObject {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    pub(crate) fn site_file(path: &Path, detail: impl Into<String>) -> Self {
        Error::SiteFile {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    pub(crate) fn generate(op: &'static str) -> impl FnOnce(rcgen::Error) -> Self {
        move |source| Error::Generate { op, source }
    }

    pub(crate) fn invalid(what: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            what,
            value: shorten(value),
            reason: reason.into(),
        }
    }
}

/// Values echoed in messages are cut so that a pasted blob does not flood
/// the terminal.
pub(crate) fn shorten(value: &str) -> String {
    const MAX: usize = 80;
    if value.chars().count() <= MAX {
        value.to_owned()
    } else {
        let mut s: String = value.chars().take(MAX).collect();
        s.push('…');
        s
    }
}
