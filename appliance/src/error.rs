//! The appliance's error type, and the one function that maps errors to
//! gRPC statuses.
//!
//! Messages name fields and limits, never payload bytes: the engine's and
//! the keystore's errors are built that way, and ours are too.

use tonic::{Code, Status};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The client's certificate does not identify a client of this site, or
    /// it has been revoked since the connection was made.
    #[error("{0}")]
    Unauthenticated(String),
    /// The client's grant does not cover this call.
    #[error("{0}")]
    PermissionDenied(String),
    /// The client is over its rate or quota, or the server is at capacity.
    #[error("{0}")]
    Exhausted(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The engine refused or failed.
    #[error(transparent)]
    Inference(#[from] inference::Error),
    /// The keystore failed.
    #[error(transparent)]
    Keystore(#[from] keystore::Error),
    /// The request cannot be carried out in the appliance's current state:
    /// an update refused (untrusted, stale, incompatible or failing image),
    /// a rollback below the floor, unsigned uploads disabled.
    #[error("{0}")]
    Refused(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A dependency is unreachable (an update mirror, a stalled push).
    #[error("{0}")]
    Unavailable(String),
    /// An update's image or repository failed a check.
    #[error(transparent)]
    Update(#[from] images::Error),
    /// Anything else that is our fault.
    #[error("{0}")]
    Internal(String),
}

/// The one place errors become statuses.
pub fn to_status(error: &AppError) -> Status {
    use inference::Error as E;
    let code = match error {
        AppError::Unauthenticated(_) => Code::Unauthenticated,
        AppError::PermissionDenied(_) => Code::PermissionDenied,
        AppError::Exhausted(_) => Code::ResourceExhausted,
        AppError::InvalidArgument(_) => Code::InvalidArgument,
        AppError::Inference(e) => match e {
            E::ModelNotFound { .. } | E::VersionNotFound { .. } => Code::NotFound,
            E::NotReady { .. } => Code::Unavailable,
            E::QueueFull { .. } | E::TooManyElements { .. } => Code::ResourceExhausted,
            E::InvalidModel(_) | E::UnsupportedOperator { .. } | E::Tokenizer(_) => {
                Code::InvalidArgument
            }
            E::Execution(_) => Code::Internal,
            // Every remaining engine error describes a bad request.
            _ => Code::InvalidArgument,
        },
        AppError::Refused(_) => Code::FailedPrecondition,
        AppError::NotFound(_) => Code::NotFound,
        AppError::Unavailable(_) => Code::Unavailable,
        AppError::Update(e) => match e {
            images::Error::Source(_) => Code::Unavailable,
            images::Error::Io { .. } | images::Error::Key { .. } => Code::Internal,
            _ => Code::FailedPrecondition,
        },
        AppError::Keystore(_) | AppError::Internal(_) => Code::Internal,
    };
    let message = match error {
        // Storage details are for the operator's log, not for clients.
        AppError::Keystore(_) => "internal storage error".to_owned(),
        other => other.to_string(),
    };
    Status::new(code, message)
}

impl From<AppError> for Status {
    fn from(error: AppError) -> Status {
        to_status(&error)
    }
}

pub use wire::code_name;
