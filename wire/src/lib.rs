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

/// `appliance.enroll.v1`: the only service of an appliance in enrollment
/// mode.
pub mod enroll {
    tonic::include_proto!("appliance.enroll.v1");
}

/// The encoded `FileDescriptorSet` of `proto/` (for protocol conformance
/// tests).
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

/// The canonical upper-case name of a gRPC status code, as the gRPC
/// specification and other clients print it (`PERMISSION_DENIED`). Used by
/// the appliance's audit log and metrics and by `provision`'s messages.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
