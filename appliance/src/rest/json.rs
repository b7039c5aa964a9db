//! The JSON form of an inference (KServe v2 REST) and Triton's binary
//! tensor extension, converted to and from the gRPC messages the service
//! already serves, so both forms share one code path.
//!
//! A request body is a JSON header, optionally followed by binary tensor
//! data: `Inference-Header-Content-Length` says where the header ends, and
//! each input sent that way carries `"parameters": {"binary_data_size": n}`
//! instead of `data`, in input order. Everything here is untrusted: the
//! header is parsed into typed structs at once, each input's `data` (kept as
//! raw JSON until its `datatype` is known) is flattened straight into
//! little-endian bytes, nested at most [`MAX_DEPTH`] deep, with every value
//! checked against the datatype. Memory stays within a small multiple of
//! the body, which the caller bounds.

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use wire::inference::infer_parameter::ParameterChoice;
use wire::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use wire::inference::{InferParameter, ModelInferRequest, ModelInferResponse};

use inference::DataType;

use crate::error::AppError;
use crate::state::clip;

/// How deeply a tensor's `data` may nest (one level per dimension; the
/// engine's models have at most a handful).
pub const MAX_DEPTH: usize = 32;

/// A request parameter's value.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
enum Param {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

type Params = HashMap<String, Param>;

#[derive(Deserialize)]
struct RequestHeader<'a> {
    #[serde(default)]
    id: String,
    #[serde(default)]
    parameters: Params,
    #[serde(borrow)]
    inputs: Vec<InputHeader<'a>>,
    #[serde(default)]
    outputs: Option<Vec<OutputHeader>>,
}

#[derive(Deserialize)]
struct InputHeader<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Params,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct OutputHeader {
    name: String,
    #[serde(default)]
    parameters: Params,
}

/// Which outputs the client wants as binary data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BinaryOutputs {
    /// For outputs the request does not name (`binary_data_output`).
    default: bool,
    /// Per requested output (its `binary_data` parameter).
    named: HashMap<String, bool>,
}

impl BinaryOutputs {
    fn wants(&self, name: &str) -> bool {
        self.named.get(name).copied().unwrap_or(self.default)
    }
}

/// A parsed REST inference request.
#[derive(Debug)]
pub struct Parsed {
    /// The same request in gRPC terms.
    pub request: ModelInferRequest,
    /// How the answer's outputs are to be encoded.
    pub binary: BinaryOutputs,
}

fn bad(message: String) -> AppError {
    AppError::InvalidArgument(message)
}

fn flag(params: &Params, key: &str, whose: &str) -> Result<Option<bool>, AppError> {
    match params.get(key) {
        None => Ok(None),
        Some(Param::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(format!(
            "{whose}: parameter {key} must be true or false"
        ))),
    }
}

/// Parses a request body; `header_len` is `Inference-Header-Content-Length`
/// when the client sent one.
pub fn parse_request(
    body: &Bytes,
    header_len: Option<usize>,
    model: &str,
    version: &str,
) -> Result<Parsed, AppError> {
    let header_len = header_len.unwrap_or(body.len());
    if header_len > body.len() {
        return Err(bad(format!(
            "Inference-Header-Content-Length is {header_len} but the body has {} bytes",
            body.len()
        )));
    }
    let header: RequestHeader<'_> = serde_json::from_slice(&body[..header_len]).map_err(|e| {
        bad(format!(
            "the request is not a valid inference request: {}",
            without_values(&e.to_string())
        ))
    })?;
    let mut binary = body.slice(header_len..);
    let mut inputs = Vec::with_capacity(header.inputs.len());
    let mut raw = Vec::with_capacity(header.inputs.len());
    for input in header.inputs {
        let whose = format!("input `{}`", clip(&input.name));
        let size = match input.parameters.get("binary_data_size") {
            None => None,
            Some(Param::Int(n)) => Some(
                usize::try_from(*n)
                    .map_err(|_| bad(format!("{whose}: binary_data_size must not be negative")))?,
            ),
            Some(_) => {
                return Err(bad(format!("{whose}: binary_data_size must be an integer")));
            }
        };
        let data = match (size, input.data) {
            (Some(_), Some(_)) => {
                return Err(bad(format!(
                    "{whose}: send either data or binary_data_size, not both"
                )));
            }
            (None, None) => return Err(bad(format!("{whose} has no data"))),
            (Some(n), None) => {
                if n > binary.len() {
                    return Err(bad(format!(
                        "{whose}: binary_data_size is {n} but only {} bytes of binary data remain",
                        binary.len()
                    )));
                }
                binary.split_to(n)
            }
            (None, Some(json)) => {
                let datatype = json_datatype(&input.datatype).ok_or_else(|| {
                    bad(format!(
                        "{whose}: datatype `{}` cannot be sent as JSON (use binary data)",
                        clip(&input.datatype)
                    ))
                })?;
                Bytes::from(flatten(json, datatype).map_err(|e| bad(format!("{whose}: {e}")))?)
            }
        };
        raw.push(data);
        inputs.push(InferInputTensor {
            name: input.name,
            datatype: input.datatype,
            shape: input.shape,
            ..Default::default()
        });
    }
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes of binary data follow the header that no input claims",
            binary.len()
        )));
    }
    let mut choice = BinaryOutputs {
        default: flag(&header.parameters, "binary_data_output", "the request")?.unwrap_or(false),
        named: HashMap::new(),
    };
    let mut outputs = Vec::new();
    for output in header.outputs.unwrap_or_default() {
        let whose = format!("output `{}`", clip(&output.name));
        if let Some(b) = flag(&output.parameters, "binary_data", &whose)? {
            choice.named.insert(output.name.clone(), b);
        }
        let mut parameters = HashMap::new();
        match output.parameters.get("classification") {
            None => {}
            Some(Param::Int(k)) => {
                parameters.insert(
                    "classification".to_owned(),
                    InferParameter {
                        parameter_choice: Some(ParameterChoice::Int64Param(*k)),
                    },
                );
            }
            Some(_) => {
                return Err(bad(format!(
                    "{whose}: parameter classification must be an integer"
                )));
            }
        }
        outputs.push(InferRequestedOutputTensor {
            name: output.name,
            parameters,
        });
    }
    Ok(Parsed {
        request: ModelInferRequest {
            model_name: model.to_owned(),
            model_version: version.to_owned(),
            id: header.id,
            parameters: HashMap::new(),
            inputs,
            outputs,
            raw_input_contents: raw,
        },
        binary: choice,
    })
}

/// A parser's message with the request's own strings and numbers taken
/// out (serde quotes the value it did not expect; that value is payload,
/// and error messages never carry payload).
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(['"', '`']) {
        let quote = rest[start..].chars().next().unwrap_or('"');
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find(quote) else {
            rest = "";
            break;
        };
        let quoted = &after[..end];
        // Field names (`inputs`) stay: they are the protocol's words, and
        // serde quotes them with backticks too.
        let keep = quote == '`'
            && !quoted.is_empty()
            && quoted.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        out.push(quote);
        out.push_str(if keep { quoted } else { "…" });
        out.push(quote);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The datatype named `name` if the JSON form carries it (all but FP16,
/// which JSON numbers cannot round-trip; it goes as binary data).
fn json_datatype(name: &str) -> Option<DataType> {
    name.parse().ok().filter(|d| *d != DataType::F16)
}

/// A tensor's JSON `data`, flat or nested, as little-endian bytes.
fn flatten(json: &RawValue, datatype: DataType) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_str(json.get());
    Flatten {
        datatype,
        out: &mut out,
        depth: 0,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(out)
}

struct Flatten<'o> {
    datatype: DataType,
    out: &'o mut Vec<u8>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Flatten<'_> {
    fn integer<E: serde::de::Error>(self, v: i128) -> Result<(), E> {
        if !matches!(
            self.datatype,
            DataType::I8
                | DataType::I16
                | DataType::I32
                | DataType::I64
                | DataType::U8
                | DataType::U16
                | DataType::U32
                | DataType::U64
                | DataType::F32
                | DataType::F64
        ) {
            return Err(self.wrong("a number"));
        }
        // The value itself stays out of the message (it is payload).
        let range = || {
            E::custom(format!(
                "a value is out of range for {}",
                self.datatype.as_str()
            ))
        };
        let out = self.out;
        match self.datatype {
            DataType::I8 => out.extend(i8::try_from(v).map_err(|_| range())?.to_le_bytes()),
            DataType::I16 => out.extend(i16::try_from(v).map_err(|_| range())?.to_le_bytes()),
            DataType::I32 => out.extend(i32::try_from(v).map_err(|_| range())?.to_le_bytes()),
            DataType::I64 => out.extend(i64::try_from(v).map_err(|_| range())?.to_le_bytes()),
            DataType::U8 => out.extend(u8::try_from(v).map_err(|_| range())?.to_le_bytes()),
            DataType::U16 => out.extend(u16::try_from(v).map_err(|_| range())?.to_le_bytes()),
            DataType::U32 => out.extend(u32::try_from(v).map_err(|_| range())?.to_le_bytes()),
            DataType::U64 => out.extend(u64::try_from(v).map_err(|_| range())?.to_le_bytes()),
            // Integers are exact in f64 up to 2^53; JSON writers print
            // whole floats as integers.
            DataType::F32 => out.extend((v as f32).to_le_bytes()),
            DataType::F64 => out.extend((v as f64).to_le_bytes()),
            // Refused above.
            _ => {}
        }
        Ok(())
    }

    fn wrong<E: serde::de::Error>(&self, found: &str) -> E {
        E::custom(format!(
            "found {found} in the data of a {} tensor",
            self.datatype.as_str()
        ))
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} values, flat or in nested arrays",
            self.datatype.as_str()
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(A::Error::custom(format!(
                "data is nested more than {MAX_DEPTH} deep"
            )));
        }
        let Flatten {
            datatype,
            out,
            depth,
        } = self;
        while seq
            .next_element_seed(Flatten {
                datatype,
                out: &mut *out,
                depth: depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        if self.datatype != DataType::Bool {
            return Err(self.wrong("true or false"));
        }
        self.out.push(u8::from(v));
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.integer(i128::from(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.integer(i128::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        match self.datatype {
            DataType::F32 => self.out.extend((v as f32).to_le_bytes()),
            DataType::F64 => self.out.extend(v.to_le_bytes()),
            _ => return Err(self.wrong("a fractional number")),
        }
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        if self.datatype != DataType::Bytes {
            return Err(self.wrong("a string"));
        }
        let len = u32::try_from(v.len()).map_err(|_| E::custom("a string is too long"))?;
        self.out.extend(len.to_le_bytes());
        self.out.extend_from_slice(v.as_bytes());
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Err(self.wrong("null"))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.wrong("an object"))
    }
}

#[derive(Serialize)]
struct ResponseHeader<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    outputs: Vec<OutputJson<'a>>,
}

#[derive(Serialize)]
struct OutputJson<'a> {
    name: &'a str,
    datatype: &'a str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// An output's raw little-endian bytes, written as a flat JSON array.
struct Data<'a> {
    datatype: DataType,
    raw: &'a [u8],
}

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fn each<S: Serializer, const N: usize, T: Serialize>(
            s: S,
            raw: &[u8],
            f: impl Fn([u8; N]) -> T,
        ) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(raw.len() / N))?;
            for chunk in raw.chunks_exact(N) {
                let mut a = [0u8; N];
                a.copy_from_slice(chunk);
                seq.serialize_element(&f(a))?;
            }
            seq.end()
        }
        let raw = self.raw;
        match self.datatype {
            DataType::Bool => each(s, raw, |[b]: [u8; 1]| b != 0),
            DataType::I8 => each(s, raw, i8::from_le_bytes),
            DataType::I16 => each(s, raw, i16::from_le_bytes),
            DataType::I32 => each(s, raw, i32::from_le_bytes),
            DataType::I64 => each(s, raw, i64::from_le_bytes),
            DataType::U8 => each(s, raw, u8::from_le_bytes),
            DataType::U16 => each(s, raw, u16::from_le_bytes),
            DataType::U32 => each(s, raw, u32::from_le_bytes),
            DataType::U64 => each(s, raw, u64::from_le_bytes),
            DataType::F32 => each(s, raw, f32::from_le_bytes),
            DataType::F64 => each(s, raw, f64::from_le_bytes),
            DataType::Bytes => {
                let mut seq = s.serialize_seq(None)?;
                let mut rest = raw;
                while rest.len() >= 4 {
                    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                    let end = (4 + len).min(rest.len());
                    seq.serialize_element(&String::from_utf8_lossy(&rest[4..end]))?;
                    rest = &rest[end..];
                }
                seq.end()
            }
            // FP16: `json_datatype` never yields it.
            _ => Err(serde::ser::Error::custom("no JSON form for this datatype")),
        }
    }
}

/// An encoded answer: the body, and the JSON header's length when binary
/// data follows it.
#[derive(Debug)]
pub struct Encoded {
    /// The whole body.
    pub body: Vec<u8>,
    /// `Inference-Header-Content-Length`, when any output is binary.
    pub header_len: Option<usize>,
}

/// Encodes an answer, each output as JSON or binary as the client asked.
pub fn encode_response(
    response: &ModelInferResponse,
    binary: &BinaryOutputs,
) -> Result<Encoded, AppError> {
    let empty = Bytes::new();
    let mut tail: Vec<&[u8]> = Vec::new();
    let mut outputs = Vec::with_capacity(response.outputs.len());
    for (i, output) in response.outputs.iter().enumerate() {
        let raw = response.raw_output_contents.get(i).unwrap_or(&empty);
        let (parameters, data) = if binary.wants(&output.name) {
            tail.push(raw);
            (
                Some(BinarySize {
                    binary_data_size: raw.len(),
                }),
                None,
            )
        } else {
            let datatype = json_datatype(&output.datatype).ok_or_else(|| {
                bad(format!(
                    "output `{}` ({}) can only be returned as binary data: \
                     set its binary_data parameter",
                    clip(&output.name),
                    output.datatype
                ))
            })?;
            (None, Some(Data { datatype, raw }))
        };
        outputs.push(OutputJson {
            name: &output.name,
            datatype: &output.datatype,
            shape: &output.shape,
            parameters,
            data,
        });
    }
    let header = ResponseHeader {
        model_name: &response.model_name,
        model_version: &response.model_version,
        id: &response.id,
        outputs,
    };
    let mut body = serde_json::to_vec(&header)
        .map_err(|e| AppError::Internal(format!("encoding a JSON answer: {e}")))?;
    let header_len = (!tail.is_empty()).then_some(body.len());
    for raw in tail {
        body.extend_from_slice(raw);
    }
    Ok(Encoded { body, header_len })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use wire::inference::model_infer_response::InferOutputTensor;

    fn parse(body: &str) -> Result<Parsed, AppError> {
        parse_request(&Bytes::from(body.to_owned()), None, "m", "")
    }

    fn message(e: AppError) -> String {
        match e {
            AppError::InvalidArgument(m) => m,
            other => panic!("not InvalidArgument: {other:?}"),
        }
    }

    #[test]
    fn nested_and_flat_data_give_the_same_bytes() {
        let flat = parse(
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2.5,-3,4]}]}"#,
        )
        .unwrap();
        let nested = parse(
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2.5],[-3,4]]}]}"#,
        )
        .unwrap();
        let expect: Vec<u8> = [1.0f32, 2.5, -3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(flat.request.raw_input_contents[0], expect);
        assert_eq!(nested.request.raw_input_contents[0], expect);
        assert_eq!(flat.request.inputs[0].shape, vec![2, 2]);
        assert_eq!(flat.request.model_name, "m");
    }

    #[test]
    fn values_are_checked_against_the_datatype() {
        for (datatype, data, needle) in [
            ("INT8", "[128]", "out of range for INT8"),
            ("UINT8", "[-1]", "out of range for UINT8"),
            ("INT64", "[1.5]", "fractional number"),
            ("FP32", r#"["1"]"#, "a string"),
            ("FP32", "[null]", "null"),
            ("BOOL", "[1]", "a number"),
            ("BYTES", "[1]", "a number"),
            ("FP32", r#"[{"a":1}]"#, "an object"),
        ] {
            let body = format!(
                r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"{datatype}","data":{data}}}]}}"#
            );
            let m = message(parse(&body).unwrap_err());
            assert!(m.contains(needle), "{datatype} {data}: {m}");
            assert!(m.starts_with("input `x`"), "{m}");
        }
        let ok = parse(
            r#"{"inputs":[{"name":"s","shape":[2],"datatype":"BYTES","data":["ab",""]},
                          {"name":"b","shape":[2],"datatype":"BOOL","data":[true,false]}]}"#,
        )
        .unwrap();
        assert_eq!(
            ok.request.raw_input_contents[0],
            b"\x02\0\0\0ab\0\0\0\0".to_vec()
        );
        assert_eq!(ok.request.raw_input_contents[1], vec![1, 0]);
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        for depth in [MAX_DEPTH + 1, 100_000] {
            let data = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let body = format!(
                r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":{data}}}]}}"#
            );
            let m = message(parse(&body).unwrap_err());
            assert!(m.contains("nested") || m.contains("recursion"), "{m}");
        }
        // Deep nesting elsewhere in the header meets serde_json's own limit.
        let body = format!(r#"{{"x":{}1{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(&body).is_err());
    }

    #[test]
    fn binary_inputs_take_their_bytes_in_order() {
        let header = r#"{"inputs":[
            {"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},
            {"name":"b","shape":[1],"datatype":"INT64","data":[7]},
            {"name":"c","shape":[1],"datatype":"UINT8","parameters":{"binary_data_size":1}}],
            "outputs":[{"name":"y","parameters":{"binary_data":true,"classification":3}}]}"#;
        let mut body = header.as_bytes().to_vec();
        body.extend([1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let body = Bytes::from(body);
        let p = parse_request(&body, Some(header.len()), "m", "2").unwrap();
        let raw = &p.request.raw_input_contents;
        assert_eq!(raw[0], vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(raw[1], 7i64.to_le_bytes().to_vec());
        assert_eq!(raw[2], vec![9]);
        assert!(p.binary.wants("y"));
        assert!(!p.binary.wants("z"));
        let class = &p.request.outputs[0].parameters["classification"];
        assert_eq!(class.parameter_choice, Some(ParameterChoice::Int64Param(3)));
        // Too few, too many, or a header length past the end.
        let short = body.slice(..body.len() - 1);
        let m = message(parse_request(&short, Some(header.len()), "m", "").unwrap_err());
        assert!(m.contains("only 0 bytes"), "{m}");
        let mut long = body.to_vec();
        long.push(0);
        let m =
            message(parse_request(&Bytes::from(long), Some(header.len()), "m", "").unwrap_err());
        assert!(m.contains("no input claims"), "{m}");
        let m = message(parse_request(&body, Some(body.len() + 1), "m", "").unwrap_err());
        assert!(m.contains("Inference-Header-Content-Length"), "{m}");
    }

    #[test]
    fn parser_messages_carry_no_values() {
        for (body, kept) in [
            (r#"{"inputs": ["secret"]}"#, "invalid type: string"),
            (
                r#"{"inputs": [{"name": 12345678}]}"#,
                "invalid type: integer",
            ),
            (
                r#"{"inputs": [{"name": "x", "shape": ["secret"]}]}"#,
                "expected i64",
            ),
            (r#"{"id": 5}"#, "invalid type"),
            (r#"{"inputs": [{"name": "x"}]}"#, "missing field `shape`"),
        ] {
            let m = message(parse(body).unwrap_err());
            assert!(!m.contains("secret") && !m.contains("12345678"), "{m}");
            assert!(m.contains(kept), "{m}");
        }
        assert_eq!(
            without_values(r#"a "b" c `d` `E1` "#),
            r#"a "…" c `d` `…` "#
        );
        assert_eq!(without_values(r#"open "quote"#), "open ");
    }

    #[test]
    fn request_shapes_are_checked() {
        for (body, needle) in [
            ("not json", "not a valid inference request"),
            (r#"{"inputs":{}}"#, "not a valid inference request"),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#,
                "has no data",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP16","data":[1]}]}"#,
                "cannot be sent as JSON",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],
                    "parameters":{"binary_data_size":4}}]}"#,
                "not both",
            ),
            (
                r#"{"inputs":[],"outputs":[{"name":"y","parameters":{"binary_data":1}}]}"#,
                "true or false",
            ),
            (
                r#"{"inputs":[],"outputs":[{"name":"y","parameters":{"classification":"3"}}]}"#,
                "must be an integer",
            ),
        ] {
            let m = message(parse(body).unwrap_err());
            assert!(m.contains(needle), "{body}: {m}");
        }
    }

    fn response(outputs: Vec<(&str, &str, Vec<i64>, Vec<u8>)>) -> ModelInferResponse {
        ModelInferResponse {
            model_name: "m".into(),
            model_version: "3".into(),
            id: "req-1".into(),
            parameters: HashMap::new(),
            outputs: outputs
                .iter()
                .map(|(n, d, s, _)| InferOutputTensor {
                    name: (*n).into(),
                    datatype: (*d).into(),
                    shape: s.clone(),
                    ..Default::default()
                })
                .collect(),
            raw_output_contents: outputs.into_iter().map(|o| Bytes::from(o.3)).collect(),
        }
    }

    #[test]
    fn answers_are_json_or_binary_per_output() {
        let floats: Vec<u8> = [0.5f32, -1.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let r = response(vec![
            ("y", "FP32", vec![1, 2], floats.clone()),
            ("c", "BYTES", vec![1], b"\x0a\0\0\x000.500000:0".to_vec()),
            ("z", "FP16", vec![1], vec![0, 0x3c]),
        ]);
        let binary = BinaryOutputs {
            default: false,
            named: [("z".to_owned(), true)].into(),
        };
        let e = encode_response(&r, &binary).unwrap();
        let header_len = e.header_len.unwrap();
        let header: serde_json::Value = serde_json::from_slice(&e.body[..header_len]).unwrap();
        assert_eq!(header["model_version"], "3");
        assert_eq!(header["id"], "req-1");
        assert_eq!(header["outputs"][0]["data"], serde_json::json!([0.5, -1.0]));
        assert_eq!(header["outputs"][0]["shape"], serde_json::json!([1, 2]));
        assert_eq!(
            header["outputs"][1]["data"],
            serde_json::json!(["0.500000:0"])
        );
        assert_eq!(
            header["outputs"][2]["parameters"]["binary_data_size"],
            serde_json::json!(2)
        );
        assert_eq!(&e.body[header_len..], &[0, 0x3c]);
        // FP16 as JSON is refused with a way out.
        let m = message(encode_response(&r, &BinaryOutputs::default()).unwrap_err());
        assert!(m.contains("binary_data"), "{m}");
        // All binary: the tail is every output in order.
        let all = BinaryOutputs {
            default: true,
            named: HashMap::new(),
        };
        let e = encode_response(&r, &all).unwrap();
        let tail = &e.body[e.header_len.unwrap()..];
        assert_eq!(&tail[..8], floats.as_slice());
        assert_eq!(tail.len(), 8 + 14 + 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary bytes, with or without a header length, never panic.
        #[test]
        fn arbitrary_bodies_only_fail_cleanly(
            body in prop::collection::vec(any::<u8>(), 0..512),
            header_len in prop::option::of(0usize..600),
        ) {
            let _ = parse_request(&Bytes::from(body), header_len, "m", "");
        }

        /// Arbitrary JSON-ish text built from the request's own vocabulary.
        #[test]
        fn json_like_bodies_only_fail_cleanly(
            parts in prop::collection::vec(prop::sample::select(vec![
                "{", "}", "[", "]", ",", ":", "\"inputs\"", "\"name\"", "\"shape\"",
                "\"datatype\"", "\"data\"", "\"FP32\"", "\"BYTES\"", "\"INT8\"", "\"x\"",
                "1", "-1", "1.5", "1e400", "true", "null", "\"parameters\"",
                "\"binary_data_size\"", "\"outputs\"", "\"classification\"",
            ]), 0..64),
        ) {
            let _ = parse(&parts.concat());
        }

        /// Whatever FP32 values go in come back bit-exact through JSON.
        #[test]
        fn fp32_values_round_trip(values in prop::collection::vec(
            any::<f32>().prop_filter("finite", |v| v.is_finite()), 1..64,
        )) {
            let text = serde_json::to_string(&values).unwrap();
            let body = format!(
                r#"{{"inputs":[{{"name":"x","shape":[{}],"datatype":"FP32","data":{text}}}]}}"#,
                values.len()
            );
            let p = parse(&body).unwrap();
            let raw = p.request.raw_input_contents[0].to_vec();
            let r = response(vec![("y", "FP32", vec![values.len() as i64], raw)]);
            let e = encode_response(&r, &BinaryOutputs::default()).unwrap();
            let back: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
            let back: Vec<f32> = serde_json::from_value(back["outputs"][0]["data"].clone()).unwrap();
            prop_assert_eq!(
                back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }
}
