//! Planning a compression job: the source package and the sample checked, the sample's
//! versions pinned, the one leased task queued.

use super::super::training::plan::{PINNED_INPUTS, pin_inputs};
use super::super::training::requeue_train;
use super::super::{TaskError, WorkerContext, inputs};
use crate::job::{JobSpec, JobStatus, MODEL_FILE};
use crate::state::{JobRecord, Transition, now_ms};

/// Plans a compression job; a redelivered plan of a running job only queues its task again
/// (a duplicate finds the lease taken and is dropped).
pub async fn run(ctx: &WorkerContext, job: &JobRecord) -> Result<(), TaskError> {
    match job.status {
        JobStatus::Queued | JobStatus::Planning => {
            if !inputs::enter_planning(ctx, &job.id).await? {
                return Ok(());
            }
        }
        JobStatus::Running => {
            requeue_train(ctx, &job.spec, &job.id).await;
            return Ok(());
        }
        _ => return Ok(()),
    }
    plan_compression(ctx, &job.id, &job.spec).await
}

async fn plan_compression(
    ctx: &WorkerContext,
    job_id: &str,
    spec: &JobSpec,
) -> Result<(), TaskError> {
    let manifest = ctx.models.manifest(&spec.model_uri()).await?;
    if !manifest.files.contains_key(MODEL_FILE) {
        return Err(TaskError::permanent(format!(
            "model package {}: its manifest lists no {MODEL_FILE}; push the package again",
            spec.model
        )));
    }
    let objects = inputs::job_inputs(ctx, spec).await?;
    let moved = ctx
        .state
        .transition(
            job_id,
            &[JobStatus::Planning],
            JobStatus::Running,
            &[
                ("started_ms", now_ms().to_string()),
                ("model_sha256", manifest.model_sha256().to_string()),
                ("package_key", manifest.cache_key()),
                (PINNED_INPUTS, pin_inputs(&objects)),
            ],
        )
        .await?;
    if let Transition::Refused(status) = moved {
        tracing::info!(job_id, %status, "job left planning meanwhile (cancelled?); not compressing it");
        return Ok(());
    }
    tracing::info!(job_id, objects = objects.len(), "compression job planned");
    requeue_train(ctx, spec, job_id).await;
    Ok(())
}
