//! Turning a row's raw JSON values (its id, its carried fields) into the job's planned
//! column types, or a row error saying which value did not fit and what to do.

use serde_json::value::RawValue;

use crate::job::ColumnType;
use crate::uri::abbreviated;

/// One value converted to its column's type.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int64(i64),
    UInt64(u64),
    Float64(f64),
    Bool(bool),
    /// A `utf8` value, or a `json` column's JSON text.
    Text(String),
}

/// Which column a value is for, to name it in errors.
#[derive(Debug, Clone, Copy)]
pub enum Column<'a> {
    Id,
    Carried(&'a str),
}

/// Converts `raw` to `ty`. JSON `null` is a null cell (the id refuses it); a `utf8` column
/// takes strings and also numbers and booleans as their JSON text (an id column without a
/// planned type, or one typed by an older planner); a `json` column takes anything. Any
/// other mismatch (`"abc"` or `1.5` for `int64`) is an error naming the field, the value and
/// the job's type.
pub fn convert(raw: &RawValue, ty: ColumnType, column: Column<'_>) -> Result<Cell, String> {
    let text = raw.get().trim();
    if text == "null" {
        return match column {
            Column::Id => Err("id is null; give every row an id".into()),
            Column::Carried(_) => Ok(Cell::Null),
        };
    }
    let converted = match ty {
        ColumnType::Int64 => text.parse().ok().map(Cell::Int64),
        ColumnType::UInt64 => text.parse().ok().map(Cell::UInt64),
        ColumnType::Float64 if is_number(text) => text.parse().ok().map(Cell::Float64),
        ColumnType::Float64 => None,
        ColumnType::Bool => match text {
            "true" => Some(Cell::Bool(true)),
            "false" => Some(Cell::Bool(false)),
            _ => None,
        },
        ColumnType::Utf8 if text.starts_with('"') => {
            serde_json::from_str::<String>(text).ok().map(Cell::Text)
        }
        ColumnType::Utf8 if is_number(text) || text == "true" || text == "false" => {
            Some(Cell::Text(text.to_string()))
        }
        ColumnType::Utf8 => None,
        ColumnType::Json => Some(Cell::Text(text.to_string())),
    };
    converted.ok_or_else(|| mismatch(text, ty, column))
}

fn is_number(text: &str) -> bool {
    matches!(text.as_bytes().first(), Some(b'-' | b'0'..=b'9'))
}

fn mismatch(text: &str, ty: ColumnType, column: Column<'_>) -> String {
    let value = abbreviated(text, 60);
    let what = match ty {
        ColumnType::Int64 => "an integer from -2^63 to 2^63-1",
        ColumnType::UInt64 => "an integer from 0 to 2^64-1",
        ColumnType::Float64 => "a number",
        ColumnType::Bool => "true or false",
        ColumnType::Utf8 => "a string",
        ColumnType::Json => "JSON",
    };
    let ty = ty.as_str();
    match column {
        Column::Id => format!(
            "id {value} does not fit the job's id column, typed {ty} at planning (from the input's first row or column type), which needs {what}; give every row's id one type, or leave the id out for line-number ids"
        ),
        Column::Carried(name) => format!(
            "field \"{name}\" value {value} does not fit the job's column \"{name}\", typed {ty} at planning (from the input's first row or column type), which needs {what}; give the field one type in every row, or use JSONL output, which keeps values as written"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    fn id(text: &str, ty: ColumnType) -> Result<Cell, String> {
        convert(&raw(text), ty, Column::Id)
    }

    #[test]
    fn values_of_the_planned_type_convert_exactly() {
        assert_eq!(
            id("9223372036854775807", ColumnType::Int64),
            Ok(Cell::Int64(i64::MAX))
        );
        assert_eq!(id("-3", ColumnType::Int64), Ok(Cell::Int64(-3)));
        assert_eq!(
            id("18446744073709551615", ColumnType::UInt64),
            Ok(Cell::UInt64(u64::MAX))
        );
        assert_eq!(id("1e3", ColumnType::Float64), Ok(Cell::Float64(1000.0)));
        assert_eq!(id("7", ColumnType::Float64), Ok(Cell::Float64(7.0)));
        assert_eq!(id("false", ColumnType::Bool), Ok(Cell::Bool(false)));
        assert_eq!(
            id(r#""caf\u00e9 \"x\"""#, ColumnType::Utf8),
            Ok(Cell::Text("café \"x\"".into()))
        );
        // An unplanned id column is utf8: numbers keep their JSON text.
        assert_eq!(id("17", ColumnType::Utf8), Ok(Cell::Text("17".into())));
        let json = convert(
            &raw(r#"{"a": [1, 2]}"#),
            ColumnType::Json,
            Column::Carried("m"),
        );
        assert_eq!(json, Ok(Cell::Text(r#"{"a": [1, 2]}"#.into())));
        let null = convert(&raw("null"), ColumnType::Int64, Column::Carried("year"));
        assert_eq!(null, Ok(Cell::Null));
    }

    #[test]
    fn values_that_do_not_fit_are_errors_naming_field_value_and_type() {
        let err = id(r#""abc""#, ColumnType::Int64).unwrap_err();
        assert!(
            err.contains(r#"id "abc""#) && err.contains("typed int64") && err.contains("one type"),
            "{err}"
        );
        assert!(id("1.5", ColumnType::Int64).is_err());
        assert!(id("-1", ColumnType::UInt64).is_err());
        assert!(id("9223372036854775808", ColumnType::Int64).is_err());
        assert!(id(r#""1""#, ColumnType::Float64).is_err());
        assert!(id("1", ColumnType::Bool).is_err());
        assert!(id("[1]", ColumnType::Utf8).is_err());
        assert!(
            id("null", ColumnType::Utf8)
                .unwrap_err()
                .contains("id is null")
        );
        let err = convert(&raw("true"), ColumnType::Float64, Column::Carried("score")).unwrap_err();
        assert!(
            err.contains(r#"field "score" value true"#) && err.contains("typed float64"),
            "{err}"
        );
    }
}
