//! The job's Redis lease on this worker: taken for a `train` delivery, renewed, and lost.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::super::{WorkerContext, ack, requeue, worker_id};
use super::observer::StopFlags;
use crate::broker::Delivery;
use crate::job::JobStatus;
use crate::metrics;
use crate::state::{Attempts, Lease, StateStore, now_ms};

/// The lease this worker holds on one training job, and the run's stop reasons (a lost
/// lease among them).
pub struct Held<'a> {
    pub state: &'a StateStore,
    pub job_id: &'a str,
    pub lease: Lease,
    pub flags: Arc<StopFlags>,
}

impl Held<'_> {
    /// Gives the lease back; not once it is lost (it may be another worker's now).
    pub async fn release(&self) {
        if self.flags.lease_lost.load(Ordering::Relaxed) {
            return;
        }
        match self.state.release_job_lease(self.job_id, &self.lease).await {
            Ok(()) => metrics::JOB_LEASES
                .with(metrics::LeaseEvent::Released)
                .inc(),
            Err(e) => {
                tracing::warn!(job_id = self.job_id, error = %e, "could not release the lease; it expires on its own")
            }
        }
    }

    pub fn lost(&self) -> bool {
        self.flags.lease_lost.load(Ordering::Relaxed)
    }
}

/// Takes the job's lease for a `train` delivery and acks the delivery (the lease owns the
/// job from then on). `None` when the delivery was settled here instead: the job is not
/// running, another worker holds the lease, or Redis is unreachable (requeued).
pub async fn take<'a>(
    ctx: &'a WorkerContext,
    delivery: &Delivery,
    job_id: &'a str,
    attempts: Attempts,
) -> Option<Held<'a>> {
    if !job_is_running(ctx, delivery, job_id).await {
        return None;
    }
    let ttl_ms = ctx.settings.training.lease_ttl_secs * 1000;
    let lease = match ctx
        .state
        .acquire_job_lease(job_id, worker_id(), ttl_ms)
        .await
    {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            // Another worker is training it; if that worker dies, the sweeper re-queues it.
            metrics::JOB_LEASES.with(metrics::LeaseEvent::Busy).inc();
            tracing::info!(
                job_id,
                "training job is owned by another worker; dropping the duplicate train task"
            );
            let _ = ctx.state.uncount_start(job_id, "train").await;
            ack(delivery).await;
            return None;
        }
        Err(e) => {
            tracing::warn!(job_id, error = %e, "cannot take the job's lease; train task goes back to the queue");
            requeue_uncounted(ctx, delivery, job_id).await;
            return None;
        }
    };
    metrics::JOB_LEASES
        .with(metrics::LeaseEvent::Acquired)
        .inc();
    // The lease, not the delivery, owns the job from here.
    ack(delivery).await;
    tracing::info!(
        job_id,
        token = lease.token,
        started = attempts.started,
        failed = attempts.failed,
        vanished = attempts.vanished(),
        "training job leased"
    );
    Some(Held {
        state: &ctx.state,
        job_id,
        lease,
        flags: Arc::new(StopFlags::default()),
    })
}

/// Whether the job is running; a delivery for any other job is acked (dropped) or, when
/// Redis cannot say, requeued.
async fn job_is_running(ctx: &WorkerContext, delivery: &Delivery, job_id: &str) -> bool {
    match ctx.state.get(job_id).await {
        Ok(job) if job.status == JobStatus::Running => return true,
        Ok(job) => {
            tracing::info!(job_id, status = %job.status, "training job is not running; dropping its train task");
            ack(delivery).await;
        }
        Err(e) if !e.is_retryable() => {
            tracing::warn!(job_id, error = %e, "training job unreadable; dropping its train task");
            ack(delivery).await;
        }
        Err(e) => {
            tracing::warn!(job_id, error = %e, "state store unavailable; train task goes back to the queue");
            requeue_uncounted(ctx, delivery, job_id).await;
        }
    }
    false
}

/// Redis trouble is not the job's fault: the start is taken back so it does not use up the
/// job's attempts, and the delivery goes back to the queue after a pause.
async fn requeue_uncounted(ctx: &WorkerContext, delivery: &Delivery, job_id: &str) {
    let _ = ctx.state.uncount_start(job_id, "train").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    requeue(delivery).await;
}

/// Renews a held lease and watches for cancel, shutdown and a hung training thread, twice a
/// second, until `done`; raises the matching stop flag.
pub struct Watch {
    pub state: StateStore,
    pub job_id: String,
    pub lease: Lease,
    pub flags: Arc<StopFlags>,
    pub shutdown: CancellationToken,
    pub done: CancellationToken,
    pub heartbeat: Duration,
    pub ttl_ms: u64,
    /// A training thread whose last step is older than this lets the lease lapse.
    pub stall_ms: u64,
}

impl Watch {
    /// For the job `held`, with the worker's training settings.
    pub fn new(ctx: &WorkerContext, held: &Held<'_>, shutdown: &CancellationToken) -> Self {
        Watch {
            state: ctx.state.clone(),
            job_id: held.job_id.to_string(),
            lease: held.lease.clone(),
            flags: held.flags.clone(),
            shutdown: shutdown.clone(),
            done: CancellationToken::new(),
            heartbeat: Duration::from_secs(ctx.settings.training.heartbeat_secs),
            ttl_ms: ctx.settings.training.lease_ttl_secs * 1000,
            stall_ms: ctx.settings.worker.stall_after_secs * 1000,
        }
    }

    pub async fn run(self) {
        let flags = &self.flags;
        let job_id = &self.job_id;
        let mut renewal = Renewal {
            // Stop before the lease can have expired, so the next owner never overlaps
            // this one.
            give_up_after: Duration::from_millis(self.ttl_ms).saturating_sub(self.heartbeat),
            last_renewal: Instant::now(),
            last_attempt: Instant::now(),
        };
        loop {
            tokio::select! {
                _ = self.done.cancelled() => return,
                _ = self.shutdown.cancelled(), if !flags.shutdown.load(Ordering::Relaxed) => {
                    tracing::info!(%job_id, "shutdown: checkpointing at the next step and handing the job back");
                    flags.raise(&flags.shutdown);
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            if let Ok(status) = self.state.status(job_id).await
                && status != JobStatus::Running
            {
                tracing::info!(%job_id, %status, "job left running (cancelled?); stopping training");
                flags.raise(&flags.cancelled);
            }
            // A training thread that stopped stepping (hung) must not keep the job: let the
            // lease lapse so the sweeper gives the job to another worker.
            if flags.stepping.load(Ordering::Relaxed)
                && now_ms().saturating_sub(flags.last_step_ms.load(Ordering::Relaxed))
                    > self.stall_ms
            {
                tracing::error!(%job_id, stall_secs = self.stall_ms / 1000, "training made no progress; letting the lease lapse");
                self.lose();
                return;
            }
            if !self.renew(&mut renewal).await {
                self.lose();
                return;
            }
        }
    }

    /// Renews the lease when a heartbeat is due; false once the lease must be taken as lost.
    async fn renew(&self, renewal: &mut Renewal) -> bool {
        if renewal.last_attempt.elapsed() < self.heartbeat {
            return true;
        }
        let job_id = &self.job_id;
        renewal.last_attempt = Instant::now();
        match self
            .state
            .renew_job_lease(job_id, &self.lease, self.ttl_ms)
            .await
        {
            Ok(true) => {
                renewal.last_renewal = Instant::now();
                metrics::JOB_LEASES.with(metrics::LeaseEvent::Renewed).inc();
            }
            Ok(false) => {
                tracing::warn!(%job_id, "lease lost; stopping without writing anything more");
                return false;
            }
            Err(e) => tracing::warn!(%job_id, error = %e, "could not renew the lease"),
        }
        // Unable to renew for (almost) a whole lease: assume someone else has it now.
        if renewal.last_renewal.elapsed() >= renewal.give_up_after {
            tracing::warn!(%job_id, "lease not renewed for its whole length; stopping");
            return false;
        }
        true
    }

    fn lose(&self) {
        metrics::JOB_LEASES.with(metrics::LeaseEvent::Lost).inc();
        self.flags.raise(&self.flags.lease_lost);
    }
}

struct Renewal {
    give_up_after: Duration,
    last_renewal: Instant,
    last_attempt: Instant,
}
