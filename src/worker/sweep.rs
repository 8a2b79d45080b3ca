//! The sweeper: finds jobs whose queued work was lost — a plan task never published (the
//! API died first), shard tasks gone with a broker that lost its disk, a leased shard or
//! training job whose worker died — and queues that work again. One worker sweeps at a
//! time; re-queued work is idempotent.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{TaskError, WorkerContext, finish, plan, worker_id};
use crate::job::{JobKind, JobStatus, TaskMessage};
use crate::metrics;
use crate::state::{JobRecord, StateError, now_ms};

pub async fn run(ctx: Arc<WorkerContext>, shutdown: CancellationToken) {
    let every = Duration::from_secs(ctx.settings.worker.sweep_interval_secs);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match ctx
            .state
            .take_sweeper_turn(worker_id(), every.as_secs())
            .await
        {
            Ok(true) => {
                if let Err(e) = sweep_once(&ctx).await {
                    tracing::warn!(error = %e, "sweep failed; trying again next round");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot take the sweeper's turn"),
        }
    }
}

/// One pass over the jobs that have not ended.
pub async fn sweep_once(ctx: &WorkerContext) -> Result<(), TaskError> {
    let stall_ms = ctx.settings.worker.stall_after_secs * 1000;
    for id in ctx.state.active_jobs().await? {
        let job = match ctx.state.get(&id).await {
            Ok(job) => job,
            Err(StateError::NotFound(_)) => continue,
            // One unreadable record must not stop the sweep of the others.
            Err(e @ StateError::Corrupt { .. }) => {
                tracing::error!(job_id = %id, error = %e, "job record unreadable; not sweeping it");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let last_sign_of_life = [
            Some(job.created_ms),
            job.started_ms,
            job.progress_ms,
            job.swept_ms,
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
        if job.spec.kind == JobKind::Inference && job.status == JobStatus::Running {
            // Not only for stalled jobs: the other shards' progress hides a dead owner.
            if let Err(e) = requeue_orphaned_shards(ctx, &job).await {
                tracing::warn!(job_id = %id, error = %e, "cannot check the job's shard leases");
            }
        }
        // Compression jobs run under the same lease as training jobs.
        let training = job.spec.kind.writes_package() && job.status == JobStatus::Running;
        // A training job is alive while its lease is held; once the lease has expired, it
        // needs a worker again.
        let stall = if training {
            ctx.settings.training.lease_ttl_secs * 1000
        } else {
            stall_ms
        };
        if now_ms().saturating_sub(last_sign_of_life) < stall {
            continue;
        }
        if training {
            // Held: alive. A train task still waiting in the queue is not lost either.
            let queue = ctx.broker.topology().task_queue(job.spec.pool);
            if ctx.state.job_lease_held(&id).await? || ctx.broker.queue_depth(&queue).await? > 0 {
                continue;
            }
            super::training::requeue_train(ctx, &job.spec, &id).await;
            tracing::warn!(job_id = %id, "training job has no owner: train task queued again");
            metrics::SWEEPER_REQUEUED
                .with(metrics::TaskKind::Train)
                .inc();
            ctx.state
                .set_fields(&id, &[("swept_ms", now_ms().to_string())])
                .await?;
            continue;
        }
        if requeue(ctx, &job).await? {
            ctx.state
                .set_fields(&id, &[("swept_ms", now_ms().to_string())])
                .await?;
        }
    }
    Ok(())
}

/// Queues a stalled job's missing work again; false when there was nothing to do.
async fn requeue(ctx: &WorkerContext, job: &JobRecord) -> Result<bool, TaskError> {
    let spec = &job.spec;
    match job.status {
        JobStatus::Queued | JobStatus::Planning => {
            let task = serde_json::to_vec(&TaskMessage::Plan {
                job_id: job.id.clone(),
            })
            .expect("task serialises");
            ctx.broker
                .publish_task(spec.pool, spec.priority, &task)
                .await?;
            tracing::warn!(job_id = %job.id, status = %job.status, "stalled job: plan task queued again");
            metrics::SWEEPER_REQUEUED
                .with(metrics::TaskKind::Plan)
                .inc();
            Ok(true)
        }
        JobStatus::Running => {
            // Tasks still waiting in the queue are not lost, just not started yet.
            let queue = ctx.broker.topology().task_queue(spec.pool);
            if ctx.broker.queue_depth(&queue).await? > 0 {
                return Ok(false);
            }
            let committed: HashSet<u32> = ctx
                .state
                .committed_shards(&job.id)
                .await?
                .into_iter()
                .map(|c| c.shard)
                .collect();
            // Owned shards are running, or queued again by `requeue_orphaned_shards` once
            // their lease expires.
            let owned: HashSet<u32> = ctx
                .state
                .owned_shards(&job.id)
                .await?
                .into_iter()
                .map(|(shard, _)| shard)
                .collect();
            let uncommitted: Vec<(u32, String)> = ctx
                .state
                .plan(&job.id)
                .await?
                .into_iter()
                .filter(|(index, _)| !committed.contains(index))
                .collect();
            if uncommitted.is_empty() {
                // Every shard is committed but nobody finished the job.
                finish::finish_if_complete(ctx, &job.id).await?;
                return Ok(false);
            }
            let missing: Vec<String> = uncommitted
                .into_iter()
                .filter(|(index, _)| !owned.contains(index))
                .map(|(_, task)| task)
                .collect();
            if missing.is_empty() {
                return Ok(false);
            }
            plan::publish_shards(ctx, spec, &missing).await?;
            tracing::warn!(job_id = %job.id, shards = missing.len(), "stalled job: uncommitted shards queued again");
            metrics::SWEEPER_REQUEUED
                .with(metrics::TaskKind::Shard)
                .inc_by(missing.len() as u64);
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Queues again every shard whose owner's lease is gone while the shard is neither committed
/// nor handed back: its worker died (or could not queue it again). Its delivery was acked
/// when the lease was taken, so nothing else brings it back.
async fn requeue_orphaned_shards(ctx: &WorkerContext, job: &JobRecord) -> Result<(), TaskError> {
    let owned = ctx.state.owned_shards(&job.id).await?;
    if owned.is_empty() {
        return Ok(());
    }
    let committed: HashSet<u32> = ctx
        .state
        .committed_shards(&job.id)
        .await?
        .into_iter()
        .map(|c| c.shard)
        .collect();
    let mut plan: Option<Vec<(u32, String)>> = None;
    for (shard, token) in owned {
        if committed.contains(&shard) {
            // Committed, but its owner could not drop the record.
            ctx.state.disown_shard(&job.id, shard, token).await?;
            continue;
        }
        if ctx.state.shard_lease_held(&job.id, shard).await? {
            continue;
        }
        if plan.is_none() {
            plan = Some(ctx.state.plan(&job.id).await?);
        }
        let Some((_, task)) = plan
            .as_ref()
            .and_then(|tasks| tasks.iter().find(|(index, _)| *index == shard))
        else {
            tracing::error!(job_id = %job.id, shard, "shard's owner is gone but the job has no stored plan for it; the stall sweep covers it");
            ctx.state.clear_live_rows(&job.id, shard).await?;
            ctx.state.disown_shard(&job.id, shard, token).await?;
            continue;
        };
        // The dead owner's live count would stay in `rows_in_flight` until the shard is
        // redone; the next owner reports its own.
        ctx.state.clear_live_rows(&job.id, shard).await?;
        // Queued first, then disowned: a failed publish leaves the record for the next sweep.
        plan::publish_shards(ctx, &job.spec, std::slice::from_ref(task)).await?;
        ctx.state.disown_shard(&job.id, shard, token).await?;
        tracing::warn!(job_id = %job.id, shard, token, "shard's lease expired without a commit (its worker died?): shard task queued again");
        metrics::SHARD_LEASES
            .with(metrics::LeaseEvent::Expired)
            .inc();
        metrics::SWEEPER_REQUEUED
            .with(metrics::TaskKind::Shard)
            .inc();
    }
    Ok(())
}
