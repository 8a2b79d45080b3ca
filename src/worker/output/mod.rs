//! What a shard writes: its output part (JSONL, compressed JSONL or Parquet), the errors
//! part, and the per-piece counts and ids that go with them.

mod cells;
mod jsonl;
mod parquet_part;
#[cfg(test)]
mod tests;

use serde::Serialize;
use serde_json::value::RawValue;

pub use self::parquet_part::{ROW_GROUP_BYTES, Values, schema};
use self::{jsonl::JsonlEncoder, parquet_part::ParquetEncoder};
use super::TaskError;
use super::ids::IdLog;
use super::shard_input::Place;
use crate::job::accounting::PieceCounts;
use crate::job::{ColumnType, JobSpec, OutputColumns, OutputCompression, OutputFormat};
use crate::storage::{PartWriter, Storage};
use crate::uri::S3Uri;

/// Output part key of a shard: deterministic, so a redelivered shard overwrites it
/// (`part-00003.jsonl`, `.jsonl.gz`, `.jsonl.zst` or `.parquet`).
pub fn part_uri(output: &S3Uri, shard: u32, spec: &JobSpec) -> S3Uri {
    let suffix = match (spec.output.format, spec.output.compression) {
        (OutputFormat::Parquet, _) => "parquet",
        (OutputFormat::Jsonl, None) => "jsonl",
        (OutputFormat::Jsonl, Some(OutputCompression::Gzip)) => "jsonl.gz",
        (OutputFormat::Jsonl, Some(OutputCompression::Zstd)) => "jsonl.zst",
    };
    output.join(&format!("part-{shard:05}.{suffix}"))
}

pub fn errors_part_uri(output: &S3Uri, shard: u32) -> S3Uri {
    output.join(&format!("errors/part-{shard:05}.jsonl"))
}

/// The part's `Content-Type`. A compressed part is stored as the compressed file it is
/// (no `Content-Encoding`), so HTTP clients do not silently inflate a `.gz` download.
fn content_type(spec: &JobSpec) -> &'static str {
    match (spec.output.format, spec.output.compression) {
        (OutputFormat::Parquet, _) => "application/vnd.apache.parquet",
        (OutputFormat::Jsonl, None) => "application/x-ndjson",
        (OutputFormat::Jsonl, Some(OutputCompression::Gzip)) => "application/gzip",
        (OutputFormat::Jsonl, Some(OutputCompression::Zstd)) => "application/zstd",
    }
}

/// The job's id and carried column types: as planned, or for tasks planned without them
/// `utf8` ids and `json` carried values. Line-number ids (no `id_field`) are always `utf8`.
pub fn output_columns(
    spec: &JobSpec,
    planned: Option<&OutputColumns>,
) -> Result<OutputColumns, TaskError> {
    let mut columns = match planned {
        Some(planned) => planned.clone(),
        None => OutputColumns {
            id: ColumnType::Utf8,
            carried: spec
                .output
                .include_fields
                .iter()
                .map(|name| (name.clone(), ColumnType::Json))
                .collect(),
        },
    };
    let names: Vec<&String> = columns.carried.iter().map(|(name, _)| name).collect();
    if names != spec.output.include_fields.iter().collect::<Vec<_>>() {
        return Err(TaskError::permanent(format!(
            "the shard task's planned output columns {names:?} are not output.include_fields {:?}; resubmit the job",
            spec.output.include_fields
        )));
    }
    if spec.input.id_field.is_none() {
        columns.id = ColumnType::Utf8;
    }
    Ok(columns)
}

/// A row the model answered, ready to be written.
pub(super) struct FinishedRow {
    /// Index of the task piece it came from.
    pub(super) piece: usize,
    pub(super) place: Place,
    pub(super) id: Box<RawValue>,
    /// `output.include_fields` values, in that order.
    pub(super) carried: Vec<Box<RawValue>>,
    /// The embedding, or one probability per label.
    pub(super) values: Vec<f32>,
    pub(super) truncated: bool,
}

/// The most probable class.
fn best_label<'a>(labels: &'a [String], probabilities: &[f32]) -> &'a str {
    let best = probabilities
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    labels.get(best).map_or("", String::as_str)
}

/// Rows handed back after encoding, and per row why it was left out.
type Encoded = (Vec<FinishedRow>, Vec<Option<String>>);

enum Encoder {
    Jsonl(Box<JsonlEncoder>),
    Parquet(Box<ParquetEncoder>),
}

impl Encoder {
    /// Bytes for these rows and, per row, why it was left out (a value that does not fit).
    fn encode(&mut self, rows: &[FinishedRow]) -> Result<(Vec<u8>, Vec<Option<String>>), String> {
        match self {
            Encoder::Jsonl(e) => e
                .encode(rows)
                .map(|bytes| (bytes, vec![None; rows.len()]))
                .map_err(|e| e.to_string()),
            Encoder::Parquet(e) => e.encode(rows).map_err(|e| e.to_string()),
        }
    }

    fn finish(self) -> Result<Vec<u8>, String> {
        match self {
            Encoder::Jsonl(e) => e.finish().map_err(|e| e.to_string()),
            Encoder::Parquet(e) => e.finish().map_err(|e| e.to_string()),
        }
    }
}

/// A shard's output part: rows are encoded on a blocking thread, chunk by chunk, and
/// streamed to S3 through a multipart upload; nothing is visible before `finish`.
pub(super) struct OutputPart {
    upload: PartWriter,
    /// Taken while a chunk is encoded on a blocking thread.
    encoder: Option<Encoder>,
    fields: usize,
}

impl OutputPart {
    /// Opens shard `shard`'s part for `spec.output`; `values` is the model's side of it.
    pub(super) fn open(
        storage: &Storage,
        spec: &JobSpec,
        shard: u32,
        planned: Option<&OutputColumns>,
        values: Values,
    ) -> Result<Self, TaskError> {
        let uri = part_uri(&spec.output_uri(), shard, spec);
        let encoder = match spec.output.format {
            OutputFormat::Jsonl => {
                let labels = match values {
                    Values::Embedding { .. } => Vec::new(),
                    Values::Classes { labels } => labels,
                };
                let fields = spec.output.include_fields.clone();
                Encoder::Jsonl(Box::new(JsonlEncoder::new(
                    fields,
                    labels,
                    spec.output.compression,
                )))
            }
            OutputFormat::Parquet => {
                let columns = output_columns(spec, planned)?;
                let encoder = ParquetEncoder::new(columns, values).map_err(|e| {
                    TaskError::permanent(format!("output part {uri}: Parquet schema: {e}"))
                })?;
                Encoder::Parquet(Box::new(encoder))
            }
        };
        Ok(Self {
            upload: storage.part_writer(uri, content_type(spec)),
            encoder: Some(encoder),
            fields: spec.output.include_fields.len(),
        })
    }

    pub(super) fn uri(&self) -> &S3Uri {
        self.upload.uri()
    }

    /// Encodes rows (on a blocking thread) and uploads what is ready; gives the rows back
    /// with, per row, why it was left out.
    async fn write(&mut self, rows: Vec<FinishedRow>) -> Result<Encoded, TaskError> {
        let uri = self.uri().clone();
        let mut encoder = self.encoder.take().ok_or_else(|| {
            TaskError::permanent(format!("output part {uri}: written after a failure"))
        })?;
        let (encoder, rows, encoded) = tokio::task::spawn_blocking(move || {
            let encoded = encoder.encode(&rows);
            (encoder, rows, encoded)
        })
        .await
        .map_err(|e| TaskError::permanent(format!("encoding output part {uri}: {e}")))?;
        self.encoder = Some(encoder);
        let (bytes, rejected) = encoded
            .map_err(|e| TaskError::permanent(format!("encoding output part {uri}: {e}")))?;
        self.upload.write(&bytes).await?;
        Ok((rows, rejected))
    }

    /// Writes the part's end (Parquet footer, compressed stream's end) and makes it visible;
    /// returns its size in bytes.
    pub(super) async fn finish(mut self) -> Result<u64, TaskError> {
        let uri = self.uri().clone();
        let Some(encoder) = self.encoder.take() else {
            self.upload.abort().await;
            return Err(TaskError::permanent(format!(
                "output part {uri}: finished after a failure"
            )));
        };
        let tail = tokio::task::spawn_blocking(move || encoder.finish())
            .await
            .map_err(|e| e.to_string())
            .and_then(|tail| tail);
        match tail {
            Ok(tail) => {
                self.upload.write(&tail).await?;
                Ok(self.upload.finish().await?)
            }
            Err(e) => {
                self.upload.abort().await;
                Err(TaskError::permanent(format!(
                    "finishing output part {uri}: {e}"
                )))
            }
        }
    }

    /// Drops what was uploaded so far; the key is left as it was.
    pub(super) async fn abort(self) {
        self.upload.abort().await;
    }
}

#[derive(Serialize)]
pub(super) struct RowError<'a> {
    uri: &'a str,
    /// 1-based line (row, for Parquet); null in a byte range planned without reading until
    /// the finisher fills it in (see `error_lines`), where `offset` finds the record too.
    line: Option<u64>,
    /// Byte offset of the record in the object (absent for compressed and Parquet inputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    /// Replaced by `line` when the job finishes.
    #[serde(skip_serializing_if = "Option::is_none")]
    piece_line: Option<u64>,
    error: String,
    /// The start of the offending record, to find it quickly.
    record: String,
}

/// One line of the errors part: the row's place, why it failed, and the start of its record.
pub(super) fn error_line(uri: &str, place: Place, reason: String, excerpt: String) -> Vec<u8> {
    let mut out = serde_json::to_vec(&RowError {
        uri,
        line: place.line,
        offset: place.offset,
        piece_line: place.piece_line,
        error: reason,
        record: excerpt,
    })
    .expect("row error serialises");
    out.push(b'\n');
    out
}

pub(super) struct Writer {
    pub(super) part: OutputPart,
    /// Lines of the errors part, one JSON object each.
    pub(super) errors: Vec<Vec<u8>>,
    /// One entry per piece of the task, in the task's order.
    pub(super) counts: Vec<PieceCounts>,
    pub(super) ids: IdLog,
}

impl Writer {
    pub(super) fn row_error(&mut self, uri: &str, place: Place, reason: String, excerpt: String) {
        self.errors.push(error_line(uri, place, reason, excerpt));
    }

    /// Appends answered rows to the part and counts each as written, or as failed (with a
    /// row error) when one of its values does not fit the job's columns.
    pub(super) async fn write_rows(&mut self, rows: Vec<FinishedRow>) -> Result<(), TaskError> {
        let fields = self.part.fields;
        let (rows, short): (Vec<_>, Vec<_>) =
            rows.into_iter().partition(|r| r.carried.len() == fields);
        for row in short {
            let reason = format!(
                "row has {} of the {fields} output.include_fields values; this worker's reader did not copy them, so run the job on a worker that does",
                row.carried.len()
            );
            self.fail(&row, reason);
        }
        if rows.is_empty() {
            return Ok(());
        }
        let (rows, rejected) = self.part.write(rows).await?;
        for (row, rejected) in rows.iter().zip(rejected) {
            match rejected {
                None => {
                    let counts = &mut self.counts[row.piece];
                    counts.written += 1;
                    counts.truncated += u64::from(row.truncated);
                }
                Some(reason) => self.fail(row, reason),
            }
        }
        Ok(())
    }

    fn fail(&mut self, row: &FinishedRow, reason: String) {
        let counts = &mut self.counts[row.piece];
        counts.failed += 1;
        let uri = counts.uri.clone();
        self.row_error(&uri, row.place, reason, row.id.get().to_string());
    }
}
