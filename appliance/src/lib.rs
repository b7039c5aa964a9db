//! The appliance daemon: the Open Inference Protocol over gRPC with mutual TLS,
//! authorization, rate limits, the audit log, metrics and the model lifecycle.
//!
//! Not built yet: this crate is filled by the appliance issue. It is the only
//! crate that knows tokio and tonic (see `ARCHITECTURE.md`).
#![forbid(unsafe_code)]
