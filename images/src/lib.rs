//! Signed model images: the image format, TUF repository building and signing
//! (vendor side) and verification (appliance side), golden test vectors.
//!
//! Built so far: the `model-image check` command (`src/bin/model-image.rs`),
//! which loads a model exactly as the appliance would. The image format and
//! signing arrive with the signed-updates issue.
#![forbid(unsafe_code)]
