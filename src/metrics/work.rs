//! Workers at work: tasks, rows, the engine's batches and stages, panics and leases.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntGauge, IntGaugeVec, Opts};

use super::family::{Counters, Family, Histograms};
use super::labels::*;
use super::{counter_vec, histogram, register};

declare! {
    /// One series per worker process, value 1: its pool and configured execution provider.
    pub static WORKER_INFO: IntGaugeVec =
        register(
            IntGaugeVec::new(
                Opts::new(
                    "sluice_worker_info",
                    "A worker process: its pool and execution provider setting (value 1).",
                ),
                &["pool", "provider"],
            )
            .expect("valid metric"),
        );

    /// Model package lookups on a worker: `memory` (loaded), `disk` (cached), `download`.
    pub static MODEL_CACHE: Counters<ModelSource> =
        Family::new(
            counter_vec(
                "sluice_model_cache_total",
                "Model package lookups, by where the model came from (memory, disk, download).",
                &["result"],
            )
        );

    /// Task deliveries handled by workers: kind `plan|shard`, outcome
    /// `ok|retried|dead_lettered|skipped`.
    pub static TASKS: Counters<(TaskKind, TaskOutcome)> =
        Family::new(
            counter_vec(
                "sluice_tasks_total",
                "Task deliveries handled, by kind and outcome.",
                &["kind", "outcome"],
            )
        );

    /// Work the sweeper queued again for stalled jobs: kind `plan|shard`.
    pub static SWEEPER_REQUEUED: Counters<TaskKind> =
        Family::new(
            counter_vec(
                "sluice_sweeper_requeued_total",
                "Tasks of stalled jobs queued again by the sweeper, by kind.",
                &["kind"],
            )
        );

    /// Tasks a worker holds right now.
    pub static TASKS_IN_FLIGHT: IntGauge =
        register(
            IntGauge::new(
                "sluice_tasks_in_flight",
                "Tasks being processed by this process.",
            )
            .expect("valid metric"),
        );

    /// Input rows processed: outcome `ok|failed`.
    pub static ROWS: Counters<RowOutcome> =
        Family::new(
            counter_vec(
                "sluice_rows_total",
                "Input rows processed, by outcome.",
                &["outcome"],
            )
        );

    pub static SHARD_SECONDS: Histogram =
        histogram(
            "sluice_shard_seconds",
            "Time to process one shard, from receipt to commit.",
            vec![
                0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ],
        );

    pub static INFERENCE_BATCH_SECONDS: Histogram =
        histogram(
            "sluice_inference_batch_seconds",
            "ONNX Runtime time per batch.",
            vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
        );

    pub static INFERENCE_BATCH_ROWS: Histogram =
        histogram(
            "sluice_inference_batch_rows",
            "Rows per inference batch.",
            vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
        );

    /// Time per stage of inference: `read` (S3 and parsing, per chunk of rows), `tokenize` (per
    /// chunk), `run` and `pool` (per batch), `write` (serialising and uploading, per chunk).
    pub static STAGE_SECONDS: Histograms<Stage> =
        Family::new(
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
        );

    /// Share of padding in the tokens of each chunk the engine runs.
    pub static PADDING_RATIO: Histogram =
        histogram(
            "sluice_padding_ratio",
            "Share of padding tokens in each chunk run by the engine (0 = none).",
            vec![0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8],
        );

    /// Batches that ran out of memory (each halves the batch budget).
    pub static INFERENCE_OOM: IntCounter =
        register(
            IntCounter::new(
                "sluice_inference_oom_total",
                "Inference batches that ran out of memory and were cut smaller.",
            )
            .expect("valid metric"),
        );

    /// Texts cut to their model package's `max_length` (jobs with truncation on).
    pub static ROWS_TRUNCATED: IntCounter =
        register(
            IntCounter::new(
                "sluice_rows_truncated_total",
                "Texts cut to the model package's max_length before inference.",
            )
            .expect("valid metric"),
        );

    /// Engine threads that panicked serving a request (each is dropped and its model reloaded).
    pub static ENGINE_PANICS: IntCounter =
        register(
            IntCounter::new(
                "sluice_engine_panics_total",
                "Engine threads that panicked serving a request; the model is loaded again.",
            )
            .expect("valid metric"),
        );

    /// Task runs that panicked, by task kind `plan|shard|train|unknown`: caught, the run counts
    /// as a failure and its delivery is retried or dead-lettered like any other.
    pub static TASK_PANICS: Counters<TaskKind> =
        Family::new(
            counter_vec(
                "sluice_task_panics_total",
                "Task runs that panicked (a bug); caught and retried or dead-lettered.",
                &["kind"],
            )
        );

    /// Tokens fed to the model: kind `real|padded` (padded includes the real ones).
    pub static INFERENCE_TOKENS: Counters<TokenKind> =
        Family::new(
            counter_vec(
                "sluice_inference_tokens_total",
                "Tokens fed to the model, real and padded.",
                &["kind"],
            )
        );

    /// Inference shard lease events: `acquired|busy|renewed|lost|released|expired` (expired:
    /// the sweeper found the owner gone and queued the shard again).
    pub static SHARD_LEASES: Counters<LeaseEvent> =
        Family::new(
            counter_vec(
                "sluice_shard_leases_total",
                "Inference-shard lease events: acquired, busy (a duplicate delivery dropped), renewed, lost, released, expired (queued again by the sweeper).",
                &["event"],
            )
        );
}
