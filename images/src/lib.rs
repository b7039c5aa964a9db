//! Signed model images: the image format, TUF repository building and signing
//! (vendor side) and verification (appliance side), golden test vectors.
//!
//! Not built yet: this crate is filled by the signed-updates issue.
#![forbid(unsafe_code)]
