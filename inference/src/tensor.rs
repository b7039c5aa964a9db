//! Request and response tensors, and every check a request passes before
//! the engine sees it.
//!
//! Tensors travel as raw little-endian bytes, as the Open Inference Protocol
//! sends them (`raw_input_contents`). Every size is checked with overflow-safe
//! arithmetic against the model and the limits before anything is allocated.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::datatype::DataType;
use crate::error::{Error, Result};
use crate::model::{Dim, Limits, TensorSpec, names};

#[cfg(target_endian = "big")]
compile_error!("tensors are copied as native-endian bytes; the wire format is little-endian");

/// One input of a request, borrowed from the request message.
#[derive(Clone, Copy)]
pub struct InputTensor<'a> {
    /// The input's name.
    pub name: &'a str,
    /// The datatype as sent, e.g. `FP32`.
    pub datatype: &'a str,
    /// The shape as sent.
    pub shape: &'a [i64],
    /// The elements, raw little-endian (for `BYTES`: 4-byte length + bytes
    /// per element).
    pub data: &'a [u8],
}

impl fmt::Debug for InputTensor<'_> {
    /// Never prints the data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InputTensor")
            .field("name", &self.name)
            .field("datatype", &self.datatype)
            .field("shape", &self.shape)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// One output of a response. Its buffer is wiped when it is dropped.
pub struct OutputTensor {
    name: String,
    datatype: DataType,
    tensor: Tensor,
}

impl OutputTensor {
    /// The output's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its datatype.
    pub fn datatype(&self) -> DataType {
        self.datatype
    }

    /// Its shape.
    pub fn shape(&self) -> Vec<i64> {
        self.tensor
            .shape()
            .iter()
            .map(|d| i64::try_from(*d).unwrap_or(i64::MAX))
            .collect()
    }

    /// Its elements, raw little-endian, row-major.
    pub fn data(&self) -> &[u8] {
        self.tensor.as_bytes()
    }

    /// The elements as `f32`, for FP32 outputs (tests and tools).
    pub fn as_f32(&self) -> Option<&[f32]> {
        self.tensor.as_plain_ram()?.as_slice::<f32>().ok()
    }
}

impl fmt::Debug for OutputTensor {
    /// Never prints the data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputTensor")
            .field("name", &self.name)
            .field("datatype", &self.datatype)
            .field("shape", &self.tensor.shape())
            .finish_non_exhaustive()
    }
}

impl Drop for OutputTensor {
    fn drop(&mut self) {
        wipe(&mut self.tensor);
    }
}

/// Overwrites a tensor's elements with zeroes (valid for every numeric and
/// boolean type; string tensors never reach here).
pub(crate) fn wipe(tensor: &mut Tensor) {
    if tensor.datum_type() != DatumType::String
        && let Some(mut view) = tensor.as_plain_ram_mut()
    {
        view.as_bytes_mut().fill(0);
    }
}

/// Wipes engine tensors once a request is done with them (inputs, token
/// ids that spell the text, outputs). A tensor still shared with the engine
/// (a constant) is left alone; it holds no request data.
pub(crate) fn wipe_values(values: impl IntoIterator<Item = TValue>) {
    for value in values {
        if let Ok(mut tensor) = Arc::try_unwrap(value.into_arc_tensor()) {
            wipe(&mut tensor);
        }
    }
}

/// Shortens names echoed in errors: a name comes from the client and must
/// not turn an error message into a data channel.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Pairs each model input with the request's tensor of that name, in model
/// order. Unknown, repeated and missing names are errors.
pub(crate) fn match_inputs<'r, 'a>(
    specs: &[TensorSpec],
    inputs: &'r [InputTensor<'a>],
) -> Result<Vec<&'r InputTensor<'a>>> {
    let mut found: Vec<Option<&InputTensor<'a>>> = vec![None; specs.len()];
    for input in inputs {
        let index = specs
            .iter()
            .position(|s| s.name == input.name)
            .ok_or_else(|| Error::UnknownInput {
                name: clip(input.name),
                expected: names(specs),
            })?;
        if found[index].replace(input).is_some() {
            return Err(Error::DuplicateInput {
                name: clip(input.name),
            });
        }
    }
    found
        .into_iter()
        .zip(specs)
        .map(|(input, spec)| {
            input.ok_or_else(|| Error::MissingInput {
                name: spec.name.clone(),
            })
        })
        .collect()
}

/// Checks datatype, rank, every dimension (fixed sizes, and dynamic sizes
/// shared between inputs), the element bound and the byte count of every
/// input. Returns the element count of each.
pub(crate) fn check_shapes(
    specs: &[TensorSpec],
    inputs: &[&InputTensor<'_>],
    limits: &Limits,
) -> Result<Vec<u64>> {
    let mut symbols: HashMap<&str, (&str, u64)> = HashMap::new();
    let mut counts = Vec::with_capacity(specs.len());
    for (spec, input) in specs.iter().zip(inputs) {
        let elements = check_shape(spec, input, limits, &mut symbols)?;
        if let Some(size) = spec.datatype.size() {
            let expected = elements.saturating_mul(size as u64);
            if expected != input.data.len() as u64 {
                return Err(Error::ByteLength {
                    input: spec.name.clone(),
                    expected,
                    got: input.data.len() as u64,
                });
            }
        }
        counts.push(elements);
    }
    Ok(counts)
}

/// Checks one input's datatype and shape; returns its element count.
pub(crate) fn check_shape<'s>(
    spec: &'s TensorSpec,
    input: &InputTensor<'_>,
    limits: &Limits,
    symbols: &mut HashMap<&'s str, (&'s str, u64)>,
) -> Result<u64> {
    let datatype: DataType = input.datatype.parse().map_err(|_| Error::UnknownDatatype {
        input: spec.name.clone(),
        got: clip(input.datatype),
    })?;
    if datatype != spec.datatype {
        return Err(Error::WrongDatatype {
            input: spec.name.clone(),
            expected: spec.datatype.as_str(),
            got: datatype.as_str(),
        });
    }
    if input.shape.len() != spec.shape.len() {
        return Err(Error::WrongRank {
            input: spec.name.clone(),
            expected: spec.shape.len(),
            shape: spec.shape_string(),
            got: input.shape.len(),
        });
    }
    let mut elements: u64 = 1;
    for (axis, (&got, dim)) in input.shape.iter().zip(&spec.shape).enumerate() {
        if got < 1 {
            return Err(Error::InvalidDimension {
                input: spec.name.clone(),
                axis,
                got,
            });
        }
        let got = got as u64;
        match dim {
            Dim::Fixed(expected) if *expected != got => {
                return Err(Error::WrongDimension {
                    input: spec.name.clone(),
                    axis,
                    expected: *expected,
                    got: got as i64,
                });
            }
            Dim::Fixed(_) => {}
            Dim::Dynamic(symbol) => match symbols.get(symbol.as_str()) {
                Some(&(first_input, first)) if first != got => {
                    return Err(Error::InconsistentDimension {
                        symbol: symbol.clone(),
                        first_input: first_input.to_owned(),
                        first,
                        input: spec.name.clone(),
                        got,
                    });
                }
                Some(_) => {}
                None => {
                    symbols.insert(symbol, (&spec.name, got));
                }
            },
        }
        elements = elements.saturating_mul(got);
    }
    if elements > limits.max_input_elements {
        return Err(Error::TooManyElements {
            input: spec.name.clone(),
            elements,
            limit: limits.max_input_elements,
        });
    }
    Ok(elements)
}

/// Copies a checked input into an engine tensor.
pub(crate) fn to_engine_tensor(input: &InputTensor<'_>, spec: &TensorSpec) -> Result<TValue> {
    let datum = spec.datatype.to_datum().ok_or_else(|| {
        Error::Execution(format!("input `{}`: BYTES needs a tokenizer", spec.name))
    })?;
    if spec.datatype == DataType::Bool
        && let Some(index) = input.data.iter().position(|b| *b > 1)
    {
        return Err(Error::InvalidElement {
            input: spec.name.clone(),
            index: index as u64,
            datatype: "BOOL",
        });
    }
    let shape: Vec<usize> = input.shape.iter().map(|d| *d as usize).collect();
    let mut tensor = Tensor::zero_dt(datum, &shape).map_err(crate::error::execution)?;
    // Sizes were checked above; bool bytes are 0 or 1.
    tensor
        .try_as_plain_ram_mut()
        .map_err(crate::error::execution)?
        .as_bytes_mut()
        .copy_from_slice(input.data);
    Ok(tensor.into_tvalue())
}

/// Takes an engine output as a response tensor.
pub(crate) fn to_output_tensor(name: &str, value: TValue) -> Result<OutputTensor> {
    let datatype = DataType::from_datum(value.datum_type())
        .filter(|d| *d != DataType::Bytes)
        .ok_or_else(|| {
            Error::Execution(format!(
                "output `{name}` has a type the protocol cannot carry"
            ))
        })?;
    let tensor = value.into_tensor();
    // `data()` reads the bytes in place, which needs host-memory storage.
    if !tensor.is_plain_ram() {
        return Err(Error::Execution(format!(
            "output `{name}` is not in host memory"
        )));
    }
    Ok(OutputTensor {
        name: name.to_owned(),
        datatype,
        tensor,
    })
}

/// Decodes a `BYTES` tensor of `count` elements: each a 4-byte
/// little-endian length and that many bytes, which must be UTF-8.
pub(crate) fn decode_strings<'a>(input: &str, data: &'a [u8], count: u64) -> Result<Vec<&'a str>> {
    let mut rest = data;
    let mut out = Vec::with_capacity(count.min(1024) as usize);
    for index in 0..count {
        let bad = |detail| Error::InvalidText {
            input: input.to_owned(),
            index,
            detail,
        };
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("missing its 4-byte length prefix"))?;
        let len = u32::from_le_bytes(*len) as usize;
        let (bytes, tail) = tail
            .split_at_checked(len)
            .ok_or_else(|| bad("its length prefix runs past the end of the data"))?;
        out.push(std::str::from_utf8(bytes).map_err(|_| bad("not valid UTF-8"))?);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(Error::ByteLength {
            input: input.to_owned(),
            expected: (data.len() - rest.len()) as u64,
            got: data.len() as u64,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(shape: Vec<Dim>) -> TensorSpec {
        TensorSpec {
            name: "x".into(),
            datatype: DataType::F32,
            shape,
        }
    }

    #[test]
    fn clip_keeps_names_short_and_valid() {
        assert_eq!(clip("input"), "input");
        let long = "é".repeat(100);
        let c = clip(&long);
        assert!(c.len() <= 64 + "…".len());
    }

    #[test]
    fn strings_decode_and_reject_bad_framing() {
        let mut data = Vec::new();
        for s in ["ab", "", "ü"] {
            data.extend_from_slice(&(s.len() as u32).to_le_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        assert_eq!(decode_strings("t", &data, 3).unwrap(), vec!["ab", "", "ü"]);
        assert!(matches!(
            decode_strings("t", &data, 4),
            Err(Error::InvalidText { index: 3, .. })
        ));
        assert!(matches!(
            decode_strings("t", &data, 2),
            Err(Error::ByteLength { .. })
        ));
        let bad = [1, 0, 0, 0, 0xff];
        assert!(matches!(
            decode_strings("t", &bad, 1),
            Err(Error::InvalidText {
                detail: "not valid UTF-8",
                ..
            })
        ));
    }

    proptest! {
        /// Random shapes and byte lengths never panic, and never pass unless
        /// the byte count is exactly right and within the bound; a passing
        /// input converts without allocating more than the bound.
        #[test]
        fn shape_checks_never_panic_or_overallocate(
            shape in proptest::collection::vec(any::<i64>(), 0..5),
            data_len in 0usize..4096,
            dims in proptest::collection::vec(prop_oneof![
                (1u64..8).prop_map(Dim::Fixed),
                Just(Dim::Dynamic("n".into())),
            ], 0..5),
        ) {
            let limits = Limits {
                max_input_elements: 1024,
                max_text_items: 8,
                int8_as_float: true,
            };
            let spec = spec(dims);
            let data = vec![0u8; data_len];
            let input = InputTensor { name: "x", datatype: "FP32", shape: &shape, data: &data };
            if let Ok(counts) = check_shapes(std::slice::from_ref(&spec), &[&input], &limits) {
                prop_assert!(counts[0] <= 1024);
                prop_assert_eq!(counts[0] * 4, data_len as u64);
                let t = to_engine_tensor(&input, &spec).unwrap();
                prop_assert_eq!(t.len() as u64, counts[0]);
            }
        }

        #[test]
        fn string_decoding_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..64),
            count in 0u64..10,
        ) {
            let _ = decode_strings("t", &data, count);
        }
    }
}
