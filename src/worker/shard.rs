//! One shard: stream its byte ranges from S3, parse rows (bad rows to an errors part),
//! embed them chunk by chunk, write the output part, commit it in Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::ids::{IdLog, ids_part_uri};
use super::output::{OutputPart, Values, Writer, errors_part_uri};
use super::shard_input::Place;
use super::{TaskError, WorkerContext, finish};
use crate::engine::Embedder;
use crate::job::accounting::PieceCounts;
use crate::job::{JobStatus, PieceLayout, ShardTask, Task};
use crate::metrics::{self, Stage};
use crate::state::{JobRecord, ShardCommit, StateStore};

/// How a shard task ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardOutcome {
    Committed,
    /// Already committed by an earlier delivery.
    AlreadyDone,
    /// The job is no longer running (cancelled or failed); nothing was written.
    Skipped,
}

pub async fn run(
    ctx: &WorkerContext,
    task: &ShardTask,
    shutdown: &CancellationToken,
) -> Result<ShardOutcome, TaskError> {
    let started = Instant::now();
    let job = ctx.state.get(&task.job_id).await?;
    match job.status {
        JobStatus::Running => {}
        JobStatus::Queued | JobStatus::Planning => {
            return Err(TaskError::Retryable(format!(
                "job {} is still {}; shard arrived early",
                job.id, job.status
            )));
        }
        _ => return Ok(ShardOutcome::Skipped),
    }
    if ctx.state.is_shard_committed(&job.id, task.shard).await? {
        // A redelivery after the commit: the crash may have come before the finish.
        finish::finish_if_complete(ctx, &job.id).await?;
        return Ok(ShardOutcome::AlreadyDone);
    }
    let embedder = ctx.models.get(&job.spec.model_uri()).await?;
    check_package(&job, &embedder)?;
    let output = job.spec.output_uri();
    let values = match embedder.labels() {
        [] => Values::Embedding {
            dimension: embedder.dimension(),
        },
        labels => Values::Classes {
            labels: labels.to_vec(),
        },
    };
    let part = OutputPart::open(
        &ctx.storage,
        &job.spec,
        task.shard,
        task.columns.as_ref(),
        values,
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_for_stop(
        ctx.state.clone(),
        job.id.clone(),
        shutdown.clone(),
        stop.clone(),
    ));
    let mut writer = Writer {
        part,
        errors: Vec::new(),
        counts: task
            .pieces
            .iter()
            .map(|p| PieceCounts {
                uri: p.uri.clone(),
                start: p.start,
                ..Default::default()
            })
            .collect(),
        ids: IdLog::default(),
    };
    let run = ShardRun {
        ctx,
        job: &job,
        task,
        embedder: &embedder,
        shutdown,
        stop: &stop,
    };
    let processed = run.process(&mut writer).await;
    if processed.is_err() {
        // Whatever the engine still holds for this shard need not run.
        stop.store(true, Ordering::Relaxed);
    }
    watcher.abort();
    match processed {
        Ok(true) => {}
        Ok(false) => {
            writer.part.abort().await;
            let _ = ctx.state.clear_live_rows(&job.id, task.shard).await;
            return Ok(ShardOutcome::Skipped);
        }
        Err(e) => {
            writer.part.abort().await;
            let _ = ctx.state.clear_live_rows(&job.id, task.shard).await;
            return Err(e);
        }
    }
    let Writer {
        part,
        errors,
        counts,
        ids,
    } = writer;
    let mut committing = Instant::now();
    let part_key = part.uri().clone();
    part.finish().await?;
    let rows: u64 = counts.iter().map(|c| c.written).sum();
    let failed_rows: u64 = counts.iter().map(|c| c.failed).sum();
    let truncated_rows: u64 = counts.iter().map(|c| c.truncated).sum();
    let errors_part = if errors.is_empty() {
        None
    } else {
        let uri = errors_part_uri(&output, task.shard);
        ctx.storage
            .put(&uri, errors.concat(), "application/x-ndjson")
            .await?;
        Some(uri.to_string())
    };
    let ids_part = match job.spec.input.id_field {
        Some(_) => {
            let uri = ids_part_uri(&output, task.shard);
            ctx.storage
                .put(&uri, ids.into_sorted(), "text/plain")
                .await?;
            Some(uri.to_string())
        }
        None => None,
    };
    let commit = ShardCommit {
        shard: task.shard,
        part: part_key.to_string(),
        rows,
        failed_rows,
        errors_part: errors_part.clone(),
        seconds: started.elapsed().as_secs_f64(),
        worker: super::worker_id().to_string(),
        pieces: counts,
        truncated_rows,
        ids_part: ids_part.clone(),
        // Progress in bytes matters only for inputs planned without reading (text ones).
        bytes: task
            .pieces
            .iter()
            .filter(|p| p.layout != PieceLayout::ParquetRows)
            .map(|p| p.end.saturating_sub(p.start))
            .sum(),
    };
    let outcome = ctx.state.commit_shard(&job.id, &commit).await?;
    observe_stage(Stage::Commit, &mut committing);
    if !outcome.newly_committed
        && outcome.status != JobStatus::Running
        && !ctx.state.is_shard_committed(&job.id, task.shard).await?
    {
        // The job was cancelled (or failed) while this part was uploading: take the part
        // back so nothing appears after the cancel.
        ctx.storage.delete(&part_key).await?;
        if errors_part.is_some() {
            ctx.storage
                .delete(&errors_part_uri(&output, task.shard))
                .await?;
        }
        if ids_part.is_some() {
            ctx.storage
                .delete(&ids_part_uri(&output, task.shard))
                .await?;
        }
        return Ok(ShardOutcome::Skipped);
    }
    if outcome.newly_committed {
        metrics::ROWS.with(metrics::RowOutcome::Ok).inc_by(rows);
        metrics::ROWS
            .with(metrics::RowOutcome::Failed)
            .inc_by(failed_rows);
        metrics::SHARD_SECONDS.observe(commit.seconds);
    }
    tracing::info!(job_id = %job.id, shard = task.shard, rows, failed_rows, truncated_rows,
        seconds = format!("{:.1}", commit.seconds), done = outcome.shards_done,
        total = outcome.shards_total, "shard committed");
    if outcome.all_done() {
        finish::finish_if_complete(ctx, &job.id).await?;
    }
    Ok(ShardOutcome::Committed)
}

/// Refuses to run a package other than the one planned, or one of the wrong kind.
fn check_package(job: &JobRecord, embedder: &Embedder) -> Result<(), TaskError> {
    // The whole package (a re-pushed tokenizer changes it too); records planned by older
    // versions only have the model's hash.
    let changed = match (&job.package_key, &job.model_sha256) {
        (Some(planned), _) => planned != embedder.package_key(),
        (None, Some(planned)) => planned != embedder.model_sha256(),
        (None, None) => false,
    };
    if changed {
        let planned = job.model_sha256.as_deref().unwrap_or("?");
        return Err(TaskError::permanent(format!(
            "model package {} changed while the job ran (its files or settings differ from when the job was planned; model sha256 then {planned}, now {}); resubmit the job to use the new package",
            job.spec.model,
            embedder.model_sha256()
        )));
    }
    match (job.spec.task, embedder.labels().is_empty()) {
        (Task::Embed, true) | (Task::Classify, false) => Ok(()),
        (Task::Classify, true) => Err(TaskError::permanent(format!(
            "model package {} is an embedding model; task = \"classify\" needs a classifier package (one a training job wrote)",
            job.spec.model
        ))),
        (Task::Embed, false) => Err(TaskError::permanent(format!(
            "model package {} is a classifier; use task = \"classify\", or its encoder's package for embeddings",
            job.spec.model
        ))),
    }
}

/// What one shard's processing needs, borrowed for its duration (the stages in
/// `shard_stages`, driven by `shard_pipeline`).
pub(super) struct ShardRun<'a> {
    pub(super) ctx: &'a WorkerContext,
    pub(super) job: &'a JobRecord,
    pub(super) task: &'a ShardTask,
    pub(super) embedder: &'a Embedder,
    pub(super) shutdown: &'a CancellationToken,
    pub(super) stop: &'a Arc<AtomicBool>,
}

/// Raises `stop` once the job leaves `running` (cancelled, failed) or the worker shuts down,
/// so the engine stops before its next batch instead of finishing the chunk.
async fn watch_for_stop(
    state: StateStore,
    job_id: String,
    shutdown: CancellationToken,
    stop: Arc<AtomicBool>,
) {
    const EVERY: Duration = Duration::from_millis(250);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(EVERY) => {}
        }
        match state.status(&job_id).await {
            Ok(JobStatus::Running) => {}
            Ok(_) => break,
            // Redis unreachable: keep going; the commit will tell.
            Err(_) => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
}

/// A row's id without an id field: `<object key>:<line>` (the row number for Parquet), or
/// `<object key>@<byte offset>` where the line is not known.
pub(super) fn default_id(key: &str, place: Place) -> String {
    match (place.line, place.offset) {
        (Some(line), _) => format!("{key}:{line}"),
        (None, Some(offset)) => format!("{key}@{offset}"),
        (None, None) => key.to_string(),
    }
}

/// Records the time since `started` under `stage`.
pub(super) fn observe_stage(stage: Stage, started: &mut Instant) {
    metrics::STAGE_SECONDS
        .with(stage)
        .observe(started.elapsed().as_secs_f64());
    *started = Instant::now();
}
