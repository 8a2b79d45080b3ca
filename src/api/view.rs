//! What the API shows of a job (and what the CLI reads back).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::job::{JobSpec, JobStatus, TrainingProgress};
use crate::state::{JobRecord, UnreadableJob};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct JobView {
    pub id: String,
    pub name: String,
    pub status: JobStatus,
    pub pool: String,
    pub source: String,
    pub model_sha256: Option<String>,
    pub progress: Progress,
    /// Training jobs: step, epoch, loss, evaluation, ETA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingProgress>,
    /// Compression jobs: the stage reached, then the report (both models' quality and
    /// speed on the sample, the gate's verdict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<serde_json::Value>,
    pub timings: Timings,
    pub error: Option<String>,
    /// Folder holding the parts, `_manifest.json` and `_SUCCESS` (training: the model
    /// package).
    pub output_uri: String,
    pub manifest_uri: String,
    pub spec: JobSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Progress {
    pub shards_total: u64,
    pub shards_done: u64,
    /// Rows in the input (known once planned, unless `rows_total_known` is false).
    pub rows_total: u64,
    /// False for an input planned without reading it (JSONL with an id field): its rows are
    /// known only as shards finish, and `fraction` counts bytes.
    #[serde(default = "yes")]
    pub rows_total_known: bool,
    /// Input bytes as listed at planning, and those of committed shards.
    #[serde(default)]
    pub bytes_total: u64,
    #[serde(default)]
    pub bytes_done: u64,
    /// Rows written to committed parts.
    pub rows_done: u64,
    /// Rows listed in committed errors parts.
    pub rows_failed: u64,
    /// Written rows whose text was cut to the model's max length.
    #[serde(default)]
    pub rows_truncated: u64,
    /// Rows processed by shards still running.
    pub rows_in_flight: u64,
    /// 0 to 1.
    pub fraction: f64,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Timings {
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// From start of planning to finish (or to now while running).
    pub elapsed_seconds: Option<f64>,
    pub rows_per_second: Option<f64>,
}

impl JobView {
    pub fn from_record(job: JobRecord, now_ms: u64) -> Self {
        let processed = job.rows_done + job.rows_failed + job.rows_in_flight;
        let fraction = if job.status == JobStatus::Succeeded {
            1.0
        } else if let Some(training) = &job.training {
            training.fraction()
        } else if !job.rows_known && job.input_bytes > 0 {
            (job.bytes_done as f64 / job.input_bytes as f64).min(1.0)
        } else if job.rows_total > 0 {
            (processed as f64 / job.rows_total as f64).min(1.0)
        } else {
            0.0
        };
        let elapsed_seconds = job
            .started_ms
            .map(|s| job.finished_ms.unwrap_or(now_ms).saturating_sub(s) as f64 / 1000.0);
        let rows_per_second = elapsed_seconds
            .filter(|&s| s > 0.0)
            .map(|s| (job.rows_done + job.rows_in_flight) as f64 / s);
        let output = job.spec.output_uri();
        let manifest = match job.spec.kind {
            crate::job::JobKind::Inference => output.join("_manifest.json"),
            crate::job::JobKind::Training | crate::job::JobKind::Compress => {
                output.join(crate::job::MANIFEST_FILE)
            }
        };
        Self {
            id: job.id,
            name: job.name,
            status: job.status,
            pool: job.pool,
            source: job.source,
            model_sha256: job.model_sha256,
            progress: Progress {
                shards_total: job.shards_total,
                shards_done: job.shards_done,
                rows_total: job.rows_total,
                rows_total_known: job.rows_known,
                bytes_total: job.input_bytes,
                bytes_done: job.bytes_done,
                rows_done: job.rows_done,
                rows_failed: job.rows_failed,
                rows_truncated: job.rows_truncated,
                rows_in_flight: job.rows_in_flight,
                fraction,
            },
            training: job.training,
            compression: job.compression,
            timings: Timings {
                created_ms: job.created_ms,
                started_ms: job.started_ms,
                finished_ms: job.finished_ms,
                elapsed_seconds,
                rows_per_second,
            },
            error: job.error,
            output_uri: output.to_string(),
            manifest_uri: manifest.to_string(),
            spec: job.spec,
        }
    }
}

/// `GET /v1/jobs` answer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    /// Job records that could not be read (`{"id", "reason"}`), newest first: left out of
    /// `jobs` so that one bad record never hides the others. Empty when all read.
    #[serde(default)]
    pub unreadable: Vec<UnreadableJob>,
}

/// `POST /v1/jobs` answer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Created {
    pub id: String,
    /// False when the `Idempotency-Key` matched an earlier submission.
    pub created: bool,
}
