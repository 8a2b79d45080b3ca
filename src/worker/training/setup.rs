//! What a training spec means for the trainer: head, schedule, optimiser, a fitting step graph.

use super::super::TaskError;
use crate::job::{DecaySpec, TrainingSpec};
use crate::train::trainer::{Decay, Schedule, TrainConfig};
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
