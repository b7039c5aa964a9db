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
    let message = if code == Code::Internal {
        // Our own failures: the details (paths, engine and storage errors)
        // go to the operator's log under an incident id; the client gets
        // the id to quote, nothing else.
        let incident = incident_id();
        tracing::error!(incident = %incident, error = %error, "internal error");
        format!("internal error (incident {incident}); the appliance's log has the details")
    } else {
        error.to_string()
    };
    Status::new(code, message)
}

/// A random id tying a client's error message to the log line with the
/// details.
fn incident_id() -> String {
    let mut bytes = [0u8; 6];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub use wire::code_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_failures_reach_clients_as_an_incident_id_only() {
        for error in [
            AppError::Internal("opening /var/lib/appliance/secret: denied".into()),
            AppError::Inference(inference::Error::Execution(
                "shape mismatch in node MatMul_7".into(),
            )),
        ] {
            let status = to_status(&error);
            assert_eq!(status.code(), Code::Internal);
            let message = status.message();
            assert!(
                message.starts_with("internal error (incident "),
                "{message}"
            );
            assert!(
                !message.contains("secret") && !message.contains("MatMul"),
                "{message}"
            );
        }
        // Validation errors still name the field.
        let status = to_status(&AppError::InvalidArgument("input `x`: wrong shape".into()));
        assert_eq!(status.message(), "input `x`: wrong shape");
    }
}
