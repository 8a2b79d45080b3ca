//! The typed columns of a job's output rows (id and carried input fields), fixed once per
//! job at planning so every Parquet part of the job has the same schema.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One output column's type. JSONL input is typed from the first row planning reads
/// (`1` → `int64`, `1.5` → `float64`); CSV and TSV columns are `utf8`; Parquet columns keep
/// the input column's type where it is one of these, and `json` (the value's JSON text)
/// otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Int64,
    UInt64,
    Float64,
    Bool,
    Utf8,
    /// Any JSON value (an object, an array, null), written as its JSON text.
    Json,
}

impl ColumnType {
    /// The type a JSON value suggests: an integer that fits in 64 bits is `int64` (or
    /// `uint64` above `i64::MAX`), any other number `float64`.
    pub fn of(raw: &RawValue) -> Self {
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'"') => ColumnType::Utf8,
            Some(b't' | b'f') => ColumnType::Bool,
            Some(b'-' | b'0'..=b'9') => {
                if text.parse::<i64>().is_ok() {
                    ColumnType::Int64
                } else if text.parse::<u64>().is_ok() {
                    ColumnType::UInt64
                } else {
                    ColumnType::Float64
                }
            }
            _ => ColumnType::Json,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Int64 => "int64",
            ColumnType::UInt64 => "uint64",
            ColumnType::Float64 => "float64",
            ColumnType::Bool => "bool",
            ColumnType::Utf8 => "utf8",
            ColumnType::Json => "json",
        }
    }
}

/// The id column and the carried fields (`output.include_fields`, in that order) of a job's
/// output, as planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputColumns {
    pub id: ColumnType,
    pub carried: Vec<(String, ColumnType)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    #[test]
    fn json_values_suggest_their_column_type() {
        assert_eq!(ColumnType::of(&raw("17")), ColumnType::Int64);
        assert_eq!(ColumnType::of(&raw("-3")), ColumnType::Int64);
        assert_eq!(
            ColumnType::of(&raw("18446744073709551615")),
            ColumnType::UInt64
        );
        assert_eq!(
            ColumnType::of(&raw("18446744073709551616")),
            ColumnType::Float64
        );
        assert_eq!(ColumnType::of(&raw("1e3")), ColumnType::Float64);
        assert_eq!(ColumnType::of(&raw("\"a\"")), ColumnType::Utf8);
        assert_eq!(ColumnType::of(&raw("true")), ColumnType::Bool);
        assert_eq!(ColumnType::of(&raw("null")), ColumnType::Json);
        assert_eq!(ColumnType::of(&raw("[1]")), ColumnType::Json);
    }
}
