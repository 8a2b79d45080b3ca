//! The training loop: seeded epoch order, mini-batches, dropout masks, the learning-rate
//! schedule and checkpoints, driven step by step so a run stopped at any checkpoint and
//! resumed from it ends with the same weights as one that never stopped.
//!
//! Determinism: each epoch's order is a permutation derived from (seed, epoch) alone, so a
//! resumed run recomputes it and skips the batches its checkpoint already trained on; the
//! generator that draws dropout masks is saved in every checkpoint.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::checkpoint::{Best, Checkpoint};
use super::error::TrainError;
use super::eval::EvalMetrics;
use super::head::Tensors;
use super::runner::{StepBatch, StepSession};

/// Features and labels of one data set, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub dim: usize,
    pub features: Vec<f32>,
    /// Class index per row.
    pub labels: Vec<usize>,
}

impl Dataset {
    pub fn rows(&self) -> usize {
        self.labels.len()
    }
}

/// How the learning rate moves: linear warm-up from 0, then a decay to 0 at the last step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decay {
    Constant,
    Linear,
    Cosine,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub peak_lr: f32,
    pub warmup_steps: u64,
    pub decay: Decay,
}

impl Schedule {
    /// The learning rate of 1-based step `step` out of `total`.
    pub fn lr(&self, step: u64, total: u64) -> f32 {
        let peak = self.peak_lr as f64;
        if step <= self.warmup_steps && self.warmup_steps > 0 {
            return (peak * step as f64 / self.warmup_steps as f64) as f32;
        }
        let span = total.saturating_sub(self.warmup_steps).max(1) as f64;
        let done = (step.saturating_sub(self.warmup_steps) as f64 / span).min(1.0);
        let factor = match self.decay {
            Decay::Constant => 1.0,
            Decay::Linear => 1.0 - done,
            Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * done).cos()),
        };
        (peak * factor) as f32
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub batch_size: usize,
    pub epochs: u64,
    pub seed: u64,
    pub schedule: Schedule,
    /// A checkpoint every this many steps (and at every epoch end); 0 for epoch ends only.
    pub checkpoint_every: u64,
    /// Dropout probability of the `dropout.*` masks (0 for none).
    pub dropout: f32,
    /// Loss weight per class (its one-hot target is scaled by it); empty: all 1.
    pub class_weights: Vec<f32>,
    /// Tracking of the best epoch end and early stopping; `None`: neither.
    pub selection: Option<Selection>,
}

/// Which evaluation figure is best, and when a run stops early.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub metric: Metric,
    /// Evaluations without improvement before the run ends; `None`: run every epoch.
    pub patience: Option<u64>,
    /// The smallest change that counts as an improvement.
    pub min_delta: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    MacroF1,
    Accuracy,
    Loss,
}

impl Selection {
    fn score(&self, m: &EvalMetrics) -> f64 {
        match self.metric {
            Metric::MacroF1 => m.macro_f1,
            Metric::Accuracy => m.accuracy,
            Metric::Loss => m.loss,
        }
    }

    fn improves(&self, score: f64, best: f64) -> bool {
        match self.metric {
            Metric::Loss => score < best - self.min_delta,
            _ => score > best + self.min_delta,
        }
    }

    /// Folds the evaluation of the epoch end `at` into its best-so-far and stale count.
    fn record(&self, at: &mut Checkpoint, metrics: &EvalMetrics) {
        let score = self.score(metrics);
        let better = match &at.best {
            None => true,
            Some(best) => self.improves(score, best.score),
        };
        if better {
            at.best = Some(Best {
                step: at.state.step,
                epoch: at.epoch,
                score,
                params: at.state.params.clone(),
            });
            at.stale = 0;
        } else {
            at.stale += 1;
        }
    }

    fn exhausted(&self, at: &Checkpoint) -> bool {
        self.patience.is_some_and(|p| at.stale >= p)
    }
}

impl TrainConfig {
    pub fn steps_per_epoch(&self, rows: usize) -> u64 {
        rows.div_ceil(self.batch_size.max(1)) as u64
    }
}

/// What the loop tells its caller, and what the caller answers.
pub trait Observer {
    /// After every step.
    fn on_step(&mut self, _progress: &StepProgress) -> Flow {
        Flow::Continue
    }
    /// At each epoch end, before its checkpoint: the evaluation of `at`, if the observer
    /// evaluates (selection and early stopping need it).
    fn on_epoch_end(&mut self, _at: &Checkpoint) -> Result<Option<EvalMetrics>, TrainError> {
        Ok(None)
    }
    /// A checkpoint to keep (write it, record it); an error stops the run.
    fn on_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<Flow, TrainError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop now (cancel, shutdown, lost lease); after a checkpoint, the run can resume.
    Stop,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepProgress {
    pub step: u64,
    pub total_steps: u64,
    pub epoch: u64,
    pub loss: f32,
    pub lr: f32,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// Every epoch done, or stopped early by the selection's patience; the final state.
    Completed(Checkpoint),
    /// The observer stopped it; the last state reached (a checkpoint only if one was
    /// taken at this step).
    Stopped(Checkpoint),
}

/// A fresh start: the head's initial parameters, optimiser state at zero, generator seeded.
pub fn fresh_start(
    session: &StepSession,
    params: Tensors,
    seed: u64,
) -> Result<Checkpoint, TrainError> {
    Ok(Checkpoint {
        state: session.initial_state(params)?,
        epoch: 0,
        cursor: 0,
        // A stream apart from the epoch orders', so the two never share numbers.
        rng: {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(1);
            rng
        },
        losses: Vec::new(),
        best: None,
        stale: 0,
    })
}

/// Row order of `epoch`: a permutation from (seed, epoch) alone.
pub fn epoch_order(seed: u64, epoch: u64, rows: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(2 + epoch);
    order.shuffle(&mut rng);
    order
}

/// Trains from `start` (fresh or a checkpoint) to the end of the last epoch, or until the
/// observer says stop.
pub fn train(
    session: &mut StepSession,
    data: &Dataset,
    config: &TrainConfig,
    start: Checkpoint,
    observer: &mut dyn Observer,
) -> Result<Finish, TrainError> {
    let classes = session.contract().classes;
    let masks_spec = session.contract().dropout.clone();
    if data.dim != session.contract().features {
        return Err(TrainError::Run {
            graph: "training".into(),
            message: format!(
                "features have {} dimensions, the step graph wants {}",
                data.dim,
                session.contract().features
            ),
        });
    }
    if let Some(bad) = data.labels.iter().find(|&&l| l >= classes) {
        return Err(TrainError::Run {
            graph: "training".into(),
            message: format!("label index {bad} out of range for {classes} classes"),
        });
    }
    let rows = data.rows();
    if rows == 0 || config.batch_size == 0 {
        return Err(TrainError::Run {
            graph: "training".into(),
            message: "the training data set is empty (or batch_size is 0)".into(),
        });
    }
    let per_epoch = config.steps_per_epoch(rows);
    let total = per_epoch * config.epochs;
    let mut at = start;
    // Resumed from the checkpoint where patience ran out: the run had already ended.
    if config.selection.as_ref().is_some_and(|s| s.exhausted(&at)) {
        return Ok(Finish::Completed(at));
    }
    let keep = 1.0 - config.dropout;
    let mut features = Vec::new();
    let mut targets = Vec::new();
    while at.epoch < config.epochs {
        let order = epoch_order(config.seed, at.epoch, rows);
        while at.cursor < per_epoch {
            let begin = at.cursor as usize * config.batch_size;
            let batch_rows = &order[begin..(begin + config.batch_size).min(rows)];
            features.clear();
            targets.clear();
            targets.resize(batch_rows.len() * classes, 0.0);
            for (i, &row) in batch_rows.iter().enumerate() {
                features.extend_from_slice(&data.features[row * data.dim..(row + 1) * data.dim]);
                let label = data.labels[row];
                targets[i * classes + label] =
                    config.class_weights.get(label).copied().unwrap_or(1.0);
            }
            let dropout = masks_spec
                .iter()
                .map(|(_, width)| {
                    (0..batch_rows.len() * width)
                        .map(|_| {
                            if at.rng.random::<f32>() < keep {
                                1.0 / keep
                            } else {
                                0.0
                            }
                        })
                        .collect()
                })
                .collect();
            let lr = config.schedule.lr(at.state.step + 1, total);
            let out = session.step(
                &mut at.state,
                &StepBatch {
                    rows: batch_rows.len(),
                    features: &features,
                    targets: &targets,
                    dropout,
                },
                lr,
            )?;
            // A diverged run stops at the step it diverged: nothing non-finite is ever
            // reported, checkpointed or packaged.
            let epoch = at.epoch + 1;
            TrainError::check_finite("loss", &[out.loss], at.state.step, epoch)?;
            for (name, tensor) in &at.state.params {
                TrainError::check_finite(
                    &format!("parameter {name}"),
                    &tensor.data,
                    at.state.step,
                    epoch,
                )?;
            }
            at.losses.push(out.loss);
            at.cursor += 1;
            if at.cursor == per_epoch {
                at.epoch += 1;
                at.cursor = 0;
            }
            let progress = StepProgress {
                step: at.state.step,
                total_steps: total,
                epoch: at.epoch,
                loss: out.loss,
                lr,
            };
            let mut flow = observer.on_step(&progress);
            let mut exhausted = false;
            if at.cursor == 0
                && let Some(metrics) = observer.on_epoch_end(&at)?
                && let Some(selection) = &config.selection
            {
                selection.record(&mut at, &metrics);
                exhausted = selection.exhausted(&at);
            }
            let due = at.cursor == 0
                || (config.checkpoint_every > 0
                    && at.state.step.is_multiple_of(config.checkpoint_every));
            if due && observer.on_checkpoint(&at)? == Flow::Stop {
                flow = Flow::Stop;
            }
            if flow == Flow::Stop {
                return Ok(Finish::Stopped(at));
            }
            if exhausted {
                return Ok(Finish::Completed(at));
            }
            if at.cursor == 0 {
                break;
            }
        }
    }
    Ok(Finish::Completed(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_warms_up_then_decays_to_zero() {
        let s = Schedule {
            peak_lr: 1.0,
            warmup_steps: 10,
            decay: Decay::Linear,
        };
        assert_eq!(s.lr(5, 110), 0.5);
        assert_eq!(s.lr(10, 110), 1.0);
        assert!((s.lr(60, 110) - 0.5).abs() < 1e-6);
        assert_eq!(s.lr(110, 110), 0.0);
        let c = Schedule {
            decay: Decay::Cosine,
            ..s.clone()
        };
        assert!((c.lr(60, 110) - 0.5).abs() < 1e-6);
        let k = Schedule {
            decay: Decay::Constant,
            warmup_steps: 0,
            ..s
        };
        assert_eq!(k.lr(1, 110), 1.0);
    }

    #[test]
    fn epoch_orders_depend_only_on_seed_and_epoch() {
        let a = epoch_order(7, 3, 50);
        assert_eq!(a, epoch_order(7, 3, 50));
        assert_ne!(a, epoch_order(7, 4, 50));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }
}
