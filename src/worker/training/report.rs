//! The training report written into the package (`training-report.json`): what was trained
//! on what, with which settings, and how it went (loss curve, evaluation per epoch).

use std::time::Duration;

use crate::job::{Select, TrainingProgress, TrainingSpec};
use crate::state::JobRecord;
use crate::train::checkpoint::Checkpoint;

/// The loss and evaluation curves, drawn, beside `training-report.json`.
pub const CURVES_FILE: &str = "training-curves.svg";

pub fn build(
    job: &JobRecord,
    training: &TrainingSpec,
    progress: &TrainingProgress,
    done: &Checkpoint,
    provider: &str,
    elapsed: Duration,
) -> serde_json::Value {
    let steps_per_epoch = (done.losses.len() as u64 / training.epochs.max(1)).max(1) as usize;
    let epoch_mean_loss: Vec<f64> = done
        .losses
        .chunks(steps_per_epoch)
        .map(|c| c.iter().map(|&l| l as f64).sum::<f64>() / c.len() as f64)
        .collect();
    let spec = &job.spec;
    serde_json::json!({
        "job_id": job.id,
        "name": spec.name,
        "encoder": {
            "package": spec.model,
            "model_sha256": job.model_sha256,
        },
        "labels": training.labels,
        "head": training.head,
        "step_graph": training.step_graph.as_deref().unwrap_or("built-in"),
        "optimizer": training.optimizer,
        "schedule": training.schedule,
        "batch_size": training.batch_size,
        "epochs": training.epochs,
        "seed": training.seed,
        "data": {
            "input": spec.input.uri,
            "text_field": spec.input.text_field,
            "label_field": spec.label_field(),
            "evaluation": match &training.eval.uri {
                Some(uri) => serde_json::json!({"uri": uri}),
                None => serde_json::json!({
                    "held_out_fraction": training.eval.fraction,
                    "split": "stratified by label, seeded by training.seed",
                }),
            },
            "train_rows": progress.train_rows,
            "eval_rows": progress.eval_rows,
            "classes": progress.classes,
            "features_cached": progress.features_cached,
            "features_seconds": progress.features_seconds,
        },
        "steps": done.state.step,
        "selected": selected(training, progress, done),
        "early_stopping": training.early_stopping,
        "stopped_early": progress.stopped_early,
        "class_weights": training.class_weights,
        "eval": progress.eval,
        "eval_history": progress.eval_history,
        "final_loss": done.losses.last(),
        "epoch_mean_loss": epoch_mean_loss,
        "loss_curve": done.losses,
        "curves": CURVES_FILE,
        "resumes": progress.resumes,
        "execution_provider": provider,
        "seconds_last_run": elapsed.as_secs_f64(),
        "started_ms": job.started_ms,
    })
}

/// Which weights the package holds, and the evaluation that picked them.
fn selected(
    training: &TrainingSpec,
    progress: &TrainingProgress,
    done: &Checkpoint,
) -> serde_json::Value {
    let (rule, step) = match (&done.best, training.select) {
        (Some(best), Select::Best) => ("best", best.step),
        _ => ("last", done.state.step),
    };
    let eval = progress.eval_history.iter().find(|e| e.step == step);
    serde_json::json!({
        "rule": rule,
        "metric": training.eval.metric.name(),
        "step": step,
        "eval": eval,
    })
}
