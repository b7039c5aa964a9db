//! Test fixtures shared by the workspace's tests and demos. Not part of the
//! product.
//!
//! [`Swtpm`] starts a real software TPM (`swtpm`) on loopback, one instance
//! per test, each on its own port pair, so tests run in parallel.
#![forbid(unsafe_code)]
#![allow(clippy::expect_used, clippy::unwrap_used)] // fixtures fail loudly

mod swtpm;

pub use swtpm::Swtpm;
