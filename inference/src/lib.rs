//! The inference engine: ONNX models loaded from bytes into tract plans, the
//! model registry (versions, readiness), typed tensors and input validation.
//!
//! Not built yet: this crate is filled by the inference issue. It will never
//! see a key (see `ARCHITECTURE.md`).
#![forbid(unsafe_code)]
