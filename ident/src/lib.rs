//! Names, SPIFFE identities and certificate serials: the one definition of
//! each, used by provisioning (which writes them into certificates and
//! files), the appliance (which reads them back from certificates, grants
//! and requests) and the image tools (which name model lines).
//!
//! Every type can only hold a valid value ("parse, don't validate").
#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

/// A value that is not a valid name, identity or serial.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
#[non_exhaustive]
pub struct NameError {
    /// What was being parsed ("client name", "SPIFFE id", ...).
    pub what: &'static str,
    /// The value, shortened to 64 characters for messages.
    pub value: String,
    /// Why it was refused.
    pub reason: &'static str,
}

impl NameError {
    fn new(what: &'static str, value: &str, reason: &'static str) -> Self {
        NameError {
            what,
            value: shorten(value),
            reason,
        }
    }
}

/// At most 64 characters of `value`, for error messages.
pub fn shorten(value: &str) -> String {
    let mut out: String = value.chars().take(64).collect();
    if out.len() < value.len() {
        out.push('…');
    }
    out
}

/// The label rule `[a-z0-9][a-z0-9._-]{0,max-1}`: the alphabet SPIFFE
/// allows in trust domains and path segments, minus upper case, so a name
/// needs no escaping in a URI, a file name or a shell.
fn check_label(what: &'static str, value: &str, max: usize) -> Result<(), NameError> {
    let fail = |reason| Err(NameError::new(what, value, reason));
    let bytes = value.as_bytes();
    let Some(first) = bytes.first() else {
        return fail("must not be empty");
    };
    if bytes.len() > max {
        return fail(match max {
            63 => "at most 63 characters",
            _ => "at most 253 characters",
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

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Longest accepted value, in bytes.
            pub const MAX_LEN: usize = $max;
            /// What the value is, in messages.
            pub const WHAT: &'static str = $what;

            /// Parses and checks a value.
            pub fn new(value: &str) -> Result<Self, NameError> {
                let check: fn(&str) -> Result<(), NameError> = $check;
                check(value)?;
                Ok(Self(value.to_owned()))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(&s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
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

name_type!(
    /// A client's name: `[a-z0-9][a-z0-9._-]{0,62}`. It is the last segment
    /// of the client certificate's URI SAN `spiffe://<site>/client/<name>`,
    /// its common name, and the key of its grant on the appliance.
    ClientName,
    "client name",
    63,
    |v| check_label("client name", v, 63)
);

name_type!(
    /// An appliance's id, with the same rule as [`ClientName`]: the last
    /// segment of `spiffe://<site>/appliance/<id>`.
    ApplianceId,
    "appliance id",
    63,
    |v| check_label("appliance id", v, 63)
);

name_type!(
    /// A site's name: `[a-z0-9][a-z0-9._-]*`, at most 253 bytes. It is the
    /// SPIFFE trust domain of every identity the site issues, e.g.
    /// `acme.example` in `spiffe://acme.example/client/billing`.
    SiteName,
    "site name",
    253,
    |v| check_label("site name", v, 253)
);

name_type!(
    /// A model (line) name: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, not
    /// starting with a dot. Requests, grants, the admin API, the store and
    /// signed images all use this rule.
    ModelName,
    "model name",
    64,
    check_model_name
);

fn check_model_name(value: &str) -> Result<(), NameError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && !value.starts_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NameError::new(
            "model name",
            value,
            "1 to 64 characters of A-Z a-z 0-9 . _ -, not starting with a dot",
        ))
    }
}

/// Whose identity a SPIFFE id names.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Kind {
    /// An enrolled client application.
    Client,
    /// An appliance.
    Appliance,
}

impl Kind {
    /// The kind a path segment names, if any.
    pub fn parse(segment: &str) -> Option<Kind> {
        match segment {
            "client" => Some(Kind::Client),
            "appliance" => Some(Kind::Appliance),
            _ => None,
        }
    }

    /// The path segment: `client` or `appliance`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Client => "client",
            Kind::Appliance => "appliance",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// `spiffe://<site>/<kind>/<name>`, the URI SAN of every certificate a site
/// issues. The name follows [`ClientName`]'s rule (and so [`ApplianceId`]'s).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct SpiffeId {
    site: SiteName,
    kind: Kind,
    name: String,
}

impl SpiffeId {
    /// The id of `name` (a [`ClientName`] or [`ApplianceId`] as text).
    pub fn new(site: &SiteName, kind: Kind, name: &str) -> Result<Self, NameError> {
        check_label("name", name, 63)?;
        Ok(SpiffeId {
            site: site.clone(),
            kind,
            name: name.to_owned(),
        })
    }

    /// The id of client `name` of `site`.
    pub fn client(site: &SiteName, name: &ClientName) -> Self {
        SpiffeId {
            site: site.clone(),
            kind: Kind::Client,
            name: name.as_str().to_owned(),
        }
    }

    /// The id of appliance `id` of `site`.
    pub fn appliance(site: &SiteName, id: &ApplianceId) -> Self {
        SpiffeId {
            site: site.clone(),
            kind: Kind::Appliance,
            name: id.as_str().to_owned(),
        }
    }

    /// Parses a URI, which must be exactly `spiffe://<site>/<kind>/<name>`.
    pub fn parse(uri: &str) -> Result<Self, NameError> {
        let bad = |reason| NameError::new("SPIFFE id", uri, reason);
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| bad("must start with spiffe://"))?;
        let mut parts = rest.split('/');
        let (Some(site), Some(kind), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("must be spiffe://<site>/<client|appliance>/<name>"));
        };
        let site = SiteName::new(site).map_err(|_| bad("the site is not a valid site name"))?;
        let kind = Kind::parse(kind).ok_or_else(|| bad("the kind must be client or appliance"))?;
        check_label("name", name, 63).map_err(|_| bad("the name is not a valid name"))?;
        Ok(SpiffeId {
            site,
            kind,
            name: name.to_owned(),
        })
    }

    /// The trust domain.
    pub fn site(&self) -> &SiteName {
        &self.site
    }

    /// Client or appliance.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The last segment.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/{}/{}", self.site, self.kind, self.name)
    }
}

impl FromStr for SpiffeId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::parse(s)
    }
}

/// A certificate serial number: a positive integer, kept as its big-endian
/// magnitude without leading zero bytes. Written in lower-case hex.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// A serial from the content bytes of a DER INTEGER (as certificates
    /// and CRLs hold it); leading zero bytes are dropped.
    pub fn from_der_integer(bytes: &[u8]) -> Self {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        Self(bytes[start..].to_vec())
    }

    /// The big-endian magnitude.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lower-case hex without separators (the form in file names and logs).
    pub fn to_hex(&self) -> String {
        if self.0.is_empty() {
            "00".to_owned()
        } else {
            hex::encode(&self.0)
        }
    }
}

impl FromStr for Serial {
    type Err = NameError;
    /// Parses hex, with or without `:` separators, at most 20 bytes.
    fn from_str(s: &str) -> Result<Self, NameError> {
        let digits: String = s.chars().filter(|c| *c != ':').collect();
        let bad = |reason| NameError::new("serial number", s, reason);
        if digits.is_empty() || digits.len() > 40 {
            return Err(bad("1 to 20 bytes of hex expected"));
        }
        let padded = if digits.len() % 2 == 1 {
            format!("0{digits}")
        } else {
            digits
        };
        let bytes = hex::decode(padded).map_err(|_| bad("hex digits expected"))?;
        Ok(Self::from_der_integer(&bytes))
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

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
            assert_eq!(err.what, "client name", "{bad:?}");
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
        for ok in ["MiniLM-L6.v2_q", "digits", "a", &"x".repeat(64)] {
            assert!(ModelName::new(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", ".hidden", "a b", "a,b", "a/b", "é", &"x".repeat(65)] {
            assert!(ModelName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spiffe_ids_round_trip_and_refuse_the_rest() {
        let site = SiteName::new("acme.example").unwrap();
        let id = SpiffeId::client(&site, &ClientName::new("billing").unwrap());
        assert_eq!(id.to_string(), "spiffe://acme.example/client/billing");
        assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
        for bad in [
            "spiffe://acme.example/client/",
            "spiffe://acme.example/client/a/b",
            "spiffe://acme.example/robot/a",
            "spiffe:///client/a",
            "https://acme.example/client/a",
            "spiffe://ACME/client/a",
            "spiffe://acme.example/client/Billing",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serial_parsing() {
        let s: Serial = "00:01:ab".parse().unwrap();
        assert_eq!(s.as_bytes(), [0x01, 0xab]);
        assert_eq!(s.to_hex(), "01ab");
        assert_eq!("1ab".parse::<Serial>().unwrap(), s);
        assert!("xyz".parse::<Serial>().is_err());
        assert!("".parse::<Serial>().is_err());
        assert!("00".repeat(21).parse::<Serial>().is_err());
    }

    proptest! {
        /// Whatever a URI says, parsing never panics, and what parses prints
        /// back as the same URI.
        #[test]
        fn spiffe_parsing_is_total_and_exact(uri in "(spiffe://)?[a-zA-Z0-9./_-]{0,40}") {
            if let Ok(id) = SpiffeId::parse(&uri) {
                prop_assert_eq!(id.to_string(), uri);
            }
        }

        /// Every name that parses is one of its own alphabet and length.
        #[test]
        fn names_that_parse_keep_their_rule(s in "\\PC{0,80}") {
            if let Ok(n) = ClientName::new(&s) {
                prop_assert!(n.as_str().len() <= 63);
                let uri = format!("spiffe://site/client/{n}");
                prop_assert!(SpiffeId::parse(&uri).is_ok());
            }
            if let Ok(m) = ModelName::new(&s) {
                prop_assert!(m.as_str().len() <= 64 && !m.as_str().starts_with('.'));
            }
        }

        /// A serial's hex parses back to itself.
        #[test]
        fn serials_round_trip(bytes in prop::collection::vec(any::<u8>(), 1..20)) {
            let s = Serial::from_der_integer(&bytes);
            prop_assert_eq!(s.to_hex().parse::<Serial>().unwrap(), s);
        }
    }
}
