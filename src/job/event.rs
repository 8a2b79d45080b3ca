//! The job events published on the events exchange (`job.<state>`), and the replies an AMQP
//! submitter gets: the documented message bodies.

use serde::{Deserialize, Serialize};

/// One job event. Events of one job carry `seq` 1, 2, 3… in the order of its states and are
/// published in that order; delivery is at-least-once, so a consumer that must not see one
/// twice keeps the highest `seq` per job (the AMQP `message_id` is `<job_id>:<seq>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobEvent {
    /// `job.submitted`, `job.started`, `job.progress`, `job.succeeded`, `job.failed` or
    /// `job.cancelled`: also the routing key.
    pub event: String,
    /// 1 for `job.submitted`, then one more per event of this job.
    pub seq: u64,
    pub job_id: String,
    pub name: String,
    /// `http`, `amqp` or `ingest`.
    pub source: String,
    /// `inference` (and later `training`).
    pub kind: String,
    /// The job's output folder.
    pub output: String,
    /// The job's status when the event was recorded.
    pub status: String,
    /// Milliseconds since the Unix epoch when the event was recorded.
    pub at_ms: u64,
    pub counts: EventCounts,
    /// Why the job failed (`job.failed` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The AMQP submission's `correlation_id`, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

impl JobEvent {
    pub fn is_final(&self) -> bool {
        FINAL_EVENTS.contains(&self.event.as_str())
    }
}

/// The events that end a job; exactly one of them is the last event of every job.
pub const FINAL_EVENTS: [&str; 3] = ["job.succeeded", "job.failed", "job.cancelled"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventCounts {
    pub shards_total: u64,
    pub shards_done: u64,
    pub rows_total: u64,
    pub rows_done: u64,
    pub rows_failed: u64,
}

/// What an AMQP submitter with `reply_to` gets: first `accepted` (or `duplicate`, or
/// `rejected`) right after the submission is handled, later the job's final event as a
/// `finished` reply. Replies carry the submission's `correlation_id` as a property too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SubmissionReply {
    /// `accepted`, `duplicate` (this `message_id` already made a job), `rejected` or
    /// `finished`.
    pub outcome: String,
    /// The job the submission made or named (absent when rejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// For `finished`: `succeeded`, `failed` or `cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why it was rejected, or why the job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `rejected`: `not_json`, `invalid_spec`, `unknown_model`, `too_large`,
    /// `missing_message_id` or `output_in_use`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_class: Option<String>,
    /// For `finished`: the final event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<JobEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lua_snapshot_parses_as_a_job_event() {
        // The shape `emit_event` (state/scripts.rs) writes, as cjson encodes it.
        let body = r#"{"event":"job.failed","seq":4,"job_id":"j","name":"n","source":"amqp",
            "kind":"inference","output":"s3://b/o/","status":"failed","at_ms":1764352384123,
            "counts":{"shards_total":2,"shards_done":1,"rows_total":10,"rows_done":5,
            "rows_failed":5},"error":"too many bad rows","correlation_id":"c-1"}"#;
        let event: JobEvent = serde_json::from_str(body).unwrap();
        assert!(event.is_final());
        assert_eq!(event.counts.rows_failed, 5);
        assert_eq!(event.at_ms, 1_764_352_384_123);
        assert_eq!(event.error.as_deref(), Some("too many bad rows"));
    }
}
