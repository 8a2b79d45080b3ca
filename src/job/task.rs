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

/// Rows of one input object that start in `[start, end)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputPiece {
    /// `s3://bucket/key` of the object.
    pub uri: String,
    pub start: u64,
    pub end: u64,
    /// 1-based line number of the first line in the range (for error reports).
    pub first_line: u64,
    /// Data rows in the range (blank lines excluded).
    pub rows: u64,
    /// Blank lines in the range (skipped, and counted as such).
    #[serde(default)]
    pub blank: u64,
    /// ETag seen when planning; a different one at read time means the object changed.
    pub etag: String,
    /// CSV only: the column names from the object's header line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<Vec<String>>,
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
