//! The inference engine: ONNX models loaded from bytes into tract plans, the
//! model registry, typed tensors, input validation and a bounded execution
//! pool.
//!
//! Pipeline of a model: [`Model::load`] (decode, refuse unsupported
//! operators, optimise once; a symbolic batch dimension stays symbolic so one
//! plan serves every batch size) → [`Model::prepare`] (every check on a
//! request, before any work) → [`Model::run`].
//!
//! This crate never sees a key: models arrive as decrypted bytes in memory.
//! It is synchronous; the server runs it on the [`Pool`].
#![forbid(unsafe_code)]

mod batched;
mod broadcast;
mod cast;
mod chain;
mod conv;
mod cpu;
mod datatype;
mod dense;
mod error;
mod fallback;
mod fold;
mod im2col;
mod inplace;
mod maxpool;
mod model;
mod pack;
mod pool;
mod quantize;
mod registry;
mod rewrite;
mod simd;
mod softmax;
mod tensor;
mod text;

pub use cpu::Int8Kernels;
pub use datatype::DataType;
pub use error::{Error, Result};
pub use model::{Dim, Limits, Model, ModelSource, OpTime, Prepared, ProfileBy, TensorSpec};
pub use pool::Pool;
pub use registry::{Readiness, Registry};
pub use simd::vector_level;
pub use tensor::{InputTensor, OutputTensor};
pub use text::TEXT_INPUT;
