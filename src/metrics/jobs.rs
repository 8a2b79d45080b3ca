//! Jobs and the ways in: submissions, the drop folder, events, and the backlog that
//! drives autoscaling.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts};

use super::family::{Counters, Family, Histograms};
use super::labels::*;
use super::{counter_vec, register};

declare! {
    /// Jobs accepted: kind `inference|training`, source `http|amqp|ingest`.
    pub static JOBS_SUBMITTED: Counters<(JobKind, Source)> =
        Family::new(
            counter_vec(
                "sluice_jobs_submitted_total",
                "Jobs accepted, by kind and source.",
                &["kind", "source"],
            )
        );

    /// Jobs that reached a terminal status: kind, status `succeeded|failed|cancelled`.
    pub static JOBS_FINISHED: Counters<(JobKind, FinalStatus)> =
        Family::new(
            counter_vec(
                "sluice_jobs_finished_total",
                "Jobs finished, by kind and final status.",
                &["kind", "status"],
            )
        );

    /// From start (planning) to the end, by kind and final status.
    pub static JOB_DURATION_SECONDS: Histograms<(JobKind, FinalStatus)> =
        Family::new(
            register(
                HistogramVec::new(
                    HistogramOpts::new(
                        "sluice_job_duration_seconds",
                        "Job run time from the start of planning to its end, by kind and final status.",
                    )
                    .buckets(vec![
                        1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
                    ]),
                    &["kind", "status"],
                )
                .expect("valid metric"),
            )
        );

    /// Jobs not yet ended, by status `queued|planning|running` (from Redis, refreshed by the
    /// API every few seconds; take `max` across API replicas).
    pub static JOBS_ACTIVE: IntGaugeVec =
        register(
            IntGaugeVec::new(
                Opts::new(
                    "sluice_jobs",
                    "Jobs not yet ended, by status (refreshed by the API; max across replicas).",
                ),
                &["status"],
            )
            .expect("valid metric"),
        );

    /// The autoscaling signal: input rows not yet processed by running inference jobs, per pool
    /// (queued and unacked work alike).
    pub static BACKLOG_ROWS: IntGaugeVec =
        register(
            IntGaugeVec::new(
                Opts::new(
                    "sluice_backlog_rows",
                    "Input rows of running inference jobs not processed yet, per pool (queued and in flight).",
                ),
                &["pool"],
            )
            .expect("valid metric"),
        );

    /// Jobs waiting or running per pool (training jobs and not-yet-planned inference jobs, whose
    /// rows are unknown, count here).
    pub static BACKLOG_JOBS: IntGaugeVec =
        register(
            IntGaugeVec::new(
                Opts::new(
                    "sluice_backlog_jobs",
                    "Jobs queued, planning or running, per pool.",
                ),
                &["pool"],
            )
            .expect("valid metric"),
        );

    /// AMQP submissions handled: outcome `accepted|duplicate|rejected|requeued`.
    pub static SUBMISSIONS: Counters<SubmissionOutcome> =
        Family::new(
            counter_vec(
                "sluice_submissions_total",
                "AMQP job submissions handled, by outcome.",
                &["outcome"],
            )
        );

    /// Submissions kept on the rejected queue, by reason class (`not_json`, `invalid_spec`,
    /// `unknown_model`, `too_large`, `missing_message_id`, `output_in_use`, `forbidden_location`).
    pub static SUBMISSIONS_REJECTED: Counters<RejectionClass> =
        Family::new(
            counter_vec(
                "sluice_submissions_rejected_total",
                "AMQP submissions kept on the rejected queue, by reason class.",
                &["reason_class"],
            )
        );

    /// Job events published to the events exchange, by event (`job.<state>`).
    pub static EVENTS_PUBLISHED: IntCounterVec =
        counter_vec(
            "sluice_events_published_total",
            "Job events published, by event.",
            &["event"],
        );

    /// Drop-folder files handled by `ingest`: outcome `submitted|archived|failed|skipped`.
    pub static INGEST_FILES: Counters<IngestOutcome> =
        Family::new(
            counter_vec(
                "sluice_ingest_files_total",
                "Drop-folder files handled, by outcome.",
                &["outcome"],
            )
        );

    /// Drop-folder scans that failed (S3 or Redis unavailable), retried next interval.
    pub static INGEST_SCAN_ERRORS: IntCounter =
        register(
            IntCounter::new(
                "sluice_ingest_scan_errors_total",
                "Drop-folder scans that failed and are retried at the next interval.",
            )
            .expect("valid metric"),
        );

    /// Panics caught while handling one request or submission: door `http|amqp`. Each one is
    /// answered (a JSON 500, or the submission kept on the rejected queue as `panicked`), so
    /// the door keeps serving; any increase is a bug to report.
    pub static INTAKE_PANICS: Counters<Door> =
        Family::new(
            counter_vec(
                "sluice_intake_panics_total",
                "Panics caught while handling one HTTP request or AMQP submission, by door (http|amqp); the request was answered and the door kept serving.",
                &["door"],
            )
        );
}

/// Counts a job's end, and its duration when it had started.
pub fn job_finished(kind: JobKind, status: FinalStatus, started_ms: Option<u64>, finished_ms: u64) {
    JOBS_FINISHED.with((kind, status)).inc();
    if let Some(started) = started_ms {
        JOB_DURATION_SECONDS
            .with((kind, status))
            .observe(finished_ms.saturating_sub(started) as f64 / 1000.0);
    }
}
