//! Tensor datatypes in the Open Inference Protocol's spelling.

use std::fmt;
use std::str::FromStr;

use tract_onnx::prelude::DatumType;

/// A tensor element type, named as the Open Inference Protocol (KServe v2,
/// Triton) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DataType {
    /// `BOOL`, one byte, 0 or 1.
    Bool,
    /// `UINT8`.
    U8,
    /// `UINT16`.
    U16,
    /// `UINT32`.
    U32,
    /// `UINT64`.
    U64,
    /// `INT8`.
    I8,
    /// `INT16`.
    I16,
    /// `INT32`.
    I32,
    /// `INT64`.
    I64,
    /// `FP16`.
    F16,
    /// `FP32`.
    F32,
    /// `FP64`.
    F64,
    /// `BYTES`: each element a 4-byte little-endian length and that many bytes.
    Bytes,
}

const ALL: [DataType; 13] = [
    DataType::Bool,
    DataType::U8,
    DataType::U16,
    DataType::U32,
    DataType::U64,
    DataType::I8,
    DataType::I16,
    DataType::I32,
    DataType::I64,
    DataType::F16,
    DataType::F32,
    DataType::F64,
    DataType::Bytes,
];

impl DataType {
    /// The protocol's name, e.g. `FP32`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::U8 => "UINT8",
            DataType::U16 => "UINT16",
            DataType::U32 => "UINT32",
            DataType::U64 => "UINT64",
            DataType::I8 => "INT8",
            DataType::I16 => "INT16",
            DataType::I32 => "INT32",
            DataType::I64 => "INT64",
            DataType::F16 => "FP16",
            DataType::F32 => "FP32",
            DataType::F64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Bytes per element in the raw little-endian encoding; `None` for
    /// `BYTES`, whose elements have their own lengths.
    pub fn size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::U8 | DataType::I8 => 1,
            DataType::U16 | DataType::I16 | DataType::F16 => 2,
            DataType::U32 | DataType::I32 | DataType::F32 => 4,
            DataType::U64 | DataType::I64 | DataType::F64 => 8,
            DataType::Bytes => return None,
        })
    }

    /// The engine's type for this datatype.
    pub(crate) fn to_datum(self) -> Option<DatumType> {
        Some(match self {
            DataType::Bool => DatumType::Bool,
            DataType::U8 => DatumType::U8,
            DataType::U16 => DatumType::U16,
            DataType::U32 => DatumType::U32,
            DataType::U64 => DatumType::U64,
            DataType::I8 => DatumType::I8,
            DataType::I16 => DatumType::I16,
            DataType::I32 => DatumType::I32,
            DataType::I64 => DatumType::I64,
            DataType::F16 => DatumType::F16,
            DataType::F32 => DatumType::F32,
            DataType::F64 => DatumType::F64,
            DataType::Bytes => return None,
        })
    }

    /// The protocol datatype of an engine type, if it has one. Quantized
    /// engine types map to their storage type.
    pub(crate) fn from_datum(dt: DatumType) -> Option<DataType> {
        Some(match dt.unquantized() {
            DatumType::Bool => DataType::Bool,
            DatumType::U8 => DataType::U8,
            DatumType::U16 => DataType::U16,
            DatumType::U32 => DataType::U32,
            DatumType::U64 => DataType::U64,
            DatumType::I8 => DataType::I8,
            DatumType::I16 => DataType::I16,
            DatumType::I32 => DataType::I32,
            DatumType::I64 => DataType::I64,
            DatumType::F16 => DataType::F16,
            DatumType::F32 => DataType::F32,
            DatumType::F64 => DataType::F64,
            DatumType::String => DataType::Bytes,
            _ => return None,
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A datatype name that is not one of the protocol's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownDataType;

impl FromStr for DataType {
    type Err = UnknownDataType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL.into_iter()
            .find(|d| d.as_str() == s)
            .ok_or(UnknownDataType)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in ALL {
            assert_eq!(d.as_str().parse::<DataType>(), Ok(d));
        }
        assert!("fp32".parse::<DataType>().is_err());
        assert!("FLOAT".parse::<DataType>().is_err());
    }
}
