//! The end of a completed run: report, curves, the exported head, the package, success.

use std::time::Instant;

use prost::Message;

use super::super::{TaskError, WorkerContext};
use super::{Ended, report};
use crate::job::{JobStatus, TrainingProgress};
use crate::job::{ModelManifest, Select};
use crate::metrics;
use crate::state::{JobRecord, Lease, Transition, now_ms};
use crate::train::checkpoint::Checkpoint;
use crate::train::curves::{self, EvalMark};
use crate::train::head::Tensors;
use crate::train::package::{ClassifierPackage, write_classifier_package};
use crate::train::{HeadLayout, build_inference_graph};

/// What a completed run hands to its finish.
pub struct Trained<'a> {
    pub job: &'a JobRecord,
    pub lease: &'a Lease,
    pub layout: &'a HeadLayout,
    /// The last step's state.
    pub done: &'a Checkpoint,
    pub progress: &'a TrainingProgress,
    pub encoder_manifest: &'a ModelManifest,
    /// `cpu` or `cuda`.
    pub provider: &'a str,
    pub began: Instant,
}

/// Writes the classifier package and marks the job succeeded.
pub async fn run(ctx: &WorkerContext, trained: Trained<'_>) -> Result<Ended, TaskError> {
    let job = trained.job;
    // A stale owner must not write the package over the new owner's.
    if !ctx
        .state
        .renew_job_lease(
            &job.id,
            trained.lease,
            ctx.settings.training.lease_ttl_secs * 1000,
        )
        .await?
    {
        tracing::warn!(job_id = %job.id, "lease lost before writing the package; leaving the job to its new owner");
        return Ok(Ended::Abandoned);
    }
    let training = job.spec.training.as_ref().expect("checked");
    let report = report::build(
        job,
        training,
        trained.progress,
        trained.done,
        trained.provider,
        trained.began.elapsed(),
    );
    write_curves(ctx, &trained).await?;
    let manifest = write_package(ctx, &trained, report).await?;
    complete(ctx, &trained, &manifest).await
}

/// The curves beside the numbers; written before the manifest, like every package file.
async fn write_curves(ctx: &WorkerContext, trained: &Trained<'_>) -> Result<(), TaskError> {
    let (job, progress) = (trained.job, trained.progress);
    let marks: Vec<EvalMark> = progress
        .eval_history
        .iter()
        .map(|e| EvalMark {
            step: e.step,
            accuracy: e.accuracy,
            macro_f1: e.macro_f1,
            loss: e.loss,
        })
        .collect();
    let svg = curves::render(
        &format!("{} — {}", job.spec.name, job.id),
        &trained.done.losses,
        &marks,
    );
    ctx.storage
        .put(
            &job.spec.output_uri().join(report::CURVES_FILE),
            svg.into_bytes(),
            "image/svg+xml",
        )
        .await?;
    Ok(())
}

/// The weights the package keeps: the best evaluated epoch end's, or the last step's.
fn selected_params<'a>(trained: &'a Trained<'_>) -> &'a Tensors {
    let training = trained.job.spec.training.as_ref().expect("checked");
    match (&trained.done.best, training.select) {
        (Some(best), Select::Best) => &best.params,
        _ => &trained.done.state.params,
    }
}

/// Exports the head and writes the package (encoder + head + labels + report).
async fn write_package(
    ctx: &WorkerContext,
    trained: &Trained<'_>,
    report: serde_json::Value,
) -> Result<ModelManifest, TaskError> {
    let spec = &trained.job.spec;
    let training = spec.training.as_ref().expect("checked");
    let head = build_inference_graph(trained.layout, selected_params(trained)).encode_to_vec();
    let manifest = write_classifier_package(
        &ctx.storage,
        &ClassifierPackage {
            name: &spec.name,
            encoder: &spec.model_uri(),
            encoder_manifest: trained.encoder_manifest,
            head,
            labels: training.labels.clone(),
            report,
        },
        &spec.output_uri(),
    )
    .await?;
    Ok(manifest)
}

/// Marks the job succeeded, unless it left running meanwhile (cancelled).
async fn complete(
    ctx: &WorkerContext,
    trained: &Trained<'_>,
    manifest: &ModelManifest,
) -> Result<Ended, TaskError> {
    let (job, progress) = (trained.job, trained.progress);
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
            metrics::job_finished(
                metrics::JobKind::Training,
                metrics::FinalStatus::Succeeded,
                job.started_ms,
                now_ms(),
            );
            tracing::info!(
                job_id = %job.id,
                steps = trained.done.state.step,
                accuracy = progress.eval.map(|e| e.accuracy),
                package = %job.spec.output_uri(),
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
