//! The worker role: consumes its pool's task queue with bounded prefetch, runs plan and shard
//! tasks, and acks only once their output and state are durable; failures go to the retry
//! ladder or the dead-letter queue; shutdown drains in-flight work.

mod compress;
mod disposition;
mod error;
mod error_lines;
pub mod finish;
pub(crate) mod ids;
mod inputs;
mod models;
pub mod output;
mod panics;
mod plan;
pub mod shard;
mod shard_input;
mod shard_lease;
mod shard_pipeline;
mod shard_stages;
pub mod sweep;
pub mod training;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use disposition::Disposition;
pub use error::TaskError;
pub use models::ModelCache;

use crate::broker::{Broker, Delivery, Subscription};
use crate::job::{JobStatus, TaskMessage};
use crate::metrics::{self, FinalStatus, TaskKind, TaskOutcome};
use crate::settings::Settings;
use crate::state::{Attempts, StateStore, now_ms};
use crate::storage::Storage;

/// This process as a worker: `host-pid`, recorded with each shard it commits.
pub fn worker_id() -> &'static str {
    static ID: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "worker".into());
        format!("{host}-{}", std::process::id())
    });
    &ID
}

/// Everything a task needs.
pub struct WorkerContext {
    pub settings: Arc<Settings>,
    pub broker: Broker,
    pub state: StateStore,
    pub storage: Storage,
    pub models: ModelCache,
}

impl WorkerContext {
    pub fn new(
        settings: Arc<Settings>,
        broker: Broker,
        state: StateStore,
        storage: Storage,
    ) -> Self {
        let models = ModelCache::new(
            storage.clone(),
            settings.worker.model_cache_dir.clone(),
            settings.engine.clone(),
        );
        Self {
            settings,
            broker,
            state,
            storage,
            models,
        }
    }
}

/// Consumes the pool's task queue until `shutdown`, then stops taking tasks, lets in-flight
/// ones finish within the grace period, and returns (see `Broker::consume`). The consumer
/// pauses while every slot is busy: leased tasks ack early, freeing their prefetch slot.
pub async fn run(ctx: Arc<WorkerContext>, shutdown: CancellationToken) {
    let settings = &ctx.settings;
    let pool = settings.worker.pool;
    let subscription = Subscription {
        queue: ctx.broker.topology().task_queue(pool),
        tag: "sluice-worker",
        check: "task_consumer",
        concurrency: settings.worker.concurrency,
        prefetch: settings.amqp.prefetch,
        pause_when_busy: true,
        stall_after: Duration::from_secs(settings.amqp.consumer_stall_secs),
        drain_grace: Some(Duration::from_secs(settings.worker.shutdown_grace_secs)),
    };
    tracing::info!(pool = pool.as_str(), "worker starting");
    let broker = ctx.broker.clone();
    broker
        .consume(subscription, shutdown.clone(), |delivery| {
            handle_guarded(ctx.clone(), delivery, shutdown.clone())
        })
        .await;
}

/// `handle`, with a panic in the handling around a task run caught (runs themselves are
/// guarded): an unanswered delivery must still be answered, or it would hold its slot
/// until the channel closes; one already acked (a leased task) is its lease's to recover.
async fn handle_guarded(ctx: Arc<WorkerContext>, delivery: Delivery, shutdown: CancellationToken) {
    metrics::TASKS_IN_FLIGHT.inc();
    let run = std::panic::AssertUnwindSafe(handle(&ctx, &delivery, &shutdown));
    if let Err(payload) = run.catch_unwind().await {
        let reason = format!(
            "sluice bug while handling a task: {}",
            panics::panic_message(payload.as_ref())
        );
        metrics::TASK_PANICS.with(metrics::TaskKind::Unknown).inc();
        if delivery.is_answered() {
            tracing::error!(%reason, "task already acked; its lease lapses and the sweeper queues it again");
        } else {
            tracing::error!(%reason, "dead-lettering the task");
            dead_letter(&ctx, &delivery, None, &reason).await;
        }
    }
    metrics::TASKS_IN_FLIGHT.dec();
}

/// Runs one delivery to its end: ack, retry later, requeue or dead-letter.
async fn handle(ctx: &WorkerContext, delivery: &Delivery, shutdown: &CancellationToken) {
    let task: TaskMessage = match serde_json::from_slice(delivery.body()) {
        Ok(task) => task,
        Err(e) => {
            let reason = format!("task message is not valid: {e}");
            tracing::error!(%reason, "dead-lettering");
            dead_letter(ctx, delivery, None, &reason).await;
            metrics::TASKS
                .with((
                    metrics::TaskKind::Unknown,
                    metrics::TaskOutcome::DeadLettered,
                ))
                .inc();
            return;
        }
    };
    let kind = match task {
        TaskMessage::Plan { .. } => TaskKind::Plan,
        TaskMessage::Shard(_) => TaskKind::Shard,
        TaskMessage::Train { .. } => TaskKind::Train,
    };
    let job_id = task.job_id().to_string();
    let task_key = task.task_key();
    // Every line logged while the task runs carries its job and task.
    let span = tracing::info_span!("task", job_id = %job_id, task = %task_key);
    async move {
        let attempts = match ctx.state.count_start(&job_id, &task_key).await {
            Ok(attempts) => attempts,
            Err(e) => {
                tracing::warn!(%job_id, task = %task_key, error = %e, "state store unavailable; task goes back to the queue");
                delivery.requeue_after(Duration::from_secs(1)).await;
                return;
            }
        };
        match &task {
            TaskMessage::Train { job_id } => {
                // Acks, retries and fails on its own: the lease, not the delivery, owns the
                // job, and its starts are judged once it holds the lease (a duplicate of a
                // job another worker runs must not use up its budget).
                training::handle(ctx, delivery, job_id, attempts, shutdown).await;
                return;
            }
            TaskMessage::Shard(shard) => {
                // Likewise: the shard's lease owns it once taken, so a shard may run longer
                // than the broker's consumer timeout.
                shard_lease::handle(ctx, delivery, shard, attempts, shutdown).await;
                return;
            }
            TaskMessage::Plan { .. } => {}
        }
        let what = format!("{task_key} of job {job_id}");
        if let Some(reason) =
            disposition::before_run(&what, attempts, ctx.settings.amqp.max_deliveries)
        {
            give_up(ctx, delivery, &job_id, &reason, kind).await;
            return;
        }
        if attempts.vanished() > 0 {
            tracing::info!(vanished = attempts.vanished(), "earlier runs of this task vanished with their worker; not counted as failures");
        }
        let result = panics::guarded(kind, plan_job(ctx, &job_id)).await;
        let failed = count_failure(ctx, &job_id, &task_key, &result, attempts).await;
        let outcome = disposition::Outcome::of(&result, failed);
        let levels = ctx.settings.amqp.retry_delays_ms.len();
        match disposition::after_run(&what, outcome, levels) {
            Disposition::Ack => {
                metrics::TASKS.with((kind, TaskOutcome::Ok)).inc();
                ack(delivery).await;
            }
            Disposition::HandBack => {
                // A clean hand-back is not an attempt: rolling restarts must not use up a
                // task's budget.
                if let Err(e) = ctx.state.uncount_start(&job_id, &task_key).await {
                    tracing::warn!(error = %e, "could not uncount the interrupted run");
                }
                requeue(delivery).await
            }
            Disposition::RetryLater { level } => {
                tracing::warn!(failed, level, error = %result.as_ref().err().map(ToString::to_string).unwrap_or_default(), "task failed; retrying later");
                match ctx.broker.retry_later(delivery, level).await {
                    Ok(()) => ack(delivery).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not schedule the retry; task goes back to the queue");
                        requeue(delivery).await;
                    }
                }
                metrics::TASKS.with((kind, TaskOutcome::Retried)).inc();
            }
            Disposition::GiveUp { reason } => {
                tracing::error!(failed, %reason, "task failed for good");
                give_up(ctx, delivery, &job_id, &reason, kind).await;
            }
        }
    }
    .instrument(span)
    .await
}

/// Counts the run as failed when it ended in the task's own error, and returns the task's
/// failures so far (an unreachable state store counts this one on top of the last known).
pub(crate) async fn count_failure<T>(
    ctx: &WorkerContext,
    job_id: &str,
    task_key: &str,
    result: &Result<T, TaskError>,
    attempts: Attempts,
) -> u64 {
    if !matches!(
        result,
        Err(TaskError::Retryable(_) | TaskError::Permanent(_))
    ) {
        return attempts.failed;
    }
    match ctx.state.count_failure(job_id, task_key).await {
        Ok(failed) => failed,
        Err(e) => {
            tracing::warn!(job_id, task = task_key, error = %e, "could not count the failed run");
            // Counted from what was read at the start, which a reset since may have made
            // stale: a retryable failure is never given up on that guess alone.
            let guess = attempts.failed + 1;
            if matches!(result, Err(TaskError::Retryable(_))) {
                guess.min(ctx.settings.amqp.retry_delays_ms.len().max(1) as u64)
            } else {
                guess
            }
        }
    }
}

/// Fails the job, then dead-letters the task. The task is only dead-lettered once the job is
/// marked failed; otherwise it goes back to the queue, so a job never waits forever on a
/// task nobody will run.
async fn give_up(
    ctx: &WorkerContext,
    delivery: &Delivery,
    job_id: &str,
    reason: &str,
    kind: TaskKind,
) {
    if fail_job(ctx, job_id, reason).await {
        dead_letter(ctx, delivery, Some(job_id), reason).await;
        metrics::TASKS.with((kind, TaskOutcome::DeadLettered)).inc();
    } else {
        delivery.requeue_after(Duration::from_secs(1)).await;
    }
}

/// Marks the job failed with `reason`; true once the job is in a terminal status (now or
/// already), false when the state store could not be reached.
async fn fail_job(ctx: &WorkerContext, job_id: &str, reason: &str) -> bool {
    let fields = [
        ("error", reason.to_string()),
        ("finished_ms", now_ms().to_string()),
    ];
    match ctx.state.move_to(job_id, JobStatus::Failed, &fields).await {
        Ok(crate::state::Transition::Moved(_)) => {
            if let Ok(job) = ctx.state.get(job_id).await {
                metrics::job_finished(
                    job.spec.kind.into(),
                    FinalStatus::Failed,
                    job.started_ms,
                    now_ms(),
                );
            }
            true
        }
        Ok(crate::state::Transition::Refused(_)) => true,
        // The job is gone (deleted namespace): nothing left to fail.
        Err(crate::state::StateError::NotFound(_)) => true,
        Err(e) => {
            tracing::error!(%job_id, error = %e, "could not mark the job failed; the task goes back to the queue");
            false
        }
    }
}

async fn dead_letter(ctx: &WorkerContext, delivery: &Delivery, job_id: Option<&str>, reason: &str) {
    match ctx.broker.dead_letter(delivery, reason).await {
        Ok(()) => ack(delivery).await,
        Err(e) => {
            tracing::error!(job_id, error = %e, "could not dead-letter the task; it goes back to the queue");
            requeue(delivery).await;
        }
    }
}

async fn ack(delivery: &Delivery) {
    delivery.ack().await;
}

async fn requeue(delivery: &Delivery) {
    delivery.requeue().await;
}

/// Plans the job with its kind's planner (the two planners never import each other).
async fn plan_job(ctx: &WorkerContext, job_id: &str) -> Result<(), TaskError> {
    let job = ctx.state.get(job_id).await?;
    match job.spec.kind {
        crate::job::JobKind::Training => training::plan::run(ctx, &job).await,
        crate::job::JobKind::Compress => compress::plan::run(ctx, &job).await,
        _ => plan::run(ctx, &job).await,
    }
}
