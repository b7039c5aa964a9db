//! Names that end up in certificates, file names and grants.
//!
//! Each is a type that can only hold a valid value ("parse, don't
//! validate"): once a [`ClientName`] exists, it is safe to put into a SPIFFE
//! URI and into a file name under `issued/`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result, shorten};

/// Checks the common label rule `[a-z0-9][a-z0-9._-]{0,max-1}`.
///
/// The alphabet is the one SPIFFE allows in trust domains and path
/// segments, minus upper case, so a name needs no escaping in a URI, in a
/// file name or in a shell.
fn check_label(what: &'static str, value: &str, max: usize) -> Result<()> {
    let fail = |reason| {
        Err(Error::InvalidName {
            what,
            value: shorten(value),
            reason,
        })
    };
    let bytes = value.as_bytes();
    let Some(first) = bytes.first() else {
        return fail("must not be empty");
    };
    if bytes.len() > max {
        return fail(if max == 63 {
            "at most 63 characters"
        } else {
            "too long"
        });
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return fail("must start with a lower-case letter or a digit");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return fail("only a-z, 0-9, '.', '_' and '-' are allowed");
    }
    Ok(())
}

macro_rules! label_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Longest accepted value, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Parses and checks a name.
            pub fn new(value: &str) -> Result<Self> {
                check_label($what, value, $max)?;
                Ok(Self(value.to_owned()))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

label_type!(
    /// A client's name: `[a-z0-9][a-z0-9._-]{0,62}`. It is the last segment
    /// of the client certificate's URI SAN `spiffe://<site>/client/<name>`,
    /// its common name, and the key of its grant on the appliance.
    ClientName,
    "client name",
    63
);

label_type!(
    /// An appliance's id, with the same rule as [`ClientName`]: the last
    /// segment of `spiffe://<site>/appliance/<id>`.
    ApplianceId,
    "appliance id",
    63
);

label_type!(
    /// A site's name: `[a-z0-9][a-z0-9._-]*`, at most 253 bytes. It is the
    /// SPIFFE trust domain of every identity the site issues, e.g.
    /// `acme.example` in `spiffe://acme.example/client/billing`.
    SiteName,
    "site name",
    253
);

/// A model name as the admin API takes it: 1 to 128 characters from
/// `A-Z a-z 0-9 . _ -`. The appliance has the last word on what exists; this
/// only keeps obviously broken values (spaces, commas, empty) off the wire.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ModelName(String);

impl ModelName {
    /// Parses and checks a model name.
    pub fn new(value: &str) -> Result<Self> {
        let ok_char = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        if value.is_empty() || value.len() > 128 || !value.as_bytes().iter().all(ok_char) {
            return Err(Error::InvalidName {
                what: "model name",
                value: shorten(value),
                reason: "1 to 128 characters from A-Z, a-z, 0-9, '.', '_', '-'",
            });
        }
        Ok(Self(value.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ModelName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn client_names() {
        for ok in ["a", "0", "billing-app", "a.b_c-d", &"x".repeat(63)] {
            assert_eq!(ClientName::new(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "A",
            "ab/c",
            "a b",
            "é",
            &"x".repeat(64),
            "a\n",
        ] {
            let err = ClientName::new(bad).unwrap_err();
            assert!(err.is_usage(), "{bad:?}");
            assert!(err.to_string().contains("client name"), "{err}");
        }
    }

    #[test]
    fn site_names_may_be_long() {
        assert!(SiteName::new(&"a".repeat(253)).is_ok());
        assert!(SiteName::new(&"a".repeat(254)).is_err());
        assert!(SiteName::new("acme.example").is_ok());
    }

    #[test]
    fn model_names() {
        assert!(ModelName::new("MiniLM-L6.v2_q").is_ok());
        assert!(ModelName::new("").is_err());
        assert!(ModelName::new("a,b").is_err());
        assert!(ModelName::new("*").is_err());
    }
}
