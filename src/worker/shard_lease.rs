//! Shard tasks under a lease, like training jobs: the worker takes the shard's fenced Redis
//! lease, acks the delivery at once (so the broker's `consumer_timeout` cannot cut it off
//! however long the shard runs), and renews the lease while the shard runs. A duplicate
//! delivery of a leased shard is dropped; a lost lease stops the shard; a shard handed back
//! or failed goes to the queue, the retry ladder or the dead-letter queue as before; a shard
//! whose worker died is queued again by the sweeper once its lease has expired.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::disposition::{self, Disposition, Outcome};
use super::{
    TaskError, WorkerContext, ack, count_failure, fail_job, panics, requeue, shard, worker_id,
};
use crate::broker::Delivery;
use crate::job::ShardTask;
use crate::metrics;
use crate::state::{Attempts, Lease, StateStore};

/// Runs one shard delivery to its end; acks, retries, dead-letters or hands it back itself.
pub async fn handle(
    ctx: &WorkerContext,
    delivery: &Delivery,
    task: &ShardTask,
    attempts: Attempts,
    shutdown: &CancellationToken,
) {
    let (job_id, index) = (task.job_id.as_str(), task.shard);
    let task_key = format!("shard-{index}");
    let ttl_ms = ctx.settings.worker.shard_lease_ttl_secs * 1000;
    let lease = match ctx
        .state
        .acquire_shard_lease(job_id, index, worker_id(), ttl_ms)
        .await
    {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            // Its owner is alive (or its lease has not expired yet): the owner commits the
            // shard or queues it again, and the sweeper covers an owner that dies.
            metrics::SHARD_LEASES.with(metrics::LeaseEvent::Busy).inc();
            tracing::info!(
                shard = index,
                "shard is leased by another worker; dropping the duplicate delivery"
            );
            let _ = ctx.state.uncount_start(job_id, &task_key).await;
            ack(delivery).await;
            return;
        }
        Err(e) => {
            tracing::warn!(shard = index, error = %e, "cannot take the shard's lease; the task goes back to the queue");
            let _ = ctx.state.uncount_start(job_id, &task_key).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            requeue(delivery).await;
            return;
        }
    };
    metrics::SHARD_LEASES
        .with(metrics::LeaseEvent::Acquired)
        .inc();
    // The lease, not the delivery, owns the shard from here.
    ack(delivery).await;
    tracing::info!(
        shard = index,
        token = lease.token,
        started = attempts.started,
        failed = attempts.failed,
        vanished = attempts.vanished(),
        "shard leased"
    );
    let held = Held {
        state: &ctx.state,
        job_id,
        shard: index,
        lease: &lease,
    };
    // Only leased runs count: duplicates that found the lease busy were taken back above.
    let what = format!("{task_key} of job {job_id}");
    if let Some(reason) = disposition::before_run(&what, attempts, ctx.settings.amqp.max_deliveries)
    {
        give_up(ctx, delivery, &held, &reason).await;
        return;
    }

    let lost = Arc::new(AtomicBool::new(false));
    // Stops the shard (as a shutdown would) when the lease is lost.
    let stop = shutdown.child_token();
    let done = CancellationToken::new();
    let keeper = tokio::spawn(keep(
        ctx.state.clone(),
        task.job_id.clone(),
        index,
        lease.clone(),
        Timing {
            ttl_ms,
            heartbeat: Duration::from_secs(ctx.settings.worker.shard_heartbeat_secs),
            stall: Duration::from_secs(ctx.settings.worker.stall_after_secs),
        },
        lost.clone(),
        stop.clone(),
        done.clone(),
    ));
    let result = panics::guarded(metrics::TaskKind::Shard, shard::run(ctx, task, &stop)).await;
    done.cancel();
    let _ = keeper.await;

    if lost.load(Ordering::Relaxed) && result.is_err() {
        // Someone else may own the shard now; if nobody does, the sweeper queues it again.
        tracing::warn!(shard = index, "shard stopped: its lease was lost");
        return;
    }
    let failed = count_failure(ctx, job_id, &task_key, &result, attempts).await;
    let ran = result.as_ref().map(|_| ()).map_err(TaskError::clone);
    let levels = ctx.settings.amqp.retry_delays_ms.len();
    match disposition::after_run(&what, Outcome::of(&ran, failed), levels) {
        Disposition::Ack => {
            let outcome = match result {
                Ok(shard::ShardOutcome::Skipped) => metrics::TaskOutcome::Skipped,
                _ => metrics::TaskOutcome::Ok,
            };
            metrics::TASKS
                .with((metrics::TaskKind::Shard, outcome))
                .inc();
            held.release(true).await;
        }
        Disposition::HandBack => {
            // A clean hand-back is not an attempt: rolling restarts must not use up a
            // shard's budget.
            if let Err(e) = ctx.state.uncount_start(job_id, &task_key).await {
                tracing::warn!(error = %e, "could not uncount the interrupted run");
            }
            tracing::info!(shard = index, "shutdown: handing the shard back");
            held.release(false).await;
            match ctx.broker.publish_again(delivery).await {
                Ok(()) => held.disown().await,
                Err(e) => {
                    tracing::warn!(shard = index, error = %e, "could not queue the shard again; the sweeper will once its lease is gone")
                }
            }
        }
        Disposition::RetryLater { level } => {
            let reason = ran.err().map(|e| e.to_string()).unwrap_or_default();
            tracing::warn!(shard = index, failed, level, %reason, "task failed; retrying later");
            metrics::TASKS
                .with((metrics::TaskKind::Shard, metrics::TaskOutcome::Retried))
                .inc();
            // Free the lease before the retry can arrive, or it would find it busy.
            held.release(false).await;
            // The delivery was acked already; its body goes to the retry queue.
            match ctx.broker.retry_later(delivery, level).await {
                Ok(()) => held.disown().await,
                Err(e) => {
                    tracing::warn!(shard = index, error = %e, "could not schedule the retry; the sweeper will queue the shard again")
                }
            }
        }
        Disposition::GiveUp { reason } => {
            tracing::error!(shard = index, failed, %reason, "task failed for good");
            give_up(ctx, delivery, &held, &reason).await;
        }
    }
}

/// Fails the job and dead-letters the (acked) task with the reason. When the job cannot be
/// marked failed, the shard stays owned without a lease, so the sweeper tries it again.
async fn give_up(ctx: &WorkerContext, delivery: &Delivery, held: &Held<'_>, reason: &str) {
    if !fail_job(ctx, held.job_id, reason).await {
        held.release(false).await;
        return;
    }
    if let Err(e) = ctx.broker.dead_letter(delivery, reason).await {
        tracing::error!(shard = held.shard, error = %e, "could not dead-letter the shard task (its job is marked failed)");
    }
    metrics::TASKS
        .with((metrics::TaskKind::Shard, metrics::TaskOutcome::DeadLettered))
        .inc();
    held.release(true).await;
}

/// The lease this worker holds on one shard.
struct Held<'a> {
    state: &'a StateStore,
    job_id: &'a str,
    shard: u32,
    lease: &'a Lease,
}

impl Held<'_> {
    /// Gives the lease up; `disown` also when nothing of the shard is left to do, or its
    /// task is queued again.
    async fn release(&self, disown: bool) {
        match self
            .state
            .release_shard_lease(self.job_id, self.shard, self.lease, disown)
            .await
        {
            Ok(()) => metrics::SHARD_LEASES
                .with(metrics::LeaseEvent::Released)
                .inc(),
            Err(e) => {
                tracing::warn!(shard = self.shard, error = %e, "could not release the shard's lease; it expires on its own")
            }
        }
    }

    /// The shard's task is queued again: the sweeper need not queue it.
    async fn disown(&self) {
        if let Err(e) = self
            .state
            .disown_shard(self.job_id, self.shard, self.lease.token)
            .await
        {
            tracing::warn!(shard = self.shard, error = %e, "could not drop the shard's owner record; the sweeper may queue it once more");
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    ttl_ms: u64,
    heartbeat: Duration,
    /// A shard whose live progress stands still this long lets its lease lapse.
    stall: Duration,
}

/// Renews the lease every heartbeat until `done`. Raises `lost` and cancels `stop` when the
/// lease is gone, could not be renewed for (almost) its whole length, or the shard made no
/// progress for `stall` (a hung engine must not keep the shard forever).
#[allow(clippy::too_many_arguments)]
async fn keep(
    state: StateStore,
    job_id: String,
    shard: u32,
    lease: Lease,
    timing: Timing,
    lost: Arc<AtomicBool>,
    stop: CancellationToken,
    done: CancellationToken,
) {
    // Stop before the lease can have expired, so the next owner never overlaps this one.
    let give_up_after = Duration::from_millis(timing.ttl_ms).saturating_sub(timing.heartbeat);
    let mut last_renewal = Instant::now();
    let mut rows = None;
    let mut last_progress = Instant::now();
    let why = loop {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tokio::time::sleep(timing.heartbeat) => {}
        }
        match state
            .renew_shard_lease(&job_id, shard, &lease, timing.ttl_ms)
            .await
        {
            Ok(true) => {
                last_renewal = Instant::now();
                metrics::SHARD_LEASES
                    .with(metrics::LeaseEvent::Renewed)
                    .inc();
            }
            Ok(false) => break "lease lost (expired, maybe taken by another worker)",
            Err(e) => tracing::warn!(shard, error = %e, "could not renew the shard's lease"),
        }
        if last_renewal.elapsed() >= give_up_after {
            break "lease not renewed for its whole length";
        }
        if let Ok(now) = state.live_rows(&job_id, shard).await
            && now != rows
        {
            rows = now;
            last_progress = Instant::now();
        }
        if last_progress.elapsed() > timing.stall {
            break "shard made no progress for worker.stall_after_secs; letting its lease lapse";
        }
    };
    tracing::warn!(%job_id, shard, token = lease.token, "{why}; stopping the shard");
    metrics::SHARD_LEASES.with(metrics::LeaseEvent::Lost).inc();
    lost.store(true, Ordering::Relaxed);
    stop.cancel();
}
