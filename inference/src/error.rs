//! The one error type of this crate.
//!
//! Messages name the input or model and the expected and received values.
//! They never contain tensor data: a request's bytes may be a patient's record.

/// Everything that can go wrong while loading a model or serving a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a loadable ONNX model.
    #[error("invalid model: {0}")]
    InvalidModel(String),

    /// The model uses an operator the engine does not implement.
    #[error("operator {op} (domain {domain}) is not supported by the engine")]
    UnsupportedOperator {
        /// ONNX operator type, e.g. `QGemm`.
        op: String,
        /// ONNX domain, `ai.onnx` for the standard one.
        domain: String,
    },

    /// The model's tokenizer could not be loaded or failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A request named an input the model does not have.
    #[error("unknown input `{name}`; the model's inputs are: {expected}")]
    UnknownInput {
        /// The name sent.
        name: String,
        /// The model's input names.
        expected: String,
    },

    /// A request lacks one of the model's inputs.
    #[error("missing input `{name}`")]
    MissingInput {
        /// The missing input.
        name: String,
    },

    /// A request sent the same input twice.
    #[error("input `{name}` appears more than once")]
    DuplicateInput {
        /// The repeated input.
        name: String,
    },

    /// A datatype string is not one of the protocol's.
    #[error("input `{input}`: unknown datatype `{got}`")]
    UnknownDatatype {
        /// The input.
        input: String,
        /// The datatype sent (truncated to a sane length).
        got: String,
    },

    /// An input has another datatype than the model's.
    #[error("input `{input}`: expected datatype {expected}, got {got}")]
    WrongDatatype {
        /// The input.
        input: String,
        /// The model's datatype.
        expected: &'static str,
        /// The datatype sent.
        got: &'static str,
    },

    /// An input has another number of dimensions than the model's.
    #[error("input `{input}`: expected {expected} dimensions {shape}, got {got}")]
    WrongRank {
        /// The input.
        input: String,
        /// The model's rank.
        expected: usize,
        /// The model's shape, `-1` for dynamic dimensions.
        shape: String,
        /// The rank sent.
        got: usize,
    },

    /// A fixed dimension differs from the model's.
    #[error("input `{input}`: dimension {axis} must be {expected}, got {got}")]
    WrongDimension {
        /// The input.
        input: String,
        /// Zero-based axis.
        axis: usize,
        /// The model's size.
        expected: u64,
        /// The size sent.
        got: i64,
    },

    /// A dimension is zero or negative.
    #[error("input `{input}`: dimension {axis} must be at least 1, got {got}")]
    InvalidDimension {
        /// The input.
        input: String,
        /// Zero-based axis.
        axis: usize,
        /// The size sent.
        got: i64,
    },

    /// Two inputs disagree on a shared dynamic dimension (e.g. the batch).
    #[error(
        "dimension `{symbol}` is {first} in input `{first_input}` but {got} in input `{input}`"
    )]
    InconsistentDimension {
        /// The model's name for the dimension.
        symbol: String,
        /// Where it was first seen.
        first_input: String,
        /// Its size there.
        first: u64,
        /// Where it differs.
        input: String,
        /// Its size there.
        got: u64,
    },

    /// An input's declared shape holds more elements than allowed.
    #[error("input `{input}`: shape holds {elements} elements, the limit is {limit}")]
    TooManyElements {
        /// The input.
        input: String,
        /// Elements in the declared shape (saturating).
        elements: u64,
        /// The configured limit.
        limit: u64,
    },

    /// An input's byte count does not match its shape and datatype.
    #[error("input `{input}`: expected {expected} bytes for its shape and datatype, got {got}")]
    ByteLength {
        /// The input.
        input: String,
        /// Bytes the shape and datatype need.
        expected: u64,
        /// Bytes sent.
        got: u64,
    },

    /// Element values that the datatype cannot hold (a BOOL byte other than
    /// 0 or 1).
    #[error("input `{input}`: element {index} is not a valid {datatype}")]
    InvalidElement {
        /// The input.
        input: String,
        /// Index of the first bad element.
        index: u64,
        /// The datatype.
        datatype: &'static str,
    },

    /// A BYTES input is malformed or not UTF-8 text.
    #[error("input `{input}`: element {index}: {detail}")]
    InvalidText {
        /// The input.
        input: String,
        /// Index of the element.
        index: u64,
        /// What is wrong (never the content).
        detail: &'static str,
    },

    /// A request asked for an output the model does not have.
    #[error("unknown output `{name}`; the model's outputs are: {expected}")]
    UnknownOutput {
        /// The name asked for.
        name: String,
        /// The model's output names.
        expected: String,
    },

    /// The engine failed while running the model.
    #[error("model execution failed: {0}")]
    Execution(String),

    /// No model of that name is loaded.
    #[error("model `{name}` not found")]
    ModelNotFound {
        /// The model name.
        name: String,
    },

    /// The model exists but not in that version.
    #[error("model `{name}` has no version {version}")]
    VersionNotFound {
        /// The model name.
        name: String,
        /// The version asked for.
        version: String,
    },

    /// The model version exists but is not ready to serve.
    #[error("model `{name}` version {version} is not ready: {state}")]
    NotReady {
        /// The model name.
        name: String,
        /// The version.
        version: u64,
        /// "loading" or "failed: <reason>".
        state: String,
    },

    /// The execution queue is full: the server is at capacity.
    #[error("the inference queue is full ({capacity} requests waiting); retry later")]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Turns a tract error into our error, keeping only its message chain
/// (tract's messages describe shapes and operators, not tensor contents).
pub(crate) fn execution(e: impl std::fmt::Display) -> Error {
    Error::Execution(e.to_string())
}
