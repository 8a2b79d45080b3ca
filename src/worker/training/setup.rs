//! What a training spec means for the trainer: head, schedule, optimiser, a fitting step graph.

use super::super::TaskError;
use crate::job::{ClassRows, DecaySpec, EvalMetric, Select, TrainingSpec};
use crate::train::trainer::{Decay, Metric, Schedule, Selection, TrainConfig};
use crate::train::{AdamW, HeadLayout, StepSession};

/// The head described by the spec, on features of `input_dim`.
pub fn head_layout(training: &TrainingSpec, input_dim: usize) -> HeadLayout {
    HeadLayout {
        input_dim,
        classes: training.labels.len(),
        hidden: training.head.hidden().to_vec(),
        dropout: training.head.dropout(),
    }
}

/// The trainer's settings; `classes` gives each label's training rows (for balanced class
/// weights).
pub fn train_config(training: &TrainingSpec, classes: &[ClassRows]) -> TrainConfig {
    let counts: Vec<u64> = classes.iter().map(|c| c.train_rows).collect();
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
        class_weights: training
            .class_weights
            .as_ref()
            .map(|w| w.resolve(&training.labels, &counts))
            .unwrap_or_default(),
        selection: selection(training),
    }
}

/// Best-epoch tracking, when the package keeps the best or the run may stop early.
fn selection(training: &TrainingSpec) -> Option<Selection> {
    if training.select == Select::Last && training.early_stopping.is_none() {
        return None;
    }
    Some(Selection {
        metric: match training.eval.metric {
            EvalMetric::MacroF1 => Metric::MacroF1,
            EvalMetric::Accuracy => Metric::Accuracy,
            EvalMetric::Loss => Metric::Loss,
        },
        patience: training.early_stopping.as_ref().map(|e| e.patience),
        min_delta: training
            .early_stopping
            .as_ref()
            .map_or(0.0, |e| e.min_delta),
    })
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
pub fn check_graph_trains_the_head(
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
