//! Every Prometheus metric sluice exports, declared once, prefix `sluice_`, units in names.

use std::sync::LazyLock;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn register<C: prometheus::core::Collector + Clone + 'static>(collector: C) -> C {
    REGISTRY
        .register(Box::new(collector.clone()))
        .expect("metric registered once");
    collector
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
            .expect("valid metric"),
    )
}

/// Jobs accepted: kind `inference|training`, source `http|amqp|ingest`.
pub static JOBS_SUBMITTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_jobs_submitted_total",
        "Jobs accepted, by kind and source.",
        &["kind", "source"],
    )
});

/// Jobs that reached a terminal status: kind, status `succeeded|failed|cancelled`.
pub static JOBS_FINISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_jobs_finished_total",
        "Jobs finished, by kind and final status.",
        &["kind", "status"],
    )
});

/// From start (planning) to the end, by kind and final status.
pub static JOB_DURATION_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
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
});

/// Counts a job's end, and its duration when it had started.
pub fn job_finished(kind: &str, status: &str, started_ms: Option<u64>, finished_ms: u64) {
    JOBS_FINISHED.with_label_values(&[kind, status]).inc();
    if let Some(started) = started_ms {
        JOB_DURATION_SECONDS
            .with_label_values(&[kind, status])
            .observe(finished_ms.saturating_sub(started) as f64 / 1000.0);
    }
}

/// Jobs not yet ended, by status `queued|planning|running` (from Redis, refreshed by the
/// API every few seconds; take `max` across API replicas).
pub static JOBS_ACTIVE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new(
                "sluice_jobs",
                "Jobs not yet ended, by status (refreshed by the API; max across replicas).",
            ),
            &["status"],
        )
        .expect("valid metric"),
    )
});

/// The autoscaling signal: input rows not yet processed by running inference jobs, per pool
/// (queued and unacked work alike).
pub static BACKLOG_ROWS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new(
                "sluice_backlog_rows",
                "Input rows of running inference jobs not processed yet, per pool (queued and in flight).",
            ),
            &["pool"],
        )
        .expect("valid metric"),
    )
});

/// Jobs waiting or running per pool (training jobs and not-yet-planned inference jobs, whose
/// rows are unknown, count here).
pub static BACKLOG_JOBS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new(
                "sluice_backlog_jobs",
                "Jobs queued, planning or running, per pool.",
            ),
            &["pool"],
        )
        .expect("valid metric"),
    )
});

/// One series per worker process, value 1: its pool and configured execution provider.
pub static WORKER_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new(
                "sluice_worker_info",
                "A worker process: its pool and execution provider setting (value 1).",
            ),
            &["pool", "provider"],
        )
        .expect("valid metric"),
    )
});

/// Model package lookups on a worker: `memory` (loaded), `disk` (cached), `download`.
pub static MODEL_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_model_cache_total",
        "Model package lookups, by where the model came from (memory, disk, download).",
        &["result"],
    )
});

/// S3 request latency by operation (`GetObject`, `PutObject`, `UploadPart`, …).
pub static S3_REQUEST_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new(
                "sluice_s3_request_seconds",
                "S3 request latency by operation.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["op"],
        )
        .expect("valid metric"),
    )
});

/// S3 requests that failed (not counting "not found" and "changed" answers).
pub static S3_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_s3_errors_total",
        "S3 requests that failed, by operation (404 and 412 answers excluded).",
        &["op"],
    )
});

/// Bytes moved to and from S3: direction `sent|received`.
pub static S3_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_s3_bytes_total",
        "Bytes sent to and received from S3 (bodies).",
        &["direction"],
    )
});

/// Round trip of a Redis PING, every few seconds, from every role.
pub static REDIS_PING_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "sluice_redis_ping_seconds",
        "Round trip of a Redis PING, measured every 5 s by every role.",
        vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ],
    )
});

/// Task deliveries handled by workers: kind `plan|shard`, outcome
/// `ok|retried|dead_lettered|skipped`.
pub static TASKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_tasks_total",
        "Task deliveries handled, by kind and outcome.",
        &["kind", "outcome"],
    )
});

/// Work the sweeper queued again for stalled jobs: kind `plan|shard`.
pub static SWEEPER_REQUEUED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_sweeper_requeued_total",
        "Tasks of stalled jobs queued again by the sweeper, by kind.",
        &["kind"],
    )
});

/// Tasks a worker holds right now.
pub static TASKS_IN_FLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
    register(
        IntGauge::new(
            "sluice_tasks_in_flight",
            "Tasks being processed by this process.",
        )
        .expect("valid metric"),
    )
});

/// Input rows processed: outcome `ok|failed`.
pub static ROWS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_rows_total",
        "Input rows processed, by outcome.",
        &["outcome"],
    )
});

pub static SHARD_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "sluice_shard_seconds",
        "Time to process one shard, from receipt to commit.",
        vec![
            0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
        ],
    )
});

pub static INFERENCE_BATCH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "sluice_inference_batch_seconds",
        "ONNX Runtime time per batch.",
        vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
    )
});

pub static INFERENCE_BATCH_ROWS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "sluice_inference_batch_rows",
        "Rows per inference batch.",
        vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
    )
});

/// Time per stage of inference: `read` (S3 and parsing, per chunk of rows), `tokenize` (per
/// chunk), `run` and `pool` (per batch), `write` (serialising and uploading, per chunk).
pub static STAGE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new(
                "sluice_stage_seconds",
                "Inference time per stage: read and write (per chunk), tokenize (per chunk), run and pool (per batch).",
            )
            .buckets(vec![
                0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["stage"],
        )
        .expect("valid metric"),
    )
});

/// Share of padding in the tokens of each chunk the engine runs.
pub static PADDING_RATIO: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "sluice_padding_ratio",
        "Share of padding tokens in each chunk run by the engine (0 = none).",
        vec![0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8],
    )
});

/// Batches that ran out of memory (each halves the batch budget).
pub static INFERENCE_OOM: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "sluice_inference_oom_total",
            "Inference batches that ran out of memory and were cut smaller.",
        )
        .expect("valid metric"),
    )
});

/// Texts cut to their model package's `max_length` (jobs with truncation on).
pub static ROWS_TRUNCATED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "sluice_rows_truncated_total",
            "Texts cut to the model package's max_length before inference.",
        )
        .expect("valid metric"),
    )
});

/// Engine threads that panicked serving a request (each is dropped and its model reloaded).
pub static ENGINE_PANICS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "sluice_engine_panics_total",
            "Engine threads that panicked serving a request; the model is loaded again.",
        )
        .expect("valid metric"),
    )
});

/// Task runs that panicked, by task kind `plan|shard|train|unknown`: caught, the run counts
/// as a failure and its delivery is retried or dead-lettered like any other.
pub static TASK_PANICS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_task_panics_total",
        "Task runs that panicked (a bug); caught and retried or dead-lettered.",
        &["kind"],
    )
});

/// Tokens fed to the model: kind `real|padded` (padded includes the real ones).
pub static INFERENCE_TOKENS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_inference_tokens_total",
        "Tokens fed to the model, real and padded.",
        &["kind"],
    )
});

/// AMQP submissions handled: outcome `accepted|duplicate|rejected|requeued`.
pub static SUBMISSIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_submissions_total",
        "AMQP job submissions handled, by outcome.",
        &["outcome"],
    )
});

/// Submissions kept on the rejected queue, by reason class (`not_json`, `invalid_spec`,
/// `unknown_model`, `too_large`, `missing_message_id`, `output_in_use`, `forbidden_location`).
pub static SUBMISSIONS_REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_submissions_rejected_total",
        "AMQP submissions kept on the rejected queue, by reason class.",
        &["reason_class"],
    )
});

/// Job events published to the events exchange, by event (`job.<state>`).
pub static EVENTS_PUBLISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_events_published_total",
        "Job events published, by event.",
        &["event"],
    )
});

/// Drop-folder files handled by `ingest`: outcome `submitted|archived|failed|skipped`.
pub static INGEST_FILES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_ingest_files_total",
        "Drop-folder files handled, by outcome.",
        &["outcome"],
    )
});

/// Drop-folder scans that failed (S3 or Redis unavailable), retried next interval.
pub static INGEST_SCAN_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "sluice_ingest_scan_errors_total",
            "Drop-folder scans that failed and are retried at the next interval.",
        )
        .expect("valid metric"),
    )
});

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

/// Training progress of the jobs this worker is training, labelled by job id only while the
/// job runs here (the series are removed when it ends or moves), so the label set stays
/// as small as the worker's concurrency.
pub static TRAINING_STEP: LazyLock<GaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "sluice_training_step",
        "Optimisation steps taken by a running training job.",
        &["job_id"],
    )
});
pub static TRAINING_TOTAL_STEPS: LazyLock<GaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "sluice_training_total_steps",
        "Steps a running training job will take in all.",
        &["job_id"],
    )
});
pub static TRAINING_EPOCH: LazyLock<GaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "sluice_training_epoch",
        "Epochs completed by a running training job.",
        &["job_id"],
    )
});
pub static TRAINING_LOSS: LazyLock<GaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "sluice_training_loss",
        "Mean cross-entropy of a running training job's last batch.",
        &["job_id"],
    )
});
pub static TRAINING_LEARNING_RATE: LazyLock<GaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "sluice_training_learning_rate",
        "Learning rate of a running training job's last step.",
        &["job_id"],
    )
});
pub static TRAINING_EVAL: LazyLock<GaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "sluice_training_eval",
        "Latest evaluation of a running training job: metric accuracy|macro_f1|loss.",
        &["job_id", "metric"],
    )
});
pub static TRAINING_ETA_SECONDS: LazyLock<GaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "sluice_training_eta_seconds",
        "Estimated seconds until a running training job finishes.",
        &["job_id"],
    )
});

/// Steps run by training jobs on this worker.
pub static TRAINING_STEPS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "sluice_training_steps_total",
            "Optimisation steps run by this worker.",
        )
        .expect("valid metric"),
    )
});

/// Checkpoints written: outcome `committed|refused` (refused: the lease was lost).
pub static CHECKPOINTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_checkpoints_total",
        "Training checkpoints written, by outcome (refused: the job's lease was lost).",
        &["outcome"],
    )
});

pub static CHECKPOINT_WRITE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "sluice_checkpoint_write_seconds",
        "Time to write one checkpoint to S3 and commit its pointer.",
        vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
    )
});

/// Job lease events of training jobs: `acquired|busy|renewed|lost|released`.
pub static JOB_LEASES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_job_leases_total",
        "Training-job lease events: acquired, busy (held by another worker), renewed, lost, released.",
        &["event"],
    )
});

/// Inference shard lease events: `acquired|busy|renewed|lost|released|expired` (expired:
/// the sweeper found the owner gone and queued the shard again).
pub static SHARD_LEASES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_shard_leases_total",
        "Inference-shard lease events: acquired, busy (a duplicate delivery dropped), renewed, lost, released, expired (queued again by the sweeper).",
        &["event"],
    )
});

/// Encoder feature cache lookups for training data: `hit|miss`.
pub static FEATURE_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_feature_cache_total",
        "Training feature cache lookups, by result (hit|miss).",
        &["result"],
    )
});

// --- Intake guard (issue 13): panics caught at the front doors. ---

/// Panics caught while handling one request or submission: door `http|amqp`. Each one is
/// answered (a JSON 500, or the submission kept on the rejected queue as `panicked`), so
/// the door keeps serving; any increase is a bug to report.
pub static INTAKE_PANICS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_intake_panics_total",
        "Panics caught while handling one HTTP request or AMQP submission, by door (http|amqp); the request was answered and the door kept serving.",
        &["door"],
    )
});

/// Registers the intake-guard series at 0 (called by `init`).
fn init_intake_guard() {
    for door in ["http", "amqp"] {
        INTAKE_PANICS.with_label_values(&[door]);
    }
    for class in ["forbidden_reply_to", "panicked"] {
        SUBMISSIONS_REJECTED.with_label_values(&[class]);
    }
}

// --- Dependency deadlines and topology healing (issue 13) ---

/// Calls to a dependency that failed: `dependency` `s3|redis|amqp`, `kind` `timeout` (no
/// answer within its deadline) or `error` (refused, reset, 5xx). Counted per try, so the
/// SDK's own S3 retries show too.
pub static DEPENDENCY_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_dependency_errors_total",
        "Failed calls to a dependency (per try), by dependency (s3|redis|amqp) and kind (timeout|error).",
        &["dependency", "kind"],
    )
});

/// Times sluice found part of its broker topology missing and declared it again: `trigger`
/// `publish` (a publish found it gone), `consume` (a consumer found its queue gone) or
/// `check` (the periodic check, or `Broker::ensure_topology`).
pub static TOPOLOGY_REDECLARED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sluice_topology_redeclared_total",
        "Times missing queues or exchanges were declared again, by trigger (publish|consume|check).",
        &["trigger"],
    )
});

/// Counts one failed call to `dependency` (`s3|redis|amqp`); `timeout` says whether it ran
/// past its deadline.
pub fn dependency_error(dependency: &str, timeout: bool) {
    let kind = if timeout { "timeout" } else { "error" };
    DEPENDENCY_ERRORS
        .with_label_values(&[dependency, kind])
        .inc();
}

fn init_dependency_metrics() {
    for dependency in ["s3", "redis", "amqp"] {
        for kind in ["timeout", "error"] {
            DEPENDENCY_ERRORS.with_label_values(&[dependency, kind]);
        }
    }
    for trigger in ["publish", "consume", "check"] {
        TOPOLOGY_REDECLARED.with_label_values(&[trigger]);
    }
}

/// Removes a training job's per-job series (it ended, or left this worker).
pub fn forget_training_job(job_id: &str) {
    for gauge in [
        &*TRAINING_STEP,
        &*TRAINING_TOTAL_STEPS,
        &*TRAINING_EPOCH,
        &*TRAINING_LOSS,
        &*TRAINING_LEARNING_RATE,
        &*TRAINING_ETA_SECONDS,
    ] {
        let _ = gauge.remove_label_values(&[job_id]);
    }
    for metric in ["accuracy", "macro_f1", "loss"] {
        let _ = TRAINING_EVAL.remove_label_values(&[job_id, metric]);
    }
}

/// Forces registration of every metric so `/metrics` lists them from the start.
pub fn init() {
    LazyLock::force(&JOBS_SUBMITTED);
    LazyLock::force(&JOBS_FINISHED);
    LazyLock::force(&JOB_DURATION_SECONDS);
    LazyLock::force(&JOBS_ACTIVE);
    LazyLock::force(&BACKLOG_ROWS);
    LazyLock::force(&BACKLOG_JOBS);
    LazyLock::force(&WORKER_INFO);
    LazyLock::force(&MODEL_CACHE);
    LazyLock::force(&S3_REQUEST_SECONDS);
    LazyLock::force(&S3_ERRORS);
    LazyLock::force(&S3_BYTES);
    LazyLock::force(&REDIS_PING_SECONDS);
    zero_known_series();
    LazyLock::force(&TASKS);
    LazyLock::force(&TASKS_IN_FLIGHT);
    LazyLock::force(&SWEEPER_REQUEUED);
    LazyLock::force(&ROWS);
    LazyLock::force(&SHARD_SECONDS);
    LazyLock::force(&INFERENCE_BATCH_SECONDS);
    LazyLock::force(&INFERENCE_BATCH_ROWS);
    LazyLock::force(&INFERENCE_TOKENS);
    LazyLock::force(&INFERENCE_OOM);
    LazyLock::force(&ROWS_TRUNCATED);
    LazyLock::force(&ENGINE_PANICS);
    LazyLock::force(&TASK_PANICS);
    LazyLock::force(&STAGE_SECONDS);
    LazyLock::force(&PADDING_RATIO);
    LazyLock::force(&SUBMISSIONS);
    LazyLock::force(&SUBMISSIONS_REJECTED);
    LazyLock::force(&EVENTS_PUBLISHED);
    LazyLock::force(&INGEST_FILES);
    LazyLock::force(&INGEST_SCAN_ERRORS);
    LazyLock::force(&TRAINING_STEP);
    LazyLock::force(&TRAINING_TOTAL_STEPS);
    LazyLock::force(&TRAINING_EPOCH);
    LazyLock::force(&TRAINING_LOSS);
    LazyLock::force(&TRAINING_LEARNING_RATE);
    LazyLock::force(&TRAINING_EVAL);
    LazyLock::force(&TRAINING_ETA_SECONDS);
    LazyLock::force(&TRAINING_STEPS);
    LazyLock::force(&CHECKPOINTS);
    LazyLock::force(&CHECKPOINT_WRITE_SECONDS);
    LazyLock::force(&JOB_LEASES);
    LazyLock::force(&SHARD_LEASES);
    LazyLock::force(&FEATURE_CACHE);
    init_intake_guard();
    init_dependency_metrics();
}

/// Exports the known label values at 0 from the start, so a rate or an alert over an error
/// that has not happened yet reads 0 instead of "no data".
fn zero_known_series() {
    let zero = |counter: &IntCounterVec, sets: &[&[&str]]| {
        let mut combos: Vec<Vec<&str>> = vec![Vec::new()];
        for values in sets {
            combos = combos
                .into_iter()
                .flat_map(|prefix| {
                    values.iter().map(move |v| {
                        let mut next = prefix.clone();
                        next.push(v);
                        next
                    })
                })
                .collect();
        }
        for combo in combos {
            counter.with_label_values(&combo);
        }
    };
    let kinds: &[&str] = &["inference", "training"];
    zero(&JOBS_SUBMITTED, &[kinds, &["http", "amqp", "ingest"]]);
    zero(
        &JOBS_FINISHED,
        &[kinds, &["succeeded", "failed", "cancelled"]],
    );
    zero(
        &TASKS,
        &[
            &["plan", "shard", "train"],
            &["ok", "retried", "dead_lettered", "skipped", "failed"],
        ],
    );
    zero(&ROWS, &[&["ok", "failed"]]);
    zero(&TASK_PANICS, &[&["plan", "shard", "train", "unknown"]]);
    zero(&INFERENCE_TOKENS, &[&["real", "padded"]]);
    zero(
        &SUBMISSIONS_REJECTED,
        &[&[
            "not_json",
            "invalid_spec",
            "unknown_model",
            "too_large",
            "missing_message_id",
            "output_in_use",
            "forbidden_location",
        ]],
    );
    zero(
        &S3_ERRORS,
        &[&[
            "GetObject",
            "PutObject",
            "HeadObject",
            "ListObjectsV2",
            "DeleteObject",
            "CopyObject",
            "UploadPart",
            "CreateMultipartUpload",
            "CompleteMultipartUpload",
        ]],
    );
    zero(&CHECKPOINTS, &[&["committed", "refused"]]);
    zero(
        &JOB_LEASES,
        &[&["acquired", "busy", "renewed", "lost", "released"]],
    );
    zero(
        &SHARD_LEASES,
        &[&["acquired", "busy", "renewed", "lost", "released", "expired"]],
    );
    zero(&FEATURE_CACHE, &[&["hit", "miss"]]);
    zero(&MODEL_CACHE, &[&["memory", "disk", "download"]]);
    // Histograms too: a series born with its first observation would hide that observation
    // from rate().
    for kind in kinds {
        for status in ["succeeded", "failed", "cancelled"] {
            JOB_DURATION_SECONDS.with_label_values(&[kind, status]);
        }
    }
    for stage in ["read", "tokenize", "run", "pool", "write"] {
        STAGE_SECONDS.with_label_values(&[stage]);
    }
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    init();
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&REGISTRY.gather(), &mut buffer)
        .expect("text encoding cannot fail");
    String::from_utf8(buffer).expect("prometheus text is UTF-8")
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_renders_with_the_prefix() {
        super::ROWS.with_label_values(&["ok"]).inc();
        let text = super::render();
        assert!(text.contains("sluice_rows_total"), "{text}");
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(line.starts_with("sluice_"), "{line}");
        }
    }
}
