//! The HTTP API (axum): submit, status, list, cancel, health, readiness and metrics.

pub mod auth;
mod error;
pub mod gauges;
mod guard;
pub mod submissions;
pub mod view;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use view::{Created, JobList, JobView};

use crate::broker::Broker;
use crate::job::{JobStatus, is_valid_job_id, parse_json_spec_within};
use crate::metrics;
use crate::state::{StateStore, Transition, now_ms};
use crate::storage::Storage;
use crate::submit::{Origin, Submitter};

pub struct ApiContext {
    pub submitter: Submitter,
    /// Largest accepted spec (`api.max_body_bytes`).
    pub max_body_bytes: usize,
    pub state: StateStore,
    pub broker: Broker,
    pub storage: Storage,
    /// Set while the process drains: readiness turns false so no new work is routed here.
    pub draining: CancellationToken,
    pub tokens: Arc<auth::Tokens>,
    /// Whether `/healthz`, `/readyz` and `/metrics` are served here (`api.serve_metrics`).
    pub serve_metrics: bool,
}

pub fn router(ctx: Arc<ApiContext>, max_body_bytes: usize) -> Router {
    // Jobs need a token (when tokens are configured); health, readiness and metrics do not.
    let jobs = Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(show))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route_layer(axum::middleware::from_fn_with_state(
            ctx.tokens.clone(),
            auth::authenticate,
        ));
    let mut router = Router::new().merge(jobs);
    if ctx.serve_metrics {
        router = router.merge(ops_router(ctx.clone()));
    }
    // Outermost last: panics are caught inside, then every non-JSON error made JSON.
    router
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(guard::catch_panics))
        .layer(axum::middleware::from_fn_with_state(
            max_body_bytes,
            guard::json_errors,
        ))
        .with_state(ctx)
}

/// `/healthz`, `/readyz` (broker, Redis and S3 answer, and not draining) and `/metrics`:
/// on the API's port, or on `metrics.listen` with `api.serve_metrics = false`.
pub fn ops_router<S>(ctx: Arc<ApiContext>) -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(|| async { metrics::render() }))
        .with_state(ctx)
}

/// Serves on an already-bound listener until `shutdown`, then finishes open requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<ApiContext>,
    max_body_bytes: usize,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(ctx, max_body_bytes))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Most jobs one `GET /v1/jobs` returns (and looks through, for a token with an allowance).
const MAX_LIST: usize = 1000;

async fn submit(
    State(ctx): State<Arc<ApiContext>>,
    Extension(caller): Extension<auth::Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
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

fn checked_id(id: &str) -> Result<(), ApiError> {
    if is_valid_job_id(id) {
        Ok(())
    } else {
        Err(ApiError::NotFound(id.to_string()))
    }
}

async fn show(
    State(ctx): State<Arc<ApiContext>>,
    Extension(caller): Extension<auth::Caller>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    caller.require(auth::Scope::Read)?;
    checked_id(&id)?;
    let job = ctx.state.get(&id).await?;
    caller.may_see(&id, &job.spec)?;
    Ok(Json(JobView::from_record(job, now_ms())))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
}

async fn list(
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

async fn cancel(
    State(ctx): State<Arc<ApiContext>>,
    Extension(caller): Extension<auth::Caller>,
    Path(id): Path<String>,
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

/// 200 when the broker answers and has sluice's whole topology, Redis and S3 answer (each
/// within `metrics.probe_timeout_ms`), nothing reported into the readiness registry is
/// failing, and the process is not draining; else 503 naming each failing check and why
/// (see `crate::health`).
async fn ready(State(ctx): State<Arc<ApiContext>>) -> impl IntoResponse {
    let health = ctx.broker.health().clone();
    crate::telemetry::probe_dependencies(&health, &ctx.broker, &ctx.state, &ctx.storage).await;
    let mut extra = std::collections::BTreeMap::new();
    if ctx.draining.is_cancelled() {
        extra.insert("draining", "shutting down: takes no new work".to_string());
    }
    crate::health::answer(&health, crate::telemetry::PROBED, extra)
}
