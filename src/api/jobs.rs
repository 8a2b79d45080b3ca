//! The job routes: submit, show, list and cancel.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::Deserialize;

use super::openapi::SpecBody;
use super::{ApiContext, ApiError, Created, JobList, JobView, auth};
use crate::job::{JobStatus, is_valid_job_id, parse_json_spec_within};
use crate::metrics;
use crate::state::{Transition, now_ms};
use crate::submit::Origin;

const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Most jobs one `GET /v1/jobs` returns (and looks through, for a token with an allowance).
const MAX_LIST: usize = 1000;

pub async fn submit(
    State(ctx): State<Arc<ApiContext>>,
    Extension(caller): Extension<auth::Caller>,
    headers: HeaderMap,
    SpecBody(body): SpecBody,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    caller.require(auth::Scope::Submit)?;
    let key = match headers.get(IDEMPOTENCY_HEADER) {
        None => None,
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .filter(|k| {
                    !k.is_empty() && k.len() <= 200 && k.chars().all(|c| c.is_ascii_graphic())
                })
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "Idempotency-Key must be 1-200 visible ASCII characters".into(),
                    )
                })?;
            Some(key.to_string())
        }
    };
    let spec = parse_json_spec_within(&body, ctx.max_body_bytes)?;
    // Keys are the caller's own: another token sending the same key gets its own job, not
    // this caller's job id.
    let key = key.map(|key| format!("http:{}:{key}", caller.name));
    let submitted = ctx
        .submitter
        .submit(
            &spec,
            &Origin {
                idempotency_key: key.as_deref(),
                allowance: Some(&caller.allowance),
                ..Origin::new("http")
            },
        )
        .await?;
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Created {
            id: submitted.id,
            created: submitted.created,
        }),
    ))
}

/// The `{id}` of a job route.
#[derive(Deserialize, JsonSchema)]
pub struct JobPath {
    /// The job's id, as `POST /v1/jobs` returned it.
    pub id: String,
}

pub fn checked_id(id: &str) -> Result<(), ApiError> {
    if is_valid_job_id(id) {
        Ok(())
    } else {
        Err(ApiError::NotFound(id.to_string()))
    }
}

pub async fn show(
    State(ctx): State<Arc<ApiContext>>,
    Extension(caller): Extension<auth::Caller>,
    Path(JobPath { id }): Path<JobPath>,
) -> Result<Json<JobView>, ApiError> {
    caller.require(auth::Scope::Read)?;
    checked_id(&id)?;
    let job = ctx.state.get(&id).await?;
    caller.may_see(&id, &job.spec)?;
    Ok(Json(JobView::from_record(job, now_ms())))
}

#[derive(Deserialize, JsonSchema)]
pub struct ListQuery {
    /// Only jobs in this status: queued, planning, running, succeeded, failed, cancelled.
    status: Option<String>,
    /// Most jobs returned, newest first (default 50, at most 1000).
    limit: Option<usize>,
}

pub async fn list(
    State(ctx): State<Arc<ApiContext>>,
    Extension(caller): Extension<auth::Caller>,
    Query(query): Query<ListQuery>,
) -> Result<Json<JobList>, ApiError> {
    caller.require(auth::Scope::Read)?;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(JobStatus::parse(text).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "status `{text}` is not one of queued, planning, running, succeeded, failed, cancelled"
            ))
        })?),
    };
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_LIST);
    let now = now_ms();
    if caller.sees_all() {
        let listing = ctx.state.list_checked(status, limit).await?;
        let jobs = listing
            .jobs
            .into_iter()
            .map(|job| JobView::from_record(job, now))
            .collect();
        return Ok(Json(JobList {
            jobs,
            unreadable: listing.unreadable,
        }));
    }
    // A token bounded by an allowance sees the jobs inside it among the newest MAX_LIST,
    // and no unreadable records (they cannot be told to be its own).
    let listing = ctx.state.list_checked(status, MAX_LIST).await?;
    let jobs = listing
        .jobs
        .into_iter()
        .filter(|job| caller.allowance.covers(&job.spec))
        .take(limit)
        .map(|job| JobView::from_record(job, now))
        .collect();
    Ok(Json(JobList {
        jobs,
        unreadable: Vec::new(),
    }))
}

pub async fn cancel(
    State(ctx): State<Arc<ApiContext>>,
    Extension(caller): Extension<auth::Caller>,
    Path(JobPath { id }): Path<JobPath>,
) -> Result<Json<JobView>, ApiError> {
    caller.require(auth::Scope::Cancel)?;
    checked_id(&id)?;
    let job = ctx.state.get(&id).await?;
    caller.may_see(&id, &job.spec)?;
    let fields = [("finished_ms", now_ms().to_string())];
    match ctx
        .state
        .move_to(&id, JobStatus::Cancelled, &fields)
        .await?
    {
        Transition::Moved(_) => {
            if let Ok(job) = ctx.state.get(&id).await {
                metrics::job_finished(
                    job.spec.kind.into(),
                    metrics::FinalStatus::Cancelled,
                    job.started_ms,
                    now_ms(),
                );
            }
            tracing::info!(job_id = %id, "job cancelled");
        }
        Transition::Refused(JobStatus::Cancelled) => {}
        Transition::Refused(status) => {
            return Err(ApiError::Conflict(format!(
                "job {id} is already {status}; only queued, planning or running jobs can be cancelled"
            )));
        }
    }
    let job = ctx.state.get(&id).await?;
    Ok(Json(JobView::from_record(job, now_ms())))
}
