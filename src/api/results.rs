//! A finished job's results through the API: the parts its `_manifest.json` lists (with
//! their sizes), and each part streamed, so a client that reaches only the API gets them.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use futures::{StreamExt, TryStreamExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::jobs::{JobPath, checked_id};
use super::openapi::ObjectStream;
use super::{ApiContext, ApiError, auth};
use crate::job::JobStatus;
use crate::state::JobRecord;
use crate::uri::S3Uri;

/// Parts whose size is asked of S3 at once.
const HEAD_CONCURRENCY: usize = 16;

/// `GET /v1/jobs/{id}/results` answer: what to download, and how big each part is.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ResultsIndex {
    pub job_id: String,
    /// `succeeded`, or `failed` when asked with `partial=true`.
    pub status: JobStatus,
    /// Folder holding the parts, `_manifest.json` and `_SUCCESS`.
    pub output_uri: String,
    /// The output parts the manifest lists, in shard order.
    pub parts: Vec<ResultPart>,
    /// The error parts (rows that failed, and why) the manifest lists.
    pub error_parts: Vec<ResultPart>,
    /// The job's `_manifest.json`, as written.
    pub manifest: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResultPart {
    /// Path under the output folder (`part-00000.jsonl`, `errors/part-00003.jsonl`): what
    /// `GET /v1/jobs/{id}/results/{name}` takes, and where a download puts it.
    pub name: String,
    /// `s3://bucket/key`.
    pub uri: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Rows written to it (output parts; absent for error parts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct ResultsQuery {
    /// Also serve a failed job's results (the parts its manifest lists): they are
    /// incomplete, or hold more failed rows than the job allowed.
    #[serde(default)]
    pub partial: bool,
}

/// The `{id}` and `{name}` of a part route.
#[derive(Deserialize, JsonSchema)]
pub struct PartPath {
    /// The job's id.
    pub id: String,
    /// A part's `name` from `GET /v1/jobs/{id}/results`; may hold `/` (`errors/…`).
    pub name: String,
}

/// The fields of `_manifest.json` the API reads; the rest is passed through as is.
#[derive(Deserialize)]
struct ManifestParts {
    #[serde(default)]
    parts: Vec<ManifestPart>,
    #[serde(default)]
    error_parts: Vec<String>,
}

#[derive(Deserialize)]
struct ManifestPart {
    uri: String,
    rows: u64,
}

pub async fn index(
    State(ctx): State<Arc<ApiContext>>,
    Extension(caller): Extension<auth::Caller>,
    Path(JobPath { id }): Path<JobPath>,
    Query(query): Query<ResultsQuery>,
) -> Result<Json<ResultsIndex>, ApiError> {
    let (job, output, manifest) = finished_job(&ctx, &caller, &id, query.partial).await?;
    let listed = listed_parts(&id, &output, &manifest)?;
    let sized = |list: Vec<(String, S3Uri, Option<u64>)>| {
        let storage = ctx.storage.clone();
        futures::stream::iter(list)
            .map(move |(name, uri, rows)| {
                let storage = storage.clone();
                async move {
                    let info = storage
                        .head(&uri)
                        .await
                        .map_err(|e| missing_part(&uri, e))?;
                    Ok::<_, ApiError>(ResultPart {
                        name,
                        uri: uri.to_string(),
                        bytes: info.size,
                        rows,
                    })
                }
            })
            .buffered(HEAD_CONCURRENCY)
            .try_collect::<Vec<_>>()
    };
    let parts = sized(listed.parts).await?;
    let error_parts = sized(listed.errors).await?;
    let manifest = serde_json::from_slice(&manifest).map_err(|e| unreadable_manifest(&id, e))?;
    Ok(Json(ResultsIndex {
        job_id: id,
        status: job.status,
        output_uri: output.to_string(),
        parts,
        error_parts,
        manifest,
    }))
}

pub async fn part(
    State(ctx): State<Arc<ApiContext>>,
    Extension(caller): Extension<auth::Caller>,
    Path(PartPath { id, name }): Path<PartPath>,
    Query(query): Query<ResultsQuery>,
) -> Result<ObjectStream, ApiError> {
    let (_, output, manifest) = finished_job(&ctx, &caller, &id, query.partial).await?;
    let listed = listed_parts(&id, &output, &manifest)?;
    let Some((_, uri, _)) = listed
        .parts
        .into_iter()
        .chain(listed.errors)
        .find(|(n, _, _)| *n == name)
    else {
        return Err(ApiError::NotFound(format!(
            "{id} has no part `{name}`: its manifest does not list it (GET /v1/jobs/{id}/results lists the parts)"
        )));
    };
    let info = ctx
        .storage
        .head(&uri)
        .await
        .map_err(|e| missing_part(&uri, e))?;
    // The version sized is the version streamed: a part rewritten meanwhile fails the read.
    let reader = ctx
        .storage
        .read_range(&uri, 0, 0, Some(&info.etag))
        .await
        .map_err(|e| missing_part(&uri, e))?;
    let mut response = Body::from_stream(tokio_util::io::ReaderStream::new(reader)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
    if let Ok(etag) = HeaderValue::from_str(&info.etag) {
        headers.insert(header::ETAG, etag);
    }
    Ok(ObjectStream(response))
}

/// The job, its output folder and its manifest's bytes, if its results may be served.
async fn finished_job(
    ctx: &ApiContext,
    caller: &auth::Caller,
    id: &str,
    partial: bool,
) -> Result<(JobRecord, S3Uri, Vec<u8>), ApiError> {
    caller.require(auth::Scope::Read)?;
    checked_id(id)?;
    let job = ctx.state.get(id).await?;
    caller.may_see(id, &job.spec)?;
    if job.spec.kind.writes_package() {
        return Err(ApiError::Conflict(format!(
            "job {id} is a {} job: its output is a model package at {}, not result parts",
            job.spec.kind.as_str(),
            job.spec.output_uri()
        )));
    }
    match job.status {
        JobStatus::Succeeded => {}
        JobStatus::Failed if partial => {}
        JobStatus::Failed => {
            return Err(ApiError::Conflict(format!(
                "job {id} failed ({}); its parts are not a complete result. Ask with partial=true (`sluice results {id} --partial`) to download what its manifest lists anyway",
                job.error.as_deref().unwrap_or("no reason recorded")
            )));
        }
        JobStatus::Cancelled => {
            return Err(ApiError::Conflict(format!(
                "job {id} was cancelled: it has no results"
            )));
        }
        status => {
            return Err(ApiError::Conflict(format!(
                "job {id} is {status}: results can be downloaded once it has succeeded (`sluice status {id} --follow` waits for it)"
            )));
        }
    }
    let output = job.spec.output_uri();
    let manifest_uri = output.join("_manifest.json");
    let manifest = ctx
        .storage
        .get_bytes(&manifest_uri)
        .await
        .map_err(|e| match e {
            crate::storage::StorageError::NotFound { .. } => ApiError::Conflict(format!(
                "job {id} is {} but has no {manifest_uri}: it ended before writing its manifest, so there is nothing listed to download",
                job.status
            )),
            other => ApiError::Unavailable(other.to_string()),
        })?;
    Ok((job, output, manifest))
}

/// Output and error parts as `(name under the output folder, uri, rows)`.
struct Listed {
    parts: Vec<(String, S3Uri, Option<u64>)>,
    errors: Vec<(String, S3Uri, Option<u64>)>,
}

fn listed_parts(id: &str, output: &S3Uri, manifest: &[u8]) -> Result<Listed, ApiError> {
    let read: ManifestParts =
        serde_json::from_slice(manifest).map_err(|e| unreadable_manifest(id, e))?;
    let named = |uri: &str, rows: Option<u64>| {
        let parsed = S3Uri::parse(uri)
            .map_err(|e| ApiError::Unreadable(format!("job {id}: manifest part `{uri}`: {e}")))?;
        let name = part_name(output, &parsed).ok_or_else(|| {
            ApiError::Unreadable(format!(
                "job {id}: manifest part {uri} is not under the output folder {output}"
            ))
        })?;
        Ok::<_, ApiError>((name, parsed, rows))
    };
    Ok(Listed {
        parts: read
            .parts
            .iter()
            .map(|p| named(&p.uri, Some(p.rows)))
            .collect::<Result<_, _>>()?,
        errors: read
            .error_parts
            .iter()
            .map(|uri| named(uri, None))
            .collect::<Result<_, _>>()?,
    })
}

/// `part`'s path under `output`, if it is a plain relative path there (no `..`, no empty
/// segment), so a download can never write outside the folder it was given.
pub fn part_name(output: &S3Uri, part: &S3Uri) -> Option<String> {
    let prefix = output.as_prefix();
    if part.bucket != prefix.bucket {
        return None;
    }
    let name = part.key.strip_prefix(&prefix.key)?;
    let plain = !name.is_empty()
        && name
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains('\\'));
    plain.then(|| name.to_string())
}

fn missing_part(uri: &S3Uri, e: crate::storage::StorageError) -> ApiError {
    match e {
        crate::storage::StorageError::NotFound { .. } => ApiError::Unreadable(format!(
            "{uri} is listed in the manifest but is not in S3 (deleted after the job ended?)"
        )),
        other => ApiError::Unavailable(other.to_string()),
    }
}

fn unreadable_manifest(id: &str, e: serde_json::Error) -> ApiError {
    ApiError::Unreadable(format!(
        "job {id}: _manifest.json is not readable JSON: {e}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_stay_inside_the_output_folder() {
        let output = S3Uri::new("bkt", "out/run1");
        let name = |key: &str| part_name(&output, &S3Uri::new("bkt", key));
        assert_eq!(
            name("out/run1/part-00000.jsonl").as_deref(),
            Some("part-00000.jsonl")
        );
        assert_eq!(
            name("out/run1/errors/part-00003.jsonl").as_deref(),
            Some("errors/part-00003.jsonl")
        );
        assert_eq!(name("out/run10/part-00000.jsonl"), None);
        assert_eq!(name("out/run1/../x"), None);
        assert_eq!(name("out/run1//x"), None);
        assert_eq!(name("out/run1/"), None);
        let elsewhere = S3Uri::new("other", "out/run1/part-00000.jsonl");
        assert_eq!(part_name(&output, &elsewhere), None);
    }

    #[test]
    fn the_manifest_lists_parts_and_error_parts_by_name() {
        let output = S3Uri::new("bkt", "out/");
        let manifest = br#"{"job_id": "j", "parts": [{"shard": 0, "uri": "s3://bkt/out/part-00000.jsonl", "rows": 7}],
            "error_parts": ["s3://bkt/out/errors/part-00000.jsonl"]}"#;
        let listed = listed_parts("j", &output, manifest).unwrap();
        assert_eq!(listed.parts[0].0, "part-00000.jsonl");
        assert_eq!(listed.parts[0].2, Some(7));
        assert_eq!(listed.errors[0].0, "errors/part-00000.jsonl");
        let outside = br#"{"parts": [{"uri": "s3://bkt/elsewhere/p.jsonl", "rows": 1}]}"#;
        assert!(listed_parts("j", &output, outside).is_err());
    }
}
