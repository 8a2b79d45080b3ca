//! What both planners (inference, training) share: the move into planning, and the input.

use super::{TaskError, WorkerContext};
use crate::job::{JobSpec, JobStatus};
use crate::state::Transition;
use crate::storage::{ObjectInfo, StorageError};
use crate::uri::S3Uri;

/// Moves a queued job (or one whose planning was interrupted) into planning; false when it
/// left the queue meanwhile (cancelled), so nothing is planned.
pub(super) async fn enter_planning(ctx: &WorkerContext, job_id: &str) -> Result<bool, TaskError> {
    let moved = ctx
        .state
        .transition(
            job_id,
            &[JobStatus::Queued, JobStatus::Planning],
            JobStatus::Planning,
            &[],
        )
        .await?;
    if let Transition::Refused(status) = moved {
        tracing::info!(job_id, %status, "job is no longer queued; not planning it");
        return Ok(false);
    }
    Ok(true)
}

/// The objects of the job's input (pinned to the spec's ETag, when it has one).
pub(super) async fn job_inputs(
    ctx: &WorkerContext,
    spec: &JobSpec,
) -> Result<Vec<ObjectInfo>, TaskError> {
    list_inputs(
        ctx,
        &spec.input_uri(),
        spec.input.uri.ends_with('/'),
        spec.input.etag.as_deref(),
    )
    .await
}

/// The objects to read: one object (of version `etag`, when given), or every non-empty
/// object under a folder.
pub(super) async fn list_inputs(
    ctx: &WorkerContext,
    uri: &S3Uri,
    is_folder: bool,
    etag: Option<&str>,
) -> Result<Vec<ObjectInfo>, TaskError> {
    if !is_folder {
        return match ctx.storage.head(uri).await {
            Ok(info)
                if etag.is_some_and(|wanted| {
                    wanted.trim_matches('"') != info.etag.trim_matches('"')
                }) =>
            {
                Err(TaskError::permanent(format!(
                    "input {uri} changed after the job was submitted (ETag {} expected, {} found); submit the new version as a new job",
                    etag.unwrap_or_default(),
                    info.etag
                )))
            }
            Ok(info) => Ok(vec![info]),
            Err(StorageError::NotFound { .. }) => Err(TaskError::permanent(format!(
                "input {uri} not found: check input.uri, or upload the object first"
            ))),
            Err(e) => Err(e.into()),
        };
    }
    let objects: Vec<ObjectInfo> = ctx
        .storage
        .list(uri)
        .await?
        .into_iter()
        .filter(|o| o.size > 0 && !o.uri.key.ends_with('/'))
        .collect();
    if objects.is_empty() {
        return Err(TaskError::permanent(format!(
            "input {uri} holds no objects: check input.uri"
        )));
    }
    Ok(objects)
}
