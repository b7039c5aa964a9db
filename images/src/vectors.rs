//! Golden test vectors: inputs a vendor chose, the outputs the engine gave
//! for them when the image was built, and how far a later run may stray.
//!
//! The vendor writes the inputs (`model-image build --vectors INPUTS.json`):
//!
//! ```json
//! { "tolerance": { "absolute": 0.001, "relative": 0.001 },
//!   "cases": [ { "inputs": [ { "name": "input", "datatype": "FP32",
//!                               "shape": [1, 1, 8, 8], "data": [0.0, …] } ] } ] }
//! ```
//!
//! `tolerance` is optional (the default is 1e-3 for both). `data` lists the
//! elements row-major: numbers, `true`/`false` for `BOOL`, strings for
//! `BYTES`. The build adds `outputs` to each case, in the same form, and the
//! image carries the result (`format` 1). On the appliance the trial runs
//! every case and requires each output element within
//! `absolute + relative × |expected|` of its recorded value.

use std::time::{Duration, Instant};

use inference::{DataType, InputTensor, Model, OutputTensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::manifest::MAX_VECTORS_LEN;

/// The golden-vectors layout this code writes and reads.
pub const VECTORS_FORMAT: u16 = 1;
/// Most cases in one image.
const MAX_CASES: usize = 1024;
/// Most tensors in one case.
const MAX_TENSORS: usize = 64;
/// Most elements in one tensor.
const MAX_ELEMENTS: usize = 4 << 20;
/// Timed runs per case during a trial (the first also checks the outputs).
const TRIAL_RUNS: usize = 3;

/// How far an output element may be from its recorded value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    /// Allowed absolute difference.
    pub absolute: f64,
    /// Allowed difference relative to the recorded value's magnitude.
    pub relative: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            absolute: 1e-3,
            relative: 1e-3,
        }
    }
}

/// One tensor of a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tensor {
    /// Input or output name.
    pub name: String,
    /// Open Inference Protocol datatype.
    pub datatype: String,
    /// Shape; the product of its dimensions is the element count.
    pub shape: Vec<i64>,
    /// The elements, row-major.
    pub data: Vec<Value>,
}

/// One case: inputs, and (in an image) the outputs recorded at build time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// The model's inputs.
    pub inputs: Vec<Tensor>,
    /// The outputs recorded when the image was built.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<Tensor>,
}

/// What the vendor gives `model-image build`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorInputs {
    /// Tolerance for the trial; the default if absent.
    #[serde(default)]
    pub tolerance: Option<Tolerance>,
    /// The cases (inputs only).
    pub cases: Vec<Case>,
}

/// Golden vectors, as carried in an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Golden {
    /// Always [`VECTORS_FORMAT`].
    pub format: u16,
    /// How far a trial's outputs may stray.
    pub tolerance: Tolerance,
    /// The cases, each with its recorded outputs.
    pub cases: Vec<Case>,
}

/// What a trial measured.
#[derive(Debug, Clone, Copy)]
pub struct TrialReport {
    /// Cases run.
    pub cases: usize,
    /// Largest absolute difference seen on a numeric output.
    pub max_abs_diff: f64,
    /// The slowest case's median latency.
    pub worst_latency: Duration,
}

impl VendorInputs {
    /// Parses the vendor's inputs file.
    pub fn parse(bytes: &[u8]) -> Result<VendorInputs> {
        let inputs: VendorInputs = serde_json::from_slice(bytes)
            .map_err(|e| Error::format("golden inputs", e.to_string()))?;
        check_cases(&inputs.cases, false)?;
        if let Some(t) = inputs.tolerance {
            check_tolerance(t)?;
        }
        Ok(inputs)
    }

    /// Runs every case through `model` and records its outputs.
    pub fn record(&self, model: &Model) -> Result<Golden> {
        let mut cases = Vec::with_capacity(self.cases.len());
        for (i, case) in self.cases.iter().enumerate() {
            let outputs = run_case(model, case, i)?;
            let outputs = outputs
                .iter()
                .map(|o| to_tensor(o, i))
                .collect::<Result<Vec<_>>>()?;
            cases.push(Case {
                inputs: case.inputs.clone(),
                outputs,
            });
        }
        Ok(Golden {
            format: VECTORS_FORMAT,
            tolerance: self.tolerance.unwrap_or_default(),
            cases,
        })
    }
}

impl Golden {
    /// Parses golden vectors from an image.
    pub fn parse(bytes: &[u8]) -> Result<Golden> {
        if bytes.len() as u64 > MAX_VECTORS_LEN {
            return Err(Error::format("golden vectors", "over 64 MiB"));
        }
        let golden: Golden = serde_json::from_slice(bytes)
            .map_err(|e| Error::format("golden vectors", e.to_string()))?;
        if golden.format != VECTORS_FORMAT {
            return Err(Error::format(
                "golden vectors",
                format!("format {} is not supported", golden.format),
            ));
        }
        check_tolerance(golden.tolerance)?;
        check_cases(&golden.cases, true)?;
        Ok(golden)
    }

    /// The vectors as written into an image.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::format("golden vectors", e.to_string()))
    }

    /// Runs every case on `model` and compares its outputs with the
    /// recorded ones; times each case ([`TRIAL_RUNS`] runs, median).
    pub fn check(&self, model: &Model) -> Result<TrialReport> {
        let mut report = TrialReport {
            cases: self.cases.len(),
            max_abs_diff: 0.0,
            worst_latency: Duration::ZERO,
        };
        for (i, case) in self.cases.iter().enumerate() {
            let mut times = Vec::with_capacity(TRIAL_RUNS);
            let started = Instant::now();
            let outputs = run_case(model, case, i)?;
            times.push(started.elapsed());
            let diff = compare(case, &outputs, self.tolerance, i)?;
            report.max_abs_diff = report.max_abs_diff.max(diff);
            drop(outputs);
            for _ in 1..TRIAL_RUNS {
                let started = Instant::now();
                drop(run_case(model, case, i)?);
                times.push(started.elapsed());
            }
            times.sort();
            report.worst_latency = report.worst_latency.max(times[times.len() / 2]);
        }
        Ok(report)
    }
}

fn check_tolerance(t: Tolerance) -> Result<()> {
    let ok = |x: f64| x.is_finite() && (0.0..=1e6).contains(&x);
    if ok(t.absolute) && ok(t.relative) {
        Ok(())
    } else {
        Err(Error::format(
            "golden vectors",
            "tolerance values must be finite, from 0 to 1e6",
        ))
    }
}

fn check_cases(cases: &[Case], need_outputs: bool) -> Result<()> {
    let bad = |case: usize, reason: String| {
        Err(Error::format(
            "golden vectors",
            format!("case {case}: {reason}"),
        ))
    };
    if cases.is_empty() || cases.len() > MAX_CASES {
        return Err(Error::format(
            "golden vectors",
            format!("1 to {MAX_CASES} cases required"),
        ));
    }
    for (i, case) in cases.iter().enumerate() {
        if need_outputs && case.outputs.is_empty() {
            return bad(i, "no recorded outputs".into());
        }
        if !need_outputs && !case.outputs.is_empty() {
            return bad(i, "inputs files carry no outputs".into());
        }
        if case.inputs.is_empty()
            || case.inputs.len() > MAX_TENSORS
            || case.outputs.len() > MAX_TENSORS
        {
            return bad(
                i,
                format!("1 to {MAX_TENSORS} inputs and at most {MAX_TENSORS} outputs"),
            );
        }
        for t in case.inputs.iter().chain(&case.outputs) {
            if let Err(reason) = check_tensor(t) {
                return bad(i, format!("tensor `{}`: {reason}", clip(&t.name)));
            }
        }
    }
    Ok(())
}

fn check_tensor(t: &Tensor) -> Result<(), String> {
    let datatype: DataType = t
        .datatype
        .parse()
        .map_err(|_| format!("unknown datatype {}", clip(&t.datatype)))?;
    if t.name.is_empty() || t.name.len() > 256 {
        return Err("name empty or over 256 characters".into());
    }
    if t.shape.len() > 16 || t.shape.iter().any(|d| *d < 0) {
        return Err("shape must have at most 16 non-negative dimensions".into());
    }
    let elements = t
        .shape
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(usize::try_from(*d).ok()?))
        .filter(|n| *n <= MAX_ELEMENTS)
        .ok_or_else(|| format!("more than {MAX_ELEMENTS} elements"))?;
    if elements != t.data.len() {
        return Err(format!(
            "shape holds {elements} elements, data has {}",
            t.data.len()
        ));
    }
    let fits = |v: &Value| match datatype {
        DataType::Bytes => v.is_string(),
        DataType::Bool => v.is_boolean() || v.as_u64().is_some_and(|x| x <= 1),
        DataType::F16 | DataType::F32 | DataType::F64 => v.is_number(),
        _ => v.is_i64() || v.is_u64(),
    };
    if !t.data.iter().all(fits) {
        return Err(format!("an element is not a {datatype} value"));
    }
    Ok(())
}

/// The tensor's elements as raw little-endian bytes (BYTES: 4-byte
/// little-endian length, then the string).
fn raw(t: &Tensor, datatype: DataType) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(t.data.len() * datatype.size().unwrap_or(8));
    for v in &t.data {
        let out_of_range = || format!("element {v} does not fit {datatype}");
        macro_rules! int {
            ($ty:ty) => {{
                let x = v
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| v.as_u64().map(i128::from))
                    .ok_or_else(out_of_range)?;
                out.extend_from_slice(
                    &<$ty>::try_from(x)
                        .map_err(|_| out_of_range())?
                        .to_le_bytes(),
                );
            }};
        }
        match datatype {
            DataType::Bool => out.push(u8::from(
                v.as_bool().unwrap_or_else(|| v.as_u64() == Some(1)),
            )),
            DataType::U8 => int!(u8),
            DataType::U16 => int!(u16),
            DataType::U32 => int!(u32),
            DataType::U64 => int!(u64),
            DataType::I8 => int!(i8),
            DataType::I16 => int!(i16),
            DataType::I32 => int!(i32),
            DataType::I64 => int!(i64),
            DataType::F32 => {
                out.extend_from_slice(&(v.as_f64().ok_or_else(out_of_range)? as f32).to_le_bytes())
            }
            DataType::F64 => {
                out.extend_from_slice(&v.as_f64().ok_or_else(out_of_range)?.to_le_bytes())
            }
            DataType::Bytes => {
                let s = v.as_str().ok_or_else(out_of_range)?;
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            _ => {
                return Err(format!(
                    "{datatype} inputs are not supported in golden vectors"
                ));
            }
        }
    }
    Ok(out)
}

fn run_case(model: &Model, case: &Case, index: usize) -> Result<Vec<OutputTensor>> {
    let mut buffers = Vec::with_capacity(case.inputs.len());
    for t in &case.inputs {
        let datatype: DataType = t
            .datatype
            .parse()
            .map_err(|_| Error::format("golden vectors", "unknown datatype"))?;
        let bytes = raw(t, datatype).map_err(|reason| Error::Golden {
            case: index,
            reason: format!("input `{}`: {reason}", clip(&t.name)),
        })?;
        buffers.push(bytes);
    }
    let inputs: Vec<InputTensor<'_>> = case
        .inputs
        .iter()
        .zip(&buffers)
        .map(|(t, data)| InputTensor {
            name: &t.name,
            datatype: &t.datatype,
            shape: &t.shape,
            data,
        })
        .collect();
    Ok(model.infer(&inputs, &[])?)
}

/// An engine output as a golden tensor.
fn to_tensor(o: &OutputTensor, case: usize) -> Result<Tensor> {
    let values = elements(o).map_err(|reason| Error::Golden { case, reason })?;
    let data = values
        .into_iter()
        .map(|e| match e {
            Element::Number(x) if o.datatype() == DataType::Bool => Value::Bool(x != 0.0),
            Element::Number(x)
                if matches!(o.datatype(), DataType::F16 | DataType::F32 | DataType::F64) =>
            {
                serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
            }
            Element::Number(x) => Value::from(x as i64),
            Element::Text(s) => Value::String(s),
        })
        .collect::<Vec<_>>();
    if data.iter().any(Value::is_null) {
        return Err(Error::Golden {
            case,
            reason: format!("output `{}` holds NaN or infinity", clip(o.name())),
        });
    }
    Ok(Tensor {
        name: o.name().to_owned(),
        datatype: o.datatype().as_str().to_owned(),
        shape: o.shape(),
        data,
    })
}

enum Element {
    Number(f64),
    Text(String),
}

/// An output's elements, decoded from raw little-endian.
fn elements(o: &OutputTensor) -> Result<Vec<Element>, String> {
    let bytes = o.data();
    let datatype = o.datatype();
    macro_rules! each {
        ($ty:ty, $n:expr) => {
            bytes
                .chunks_exact($n)
                .map(|c| {
                    let mut a = [0u8; $n];
                    a.copy_from_slice(c);
                    Element::Number(<$ty>::from_le_bytes(a) as f64)
                })
                .collect()
        };
    }
    Ok(match datatype {
        DataType::Bool | DataType::U8 => bytes
            .iter()
            .map(|b| Element::Number(f64::from(*b)))
            .collect(),
        DataType::I8 => bytes
            .iter()
            .map(|b| Element::Number(f64::from(*b as i8)))
            .collect(),
        DataType::U16 => each!(u16, 2),
        DataType::I16 => each!(i16, 2),
        DataType::U32 => each!(u32, 4),
        DataType::I32 => each!(i32, 4),
        DataType::U64 => each!(u64, 8),
        DataType::I64 => each!(i64, 8),
        DataType::F32 => each!(f32, 4),
        DataType::F64 => each!(f64, 8),
        DataType::Bytes => {
            let mut out = Vec::new();
            let mut rest = bytes;
            while rest.len() >= 4 {
                let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let s = rest
                    .get(4..4 + len)
                    .ok_or("a BYTES output element is truncated")?;
                out.push(Element::Text(String::from_utf8_lossy(s).into_owned()));
                rest = &rest[4 + len..];
            }
            out
        }
        _ => {
            return Err(format!(
                "{datatype} outputs are not supported in golden vectors"
            ));
        }
    })
}

/// Compares a case's outputs with the recorded ones; returns the largest
/// absolute difference.
fn compare(case: &Case, got: &[OutputTensor], tolerance: Tolerance, index: usize) -> Result<f64> {
    let fail = |reason: String| Error::Golden {
        case: index,
        reason,
    };
    let mut worst = 0.0f64;
    for expected in &case.outputs {
        let out = got
            .iter()
            .find(|o| o.name() == expected.name)
            .ok_or_else(|| {
                fail(format!(
                    "the model gives no output `{}`",
                    clip(&expected.name)
                ))
            })?;
        if out.shape() != expected.shape || out.datatype().as_str() != expected.datatype {
            return Err(fail(format!(
                "output `{}` is {} {:?}, recorded as {} {:?}",
                clip(&expected.name),
                out.datatype(),
                out.shape(),
                clip(&expected.datatype),
                expected.shape
            )));
        }
        let values = elements(out).map_err(fail)?;
        for (at, (value, recorded)) in values.iter().zip(&expected.data).enumerate() {
            match (value, recorded) {
                (Element::Text(s), Value::String(r)) if s == r => {}
                (Element::Number(x), r) if r.is_number() || r.is_boolean() => {
                    let r = r
                        .as_f64()
                        .unwrap_or_else(|| f64::from(u8::from(r.as_bool() == Some(true))));
                    let diff = (x - r).abs();
                    if diff.is_nan() || diff > tolerance.absolute + tolerance.relative * r.abs() {
                        return Err(fail(format!(
                            "output `{}` element {at} differs from its recorded value by {diff:.6} \
                             (tolerance {} + {} × |recorded|)",
                            clip(&expected.name),
                            tolerance.absolute,
                            tolerance.relative
                        )));
                    }
                    worst = worst.max(diff);
                }
                _ => {
                    return Err(fail(format!(
                        "output `{}` element {at} differs from its recorded value",
                        clip(&expected.name)
                    )));
                }
            }
        }
    }
    Ok(worst)
}

/// Names from untrusted vectors, shortened for messages.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// This process's resident memory in bytes (Linux `/proc/self/statm`), for
/// the memory budget: the growth across a model load is what it costs.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
