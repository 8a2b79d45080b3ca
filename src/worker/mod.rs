//! The worker role: consumes its pool's task queue with bounded prefetch, runs plan and shard
//! tasks, and acks only once their output and state are durable; failures go to the retry
//! ladder or the dead-letter queue; shutdown drains in-flight work.

mod disposition;
mod error;
pub mod finish;
pub(crate) mod ids;
mod inputs;
mod models;
mod panics;
mod plan;
pub mod shard;
mod shard_lease;
pub mod sweep;
pub mod training;

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicNackOptions};
use lapin::{Channel, Consumer};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use disposition::Disposition;
pub use error::TaskError;
pub use models::ModelCache;

use crate::broker::watch::{self, ConsumerWatch};
use crate::broker::{Broker, Delivery};
use crate::job::{JobStatus, TaskMessage};
use crate::metrics;
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

/// Consumes until `shutdown`, then stops taking tasks, lets in-flight ones finish within the
/// grace period, and returns. Reconnects when the broker goes away.
///
/// The consumer runs only while the worker can start a task: once every slot is busy it is
/// cancelled, and deliveries the broker pushed meanwhile go back to the queue. Leased tasks
/// ack early, which frees their prefetch slot; without the pause the broker would fill it
/// with a task that waits here, unacked, for as long as the leased one runs, until the
/// broker's consumer timeout closes the channel.
pub async fn run(ctx: Arc<WorkerContext>, shutdown: CancellationToken) {
    let pool = ctx.settings.worker.pool;
    let concurrency = ctx.settings.worker.concurrency;
    let prefetch = ctx.settings.amqp.prefetch.max(concurrency as u16);
    let permits = Arc::new(Semaphore::new(concurrency));
    let tracker = TaskTracker::new();
    let watch = Arc::new(ConsumerWatch::default());
    let judging = CancellationToken::new();
    let judge = tokio::spawn(watch::judge(
        "task_consumer",
        ctx.broker.clone(),
        ctx.broker.topology().task_queue(pool),
        watch.clone(),
        permits.clone(),
        Duration::from_secs(ctx.settings.amqp.consumer_stall_secs),
        judging.clone(),
    ));
    let mut backoff = Duration::from_millis(500);
    // Kept open while draining, so tasks still running can ack what they took.
    let mut channel: Option<Channel> = None;
    let mut consumer: Option<Consumer> = None;
    'connect: while !shutdown.is_cancelled() {
        consumer = None;
        channel = None;
        let open = match ctx.broker.task_channel().await {
            Ok(open) => open,
            Err(e) => {
                tracing::warn!(error = %e, "cannot consume tasks; retrying in {backoff:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => break 'connect,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        let open = channel.insert(open);
        tracing::info!(
            pool = pool.as_str(),
            concurrency,
            prefetch,
            "worker consuming"
        );
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break 'connect,
                permit = permits.clone().acquire_owned() => permit.expect("semaphore never closed"),
            };
            if consumer.is_none() {
                // No more deliveries than slots to start them in.
                let free = (permits.available_permits() + 1).min(usize::from(prefetch)) as u16;
                match ctx.broker.consume_tasks(open, pool, free).await {
                    Ok(started) => {
                        // A fresh consumer gets a fresh grace period before it is judged.
                        watch.progressed();
                        consumer = Some(started)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot consume tasks; reconnecting in {backoff:?}");
                        drop(permit);
                        tokio::select! {
                            _ = shutdown.cancelled() => break 'connect,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        continue 'connect;
                    }
                }
            }
            let active = consumer.as_mut().expect("started above");
            watch.set_listening(true);
            let delivery = tokio::select! {
                _ = shutdown.cancelled() => break 'connect,
                next = active.next() => next,
            };
            watch.set_listening(false);
            match delivery {
                Some(Ok(delivery)) => {
                    backoff = Duration::from_millis(500);
                    watch.progressed();
                    let ctx = ctx.clone();
                    let shutdown = shutdown.clone();
                    tracker.spawn(async move {
                        metrics::TASKS_IN_FLIGHT.inc();
                        let run = std::panic::AssertUnwindSafe(handle(&ctx, &delivery, &shutdown));
                        if let Err(payload) = run.catch_unwind().await {
                            // Task runs are guarded; this is a panic in the handling around
                            // them. An unanswered delivery must still be answered, or it
                            // would hold its slot until the channel closes; one already
                            // acked (a leased task) is its lease's to recover.
                            let reason = format!(
                                "sluice bug while handling a task: {}",
                                panics::panic_message(payload.as_ref())
                            );
                            metrics::TASK_PANICS.with_label_values(&["unknown"]).inc();
                            if delivery.acker.usable() {
                                tracing::error!(%reason, "dead-lettering the task");
                                dead_letter(&ctx, &delivery, None, &reason).await;
                            } else {
                                tracing::error!(%reason, "task already acked; its lease lapses and the sweeper queues it again");
                            }
                        }
                        metrics::TASKS_IN_FLIGHT.dec();
                        drop(permit);
                    });
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "task consumer failed; reconnecting");
                    continue 'connect;
                }
                None => {
                    tracing::warn!("task consumer closed by the broker; reconnecting");
                    continue 'connect;
                }
            }
            if permits.available_permits() == 0 {
                let full = consumer.take().expect("started above");
                if let Err(e) = pause(open, full).await {
                    tracing::warn!(error = %e, "cannot pause the task consumer; reconnecting");
                    continue 'connect;
                }
            }
        }
    }
    if let (Some(open), Some(active)) = (&channel, consumer.take())
        && let Err(e) = pause(open, active).await
    {
        tracing::warn!(error = %e, "cannot stop the task consumer; its deliveries go back to the queue when the channel closes");
    }
    judging.cancel();
    let _ = judge.await;
    tracker.close();
    let grace = Duration::from_secs(ctx.settings.worker.shutdown_grace_secs);
    tracing::info!(in_flight = tracker.len(), ?grace, "worker draining");
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        // Whatever is still unacked goes back to the queue when the connection closes.
        tracing::warn!(
            in_flight = tracker.len(),
            "grace period over; returning unfinished tasks to the queue"
        );
    }
    drop(channel);
}

/// Cancels `consumer` and returns to the queue whatever the broker pushed to it before the
/// cancel took effect.
async fn pause(channel: &Channel, mut consumer: Consumer) -> Result<(), String> {
    channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    // After the cancel the stream ends with what was already on its way.
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(next) = consumer.next().await {
            let delivery = next.map_err(|e| e.to_string())?;
            requeue(&delivery).await;
        }
        Ok::<(), String>(())
    })
    .await;
    drained.map_err(|_| "the cancelled consumer did not end within 10 s".to_string())?
}

/// Runs one delivery to its end: ack, retry later, requeue or dead-letter.
async fn handle(ctx: &WorkerContext, delivery: &Delivery, shutdown: &CancellationToken) {
    let task: TaskMessage = match serde_json::from_slice(&delivery.data) {
        Ok(task) => task,
        Err(e) => {
            let reason = format!("task message is not valid: {e}");
            tracing::error!(%reason, "dead-lettering");
            dead_letter(ctx, delivery, None, &reason).await;
            metrics::TASKS
                .with_label_values(&["unknown", "dead_lettered"])
                .inc();
            return;
        }
    };
    let kind = match task {
        TaskMessage::Plan { .. } => "plan",
        TaskMessage::Shard(_) => "shard",
        TaskMessage::Train { .. } => "train",
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
                tokio::time::sleep(Duration::from_secs(1)).await;
                requeue(delivery).await;
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
                metrics::TASKS.with_label_values(&[kind, "ok"]).inc();
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
                metrics::TASKS.with_label_values(&[kind, "retried"]).inc();
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
async fn give_up(ctx: &WorkerContext, delivery: &Delivery, job_id: &str, reason: &str, kind: &str) {
    if fail_job(ctx, job_id, reason).await {
        dead_letter(ctx, delivery, Some(job_id), reason).await;
        metrics::TASKS
            .with_label_values(&[kind, "dead_lettered"])
            .inc();
    } else {
        tokio::time::sleep(Duration::from_secs(1)).await;
        requeue(delivery).await;
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
                metrics::job_finished(job.spec.kind.as_str(), "failed", job.started_ms, now_ms());
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
    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
        // The broker will redeliver; the task is idempotent.
        tracing::warn!(error = %e, "ack failed; the task will be redelivered");
    }
}

async fn requeue(delivery: &Delivery) {
    let options = BasicNackOptions {
        requeue: true,
        ..Default::default()
    };
    if let Err(e) = delivery.nack(options).await {
        tracing::warn!(error = %e, "nack failed; the broker requeues the task when the channel closes");
    }
}

/// Plans the job with its kind's planner (the two planners never import each other).
async fn plan_job(ctx: &WorkerContext, job_id: &str) -> Result<(), TaskError> {
    let job = ctx.state.get(job_id).await?;
    match job.spec.kind {
        crate::job::JobKind::Training => training::plan::run(ctx, &job).await,
        _ => plan::run(ctx, &job).await,
    }
}
