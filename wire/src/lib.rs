//! The appliance's wire protocols, generated from `proto/`:
//! [`inference`] is the Open Inference Protocol v2 (`inference` package, as
//! Triton and KServe serve it) and [`admin`] the appliance's own
//! administration service. Only the appliance and the `provision` client
//! use these types; handlers convert them to domain types at once.
#![forbid(unsafe_code)]
#![allow(missing_docs, unused_qualifications)] // generated code

/// Open Inference Protocol v2.
pub mod inference {
    tonic::include_proto!("inference");
}

/// `appliance.admin.v1`.
pub mod admin {
    tonic::include_proto!("appliance.admin.v1");
}

/// The encoded `FileDescriptorSet` of `proto/` (for protocol conformance
/// tests).
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
