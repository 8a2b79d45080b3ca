//! Task messages that travel on the task queues: plan a job, or process one shard of it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TaskMessage {
    /// Cut the job's input into shards and publish one task per shard.
    Plan { job_id: String },
    /// Run inference over one shard.
    Shard(ShardTask),
    /// Run (or resume) a training job. Ownership is the job's Redis lease, not this
    /// delivery: it is acked as soon as the lease is taken.
    Train { job_id: String },
}

impl TaskMessage {
    pub fn job_id(&self) -> &str {
        match self {
            TaskMessage::Plan { job_id } | TaskMessage::Train { job_id } => job_id,
            TaskMessage::Shard(shard) => &shard.job_id,
        }
    }

    /// Names the task within its job (for attempt counting and logs).
    pub fn task_key(&self) -> String {
        match self {
            TaskMessage::Plan { .. } => "plan".into(),
            TaskMessage::Train { .. } => "train".into(),
            TaskMessage::Shard(shard) => format!("shard-{}", shard.shard),
        }
    }
}

/// One shard: a list of line-aligned byte ranges of input objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardTask {
    pub job_id: String,
    pub shard: u32,
    pub pieces: Vec<InputPiece>,
    /// The record limits the planner cut with; the shard must split records the same way.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    #[serde(default = "default_max_record_lines")]
    pub max_record_lines: u64,
    /// Output column types fixed at planning (Parquet output needs one schema per job);
    /// absent in tasks planned by older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<super::OutputColumns>,
}

fn default_max_record_bytes() -> usize {
    crate::storage::records::MAX_RECORD_BYTES
}

fn default_max_record_lines() -> u64 {
    crate::storage::records::MAX_RECORD_LINES
}

/// Rows of one input object: a byte range of a text object, a whole (possibly compressed)
/// object, or a range of rows of a Parquet file, as `layout` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputPiece {
    /// `s3://bucket/key` of the object.
    pub uri: String,
    /// First byte (first row for Parquet, 0-based).
    pub start: u64,
    /// Byte (row) just past the piece.
    pub end: u64,
    /// 1-based line number of the first line in the range (for error reports); 0 when
    /// planning did not read up to the piece (a `split` piece past the object's start).
    pub first_line: u64,
    /// Data rows in the range (blank lines excluded); 0 when not `counted`.
    pub rows: u64,
    /// Blank lines in the range (skipped, and counted as such).
    #[serde(default)]
    pub blank: u64,
    /// ETag seen when planning; a different one at read time means the object changed.
    pub etag: String,
    /// CSV and TSV: the column names from the object's header line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "PieceLayout::is_exact")]
    pub layout: PieceLayout,
    /// Planning counted `rows` and `blank`; without a count the shard's own count is the
    /// object's (each record still belongs to exactly one piece).
    #[serde(default = "counted", skip_serializing_if = "is_counted")]
    pub counted: bool,
}

fn counted() -> bool {
    true
}

fn is_counted(counted: &bool) -> bool {
    *counted
}

/// How a piece's records are found in its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PieceLayout {
    /// Records start exactly at `start` and the last one ends at `end` (planning read the
    /// object and cut it at record boundaries).
    #[default]
    Exact,
    /// A byte range cut without reading, for line formats: the piece holds the records whose
    /// first byte lies in `(start, end]` (`[0, end]` for the first piece): its reader skips
    /// to just past the first line ending at or after `start` (unless `start` is 0) and
    /// stops after the first line ending at or after `end` — the standard split for line
    /// formats (as Hadoop's `LineRecordReader`), so every line is read by exactly one piece.
    Split,
    /// The whole object as one stream, decoded when compressed (gzip, zstd): a compressed
    /// object cannot be split by byte range. `start`..`end` spans its stored bytes.
    Whole,
    /// Rows `[start, end)` of a Parquet file.
    ParquetRows,
}

impl PieceLayout {
    pub fn is_exact(&self) -> bool {
        *self == PieceLayout::Exact
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let task = TaskMessage::Shard(ShardTask {
            job_id: "j".into(),
            shard: 3,
            pieces: vec![InputPiece {
                uri: "s3://b/k".into(),
                start: 0,
                end: 10,
                first_line: 1,
                rows: 2,
                blank: 0,
                etag: "\"e\"".into(),
                header: None,
                layout: PieceLayout::Split,
                counted: false,
            }],
            max_record_bytes: 1 << 20,
            columns: None,
            max_record_lines: 10,
        });
        let json = serde_json::to_string(&task).unwrap();
        assert!(json.contains(r#""type":"shard""#), "{json}");
        assert_eq!(serde_json::from_str::<TaskMessage>(&json).unwrap(), task);
        assert_eq!(task.task_key(), "shard-3");
    }
}
