//! Training jobs on the worker. A `train` task is only a nudge: ownership is the job's Redis
//! lease (heartbeats, fencing token), so the delivery is acked as soon as the lease is taken
//! and a job can run far longer than the broker's delivery timeout. The job trains from its
//! last checkpoint (or from scratch), checkpoints to S3 as it goes, and ends by writing the
//! classifier package. A worker that dies loses the lease; the sweeper queues the job again
//! and another worker resumes it from the checkpoint.

mod data;
mod observer;
mod report;

pub use data::{PINNED_INPUTS, pin_inputs};

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prost::Message;
use tokio_util::sync::CancellationToken;

use self::observer::{JobObserver, StopFlags};
use super::disposition::{self, Disposition, Outcome};
use super::{TaskError, WorkerContext, ack, count_failure, fail_job, panics, worker_id};
use crate::broker::Delivery;
use crate::job::ModelTask;
use crate::job::{DecaySpec, JobSpec, JobStatus, TaskMessage, TrainingProgress, TrainingSpec};
use crate::metrics;
use crate::state::{Attempts, JobRecord, Lease, Transition, now_ms};
use crate::storage::StorageError;
use crate::train::checkpoint::{self, Checkpoint};
use crate::train::package::{ClassifierPackage, write_classifier_package};
use crate::train::trainer::{Decay, Finish, Schedule, TrainConfig, fresh_start, train};
use crate::train::{
    AdamW, HeadLayout, StepSession, TrainError, build_inference_graph, build_step_graph,
};
use crate::uri::S3Uri;

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

/// Handles one `train` delivery from start to end; acks it itself.
pub async fn handle(
    ctx: &WorkerContext,
    delivery: &Delivery,
    job_id: &str,
    attempts: Attempts,
    shutdown: &CancellationToken,
) {
    let ttl_ms = ctx.settings.training.lease_ttl_secs * 1000;
    match ctx.state.get(job_id).await {
        Ok(job) if job.status == JobStatus::Running => {}
        Ok(job) => {
            tracing::info!(job_id, status = %job.status, "training job is not running; dropping its train task");
            ack(delivery).await;
            return;
        }
        Err(e) if !e.is_retryable() => {
            tracing::warn!(job_id, error = %e, "training job unreadable; dropping its train task");
            ack(delivery).await;
            return;
        }
        Err(e) => {
            tracing::warn!(job_id, error = %e, "state store unavailable; train task goes back to the queue");
            // Redis trouble is not the job's fault: it must not use up the job's attempts.
            let _ = ctx.state.uncount_start(job_id, "train").await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            super::requeue(delivery).await;
            return;
        }
    };
    let lease = match ctx
        .state
        .acquire_job_lease(job_id, worker_id(), ttl_ms)
        .await
    {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            // Another worker is training it; if that worker dies, the sweeper re-queues it.
            metrics::JOB_LEASES.with_label_values(&["busy"]).inc();
            tracing::info!(
                job_id,
                "training job is owned by another worker; dropping the duplicate train task"
            );
            let _ = ctx.state.uncount_start(job_id, "train").await;
            ack(delivery).await;
            return;
        }
        Err(e) => {
            tracing::warn!(job_id, error = %e, "cannot take the job's lease; train task goes back to the queue");
            let _ = ctx.state.uncount_start(job_id, "train").await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            super::requeue(delivery).await;
            return;
        }
    };
    metrics::JOB_LEASES.with_label_values(&["acquired"]).inc();
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
    let give_back = || async {
        match ctx.state.release_job_lease(job_id, &lease).await {
            Ok(()) => metrics::JOB_LEASES.with_label_values(&["released"]).inc(),
            Err(e) => {
                tracing::warn!(job_id, error = %e, "could not release the lease; it expires on its own")
            }
        }
    };
    // The job may have ended between the read above and the lease (a previous owner
    // finishing): look again now that nobody else can move it forward.
    let job = match ctx.state.get(job_id).await {
        Ok(job) if job.status == JobStatus::Running => job,
        Ok(_) | Err(_) => {
            give_back().await;
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
            .with_label_values(&["train", "dead_lettered"])
            .inc();
        give_back().await;
        return;
    }

    let flags = Arc::new(StopFlags::default());
    let done = CancellationToken::new();
    let watcher = tokio::spawn(watch(
        ctx.state.clone(),
        job_id.to_string(),
        lease.clone(),
        flags.clone(),
        shutdown.clone(),
        done.clone(),
        ctx.settings.training.heartbeat_secs,
        ttl_ms,
        ctx.settings.worker.stall_after_secs * 1000,
    ));
    let result = panics::guarded("train", execute(ctx, &job, &lease, flags.clone())).await;
    done.cancel();
    let _ = watcher.await;
    metrics::forget_training_job(job_id);

    let release = || async {
        if flags.lease_lost.load(Ordering::Relaxed) {
            return;
        }
        match ctx.state.release_job_lease(job_id, &lease).await {
            Ok(()) => metrics::JOB_LEASES.with_label_values(&["released"]).inc(),
            Err(e) => {
                tracing::warn!(job_id, error = %e, "could not release the lease; it expires on its own")
            }
        }
    };
    if flags.lease_lost.load(Ordering::Relaxed) && result.is_err() {
        // Another worker may own the job now: this run's end is not its to count or retry;
        // if nobody owns it, the sweeper queues it again.
        tracing::warn!(job_id, "training stopped: its lease was lost");
        return;
    }
    let failed = count_failure(ctx, job_id, "train", &result, attempts).await;
    let ran = result.as_ref().map(|_| ()).map_err(TaskError::clone);
    let levels = ctx.settings.amqp.retry_delays_ms.len();
    match disposition::after_run(&what, Outcome::of(&ran, failed), levels) {
        Disposition::Ack => match result {
            Ok(Ended::HandedBack) => {
                // Checkpointed on shutdown: a clean hand-back is not an attempt.
                let _ = ctx.state.uncount_start(job_id, "train").await;
                release().await;
                requeue_train(ctx, &job.spec, job_id).await;
            }
            Ok(Ended::Abandoned) => release().await,
            _ => {
                metrics::TASKS.with_label_values(&["train", "ok"]).inc();
                release().await;
            }
        },
        Disposition::HandBack => {
            let _ = ctx.state.uncount_start(job_id, "train").await;
            release().await;
            requeue_train(ctx, &job.spec, job_id).await;
        }
        Disposition::RetryLater { level } => {
            let reason = ran.err().map(|e| e.to_string()).unwrap_or_default();
            tracing::warn!(job_id, failed, level, %reason, "training failed; retrying later from the last checkpoint");
            release().await;
            metrics::TASKS
                .with_label_values(&["train", "retried"])
                .inc();
            // The delivery was acked already; its body goes to the retry queue.
            if let Err(e) = ctx.broker.retry_later(delivery, level).await {
                tracing::warn!(job_id, error = %e, "could not schedule the retry; the sweeper will queue the job again");
            }
        }
        Disposition::GiveUp { reason } => {
            tracing::error!(job_id, failed, %reason, "training failed for good");
            metrics::TASKS.with_label_values(&["train", "failed"]).inc();
            if !fail_job(ctx, job_id, &reason).await {
                tracing::warn!(
                    job_id,
                    "job not marked failed; the sweeper will try the job again"
                );
            }
            release().await;
        }
    }
}

/// Queues a `train` task for the job (a hand-back, or the sweeper finding it unowned).
pub async fn requeue_train(ctx: &WorkerContext, spec: &JobSpec, job_id: &str) {
    let task = serde_json::to_vec(&TaskMessage::Train {
        job_id: job_id.to_string(),
    })
    .expect("task serialises");
    if let Err(e) = ctx
        .broker
        .publish_task(spec.pool, spec.priority, &task)
        .await
    {
        tracing::warn!(job_id, error = %e, "could not queue the train task; the sweeper will");
    }
}

/// Renews the lease every `heartbeat_secs` and watches for cancel and shutdown, twice a
/// second, until `done`.
#[allow(clippy::too_many_arguments)]
async fn watch(
    state: crate::state::StateStore,
    job_id: String,
    lease: Lease,
    flags: Arc<StopFlags>,
    shutdown: CancellationToken,
    done: CancellationToken,
    heartbeat_secs: u64,
    ttl_ms: u64,
    stall_ms: u64,
) {
    let heartbeat = Duration::from_secs(heartbeat_secs);
    // Stop before the lease can have expired, so the next owner never overlaps this one.
    let give_up_after = Duration::from_millis(ttl_ms).saturating_sub(heartbeat);
    let mut last_renewal = Instant::now();
    let mut last_attempt = Instant::now();
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = shutdown.cancelled(), if !flags.shutdown.load(Ordering::Relaxed) => {
                tracing::info!(%job_id, "shutdown: checkpointing at the next step and handing the job back");
                flags.raise(&flags.shutdown);
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        if let Ok(status) = state.status(&job_id).await
            && status != JobStatus::Running
        {
            tracing::info!(%job_id, %status, "job left running (cancelled?); stopping training");
            flags.raise(&flags.cancelled);
        }
        // A training thread that stopped stepping (hung) must not keep the job: let the
        // lease lapse so the sweeper gives the job to another worker.
        if flags.stepping.load(Ordering::Relaxed)
            && now_ms().saturating_sub(flags.last_step_ms.load(Ordering::Relaxed)) > stall_ms
        {
            tracing::error!(%job_id, stall_secs = stall_ms / 1000, "training made no progress; letting the lease lapse");
            metrics::JOB_LEASES.with_label_values(&["lost"]).inc();
            flags.raise(&flags.lease_lost);
            return;
        }
        if last_attempt.elapsed() >= heartbeat {
            last_attempt = Instant::now();
            match state.renew_job_lease(&job_id, &lease, ttl_ms).await {
                Ok(true) => {
                    last_renewal = Instant::now();
                    metrics::JOB_LEASES.with_label_values(&["renewed"]).inc();
                }
                Ok(false) => {
                    tracing::warn!(%job_id, "lease lost; stopping without writing anything more");
                    metrics::JOB_LEASES.with_label_values(&["lost"]).inc();
                    flags.raise(&flags.lease_lost);
                    return;
                }
                Err(e) => tracing::warn!(%job_id, error = %e, "could not renew the lease"),
            }
            // Unable to renew for (almost) a whole lease: assume someone else has it now.
            if last_renewal.elapsed() >= give_up_after {
                tracing::warn!(%job_id, "lease not renewed for its whole length; stopping");
                metrics::JOB_LEASES.with_label_values(&["lost"]).inc();
                flags.raise(&flags.lease_lost);
                return;
            }
        }
    }
}

/// The head described by the spec, on features of `input_dim`.
pub fn head_layout(training: &TrainingSpec, input_dim: usize) -> HeadLayout {
    HeadLayout {
        input_dim,
        classes: training.labels.len(),
        hidden: training.head.hidden().to_vec(),
        dropout: training.head.dropout(),
    }
}

pub fn train_config(training: &TrainingSpec) -> TrainConfig {
    TrainConfig {
        batch_size: training.batch_size,
        epochs: training.epochs,
        seed: training.seed,
        schedule: Schedule {
            peak_lr: training.optimizer.lr as f32,
            warmup_steps: training.schedule.warmup_steps,
            decay: match training.schedule.decay {
                DecaySpec::Constant => Decay::Constant,
                DecaySpec::Linear => Decay::Linear,
                DecaySpec::Cosine => Decay::Cosine,
            },
        },
        checkpoint_every: training.checkpoint_every,
        dropout: training.head.dropout(),
    }
}

pub fn adamw(training: &TrainingSpec) -> AdamW {
    AdamW {
        beta1: training.optimizer.betas[0] as f32,
        beta2: training.optimizer.betas[1] as f32,
        eps: training.optimizer.eps as f32,
        weight_decay: training.optimizer.weight_decay as f32,
    }
}

/// Refuses a step graph whose parameters are not the head's: the package exports the head,
/// so the graph must train exactly its parameters.
fn check_graph_trains_the_head(
    graph: &str,
    session: &StepSession,
    layout: &HeadLayout,
) -> Result<(), TaskError> {
    let contract = session.contract();
    if contract.features != layout.input_dim {
        return Err(TaskError::permanent(format!(
            "step graph {graph}: takes {} features, the encoder gives {}",
            contract.features, layout.input_dim
        )));
    }
    if contract.classes != layout.classes {
        return Err(TaskError::permanent(format!(
            "step graph {graph}: has {} classes, training.labels has {}",
            contract.classes, layout.classes
        )));
    }
    let mut found = contract.params.clone();
    found.sort();
    let mut wanted = layout.parameters();
    wanted.sort();
    if found != wanted {
        let show = |p: &[(String, Vec<usize>)]| {
            p.iter()
                .map(|(n, s)| format!("param.{n}{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(TaskError::permanent(format!(
            "step graph {graph}: its parameters [{}] are not the head's [{}] (training.head decides what the package exports)",
            show(&found),
            show(&wanted)
        )));
    }
    Ok(())
}

impl From<TrainError> for TaskError {
    fn from(err: TrainError) -> Self {
        match err {
            TrainError::Engine(e) => e.into(),
            other => TaskError::Permanent(other.to_string()),
        }
    }
}

async fn execute(
    ctx: &WorkerContext,
    job: &JobRecord,
    lease: &Lease,
    flags: Arc<StopFlags>,
) -> Result<Ended, TaskError> {
    let began = Instant::now();
    let spec = &job.spec;
    let training = spec
        .training
        .as_ref()
        .ok_or_else(|| TaskError::permanent("training job without a [training] section"))?;
    let encoder_uri = spec.model_uri();
    let encoder_manifest = ctx.models.manifest(&encoder_uri).await?;
    if encoder_manifest.task != ModelTask::Embed {
        return Err(TaskError::permanent(format!(
            "model package {} is a classifier; a training job needs an encoder (embedding) package",
            spec.model
        )));
    }
    let embedder = ctx.models.get(&encoder_uri).await?;
    let loaded = data::load(
        ctx,
        &job.id,
        spec,
        training,
        &embedder,
        flags.raised.clone(),
    )
    .await;
    // Stopped while reading or embedding: the reason decides, not the error it caused.
    if flags.shutdown.load(Ordering::Relaxed) {
        return Err(TaskError::Interrupted);
    }
    if flags.any() {
        return Ok(Ended::Abandoned);
    }
    let data = loaded?;
    let layout = head_layout(training, embedder.dimension());
    let (graph_name, graph) = match &training.step_graph {
        Some(uri) => {
            let uri = S3Uri::parse(uri).map_err(|e| {
                TaskError::permanent(format!("training.step_graph of the job's spec: {e}"))
            })?;
            match ctx.storage.get_bytes(&uri).await {
                Ok(bytes) => (uri.to_string(), bytes),
                Err(StorageError::NotFound { .. }) => {
                    return Err(TaskError::permanent(format!(
                        "training.step_graph {uri} not found: upload the graph first"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        None => (
            "built-in step graph".to_string(),
            build_step_graph(&layout, &adamw(training)).encode_to_vec(),
        ),
    };
    let resume_from = match ctx.state.checkpoint_pointer(&job.id).await? {
        Some(pointer) => {
            let uri = S3Uri::parse(&pointer)
                .map_err(|e| TaskError::permanent(format!("checkpoint pointer {pointer}: {e}")))?;
            let bytes = ctx.storage.get_bytes(&uri).await?;
            Some(
                checkpoint::decode(&pointer, &bytes)
                    .map_err(|e| TaskError::permanent(e.to_string()))?,
            )
        }
        None => None,
    };
    let config = train_config(training);
    let per_epoch = config.steps_per_epoch(data.train.rows());
    if let Some(at) = &resume_from
        && (at.cursor >= per_epoch
            || at.epoch > training.epochs
            || at.state.step > per_epoch * training.epochs)
    {
        return Err(TaskError::permanent(format!(
            "the job's checkpoint (epoch {}, batch {}, step {}) does not fit its data ({per_epoch} batches an epoch): the training data changed under the job; submit a new job",
            at.epoch, at.cursor, at.state.step
        )));
    }
    let mut progress = job.training.clone().unwrap_or_default();
    progress.epochs = training.epochs;
    progress.train_rows = data.train.rows() as u64;
    progress.eval_rows = data.eval.rows() as u64;
    progress.total_steps = config.steps_per_epoch(data.train.rows()) * training.epochs;
    progress.classes = data.classes.clone();
    progress.features_cached = Some(data.cached);
    progress.features_seconds = Some(data.seconds);
    if let Some(at) = &resume_from {
        progress.resumes += 1;
        progress.step = at.state.step;
        tracing::info!(job_id = %job.id, step = at.state.step, epoch = at.epoch, "resuming from checkpoint");
    }
    let start_step = resume_from.as_ref().map_or(0, |c| c.state.step);
    let mut observer = JobObserver {
        runtime: tokio::runtime::Handle::current(),
        storage: ctx.storage.clone(),
        state: ctx.state.clone(),
        job_id: job.id.clone(),
        lease: lease.clone(),
        flags: flags.clone(),
        checkpoints: spec.output_uri().join(CHECKPOINT_FOLDER),
        keep: training.keep_checkpoints,
        layout: layout.clone(),
        eval: data.eval.clone(),
        engine: ctx.settings.engine.clone(),
        progress,
        failure: None,
        last_written: Instant::now(),
        started: Instant::now(),
        start_step,
        progressed: false,
    };
    observer::store_progress(ctx.state.clone(), job.id.clone(), &observer.progress).await?;
    let seed = training.seed;
    let train_set = data.train;
    let thread_layout = layout.clone();
    let engine = ctx.settings.engine.clone();
    let (finish, mut observer, provider) = tokio::task::spawn_blocking(move || {
        let run = || -> Result<(Finish, &'static str), TaskError> {
            let mut session = StepSession::open(&graph_name, &graph, &engine)?;
            check_graph_trains_the_head(&graph_name, &session, &thread_layout)?;
            let start = match resume_from {
                Some(checkpoint) => checkpoint,
                None => fresh_start(&session, thread_layout.initial_parameters(seed), seed)?,
            };
            observer.started = Instant::now();
            observer.flags.alive();
            observer.flags.stepping.store(true, Ordering::Relaxed);
            let finish = train(&mut session, &train_set, &config, start, &mut observer)?;
            Ok((finish, session.provider()))
        };
        let result = run();
        (result, observer)
    })
    .await
    .map(|(result, observer)| result.map(|(finish, provider)| (finish, observer, provider)))
    .map_err(|e| TaskError::Retryable(format!("training thread: {e}")))??;
    flags.stepping.store(false, Ordering::Relaxed);
    if !matches!(finish, Finish::Completed(_)) || flags.any() || observer.failure.is_some() {
        // Not running here any more: no rate or ETA to show until someone resumes it.
        observer.progress.steps_per_second = None;
        observer.progress.eta_seconds = None;
        if !flags.lease_lost.load(Ordering::Relaxed) {
            let _ = observer::store_progress(ctx.state.clone(), job.id.clone(), &observer.progress)
                .await;
        }
    }
    if let Some(failure) = observer.failure.take() {
        return Err(failure);
    }
    if flags.lease_lost.load(Ordering::Relaxed) {
        return Ok(Ended::Abandoned);
    }
    let done = match finish {
        Finish::Stopped(at) => {
            if flags.cancelled.load(Ordering::Relaxed) {
                let _ =
                    observer::store_progress(ctx.state.clone(), job.id.clone(), &observer.progress)
                        .await;
                return Ok(Ended::Abandoned);
            }
            // Shutdown: save this step unless it was just saved, then hand the job back.
            if observer.progress.checkpoint_step != Some(at.state.step) {
                let saved = tokio::task::spawn_blocking(move || {
                    let saved = observer.save(&at);
                    if saved {
                        observer.write_progress();
                    }
                    (saved, observer)
                })
                .await
                .map_err(|e| TaskError::Retryable(format!("checkpoint thread: {e}")))?;
                if let (false, mut observer) = saved {
                    return Err(observer.failure.take().unwrap_or(TaskError::Interrupted));
                }
            }
            return Ok(Ended::HandedBack);
        }
        Finish::Completed(_) if flags.cancelled.load(Ordering::Relaxed) => {
            return Ok(Ended::Abandoned);
        }
        Finish::Completed(at) => at,
    };
    finish_job(
        ctx,
        job,
        lease,
        &layout,
        &done,
        &observer.progress,
        &encoder_manifest,
        provider,
        began,
    )
    .await
}

/// Writes the classifier package and marks the job succeeded.
#[allow(clippy::too_many_arguments)]
async fn finish_job(
    ctx: &WorkerContext,
    job: &JobRecord,
    lease: &Lease,
    layout: &HeadLayout,
    done: &Checkpoint,
    progress: &TrainingProgress,
    encoder_manifest: &crate::job::ModelManifest,
    provider: &str,
    began: Instant,
) -> Result<Ended, TaskError> {
    let spec = &job.spec;
    let training = spec.training.as_ref().expect("checked");
    // A stale owner must not write the package over the new owner's.
    if !ctx
        .state
        .renew_job_lease(&job.id, lease, ctx.settings.training.lease_ttl_secs * 1000)
        .await?
    {
        tracing::warn!(job_id = %job.id, "lease lost before writing the package; leaving the job to its new owner");
        return Ok(Ended::Abandoned);
    }
    let report = report::build(job, training, progress, done, provider, began.elapsed());
    // The curves beside the numbers; written before the manifest, like every package file.
    let curves = crate::train::curves::render(
        &format!("{} — {}", spec.name, job.id),
        &done.losses,
        &progress
            .eval_history
            .iter()
            .map(|e| crate::train::curves::EvalMark {
                step: e.step,
                accuracy: e.accuracy,
                macro_f1: e.macro_f1,
                loss: e.loss,
            })
            .collect::<Vec<_>>(),
    );
    ctx.storage
        .put(
            &spec.output_uri().join(report::CURVES_FILE),
            curves.into_bytes(),
            "image/svg+xml",
        )
        .await?;
    let head = build_inference_graph(layout, &done.state.params).encode_to_vec();
    let manifest = write_classifier_package(
        &ctx.storage,
        &ClassifierPackage {
            name: &spec.name,
            encoder: &spec.model_uri(),
            encoder_manifest,
            head,
            labels: training.labels.clone(),
            report,
        },
        &spec.output_uri(),
    )
    .await?;
    let json = serde_json::to_string(progress).expect("progress serialises");
    let moved = ctx
        .state
        .transition(
            &job.id,
            &[JobStatus::Running],
            JobStatus::Succeeded,
            &[
                ("finished_ms", now_ms().to_string()),
                ("training", json),
                ("rows_done", progress.train_rows.to_string()),
                ("package_sha256", manifest.model_sha256().to_string()),
            ],
        )
        .await?;
    match moved {
        Transition::Moved(_) => {
            metrics::job_finished("training", "succeeded", job.started_ms, now_ms());
            tracing::info!(
                job_id = %job.id,
                steps = done.state.step,
                accuracy = progress.eval.map(|e| e.accuracy),
                package = %spec.output_uri(),
                "training job succeeded"
            );
            Ok(Ended::Succeeded)
        }
        Transition::Refused(status) => {
            tracing::info!(job_id = %job.id, %status, "training finished but the job is {status}; leaving it");
            Ok(Ended::Abandoned)
        }
    }
}
