//! Where a training job stands: step, epoch, loss, evaluation and ETA, as stored with the
//! job and shown by the API, `sluice status --follow` and the training report.

use serde::{Deserialize, Serialize};

/// Every field has a default, so records written by an older or newer version still read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainingProgress {
    /// Optimisation steps taken, out of `total_steps`.
    pub step: u64,
    pub total_steps: u64,
    /// Epochs completed, out of `epochs`.
    pub epoch: u64,
    pub epochs: u64,
    pub train_rows: u64,
    pub eval_rows: u64,
    /// Mean cross-entropy of the last step's batch.
    pub loss: Option<f64>,
    pub learning_rate: Option<f64>,
    /// Of the latest evaluation (each epoch end).
    pub eval: Option<EvalPoint>,
    /// Every evaluation so far, in order.
    #[serde(default)]
    pub eval_history: Vec<EvalPoint>,
    /// Step of the latest committed checkpoint.
    pub checkpoint_step: Option<u64>,
    /// Steps per second of the worker now running it.
    pub steps_per_second: Option<f64>,
    pub eta_seconds: Option<f64>,
    /// Whether the encoder features came from the cache, and how long getting them took.
    pub features_cached: Option<bool>,
    pub features_seconds: Option<f64>,
    /// How many times the job was resumed from a checkpoint (another worker, a restart).
    #[serde(default)]
    pub resumes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub epoch: u64,
    pub step: u64,
    pub loss: f64,
    pub accuracy: f64,
    pub macro_f1: f64,
}

impl TrainingProgress {
    /// 0 to 1.
    pub fn fraction(&self) -> f64 {
        if self.total_steps == 0 {
            0.0
        } else {
            (self.step as f64 / self.total_steps as f64).min(1.0)
        }
    }
}
