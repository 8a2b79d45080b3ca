//! Parquet output parts: one schema per job (`id`, the carried fields, then `embedding` or
//! `label` + `probabilities`), row groups flushed by size so a shard holds at most about one
//! row group in memory.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, FixedSizeListBuilder, Float32Builder, Float64Builder, Int64Builder,
    StringBuilder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::cells::{Cell, Column, convert};
use super::{FinishedRow, best_label};
use crate::job::{ColumnType, OutputColumns};

/// A row group is closed once its encoded size reaches this: bounds a shard's memory and
/// still gives readers large sequential reads (~10k rows of a 384-d embedding).
pub const ROW_GROUP_BYTES: usize = 16 << 20;

/// zstd level 3 (zstd's own default): embeddings barely compress at any level, and ids and
/// carried text gain most of what higher levels would give.
const ZSTD_LEVEL: i32 = 3;

/// The model's side of the schema.
#[derive(Debug, Clone)]
pub enum Values {
    /// `embedding: fixed_size_list<float32 not null>[dimension] not null`.
    Embedding { dimension: usize },
    /// `label: utf8 not null`, `probabilities: struct<one float32 field per label> not null`.
    Classes { labels: Vec<String> },
}

/// The Arrow schema of a job's Parquet parts; carried columns are nullable (a JSON `null`
/// stays null), `json` columns are utf8 tagged with the canonical `arrow.json` extension.
pub fn schema(columns: &OutputColumns, values: &Values) -> Schema {
    let mut fields = vec![Field::new("id", arrow_type(columns.id), false)];
    for (name, ty) in &columns.carried {
        let mut field = Field::new(name, arrow_type(*ty), true);
        if *ty == ColumnType::Json {
            field = field.with_metadata(std::collections::HashMap::from([(
                "ARROW:extension:name".to_string(),
                "arrow.json".to_string(),
            )]));
        }
        fields.push(field);
    }
    match values {
        Values::Embedding { dimension } => fields.push(Field::new(
            "embedding",
            DataType::FixedSizeList(item_field(), *dimension as i32),
            false,
        )),
        Values::Classes { labels } => {
            fields.push(Field::new("label", DataType::Utf8, false));
            fields.push(Field::new(
                "probabilities",
                DataType::Struct(probability_fields(labels)),
                false,
            ));
        }
    }
    Schema::new(fields)
}

fn item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float32, false))
}

fn probability_fields(labels: &[String]) -> Fields {
    labels
        .iter()
        .map(|l| Field::new(l, DataType::Float32, false))
        .collect()
}

fn arrow_type(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::Int64 => DataType::Int64,
        ColumnType::UInt64 => DataType::UInt64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Utf8 | ColumnType::Json => DataType::Utf8,
    }
}

/// Writes one part's rows into Parquet bytes, chunk by chunk; CPU work, for a blocking
/// thread.
pub(super) struct ParquetEncoder {
    writer: ArrowWriter<Vec<u8>>,
    schema: SchemaRef,
    columns: OutputColumns,
    values: Values,
}

impl ParquetEncoder {
    pub(super) fn new(columns: OutputColumns, values: Values) -> Result<Self, ParquetError> {
        Self::with_row_groups(columns, values, ROW_GROUP_BYTES)
    }

    /// As `new`, closing row groups at `row_group_bytes`.
    pub(super) fn with_row_groups(
        columns: OutputColumns,
        values: Values,
        row_group_bytes: usize,
    ) -> Result<Self, ParquetError> {
        let schema = Arc::new(schema(&columns, &values));
        let mut properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
            .set_max_row_group_bytes(Some(row_group_bytes));
        // Model outputs never repeat and their min/max say nothing: no dictionary or
        // statistics for those leaves. Byte-stream-split groups the floats' exponent bytes,
        // which zstd then squeezes: 1,333 bytes per 384-d row instead of 1,427 (plain).
        let leaves = ArrowSchemaConverter::new().convert(&schema)?;
        for leaf in leaves.columns() {
            let path = leaf.path();
            if matches!(path.parts()[0].as_str(), "embedding" | "probabilities") {
                properties = properties
                    .set_column_dictionary_enabled(ColumnPath::new(path.parts().to_vec()), false)
                    .set_column_encoding(
                        ColumnPath::new(path.parts().to_vec()),
                        Encoding::BYTE_STREAM_SPLIT,
                    )
                    .set_column_statistics_enabled(
                        ColumnPath::new(path.parts().to_vec()),
                        EnabledStatistics::None,
                    );
            }
        }
        let writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties.build()))?;
        Ok(Self {
            writer,
            schema,
            columns,
            values,
        })
    }

    /// Appends these rows (a row group is closed whenever it reaches `ROW_GROUP_BYTES`) and
    /// returns the bytes finished so far, and per row `Some(reason)` where a value did not
    /// fit its column (that row is left out).
    pub(super) fn encode(
        &mut self,
        rows: &[FinishedRow],
    ) -> Result<(Vec<u8>, Vec<Option<String>>), ParquetError> {
        let mut batch = BatchBuilder::new(&self.columns, &self.values, rows.len());
        let rejected = rows.iter().map(|row| batch.push(row).err()).collect();
        let batch = batch.finish(self.schema.clone())?;
        self.writer.write(&batch)?;
        Ok((std::mem::take(self.writer.inner_mut()), rejected))
    }

    /// Closes the last row group and writes the footer; returns the part's last bytes.
    pub(super) fn finish(mut self) -> Result<Vec<u8>, ParquetError> {
        self.writer.finish()?;
        Ok(std::mem::take(self.writer.inner_mut()))
    }
}

enum ColumnBuilder {
    Int64(Int64Builder),
    UInt64(UInt64Builder),
    Float64(Float64Builder),
    Bool(BooleanBuilder),
    Text(StringBuilder),
}

impl ColumnBuilder {
    fn new(ty: ColumnType, rows: usize) -> Self {
        match ty {
            ColumnType::Int64 => Self::Int64(Int64Builder::with_capacity(rows)),
            ColumnType::UInt64 => Self::UInt64(UInt64Builder::with_capacity(rows)),
            ColumnType::Float64 => Self::Float64(Float64Builder::with_capacity(rows)),
            ColumnType::Bool => Self::Bool(BooleanBuilder::with_capacity(rows)),
            ColumnType::Utf8 | ColumnType::Json => {
                Self::Text(StringBuilder::with_capacity(rows, rows * 16))
            }
        }
    }

    /// Cells come from `convert` with this column's type, so they always match.
    fn append(&mut self, cell: Cell) {
        match (self, cell) {
            (Self::Int64(b), Cell::Int64(v)) => b.append_value(v),
            (Self::UInt64(b), Cell::UInt64(v)) => b.append_value(v),
            (Self::Float64(b), Cell::Float64(v)) => b.append_value(v),
            (Self::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Self::Text(b), Cell::Text(v)) => b.append_value(v),
            (Self::Int64(b), _) => b.append_null(),
            (Self::UInt64(b), _) => b.append_null(),
            (Self::Float64(b), _) => b.append_null(),
            (Self::Bool(b), _) => b.append_null(),
            (Self::Text(b), _) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Self::Int64(mut b) => Arc::new(b.finish()),
            Self::UInt64(mut b) => Arc::new(b.finish()),
            Self::Float64(mut b) => Arc::new(b.finish()),
            Self::Bool(mut b) => Arc::new(b.finish()),
            Self::Text(mut b) => Arc::new(b.finish()),
        }
    }
}

enum ValuesBuilder<'a> {
    Embedding(FixedSizeListBuilder<Float32Builder>),
    Classes {
        labels: &'a [String],
        label: StringBuilder,
        probabilities: Vec<Float32Builder>,
    },
}

/// One chunk's columns, filled a whole row at a time.
struct BatchBuilder<'a> {
    columns: &'a OutputColumns,
    values: &'a Values,
    id: ColumnBuilder,
    carried: Vec<ColumnBuilder>,
    output: ValuesBuilder<'a>,
}

impl<'a> BatchBuilder<'a> {
    fn new(columns: &'a OutputColumns, values: &'a Values, rows: usize) -> Self {
        let output = match values {
            Values::Embedding { dimension } => ValuesBuilder::Embedding(
                FixedSizeListBuilder::with_capacity(
                    Float32Builder::with_capacity(rows * dimension),
                    *dimension as i32,
                    rows,
                )
                .with_field(item_field()),
            ),
            Values::Classes { labels } => ValuesBuilder::Classes {
                labels,
                label: StringBuilder::with_capacity(rows, rows * 8),
                probabilities: labels
                    .iter()
                    .map(|_| Float32Builder::with_capacity(rows))
                    .collect(),
            },
        };
        Self {
            columns,
            values,
            id: ColumnBuilder::new(columns.id, rows),
            carried: columns
                .carried
                .iter()
                .map(|(_, ty)| ColumnBuilder::new(*ty, rows))
                .collect(),
            output,
        }
    }

    /// Appends a row, or nothing and why when one of its values does not fit.
    fn push(&mut self, row: &FinishedRow) -> Result<(), String> {
        let expected = match self.values {
            Values::Embedding { dimension } => *dimension,
            Values::Classes { labels } => labels.len(),
        };
        if row.values.len() != expected {
            return Err(format!(
                "the model returned {} values for this row, the package declares {expected}; check the package's dimension or labels",
                row.values.len()
            ));
        }
        let id = convert(&row.id, self.columns.id, Column::Id)?;
        let carried = self
            .columns
            .carried
            .iter()
            .zip(&row.carried)
            .map(|((name, ty), raw)| convert(raw, *ty, Column::Carried(name)))
            .collect::<Result<Vec<_>, _>>()?;
        self.id.append(id);
        for (builder, cell) in self.carried.iter_mut().zip(carried) {
            builder.append(cell);
        }
        match &mut self.output {
            ValuesBuilder::Embedding(list) => {
                list.values().append_slice(&row.values);
                list.append(true);
            }
            ValuesBuilder::Classes {
                labels,
                label,
                probabilities,
            } => {
                label.append_value(best_label(labels, &row.values));
                for (builder, p) in probabilities.iter_mut().zip(&row.values) {
                    builder.append_value(*p);
                }
            }
        }
        Ok(())
    }

    fn finish(self, schema: SchemaRef) -> Result<RecordBatch, ParquetError> {
        let mut arrays = vec![self.id.finish()];
        arrays.extend(self.carried.into_iter().map(ColumnBuilder::finish));
        match self.output {
            ValuesBuilder::Embedding(mut list) => arrays.push(Arc::new(list.finish())),
            ValuesBuilder::Classes {
                labels,
                mut label,
                probabilities,
            } => {
                arrays.push(Arc::new(label.finish()));
                let children: Vec<ArrayRef> = probabilities
                    .into_iter()
                    .map(|mut b| Arc::new(b.finish()) as ArrayRef)
                    .collect();
                let probabilities =
                    StructArray::try_new(probability_fields(labels), children, None)?;
                arrays.push(Arc::new(probabilities));
            }
        }
        Ok(RecordBatch::try_new(schema, arrays)?)
    }
}
