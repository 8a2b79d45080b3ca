//! What a running training job does between steps, on its training thread: publish
//! progress (Redis, metrics), evaluate at epoch ends (the trainer keeps the best), write checkpoints to S3 and commit them
//! under the job's lease (fencing), keep the last K, and stop when told to. The writes go
//! through the job's `Writer` task; the thread waits for each.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::super::TaskError;
use super::writer::Writer;
use crate::job::{EvalPoint, TrainingProgress};
use crate::metrics;
use crate::settings::EngineSettings;
use crate::state::now_ms;
use crate::train::checkpoint::{self, Checkpoint};
use crate::train::eval::{EvalMetrics, evaluate};
use crate::train::trainer::{Dataset, Flow, Observer, StepProgress};
use crate::train::{HeadLayout, TrainError};

/// Why a run should stop, set from outside the training thread, and the training side's
/// sign of life for the heartbeat.
#[derive(Default)]
pub struct StopFlags {
    /// The job was cancelled (or failed elsewhere): stop, nothing to save.
    pub cancelled: AtomicBool,
    /// The worker is shutting down: checkpoint at this step and hand the job back.
    pub shutdown: AtomicBool,
    /// The lease is gone: another worker may own the job now; write nothing more.
    pub lease_lost: AtomicBool,
    /// Raised with any of the above; the encoder stops embedding between batches on it.
    pub raised: Arc<AtomicBool>,
    /// Set once steps run; from then on `last_step_ms` must keep moving.
    pub stepping: AtomicBool,
    pub last_step_ms: AtomicU64,
}

impl StopFlags {
    pub fn any(&self) -> bool {
        self.raised.load(Ordering::Relaxed)
    }

    /// Raises one of the stop reasons.
    pub fn raise(&self, reason: &AtomicBool) {
        reason.store(true, Ordering::Relaxed);
        self.raised.store(true, Ordering::Relaxed);
    }

    pub fn alive(&self) {
        self.last_step_ms.store(now_ms(), Ordering::Relaxed);
    }
}

/// How often progress is written to Redis while steps run.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

pub struct JobObserver {
    /// Does this job's S3 and Redis writes; dropped with the observer, which ends it.
    pub writer: Writer,
    pub job_id: String,
    pub flags: Arc<StopFlags>,
    pub layout: HeadLayout,
    pub eval: Dataset,
    pub engine: EngineSettings,
    pub progress: TrainingProgress,
    /// The first failure of an S3 or Redis write; the run stops and the job is retried.
    pub failure: Option<TaskError>,
    pub last_written: Instant,
    pub started: Instant,
    pub start_step: u64,
    /// Whether this run has committed a checkpoint past where it started (its crash budget
    /// is then reset).
    pub progressed: bool,
}

impl JobObserver {
    /// Writes `checkpoint` and points the job at it; false when the lease was lost (the
    /// pointer was refused) or the write failed (recorded in `failure`).
    pub fn save(&mut self, checkpoint: &Checkpoint) -> bool {
        let started = Instant::now();
        let step = checkpoint.state.step;
        let bytes = match checkpoint::encode(checkpoint) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.failure = Some(TaskError::permanent(format!("checkpoint: {e}")));
                return false;
            }
        };
        let committed = self.writer.checkpoint(step, bytes);
        match committed {
            Ok(true) => {
                metrics::CHECKPOINTS
                    .with(metrics::CheckpointOutcome::Committed)
                    .inc();
                metrics::CHECKPOINT_WRITE_SECONDS.observe(started.elapsed().as_secs_f64());
                self.progress.checkpoint_step = Some(step);
                self.prune(step);
                if !self.progressed && step > self.start_step {
                    self.progressed = true;
                    if let Err(e) = self.writer.start_afresh() {
                        tracing::warn!(job_id = %self.job_id, error = %e, "could not reset the attempt count");
                    }
                }
                tracing::info!(job_id = %self.job_id, step, "checkpoint committed");
                true
            }
            Ok(false) => {
                metrics::CHECKPOINTS
                    .with(metrics::CheckpointOutcome::Refused)
                    .inc();
                tracing::warn!(job_id = %self.job_id, step, "checkpoint refused: the job's lease was lost; stopping");
                self.flags.raise(&self.flags.lease_lost);
                false
            }
            Err(e) => {
                tracing::warn!(job_id = %self.job_id, step, error = %e, "checkpoint not written; stopping");
                self.failure = Some(e);
                false
            }
        }
    }

    /// Deletes checkpoints older than the last `keep`; best effort (a leftover costs space,
    /// not correctness: the pointer names the one to resume from).
    fn prune(&self, current: u64) {
        if let Err(e) = self.writer.prune(current) {
            tracing::warn!(job_id = %self.job_id, error = %e, "could not delete old checkpoints");
        }
    }

    /// Stores the progress with the job (and as a sign of life for the sweeper); from the
    /// training thread.
    pub fn write_progress(&mut self) {
        self.last_written = Instant::now();
        if let Err(e) = self.writer.progress(&self.progress) {
            tracing::warn!(job_id = %self.job_id, error = %e, "could not store training progress");
        }
    }

    fn evaluate(&mut self, checkpoint: &Checkpoint) -> Result<EvalMetrics, TrainError> {
        let metrics = evaluate(
            &self.layout,
            &checkpoint.state.params,
            &self.eval,
            &self.engine,
        )?;
        // Logits can overflow while every parameter is finite.
        for (what, value) in [
            ("evaluation loss", metrics.loss),
            ("evaluation accuracy", metrics.accuracy),
            ("evaluation macro-F1", metrics.macro_f1),
        ] {
            TrainError::check_finite(what, &[value], checkpoint.state.step, checkpoint.epoch)?;
        }
        let point = EvalPoint {
            epoch: checkpoint.epoch,
            step: checkpoint.state.step,
            loss: metrics.loss,
            accuracy: metrics.accuracy,
            macro_f1: metrics.macro_f1,
        };
        // A run resumed from an earlier checkpoint evaluates these steps again.
        self.progress
            .eval_history
            .retain(|p| p.step < checkpoint.state.step);
        self.progress.eval_history.push(point);
        self.progress.eval = Some(point);
        for (metric, value) in [
            ("accuracy", point.accuracy),
            ("macro_f1", point.macro_f1),
            ("loss", point.loss),
        ] {
            metrics::TRAINING_EVAL
                .with_label_values(&[&self.job_id, metric])
                .set(value);
        }
        tracing::info!(
            job_id = %self.job_id,
            epoch = point.epoch,
            step = point.step,
            accuracy = point.accuracy,
            macro_f1 = point.macro_f1,
            loss = point.loss,
            "evaluated"
        );
        Ok(metrics)
    }
}

impl Observer for JobObserver {
    fn on_step(&mut self, step: &StepProgress) -> Flow {
        self.flags.alive();
        let id = self.job_id.as_str();
        metrics::TRAINING_STEPS.inc();
        metrics::TRAINING_STEP
            .with_label_values(&[id])
            .set(step.step as f64);
        metrics::TRAINING_TOTAL_STEPS
            .with_label_values(&[id])
            .set(step.total_steps as f64);
        metrics::TRAINING_EPOCH
            .with_label_values(&[id])
            .set(step.epoch as f64);
        metrics::TRAINING_LOSS
            .with_label_values(&[id])
            .set(step.loss as f64);
        metrics::TRAINING_LEARNING_RATE
            .with_label_values(&[id])
            .set(step.lr as f64);
        let p = &mut self.progress;
        p.step = step.step;
        p.total_steps = step.total_steps;
        p.epoch = step.epoch;
        p.loss = Some(step.loss as f64);
        p.learning_rate = Some(step.lr as f64);
        let elapsed = self.started.elapsed().as_secs_f64();
        let done_here = step.step.saturating_sub(self.start_step);
        if done_here > 0 && elapsed > 0.0 {
            let rate = done_here as f64 / elapsed;
            p.steps_per_second = Some(rate);
            let eta = step.total_steps.saturating_sub(step.step) as f64 / rate;
            p.eta_seconds = Some(eta);
            metrics::TRAINING_ETA_SECONDS
                .with_label_values(&[id])
                .set(eta);
        }
        if self.last_written.elapsed() >= PROGRESS_EVERY {
            self.write_progress();
        }
        if self.flags.any() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    fn on_epoch_end(&mut self, at: &Checkpoint) -> Result<Option<EvalMetrics>, TrainError> {
        if self.flags.lease_lost.load(Ordering::Relaxed) {
            return Ok(None);
        }
        self.evaluate(at).map(Some)
    }

    fn on_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<Flow, TrainError> {
        if self.flags.lease_lost.load(Ordering::Relaxed) {
            return Ok(Flow::Stop);
        }
        if let Some(best) = &checkpoint.best {
            self.progress.best_step = Some(best.step);
        }
        if !self.save(checkpoint) {
            return Ok(Flow::Stop);
        }
        self.write_progress();
        Ok(Flow::Continue)
    }
}
