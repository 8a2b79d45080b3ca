//! Rows from Parquet record batches: the text, id and carried columns by name, checked
//! against the file's schema before any row is read.

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Schema};
use serde_json::value::RawValue;

use super::{Row, RowFields, raw_string};

/// The root columns a job reads from a Parquet file, by their index in the file's schema.
#[derive(Debug, Clone, PartialEq)]
pub struct ParquetColumns {
    pub text: usize,
    pub id: Option<usize>,
    pub carried: Vec<usize>,
}

impl ParquetColumns {
    /// Finds each named column and checks its type: text must be a string column, an id a
    /// string or integer column. The error names the column, the file's columns and what to
    /// change.
    pub fn resolve(schema: &Schema, fields: &RowFields) -> Result<Self, String> {
        let find = |name: &str, role: &str| -> Result<usize, String> {
            schema.index_of(name).map_err(|_| {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                format!(
                    "the Parquet schema has no column \"{name}\" ({role}); its columns are [{}]",
                    names.join(", ")
                )
            })
        };
        let text = find(fields.text, "input.text_field")?;
        let text_type = schema.field(text).data_type();
        if !is_string(text_type) {
            return Err(format!(
                "column \"{}\" (input.text_field) is {text_type}, expected a string column (utf8, large_utf8 or utf8_view)",
                fields.text
            ));
        }
        let id = match fields.id {
            None => None,
            Some(name) => {
                let index = find(name, "input.id_field")?;
                let id_type = schema.field(index).data_type();
                if !is_string(id_type) && !id_type.is_integer() {
                    return Err(format!(
                        "column \"{name}\" (input.id_field) is {id_type}, expected an integer or string column"
                    ));
                }
                Some(index)
            }
        };
        let carried = fields
            .carried
            .iter()
            .map(|name| find(name, "output.include_fields"))
            .collect::<Result<_, _>>()?;
        Ok(Self { text, id, carried })
    }

    /// The root columns to read, in schema order and without repeats.
    pub fn projection(&self) -> Vec<usize> {
        let mut roots: Vec<usize> = std::iter::once(self.text)
            .chain(self.id)
            .chain(self.carried.iter().copied())
            .collect();
        roots.sort_unstable();
        roots.dedup();
        roots
    }
}

fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// Reads every row of a batch (projected or not: columns are found by name), or says what
/// is wrong with each bad one (a null text or id). `fields` names the columns.
pub fn batch_rows(
    batch: &RecordBatch,
    fields: &RowFields,
) -> Result<Vec<Result<Row, String>>, String> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| format!("column \"{name}\" missing from the record batch"))
    };
    let text = column(fields.text)?;
    let id = fields.id.map(column).transpose()?;
    let carried: Vec<&dyn Array> = fields
        .carried
        .iter()
        .map(|name| column(name).map(|c| c.as_ref()))
        .collect::<Result<_, _>>()?;
    let options = FormatOptions::default();
    let id_format = id
        .map(|a| ArrayFormatter::try_new(a.as_ref(), &options))
        .transpose()
        .map_err(|e| e.to_string())?;
    let carried_format: Vec<ArrayFormatter> = carried
        .iter()
        .map(|a| ArrayFormatter::try_new(*a, &options))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        rows.push((|| {
            let text = string_at(text.as_ref(), i)
                .ok_or_else(|| format!("column \"{}\" is null", fields.text))?;
            let id = match (&id, &id_format, fields.id) {
                (Some(array), Some(format), Some(name)) => {
                    if array.is_null(i) {
                        return Err(format!("column \"{name}\" (the id) is null"));
                    }
                    Some(json_value(array.as_ref(), format, i))
                }
                _ => None,
            };
            let carried = carried
                .iter()
                .zip(&carried_format)
                .map(|(array, format)| json_value(*array, format, i))
                .collect();
            Ok(Row { id, text, carried })
        })());
    }
    Ok(rows)
}

fn string_at(array: &dyn Array, i: usize) -> Option<String> {
    if array.is_null(i) {
        return None;
    }
    match array.data_type() {
        DataType::Utf8 => Some(array.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Some(array.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Some(array.as_string_view().value(i).to_string()),
        _ => None,
    }
}

/// One value as JSON: integers and finite floats as numbers (every digit kept), booleans,
/// strings, null; anything else (dates, decimals, lists) as its text.
fn json_value(array: &dyn Array, format: &ArrayFormatter, i: usize) -> Box<RawValue> {
    if array.is_null(i) {
        return RawValue::from_string("null".into()).expect("null is JSON");
    }
    let text = format.value(i).to_string();
    let data_type = array.data_type();
    let as_number = data_type.is_integer()
        || (data_type.is_floating() && text.parse::<f64>().is_ok_and(f64::is_finite));
    if (as_number || matches!(data_type, DataType::Boolean))
        && let Ok(raw) = RawValue::from_string(text.clone())
    {
        return raw;
    }
    if let Some(s) = string_at(array, i) {
        return raw_string(&s);
    }
    raw_string(&text)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Float64Array, Int64Array, LargeStringArray, StringArray, UInt64Array};
    use arrow_schema::Field;

    use super::*;

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            (
                "id",
                Arc::new(UInt64Array::from(vec![u64::MAX, 7])) as Arc<dyn Array>,
            ),
            (
                "text",
                Arc::new(LargeStringArray::from(vec![Some("a"), None])) as _,
            ),
            (
                "score",
                Arc::new(Float64Array::from(vec![Some(0.5), None])) as _,
            ),
            ("n", Arc::new(Int64Array::from(vec![-3, 4])) as _),
            (
                "title",
                Arc::new(StringArray::from(vec!["t\"1", "t2"])) as _,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn rows_keep_ids_exactly_and_carry_typed_values() {
        let carried = ["score".to_string(), "title".to_string(), "n".to_string()];
        let fields = RowFields {
            text: "text",
            id: Some("id"),
            carried: &carried,
        };
        let rows = batch_rows(&batch(), &fields).unwrap();
        let first = rows[0].as_ref().unwrap();
        assert_eq!(first.id.as_deref().unwrap().get(), "18446744073709551615");
        assert_eq!(first.text, "a");
        let values: Vec<&str> = first.carried.iter().map(|v| v.get()).collect();
        assert_eq!(values, ["0.5", r#""t\"1""#, "-3"]);
        assert_eq!(rows[1].as_ref().unwrap_err(), "column \"text\" is null");
    }

    #[test]
    fn columns_are_checked_against_the_schema_before_reading() {
        let schema = batch().schema();
        let missing = ["nope".to_string()];
        let err = ParquetColumns::resolve(
            &schema,
            &RowFields {
                text: "text",
                id: None,
                carried: &missing,
            },
        )
        .unwrap_err();
        assert!(
            err.contains("no column \"nope\"") && err.contains("[id, text, score, n, title]"),
            "{err}"
        );
        let err = ParquetColumns::resolve(&schema, &RowFields::new("n", None)).unwrap_err();
        assert!(err.contains("is Int64, expected a string column"), "{err}");
        let err =
            ParquetColumns::resolve(&schema, &RowFields::new("text", Some("score"))).unwrap_err();
        assert!(
            err.contains("expected an integer or string column"),
            "{err}"
        );
        let ok = ParquetColumns::resolve(&schema, &RowFields::new("text", Some("id"))).unwrap();
        assert_eq!(ok.projection(), vec![0, 1]);
        let schema = Schema::new(vec![Field::new("t", DataType::Utf8View, true)]);
        assert!(ParquetColumns::resolve(&schema, &RowFields::new("t", None)).is_ok());
    }
}
