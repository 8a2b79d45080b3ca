//! Running the trainer for a leased job: data, step graph, resume point, steps on a thread.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use prost::Message;

use super::super::{TaskError, WorkerContext};
use super::data::{self, JobData};
use super::finish::{self, Trained};
use super::observer::{JobObserver, StopFlags};
use super::setup::{adamw, check_graph_trains_the_head, head_layout, train_config};
use super::writer::{self, Target, Writer};
use super::{CHECKPOINT_FOLDER, Ended};
use crate::job::{ModelManifest, ModelTask};
use crate::job::{TrainingProgress, TrainingSpec};
use crate::state::{JobRecord, Lease};
use crate::storage::StorageError;
use crate::train::checkpoint::{self, Checkpoint};
use crate::train::trainer::{Finish, TrainConfig, fresh_start, train};
use crate::train::{HeadLayout, StepSession, build_step_graph};
use crate::uri::S3Uri;

/// Trains the job from its last checkpoint (or from scratch) to its end, a stop, or a
/// failure; a completed run is finished (package written, job succeeded) here too.
pub async fn execute(
    ctx: &WorkerContext,
    job: &JobRecord,
    lease: &Lease,
    flags: Arc<StopFlags>,
) -> Result<Ended, TaskError> {
    let began = Instant::now();
    let training = job
        .spec
        .training
        .as_ref()
        .ok_or_else(|| TaskError::permanent("training job without a [training] section"))?;
    let (data, encoder_manifest, layout) = match load(ctx, job, training, &flags).await? {
        ControlFlow::Continue(loaded) => loaded,
        ControlFlow::Break(ended) => return Ok(ended),
    };
    let (graph_name, graph) = step_graph(ctx, training, &layout).await?;
    let resume_from = resume_point(ctx, &job.id).await?;
    let config = train_config(training, &data.classes);
    check_resume_fits(resume_from.as_ref(), &config, training, data.train.rows())?;
    let progress = first_progress(job, training, &config, &data, resume_from.as_ref());
    let start_step = resume_from.as_ref().map_or(0, |c| c.state.step);
    let (writer, writes) = Writer::spawn(Target {
        storage: ctx.storage.clone(),
        state: ctx.state.clone(),
        job_id: job.id.clone(),
        lease: lease.clone(),
        checkpoints: job.spec.output_uri().join(CHECKPOINT_FOLDER),
        keep: training.keep_checkpoints,
    });
    let observer = JobObserver {
        writer,
        job_id: job.id.clone(),
        flags: flags.clone(),
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
    let thread = Thread {
        graph_name,
        graph,
        layout: layout.clone(),
        engine: ctx.settings.engine.clone(),
        seed: training.seed,
        config,
        data,
        resume_from,
    };
    let ended = run_observed(ctx, job, &flags, thread, observer).await;
    // The observer, and with it the writer's last sender, is gone: the writer ends once it
    // has answered every request; the lease is given up only after that.
    if let Err(e) = writes.await {
        tracing::warn!(job_id = %job.id, error = %e, "checkpoint writer task failed");
    }
    let completed = match ended? {
        ControlFlow::Continue(completed) => completed,
        ControlFlow::Break(ended) => return Ok(ended),
    };
    let trained = Trained {
        job,
        lease,
        layout: &layout,
        done: &completed.done,
        progress: &completed.progress,
        encoder_manifest: &encoder_manifest,
        provider: completed.provider,
        began,
    };
    finish::run(ctx, trained).await
}

/// The encoder's features of the job's data, and the head they train. Stopped while
/// reading or embedding: the reason decides, not the error it caused.
async fn load(
    ctx: &WorkerContext,
    job: &JobRecord,
    training: &TrainingSpec,
    flags: &StopFlags,
) -> Result<ControlFlow<Ended, (JobData, ModelManifest, HeadLayout)>, TaskError> {
    let spec = &job.spec;
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
    if flags.shutdown.load(Ordering::Relaxed) {
        return Err(TaskError::Interrupted);
    }
    if flags.any() {
        return Ok(ControlFlow::Break(Ended::Abandoned));
    }
    let layout = head_layout(training, embedder.dimension());
    Ok(ControlFlow::Continue((loaded?, encoder_manifest, layout)))
}

/// The step graph to train with: the user's (`training.step_graph`), or one built for the
/// head; with the name messages call it by.
async fn step_graph(
    ctx: &WorkerContext,
    training: &TrainingSpec,
    layout: &HeadLayout,
) -> Result<(String, Vec<u8>), TaskError> {
    let Some(uri) = &training.step_graph else {
        return Ok((
            "built-in step graph".to_string(),
            build_step_graph(layout, &adamw(training)).encode_to_vec(),
        ));
    };
    let uri = S3Uri::parse(uri)
        .map_err(|e| TaskError::permanent(format!("training.step_graph of the job's spec: {e}")))?;
    match ctx.storage.get_bytes(&uri).await {
        Ok(bytes) => Ok((uri.to_string(), bytes)),
        Err(StorageError::NotFound { .. }) => Err(TaskError::permanent(format!(
            "training.step_graph {uri} not found: upload the graph first"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The checkpoint the job's pointer names, if any.
async fn resume_point(ctx: &WorkerContext, job_id: &str) -> Result<Option<Checkpoint>, TaskError> {
    let Some(pointer) = ctx.state.checkpoint_pointer(job_id).await? else {
        return Ok(None);
    };
    let uri = S3Uri::parse(&pointer)
        .map_err(|e| TaskError::permanent(format!("checkpoint pointer {pointer}: {e}")))?;
    let bytes = ctx.storage.get_bytes(&uri).await?;
    let checkpoint =
        checkpoint::decode(&pointer, &bytes).map_err(|e| TaskError::permanent(e.to_string()))?;
    Ok(Some(checkpoint))
}

/// Refuses a checkpoint that lies beyond the data: the data changed under the job.
fn check_resume_fits(
    resume_from: Option<&Checkpoint>,
    config: &TrainConfig,
    training: &TrainingSpec,
    rows: usize,
) -> Result<(), TaskError> {
    let per_epoch = config.steps_per_epoch(rows);
    match resume_from {
        Some(at)
            if at.cursor >= per_epoch
                || at.epoch > training.epochs
                || at.state.step > per_epoch * training.epochs =>
        {
            Err(TaskError::permanent(format!(
                "the job's checkpoint (epoch {}, batch {}, step {}) does not fit its data ({per_epoch} batches an epoch): the training data changed under the job; submit a new job",
                at.epoch, at.cursor, at.state.step
            )))
        }
        _ => Ok(()),
    }
}

/// The progress shown when this run starts: what earlier runs recorded, with this run's
/// sizes and resume point.
fn first_progress(
    job: &JobRecord,
    training: &TrainingSpec,
    config: &TrainConfig,
    data: &JobData,
    resume_from: Option<&Checkpoint>,
) -> TrainingProgress {
    let mut progress = job.training.clone().unwrap_or_default();
    progress.epochs = training.epochs;
    progress.train_rows = data.train.rows() as u64;
    progress.eval_rows = data.eval.rows() as u64;
    progress.total_steps = config.steps_per_epoch(data.train.rows()) * training.epochs;
    progress.classes = data.classes.clone();
    progress.features_cached = Some(data.cached);
    progress.features_seconds = Some(data.seconds);
    if let Some(at) = resume_from {
        progress.resumes += 1;
        progress.step = at.state.step;
        tracing::info!(job_id = %job.id, step = at.state.step, epoch = at.epoch, "resuming from checkpoint");
    }
    progress
}

/// What the training thread owns.
struct Thread {
    graph_name: String,
    graph: Vec<u8>,
    layout: HeadLayout,
    engine: crate::settings::EngineSettings,
    seed: u64,
    config: TrainConfig,
    data: JobData,
    resume_from: Option<Checkpoint>,
}

impl Thread {
    /// Steps on a blocking thread (ORT runs synchronously) until the run ends or stops; the
    /// observer comes back with the run's progress.
    async fn spawn(
        self,
        mut observer: JobObserver,
    ) -> Result<(Finish, JobObserver, &'static str), TaskError> {
        let (finish, observer, provider) = tokio::task::spawn_blocking(move || {
            let result = self.run(&mut observer);
            (result, observer)
        })
        .await
        .map(|(result, observer)| result.map(|(finish, provider)| (finish, observer, provider)))
        .map_err(|e| TaskError::Retryable(format!("training thread: {e}")))??;
        Ok((finish, observer, provider))
    }

    fn run(self, observer: &mut JobObserver) -> Result<(Finish, &'static str), TaskError> {
        let mut session = StepSession::open(&self.graph_name, &self.graph, &self.engine)?;
        check_graph_trains_the_head(&self.graph_name, &session, &self.layout)?;
        let start = match self.resume_from {
            Some(checkpoint) => checkpoint,
            None => fresh_start(
                &session,
                self.layout.initial_parameters(self.seed),
                self.seed,
            )?,
        };
        observer.started = Instant::now();
        observer.flags.alive();
        observer.flags.stepping.store(true, Ordering::Relaxed);
        let finish = train(
            &mut session,
            &self.data.train,
            &self.config,
            start,
            observer,
        )?;
        Ok((finish, session.provider()))
    }
}

/// A run that went to its last step.
struct Completed {
    done: Checkpoint,
    progress: TrainingProgress,
    /// `cpu` or `cuda`.
    provider: &'static str,
}

/// Trains on the thread and settles how it stopped; the observer is used up either way.
async fn run_observed(
    ctx: &WorkerContext,
    job: &JobRecord,
    flags: &StopFlags,
    thread: Thread,
    observer: JobObserver,
) -> Result<ControlFlow<Ended, Completed>, TaskError> {
    writer::store_progress(ctx.state.clone(), job.id.clone(), &observer.progress).await?;
    let (finish, observer, provider) = thread.spawn(observer).await?;
    let stopped = after_training(ctx, job, flags, finish, observer).await?;
    Ok(stopped.map_continue(|(done, progress)| Completed {
        done,
        progress,
        provider,
    }))
}

/// After the trainer returns: a completed run goes on to its finish; a stopped one saves
/// where it is and hands the job back (shutdown) or just ends (cancelled, lease lost).
async fn after_training(
    ctx: &WorkerContext,
    job: &JobRecord,
    flags: &StopFlags,
    finish: Finish,
    mut observer: JobObserver,
) -> Result<ControlFlow<Ended, (Checkpoint, TrainingProgress)>, TaskError> {
    flags.stepping.store(false, Ordering::Relaxed);
    let store = |progress: &TrainingProgress| {
        writer::store_progress(ctx.state.clone(), job.id.clone(), progress)
    };
    if !matches!(finish, Finish::Completed(_)) || flags.any() || observer.failure.is_some() {
        // Not running here any more: no rate or ETA to show until someone resumes it.
        observer.progress.steps_per_second = None;
        observer.progress.eta_seconds = None;
        if !flags.lease_lost.load(Ordering::Relaxed) {
            let _ = store(&observer.progress).await;
        }
    }
    if let Some(failure) = observer.failure.take() {
        return Err(failure);
    }
    if flags.lease_lost.load(Ordering::Relaxed) {
        return Ok(ControlFlow::Break(Ended::Abandoned));
    }
    match finish {
        Finish::Stopped(_) if flags.cancelled.load(Ordering::Relaxed) => {
            let _ = store(&observer.progress).await;
            Ok(ControlFlow::Break(Ended::Abandoned))
        }
        Finish::Stopped(at) => hand_back(observer, at).await.map(ControlFlow::Break),
        Finish::Completed(_) if flags.cancelled.load(Ordering::Relaxed) => {
            Ok(ControlFlow::Break(Ended::Abandoned))
        }
        Finish::Completed(at) => {
            let mut progress = observer.progress;
            let epochs = job.spec.training.as_ref().map_or(0, |t| t.epochs);
            progress.stopped_early = at.epoch < epochs;
            progress.best_step = at.best.as_ref().map(|b| b.step);
            if progress.stopped_early {
                tracing::info!(job_id = %job.id, epoch = at.epoch, epochs, best_step = ?progress.best_step, "stopped early: the evaluation metric stopped improving");
            }
            Ok(ControlFlow::Continue((at, progress)))
        }
    }
}

/// Shutdown: saves this step unless it was just saved, so the next owner resumes here.
async fn hand_back(mut observer: JobObserver, at: Checkpoint) -> Result<Ended, TaskError> {
    if observer.progress.checkpoint_step == Some(at.state.step) {
        return Ok(Ended::HandedBack);
    }
    let (saved, mut observer) = tokio::task::spawn_blocking(move || {
        let saved = observer.save(&at);
        if saved {
            observer.write_progress();
        }
        (saved, observer)
    })
    .await
    .map_err(|e| TaskError::Retryable(format!("checkpoint thread: {e}")))?;
    if !saved {
        return Err(observer.failure.take().unwrap_or(TaskError::Interrupted));
    }
    Ok(Ended::HandedBack)
}
