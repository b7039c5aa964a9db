//! TUF: the vendor's repository (keys, signing) and the appliance's
//! verification of one.
//!
//! Profile (DESIGN §8): top-level roles only (root, targets, snapshot,
//! timestamp), ed25519 keys, SHA-256, consistent snapshots, flat target
//! names (`<model>-r<release>.img`). Repository layout, as python-tuf and
//! tough expect it:
//!
//! ```text
//! <repo>/metadata/<N>.root.json      every root version, N = 1, 2, …
//! <repo>/metadata/root.json          the newest root (for people; clients chain N.root.json)
//! <repo>/metadata/timestamp.json
//! <repo>/metadata/<N>.snapshot.json  consistent snapshot
//! <repo>/metadata/<N>.targets.json
//! <repo>/targets/<sha256>.<name>     each target under its digest
//! ```

pub mod keys;
pub mod repo;
pub mod source;
pub mod verify;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, Result};

/// OLPC canonical JSON, the form TUF signs.
pub fn canonical(value: &impl Serialize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, olpc_cjson::CanonicalFormatter::new());
    value
        .serialize(&mut ser)
        .map_err(|e| Error::format("metadata", e.to_string()))?;
    Ok(out)
}

/// `2026-11-30T12:00:00Z`: whole seconds, UTC, as TUF writes times.
pub fn tuf_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Parses a TUF time.
pub fn parse_time(s: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| Error::format("metadata", "bad expiry time"))
}
