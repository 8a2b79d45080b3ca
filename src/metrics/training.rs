//! Training jobs: progress per job, steps, checkpoints, the job lease and the feature cache.

use prometheus::{GaugeVec, Histogram, IntCounter};

use super::family::{Counters, Family};
use super::labels::*;
use super::{counter_vec, gauge_vec, histogram, register};

declare! {
    /// Training progress of the jobs this worker is training, labelled by job id only while the
    /// job runs here (the series are removed when it ends or moves), so the label set stays
    /// as small as the worker's concurrency.
    pub static TRAINING_STEP: GaugeVec =
        gauge_vec(
            "sluice_training_step",
            "Optimisation steps taken by a running training job.",
            &["job_id"],
        );

    pub static TRAINING_TOTAL_STEPS: GaugeVec =
        gauge_vec(
            "sluice_training_total_steps",
            "Steps a running training job will take in all.",
            &["job_id"],
        );

    pub static TRAINING_EPOCH: GaugeVec =
        gauge_vec(
            "sluice_training_epoch",
            "Epochs completed by a running training job.",
            &["job_id"],
        );

    pub static TRAINING_LOSS: GaugeVec =
        gauge_vec(
            "sluice_training_loss",
            "Mean cross-entropy of a running training job's last batch.",
            &["job_id"],
        );

    pub static TRAINING_LEARNING_RATE: GaugeVec =
        gauge_vec(
            "sluice_training_learning_rate",
            "Learning rate of a running training job's last step.",
            &["job_id"],
        );

    pub static TRAINING_EVAL: GaugeVec =
        gauge_vec(
            "sluice_training_eval",
            "Latest evaluation of a running training job: metric accuracy|macro_f1|loss.",
            &["job_id", "metric"],
        );

    pub static TRAINING_ETA_SECONDS: GaugeVec =
        gauge_vec(
            "sluice_training_eta_seconds",
            "Estimated seconds until a running training job finishes.",
            &["job_id"],
        );

    /// Steps run by training jobs on this worker.
    pub static TRAINING_STEPS: IntCounter =
        register(
            IntCounter::new(
                "sluice_training_steps_total",
                "Optimisation steps run by this worker.",
            )
            .expect("valid metric"),
        );

    /// Checkpoints written: outcome `committed|refused` (refused: the lease was lost).
    pub static CHECKPOINTS: Counters<CheckpointOutcome> =
        Family::new(
            counter_vec(
                "sluice_checkpoints_total",
                "Training checkpoints written, by outcome (refused: the job's lease was lost).",
                &["outcome"],
            )
        );

    pub static CHECKPOINT_WRITE_SECONDS: Histogram =
        histogram(
            "sluice_checkpoint_write_seconds",
            "Time to write one checkpoint to S3 and commit its pointer.",
            vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
        );

    /// Job lease events of training jobs: `acquired|busy|renewed|lost|released`.
    pub static JOB_LEASES: Counters<LeaseEvent> =
        Family::new(
            counter_vec(
                "sluice_job_leases_total",
                "Training-job lease events: acquired, busy (held by another worker), renewed, lost, released.",
                &["event"],
            )
        );

    /// Encoder feature cache lookups for training data: `hit|miss`.
    pub static FEATURE_CACHE: Counters<CacheResult> =
        Family::new(
            counter_vec(
                "sluice_feature_cache_total",
                "Training feature cache lookups, by result (hit|miss).",
                &["result"],
            )
        );
}

/// Removes a training job's per-job series (it ended, or left this worker).
pub fn forget_training_job(job_id: &str) {
    for gauge in [
        &*TRAINING_STEP,
        &*TRAINING_TOTAL_STEPS,
        &*TRAINING_EPOCH,
        &*TRAINING_LOSS,
        &*TRAINING_LEARNING_RATE,
        &*TRAINING_ETA_SECONDS,
    ] {
        let _ = gauge.remove_label_values(&[job_id]);
    }
    for metric in ["accuracy", "macro_f1", "loss"] {
        let _ = TRAINING_EVAL.remove_label_values(&[job_id, metric]);
    }
}
