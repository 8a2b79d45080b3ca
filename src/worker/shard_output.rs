//! What a shard writes: its output part's rows (embed and classify), the errors part, and
//! the per-piece counts and ids that go with them.

use serde::Serialize;
use serde_json::value::RawValue;

use super::ids::IdLog;
use super::shard_input::Place;
use crate::job::accounting::PieceCounts;
use crate::storage::PartWriter;
use crate::uri::S3Uri;

/// Output part key of a shard: deterministic, so a redelivered shard overwrites it.
pub fn part_uri(output: &S3Uri, shard: u32) -> S3Uri {
    output.join(&format!("part-{shard:05}.jsonl"))
}

pub fn errors_part_uri(output: &S3Uri, shard: u32) -> S3Uri {
    output.join(&format!("errors/part-{shard:05}.jsonl"))
}

/// An embed job's row; the id is written exactly as it was read.
#[derive(Serialize)]
pub(super) struct OutputRow<'a> {
    pub(super) id: &'a RawValue,
    pub(super) embedding: &'a [f32],
}

/// A classify job's row: the most probable label and every class's probability.
#[derive(Serialize)]
pub(super) struct ClassifiedRow<'a> {
    id: &'a RawValue,
    label: &'a str,
    probabilities: std::collections::BTreeMap<&'a str, f32>,
}

impl<'a> ClassifiedRow<'a> {
    pub(super) fn new(id: &'a RawValue, labels: &'a [String], probabilities: &[f32]) -> Self {
        let best = probabilities
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i);
        Self {
            id,
            label: &labels[best],
            probabilities: labels
                .iter()
                .map(String::as_str)
                .zip(probabilities.iter().copied())
                .collect(),
        }
    }
}

#[derive(Serialize)]
pub(super) struct RowError<'a> {
    uri: &'a str,
    /// 1-based line (row, for Parquet); null in a byte range planned without reading, where
    /// `offset` finds the record.
    line: Option<u64>,
    /// Byte offset of the record in the object (absent for compressed and Parquet inputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    /// Replaced by `line` when the job finishes (see `error_lines`).
    #[serde(skip_serializing_if = "Option::is_none")]
    piece_line: Option<u64>,
    error: String,
    /// The start of the offending record, to find it quickly.
    record: String,
}

pub(super) struct Writer {
    pub(super) part: PartWriter,
    /// Lines of the errors part, one JSON object each.
    pub(super) errors: Vec<Vec<u8>>,
    /// One entry per piece of the task, in the task's order.
    pub(super) counts: Vec<PieceCounts>,
    pub(super) ids: IdLog,
}

impl Writer {
    pub(super) fn row_error(&mut self, uri: &str, place: Place, reason: String, excerpt: String) {
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
        self.errors.push(out);
    }

    pub(super) fn processed(&self) -> u64 {
        self.counts.iter().map(|c| c.written + c.failed).sum()
    }
}
