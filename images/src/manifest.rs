//! The manifest of a model image: what the image is, for which model line
//! and appliance, and the parts that follow it.
//!
//! It arrives from an update source, so it is parsed, never trusted: every
//! field is typed and bounded here, and a manifest that exists as a
//! [`Manifest`] value is one the rest of the product may act on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The manifest layout this code writes and reads.
pub const MANIFEST_FORMAT: u16 = 1;
/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_LEN: usize = 64 * 1024;
/// Largest ONNX part accepted (the appliance's model bound).
pub const MAX_ONNX_LEN: u64 = 1 << 30;
/// Largest tokenizer part accepted.
pub const MAX_TOKENIZER_LEN: u64 = 64 << 20;
/// Largest golden-vectors part accepted.
pub const MAX_VECTORS_LEN: u64 = 64 << 20;
/// Most inputs or outputs a manifest may describe.
const MAX_TENSORS: usize = 64;
/// Longest tensor name accepted.
const MAX_TENSOR_NAME: usize = 256;
/// Largest latency budget (one hour), in milliseconds.
const MAX_LATENCY_BUDGET_MS: u64 = 3_600_000;
/// Largest memory budget (1 TiB), in MiB.
const MAX_MEMORY_BUDGET_MB: u64 = 1 << 20;

/// A model line's name: `ident`'s model-name rule (1 to 64 characters of
/// `A-Z a-z 0-9 . _ -`, not starting with a dot), the one the appliance
/// applies to every model name.
pub use ident::ModelName as LineName;

/// An appliance software version, `MAJOR.MINOR.PATCH`, ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApplianceVersion(pub u32, pub u32, pub u32);

impl ApplianceVersion {
    /// The version of this build (the workspace version).
    pub fn current() -> ApplianceVersion {
        env!("CARGO_PKG_VERSION")
            .parse()
            .unwrap_or(ApplianceVersion(0, 0, 0))
    }
}

impl FromStr for ApplianceVersion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::format(
                "appliance version",
                "expected MAJOR.MINOR.PATCH, e.g. 0.1.0",
            )
        };
        let mut parts = s.split('.');
        let mut next = || -> Result<u32> {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || p.len() > 9 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let v = ApplianceVersion(next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }
}

impl TryFrom<String> for ApplianceVersion {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<ApplianceVersion> for String {
    fn from(v: ApplianceVersion) -> String {
        v.to_string()
    }
}

impl fmt::Display for ApplianceVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// A SHA-256 digest, written as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        let d = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Digest(out)
    }

    /// Lower-case hex.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits, for messages.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::format("sha256", "expected 64 lower-case hex digits");
        if s.len() != 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| bad())?;
        Ok(Digest(out))
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.hex()
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

/// What a part of an image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartKind {
    /// The ONNX model.
    Onnx,
    /// A Hugging Face `tokenizer.json` (text models).
    Tokenizer,
    /// The golden test vectors (JSON, see `vectors.rs`).
    Vectors,
}

impl PartKind {
    /// Largest accepted length of this part.
    pub fn max_len(self) -> u64 {
        match self {
            PartKind::Onnx => MAX_ONNX_LEN,
            PartKind::Tokenizer => MAX_TOKENIZER_LEN,
            PartKind::Vectors => MAX_VECTORS_LEN,
        }
    }

    /// The part's name in messages and blob names.
    pub fn as_str(self) -> &'static str {
        match self {
            PartKind::Onnx => "onnx",
            PartKind::Tokenizer => "tokenizer",
            PartKind::Vectors => "vectors",
        }
    }
}

/// One part of an image, in the order the parts follow the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// What it holds.
    pub kind: PartKind,
    /// Its exact length in bytes.
    pub length: u64,
    /// Its SHA-256.
    pub sha256: Digest,
}

/// A tensor the model takes or gives, as the vendor's build saw it
/// (`-1` for a dynamic dimension). Informative; the trial checks the real
/// model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorInfo {
    /// Its name.
    pub name: String,
    /// Open Inference Protocol datatype, e.g. `FP32`.
    pub datatype: String,
    /// Its shape.
    pub shape: Vec<i64>,
}

/// The manifest as it appears on the wire, before any check.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format: u16,
    name: LineName,
    version: u64,
    release: u64,
    min_release: u64,
    min_appliance: ApplianceVersion,
    #[serde(default)]
    latency_budget_ms: Option<u64>,
    #[serde(default)]
    memory_budget_mb: Option<u64>,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    parts: Vec<Part>,
}

/// A checked manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawManifest")]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: u16,
    /// The model line this image belongs to (the name clients call).
    pub name: LineName,
    /// The model version clients see (Open Inference Protocol), ≥ 1.
    pub version: u64,
    /// The release counter: strictly increasing across a line's images.
    /// The appliance never installs a release below its committed floor.
    pub release: u64,
    /// The lowest release the appliance may ever roll back to once this
    /// image is committed (≤ `release`).
    pub min_release: u64,
    /// The oldest appliance software that can serve this image.
    pub min_appliance: ApplianceVersion,
    /// Slowest acceptable golden-vector inference on the appliance, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_budget_ms: Option<u64>,
    /// Most memory the loaded model may take on the appliance, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_budget_mb: Option<u64>,
    /// The model's inputs.
    pub inputs: Vec<TensorInfo>,
    /// The model's outputs.
    pub outputs: Vec<TensorInfo>,
    /// The parts after the manifest: `onnx`, optionally `tokenizer`, then
    /// `vectors`, in that order.
    pub parts: Vec<Part>,
}

impl TryFrom<RawManifest> for Manifest {
    type Error = Error;
    fn try_from(m: RawManifest) -> Result<Self> {
        let bad = |reason: &str| Err(Error::format("manifest", reason));
        if m.format != MANIFEST_FORMAT {
            return bad(&format!(
                "format {} is not supported (this appliance reads format {MANIFEST_FORMAT})",
                m.format
            ));
        }
        if m.version == 0 || m.release == 0 {
            return bad("version and release start at 1");
        }
        if m.min_release > m.release {
            return bad("min_release is above release");
        }
        if m.latency_budget_ms
            .is_some_and(|b| b == 0 || b > MAX_LATENCY_BUDGET_MS)
        {
            return bad("latency_budget_ms out of range (1 to 3600000)");
        }
        if m.memory_budget_mb
            .is_some_and(|b| b == 0 || b > MAX_MEMORY_BUDGET_MB)
        {
            return bad("memory_budget_mb out of range (1 to 1048576)");
        }
        for t in m.inputs.iter().chain(&m.outputs) {
            if t.name.is_empty() || t.name.len() > MAX_TENSOR_NAME || t.shape.len() > 16 {
                return bad("a tensor name is empty or too long, or its rank is over 16");
            }
            if t.datatype.parse::<inference::DataType>().is_err() {
                return bad("a tensor has an unknown datatype");
            }
        }
        if m.inputs.len() > MAX_TENSORS || m.outputs.len() > MAX_TENSORS {
            return bad("more than 64 inputs or outputs");
        }
        let kinds: Vec<PartKind> = m.parts.iter().map(|p| p.kind).collect();
        let layout_ok = matches!(
            kinds.as_slice(),
            [PartKind::Onnx, PartKind::Vectors]
                | [PartKind::Onnx, PartKind::Tokenizer, PartKind::Vectors]
        );
        if !layout_ok {
            return bad("parts must be onnx, optionally tokenizer, then vectors");
        }
        for p in &m.parts {
            if p.length > p.kind.max_len() {
                return bad(&format!(
                    "part {} is {} bytes, over its bound of {}",
                    p.kind.as_str(),
                    p.length,
                    p.kind.max_len()
                ));
            }
        }
        Ok(Manifest {
            format: m.format,
            name: m.name,
            version: m.version,
            release: m.release,
            min_release: m.min_release,
            min_appliance: m.min_appliance,
            latency_budget_ms: m.latency_budget_ms,
            memory_budget_mb: m.memory_budget_mb,
            inputs: m.inputs,
            outputs: m.outputs,
            parts: m.parts,
        })
    }
}

impl Manifest {
    /// Parses and checks a manifest.
    pub fn parse(bytes: &[u8]) -> Result<Manifest> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(Error::format(
                "manifest",
                format!(
                    "{} bytes, over the bound of {MAX_MANIFEST_LEN}",
                    bytes.len()
                ),
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| Error::format("manifest", e.to_string()))
    }

    /// The manifest as written into an image.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::format("manifest", e.to_string()))?;
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(Error::format("manifest", "over 64 KiB"));
        }
        Ok(bytes)
    }

    /// The part of `kind`, if the image has one.
    pub fn part(&self, kind: PartKind) -> Option<&Part> {
        self.parts.iter().find(|p| p.kind == kind)
    }

    /// Sum of the parts' lengths.
    pub fn parts_len(&self) -> u64 {
        self.parts.iter().map(|p| p.length).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        let v: ApplianceVersion = "0.10.2".parse().unwrap_or(ApplianceVersion(9, 9, 9));
        assert_eq!(v, ApplianceVersion(0, 10, 2));
        assert!(ApplianceVersion(0, 2, 0) < ApplianceVersion(0, 10, 0));
        for bad in [
            "", "1", "1.2", "1.2.3.4", "1..2", "a.b.c", "1.2.-3", "1.2.3 ",
        ] {
            assert!(bad.parse::<ApplianceVersion>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_follow_the_appliance_rule() {
        assert!("digits".parse::<LineName>().is_ok());
        assert!("MiniLM-v2.int8_x".parse::<LineName>().is_ok());
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(bad.parse::<LineName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn digests_are_strict_hex() {
        let d = Digest::of(b"abc");
        assert_eq!(d.hex().parse::<Digest>().ok(), Some(d));
        assert!(d.hex().to_uppercase().parse::<Digest>().is_err());
        assert!(d.hex()[..63].parse::<Digest>().is_err());
    }
}
