//! Signed model images: the image format, golden test vectors, the
//! vendor's TUF repository (keys, signing) and the appliance's verification
//! of one.
//!
//! - [`manifest`] and [`image`]: one file per model release — a manifest
//!   (model line, version, release counter, compatibility, budgets, parts)
//!   followed by the ONNX model, its tokenizer and its golden vectors.
//!   Parsed, never trusted: every field bounded, every part hashed.
//! - [`vectors`]: golden test vectors, recorded by `model-image build` and
//!   checked by the appliance's trial before an image takes traffic.
//! - [`tuf`]: the vendor's key directory and repository
//!   ([`tuf::repo`]), sources of a repository's files ([`tuf::source`]),
//!   and the appliance's verifier over tough ([`tuf::verify`]).
//!
//! Synchronous, like the other libraries: tough is async, and
//! [`tuf::verify::ToughVerifier`] runs it on a private current-thread
//! runtime per refresh (see ARCHITECTURE.md).
#![forbid(unsafe_code)]

pub mod error;
pub mod image;
pub mod manifest;
pub mod tuf;
pub mod vectors;

pub use error::{Error, Result};
