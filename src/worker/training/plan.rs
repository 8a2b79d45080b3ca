//! Planning a training job: early checks, pinned input versions, the one `train` task queued.

use serde::{Deserialize, Serialize};

use super::super::{TaskError, WorkerContext, inputs};
use crate::job::ModelTask;
use crate::job::{JobSpec, JobStatus, TaskMessage};
use crate::state::{JobRecord, Transition, now_ms};
use crate::storage::ObjectInfo;
use crate::uri::S3Uri;

/// Job field holding the training objects and their versions, as planned.
pub const PINNED_INPUTS: &str = "training_inputs";

/// Plans a training job. A job already running only needs its `train` task queued again
/// (a redelivered plan task): its owner, if any, drops the duplicate.
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
    plan_training(ctx, &job.id, &job.spec).await
}

/// A training job is one task: check what can be checked before a worker commits to it
/// (the encoder, the data's presence), then queue the `train` task.
async fn plan_training(ctx: &WorkerContext, job_id: &str, spec: &JobSpec) -> Result<(), TaskError> {
    let manifest = ctx.models.manifest(&spec.model_uri()).await?;
    if manifest.task != ModelTask::Embed {
        return Err(TaskError::permanent(format!(
            "model package {} is a classifier; a training job needs an encoder (embedding) package",
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
                // Every attempt reads exactly these versions, so a resumed run sees the
                // same rows.
                (PINNED_INPUTS, pin_inputs(&objects)),
            ],
        )
        .await?;
    if let Transition::Refused(status) = moved {
        tracing::info!(job_id, %status, "job left planning meanwhile (cancelled?); not training it");
        return Ok(());
    }
    tracing::info!(job_id, objects = objects.len(), "training job planned");
    requeue_train(ctx, spec, job_id).await;
    Ok(())
}

/// Queues a `train` task for the job (a hand-back, or the sweeper finding it unowned).
pub async fn requeue_train(ctx: &WorkerContext, spec: &JobSpec, job_id: &str) {
    let task = serde_json::to_vec(&TaskMessage::Train {
        job_id: job_id.to_string(),
    })
    .expect("task serialises");
    if let Err(e) = ctx
        .broker
        .publish_task(spec.pool, spec.priority, &task)
        .await
    {
        tracing::warn!(job_id, error = %e, "could not queue the train task; the sweeper will");
    }
}

#[derive(Serialize, Deserialize)]
struct PinnedObject {
    uri: String,
    size: u64,
    etag: String,
}

pub fn pin_inputs(objects: &[ObjectInfo]) -> String {
    let pinned: Vec<PinnedObject> = objects
        .iter()
        .map(|o| PinnedObject {
            uri: o.uri.to_string(),
            size: o.size,
            etag: o.etag.clone(),
        })
        .collect();
    serde_json::to_string(&pinned).expect("pinned inputs serialise")
}

pub fn unpin_inputs(json: &str) -> Result<Vec<ObjectInfo>, TaskError> {
    let pinned: Vec<PinnedObject> = serde_json::from_str(json)
        .map_err(|e| TaskError::permanent(format!("stored training inputs unreadable: {e}")))?;
    pinned
        .into_iter()
        .map(|p| {
            Ok(ObjectInfo {
                uri: S3Uri::parse(&p.uri).map_err(TaskError::Permanent)?,
                size: p.size,
                etag: p.etag,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_inputs_round_trip() {
        let objects = vec![ObjectInfo {
            uri: S3Uri::parse("s3://bkt/train/a.csv").unwrap(),
            size: 12,
            etag: "\"abc\"".into(),
        }];
        assert_eq!(unpin_inputs(&pin_inputs(&objects)).unwrap(), objects);
        assert!(unpin_inputs("not json").is_err());
    }
}
