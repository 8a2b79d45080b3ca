//! Training jobs on the worker. A `train` task is only a nudge: ownership is the job's Redis
//! lease (heartbeats, fencing token), so the delivery is acked as soon as the lease is taken
//! and a job can run far longer than the broker's delivery timeout. The job trains from its
//! last checkpoint (or from scratch), checkpoints to S3 as it goes, and ends by writing the
//! classifier package. A worker that dies loses the lease; the sweeper queues the job again
//! and another worker resumes it from the checkpoint.

mod data;
mod finish;
mod lease;
mod observer;
pub mod plan;
mod report;
mod run;
mod setup;
mod writer;

pub use plan::requeue_train;

use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use self::lease::{Held, Watch};
use super::disposition::{self, Disposition, Outcome};
use super::{TaskError, WorkerContext, count_failure, fail_job, panics};
use crate::broker::Delivery;
use crate::job::JobStatus;
use crate::metrics;
use crate::state::{Attempts, JobRecord};
use crate::train::TrainError;

/// Folder under the job's output where checkpoints go.
pub const CHECKPOINT_FOLDER: &str = "checkpoints/";

/// How a training run on this worker ended.
enum Ended {
    Succeeded,
    /// Cancelled, or the lease was lost: nothing more to do here.
    Abandoned,
    /// Shutdown: checkpointed, to be resumed elsewhere.
    HandedBack,
}

impl From<TrainError> for TaskError {
    fn from(err: TrainError) -> Self {
        match err {
            TrainError::Engine(e) => e.into(),
            other => TaskError::Permanent(other.to_string()),
        }
    }
}

/// Handles one `train` delivery from start to end; acks it itself.
pub async fn handle(
    ctx: &WorkerContext,
    delivery: &Delivery,
    job_id: &str,
    attempts: Attempts,
    shutdown: &CancellationToken,
) {
    let Some(held) = lease::take(ctx, delivery, job_id, attempts).await else {
        return;
    };
    // The job may have ended between the read above and the lease (a previous owner
    // finishing): look again now that nobody else can move it forward.
    let job = match ctx.state.get(job_id).await {
        Ok(job) if job.status == JobStatus::Running => job,
        Ok(_) | Err(_) => {
            held.release().await;
            return;
        }
    };
    // Only leased runs count against the job: duplicates that found the lease busy were
    // taken back above.
    let what = format!("training job {job_id}");
    if let Some(reason) = disposition::before_run(&what, attempts, ctx.settings.amqp.max_deliveries)
    {
        tracing::error!(job_id, %reason, "giving up");
        if fail_job(ctx, job_id, &reason).await
            && let Err(e) = ctx.broker.dead_letter(delivery, &reason).await
        {
            tracing::warn!(job_id, error = %e, "could not dead-letter the train task");
        }
        metrics::TASKS
            .with((metrics::TaskKind::Train, metrics::TaskOutcome::DeadLettered))
            .inc();
        held.release().await;
        return;
    }
    let result = run_watched(ctx, &job, &held, shutdown).await;
    if held.lost() && result.is_err() {
        // Another worker may own the job now: this run's end is not its to count or retry;
        // if nobody owns it, the sweeper queues it again.
        tracing::warn!(job_id, "training stopped: its lease was lost");
        return;
    }
    let failed = count_failure(ctx, job_id, "train", &result, attempts).await;
    // A hand-back after a checkpoint is the disposition's clean interruption.
    let ran = match &result {
        Ok(Ended::HandedBack) => Err(TaskError::Interrupted),
        Ok(_) => Ok(()),
        Err(e) => Err(e.clone()),
    };
    let levels = ctx.settings.amqp.retry_delays_ms.len();
    let disposition = disposition::after_run(&what, Outcome::of(&ran, failed), levels);
    if let Ok(Ended::Succeeded) = result {
        metrics::TASKS
            .with((metrics::TaskKind::Train, metrics::TaskOutcome::Ok))
            .inc();
    }
    settle(ctx, delivery, &held, &job, disposition, &ran, failed).await;
}

/// Runs the job while a watcher renews its lease and raises the stop flags.
async fn run_watched(
    ctx: &WorkerContext,
    job: &JobRecord,
    held: &Held<'_>,
    shutdown: &CancellationToken,
) -> Result<Ended, TaskError> {
    let watch = Watch::new(ctx, held, shutdown);
    let done = watch.done.clone();
    let watcher = tokio::spawn(watch.run());
    let execute = async {
        if job.spec.kind == crate::job::JobKind::Compress {
            let stop = held.flags.raised.clone();
            return match super::compress::execute(ctx, job, &held.lease, stop).await? {
                super::compress::Compressed::Succeeded => Ok(Ended::Succeeded),
                // Nothing to save: a shut-down run starts over on its next owner.
                _ if held.flags.shutdown.load(Ordering::Relaxed) => Ok(Ended::HandedBack),
                super::compress::Compressed::Stopped => Ok(Ended::Abandoned),
            };
        }
        run::execute(ctx, job, &held.lease, held.flags.clone()).await
    };
    let result = panics::guarded(metrics::TaskKind::Train, execute).await;
    done.cancel();
    let _ = watcher.await;
    metrics::forget_training_job(&job.id);
    result
}

/// Carries out the disposition. The delivery was acked when the lease was taken, so a
/// retry or a hand-back publishes the task anew.
async fn settle(
    ctx: &WorkerContext,
    delivery: &Delivery,
    held: &Held<'_>,
    job: &JobRecord,
    disposition: Disposition,
    ran: &Result<(), TaskError>,
    failed: u64,
) {
    let job_id = job.id.as_str();
    match disposition {
        Disposition::Ack => held.release().await,
        Disposition::HandBack => {
            // Checkpointed on shutdown: a clean hand-back is not an attempt.
            let _ = ctx.state.uncount_start(job_id, "train").await;
            held.release().await;
            requeue_train(ctx, &job.spec, job_id).await;
        }
        Disposition::RetryLater { level } => {
            let reason = ran
                .as_ref()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            tracing::warn!(job_id, failed, level, %reason, "training failed; retrying later from the last checkpoint");
            held.release().await;
            metrics::TASKS
                .with((metrics::TaskKind::Train, metrics::TaskOutcome::Retried))
                .inc();
            // The delivery was acked already; its body goes to the retry queue.
            if let Err(e) = ctx.broker.retry_later(delivery, level).await {
                tracing::warn!(job_id, error = %e, "could not schedule the retry; the sweeper will queue the job again");
            }
        }
        Disposition::GiveUp { reason } => {
            tracing::error!(job_id, failed, %reason, "training failed for good");
            metrics::TASKS
                .with((metrics::TaskKind::Train, metrics::TaskOutcome::Failed))
                .inc();
            if !fail_job(ctx, job_id, &reason).await {
                tracing::warn!(
                    job_id,
                    "job not marked failed; the sweeper will try the job again"
                );
            }
            held.release().await;
        }
    }
}
