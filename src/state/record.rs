//! The job record as stored in Redis, and the per-shard commit entry.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::StateError;
use crate::job::{JobSpec, JobStatus, TrainingProgress};

/// A committed shard: where its output went and how many rows it held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardCommit {
    pub shard: u32,
    /// Output part key (`s3://…/part-00003.jsonl`).
    pub part: String,
    /// Rows written to the part.
    pub rows: u64,
    /// Rows that could not be processed, listed in `errors_part`.
    pub failed_rows: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors_part: Option<String>,
    /// Seconds the shard took, from receipt to commit.
    pub seconds: f64,
    /// Which worker process wrote it (`host-pid`).
    #[serde(default)]
    pub worker: String,
    /// What the shard did with each of its pieces' records (absent in commits of older
    /// versions, whose jobs are not reconciled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pieces: Vec<crate::job::accounting::PieceCounts>,
    /// Written rows whose text was cut to the model's max length.
    #[serde(default)]
    pub truncated_rows: u64,
    /// The shard's ids file (`_ids/part-00003.txt`), sorted by id hash, for the finisher's
    /// duplicate check; absent without an id field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids_part: Option<String>,
    /// Input bytes the shard's pieces span (progress for inputs planned without reading).
    #[serde(default)]
    pub bytes: u64,
}

/// A job as stored: its spec, status, counters and timings.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub name: String,
    pub spec: JobSpec,
    pub status: JobStatus,
    pub pool: String,
    pub source: String,
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub shards_total: u64,
    pub shards_done: u64,
    pub rows_total: u64,
    /// Whether `rows_total` was counted at planning; inputs cut without reading (JSONL with
    /// an id field) learn their rows as shards finish, and progress counts bytes.
    pub rows_known: bool,
    /// Bytes of input as listed at planning, and those of committed shards.
    pub input_bytes: u64,
    pub bytes_done: u64,
    pub rows_done: u64,
    pub rows_failed: u64,
    /// Written rows whose text was cut to the model's max length.
    pub rows_truncated: u64,
    /// Rows read by shards still running (not yet committed); 0 once the job has ended.
    pub rows_in_flight: u64,
    pub error: Option<String>,
    pub model_sha256: Option<String>,
    /// The whole package as planned (`ModelManifest::cache_key`: every file and setting);
    /// absent in records planned by older versions.
    pub package_key: Option<String>,
    /// Last time a shard of the job reported progress or committed.
    pub progress_ms: Option<u64>,
    /// Last time the sweeper re-queued the job's work.
    pub swept_ms: Option<u64>,
    /// Training jobs, once training has started.
    pub training: Option<TrainingProgress>,
    /// Compression jobs: the stage reached, then the compression report (quality and speed
    /// of both models, the gate's verdict).
    pub compression: Option<serde_json::Value>,
}

impl JobRecord {
    pub(super) fn from_fields(
        id: &str,
        mut fields: HashMap<String, String>,
        rows_in_flight: u64,
    ) -> Result<Self, StateError> {
        let corrupt = |reason: String| StateError::Corrupt {
            id: id.to_string(),
            reason,
        };
        let spec_json = fields
            .remove("spec")
            .ok_or_else(|| corrupt("no spec".into()))?;
        let spec: JobSpec =
            serde_json::from_str(&spec_json).map_err(|e| corrupt(format!("spec: {e}")))?;
        let status_text = fields.remove("status").unwrap_or_default();
        let status = JobStatus::parse(&status_text)
            .ok_or_else(|| corrupt(format!("unknown status `{status_text}`")))?;
        let number = |fields: &HashMap<String, String>, name: &str| -> Option<u64> {
            fields.get(name).and_then(|v| v.parse().ok())
        };
        let text = |fields: &mut HashMap<String, String>, name: &str| -> Option<String> {
            fields.remove(name).filter(|v| !v.is_empty())
        };
        Ok(Self {
            id: id.to_string(),
            name: text(&mut fields, "name").unwrap_or_default(),
            spec,
            status,
            pool: text(&mut fields, "pool").unwrap_or_default(),
            source: text(&mut fields, "source").unwrap_or_default(),
            created_ms: number(&fields, "created_ms").unwrap_or(0),
            started_ms: number(&fields, "started_ms"),
            finished_ms: number(&fields, "finished_ms"),
            shards_total: number(&fields, "shards_total").unwrap_or(0),
            shards_done: number(&fields, "shards_done").unwrap_or(0),
            rows_total: number(&fields, "rows_total").unwrap_or(0),
            rows_known: number(&fields, "rows_known").is_none_or(|known| known == 1),
            input_bytes: number(&fields, "input_bytes").unwrap_or(0),
            bytes_done: number(&fields, "bytes_done").unwrap_or(0),
            rows_done: number(&fields, "rows_done").unwrap_or(0),
            rows_failed: number(&fields, "rows_failed").unwrap_or(0),
            rows_truncated: number(&fields, "rows_truncated").unwrap_or(0),
            // A shard whose worker died as the job ended leaves its live count behind:
            // nothing is in flight in a job that has ended.
            rows_in_flight: if status.is_terminal() {
                0
            } else {
                rows_in_flight
            },
            error: text(&mut fields, "error"),
            model_sha256: text(&mut fields, "model_sha256"),
            package_key: text(&mut fields, "package_key"),
            progress_ms: number(&fields, "progress_ms"),
            swept_ms: number(&fields, "swept_ms"),
            training: fields
                .remove("training")
                .and_then(|json| read_training(id, &json)),
            // Shown, never acted on: unreadable reads as absent.
            compression: fields
                .remove("compression")
                .and_then(|json| serde_json::from_str(&json).ok()),
        })
    }
}

/// Training progress is shown, never acted on: what cannot be read of it reads as absent
/// (field by field), so an odd value never makes the whole record unreadable.
fn read_training(id: &str, json: &str) -> Option<TrainingProgress> {
    match TrainingProgress::read_lenient(json) {
        Ok((progress, left_out)) => {
            if !left_out.is_empty() {
                tracing::debug!(job_id = id, fields = ?left_out, "training progress fields unreadable; shown as absent");
            }
            Some(progress)
        }
        Err(reason) => {
            tracing::debug!(job_id = id, %reason, "training progress unreadable; shown as absent");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(training: &str) -> HashMap<String, String> {
        let spec = serde_json::json!({
            "api_version": "sluice/v1",
            "kind": "training",
            "name": "t",
            "model": "s3://m/enc/",
            "input": {"uri": "s3://d/train.jsonl", "format": "jsonl", "label_field": "label"},
            "output": {"uri": "s3://o/head/"},
            "training": {"labels": ["a", "b"]}
        });
        HashMap::from([
            ("spec".to_string(), spec.to_string()),
            ("status".to_string(), "failed".to_string()),
            ("created_ms".to_string(), "not a number".to_string()),
            ("training".to_string(), training.to_string()),
        ])
    }

    #[test]
    fn a_record_with_odd_training_values_still_reads() {
        let job = JobRecord::from_fields(
            "j1",
            fields(r#"{"step": 37, "loss": null, "eval": {"epoch": 1, "step": 30, "loss": null, "accuracy": 0.5, "macro_f1": 0.4}}"#),
            0,
        )
        .unwrap();
        let training = job.training.unwrap();
        assert_eq!(
            (training.step, training.loss, training.eval),
            (37, None, None)
        );
        assert_eq!(job.created_ms, 0);
        let job = JobRecord::from_fields("j2", fields("NaN"), 0).unwrap();
        assert_eq!(job.training, None);
        assert_eq!(job.status, JobStatus::Failed);
    }

    #[test]
    fn rows_in_flight_count_only_while_the_job_has_not_ended() {
        let mut f = fields("{}");
        f.insert("status".into(), "running".into());
        assert_eq!(
            JobRecord::from_fields("j5", f, 37).unwrap().rows_in_flight,
            37
        );
        for ended in ["succeeded", "failed", "cancelled"] {
            let mut f = fields("{}");
            f.insert("status".into(), ended.into());
            let job = JobRecord::from_fields("j6", f, 37).unwrap();
            assert_eq!(job.rows_in_flight, 0, "{ended}");
        }
    }

    #[test]
    fn a_record_without_a_readable_spec_or_status_is_corrupt() {
        let mut f = fields("{}");
        f.insert("spec".into(), "{".into());
        let err = JobRecord::from_fields("j3", f, 0).unwrap_err().to_string();
        assert!(err.contains("j3") && err.contains("spec"), "{err}");
        let mut f = fields("{}");
        f.insert("status".into(), "exploded".into());
        let err = JobRecord::from_fields("j4", f, 0).unwrap_err().to_string();
        assert!(err.contains("unknown status `exploded`"), "{err}");
    }
}
