//! Names that end up in certificates, file names and grants: the
//! definitions are `ident`'s, shared with the appliance; here they become
//! this crate's usage errors.

pub use ident::{ApplianceId, ClientName, ModelName, SiteName};

use crate::error::Error;

impl From<ident::NameError> for Error {
    fn from(e: ident::NameError) -> Self {
        Error::InvalidName {
            what: e.what,
            value: e.value,
            reason: e.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_bad_name_is_a_usage_error_that_names_what() {
        let err: Error = ClientName::new("Bad Name").unwrap_err().into();
        assert!(err.is_usage());
        assert!(err.to_string().contains("client name"), "{err}");
        let err: Error = ModelName::new(".hidden").unwrap_err().into();
        assert!(err.is_usage());
    }
}
