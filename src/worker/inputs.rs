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
    let is_folder = spec.input.uri.ends_with('/');
    let listed = list_inputs(
        ctx,
        &spec.input_uri(),
        is_folder,
        spec.input.etag.as_deref(),
    )
    .await?;
    if !is_folder {
        return Ok(listed);
    }
    let (objects, left_out): (Vec<ObjectInfo>, Vec<ObjectInfo>) = listed
        .into_iter()
        .partition(|o| spec.input.reads_key(&o.uri.key));
    if !left_out.is_empty() {
        let examples: Vec<String> = left_out.iter().take(5).map(|o| o.uri.to_string()).collect();
        tracing::info!(uri = %spec.input.uri, left_out = left_out.len(), examples = %examples.join(", "),
            "input folder: objects not read (names starting with '_' or '.', or without input.suffix)");
    }
    if objects.is_empty() {
        let wanted = spec.input.suffix.as_ref().map_or_else(
            || "names not starting with '_' or '.'".to_string(),
            |s| format!("keys ending in {}", s.as_slice().join(" or ")),
        );
        return Err(TaskError::permanent(format!(
            "input {} holds {} object(s) but none to read ({wanted}); check input.uri and input.suffix",
            spec.input.uri,
            left_out.len()
        )));
    }
    Ok(objects)
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
