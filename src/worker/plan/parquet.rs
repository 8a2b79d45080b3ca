//! Planning Parquet inputs from their footers alone: row groups are the unit of work (a large
//! one split by row ranges), the columns a job names are checked against each file's schema,
//! and the output's column types come from the input's.

use arrow_schema::{DataType, Schema};
use parquet::arrow::parquet_to_arrow_schema;

use super::pack::Packer;
use crate::job::accounting::PlannedObject;
use crate::job::{ColumnType, InputPiece, JobSpec, OutputColumns, PieceLayout};
use crate::storage::ObjectInfo;
use crate::storage::parquet::S3ParquetReader;
use crate::storage::records::RowFields;
use crate::storage::records::parquet::ParquetColumns;
use crate::worker::{TaskError, WorkerContext};

/// Reads one file's footer, checks its columns, and adds its row ranges to the shards being
/// filled. Returns what planning knows of it and the output column types its schema gives.
pub(super) async fn cut_file(
    ctx: &WorkerContext,
    spec: &JobSpec,
    object: &ObjectInfo,
    packer: &mut Packer,
) -> Result<(PlannedObject, OutputColumns), TaskError> {
    let uri = &object.uri;
    let mut reader = S3ParquetReader::new(
        ctx.storage.clone(),
        uri.clone(),
        object.size,
        Some(object.etag.clone()),
    );
    let failure = reader.failure();
    let metadata = reader.metadata().await.map_err(|e| match failure.take() {
        Some(storage) => TaskError::from(storage),
        None => TaskError::permanent(format!(
            "input {uri}: not a readable Parquet file ({e}); check input.format, or that the upload completed"
        )),
    })?;
    let file = metadata.file_metadata();
    let schema = parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
        .map_err(|e| TaskError::permanent(format!("input {uri}: Parquet schema: {e}")))?;
    let fields = RowFields {
        text: &spec.input.text_field,
        id: spec.input.id_field.as_deref(),
        carried: &spec.output.include_fields,
    };
    ParquetColumns::resolve(&schema, &fields)
        .map_err(|e| TaskError::permanent(format!("input {uri}: {e}")))?;
    let columns = output_columns(spec, &schema);
    let mut planned = PlannedObject {
        uri: uri.to_string(),
        etag: object.etag.clone(),
        bytes: object.size,
        ..Default::default()
    };
    let piece = |start: u64, end: u64| InputPiece {
        uri: uri.to_string(),
        start,
        end,
        first_line: start + 1,
        rows: end - start,
        blank: 0,
        etag: object.etag.clone(),
        header: None,
        layout: PieceLayout::ParquetRows,
        counted: true,
    };
    // Consecutive row groups share a piece while the shard has room; a row group larger
    // than the room is cut into row ranges of about the room's size.
    let mut open: Option<(u64, u64, u64)> = None;
    let mut first_row = 0u64;
    for group in metadata.row_groups() {
        let rows = group.num_rows().max(0) as u64;
        let bytes = group.total_byte_size().max(0) as u64;
        planned.records += rows;
        if rows == 0 {
            continue;
        }
        let per_row = (bytes / rows).max(1);
        let mut at = first_row;
        let end_of_group = first_row + rows;
        while at < end_of_group {
            let (start, _, held) = open.unwrap_or((at, at, 0));
            let room_rows = (packer.room().saturating_sub(held) / per_row).max(1);
            let take = room_rows.min(end_of_group - at);
            let held = held + take * per_row;
            at += take;
            if packer.fills(held) {
                packer.add(piece(start, at), held);
                open = None;
            } else {
                open = Some((start, at, held));
            }
        }
        first_row = end_of_group;
    }
    if let Some((start, end, held)) = open {
        packer.add(piece(start, end), held);
    }
    Ok((planned, columns))
}

/// The output column types a Parquet input gives: the id and carried columns keep their
/// type where the output has one (integers, floats, booleans, strings); others are written
/// as text.
fn output_columns(spec: &JobSpec, schema: &Schema) -> OutputColumns {
    let type_of = |name: &str| {
        schema
            .field_with_name(name)
            .map_or(ColumnType::Utf8, |f| column_type(f.data_type()))
    };
    OutputColumns {
        id: spec
            .input
            .id_field
            .as_deref()
            .map_or(ColumnType::Utf8, type_of),
        carried: spec
            .output
            .include_fields
            .iter()
            .map(|name| (name.clone(), type_of(name)))
            .collect(),
    }
}

/// The output column type for a Parquet input column.
pub(super) fn column_type(data_type: &DataType) -> ColumnType {
    match data_type {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => ColumnType::Int64,
        DataType::UInt64 => ColumnType::UInt64,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => ColumnType::Float64,
        DataType::Boolean => ColumnType::Bool,
        _ => ColumnType::Utf8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_types_map_to_output_column_types() {
        assert_eq!(column_type(&DataType::Int32), ColumnType::Int64);
        assert_eq!(column_type(&DataType::UInt64), ColumnType::UInt64);
        assert_eq!(column_type(&DataType::Float32), ColumnType::Float64);
        assert_eq!(column_type(&DataType::LargeUtf8), ColumnType::Utf8);
        assert_eq!(column_type(&DataType::Boolean), ColumnType::Bool);
        assert_eq!(column_type(&DataType::Date32), ColumnType::Utf8);
    }
}
