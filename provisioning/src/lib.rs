//! Provisioning: the site CA, device enrollment, client certificates, CRLs,
//! access grants, and the `provision` operator CLI.
//!
//! Not built yet: this crate is filled by the appliance issue.
#![forbid(unsafe_code)]
