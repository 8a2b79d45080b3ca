//! The HTTP API (axum, described by aide): submit, status, list, cancel, results, health,
//! readiness, metrics and its own OpenAPI description.

pub mod auth;
mod error;
pub mod gauges;
mod guard;
mod jobs;
pub mod openapi;
pub mod results;
pub mod submissions;
pub mod view;

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use aide::openapi::OpenApi;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use results::{ResultPart, ResultsIndex};
pub use view::{Created, JobList, JobView, Progress};

use crate::broker::Broker;
use crate::metrics;
use crate::state::StateStore;
use crate::storage::Storage;
use crate::submit::Submitter;
use openapi::Errors;

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
    // The served description is always the whole one (`openapi::document`); this one is
    // only what building the routes produces.
    let mut unused = OpenApi::default();
    let router = routes(ctx.tokens.clone(), ctx.serve_metrics).finish_api(&mut unused);
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

/// Every route with its description. Jobs need a token (when tokens are configured);
/// health, readiness, metrics and the description do not.
fn routes(tokens: Arc<auth::Tokens>, serve_metrics: bool) -> ApiRouter<Arc<ApiContext>> {
    let v1 = ApiRouter::new()
        .api_route(
            "/v1/jobs",
            post_with(jobs::submit, |op| {
                op.id("submitJob")
                    .summary("Submit a job spec")
                    .description("With an `Idempotency-Key` header (1-200 visible ASCII characters), resubmitting with the same key returns the first job (200) instead of a new one (201).")
                    .response_with::<201, Json<Created>, _>(|r| r.description("the job was created"))
                    .response_with::<200, Json<Created>, _>(|r| r.description("the Idempotency-Key matched an earlier submission: that job"))
                    .error::<400>("`bad_request`: an unusable Idempotency-Key or body")
                    .error::<409>("`conflict`: another job is writing to this output folder")
                    .error::<413>("`too_large`: the body is over api.max_body_bytes")
                    .error::<422>("`invalid_spec`: the spec is not valid; `field` names the faulty field")
                    .v1_errors()
            })
            .get_with(jobs::list, |op| {
                op.id("listJobs")
                    .summary("List jobs, newest first")
                    .response_with::<200, Json<JobList>, _>(|r| r.description("the jobs, and records that could not be read"))
                    .error::<400>("`bad_request`: an unknown status")
                    .v1_errors()
            }),
        )
        .api_route(
            "/v1/jobs/{id}",
            get_with(jobs::show, |op| {
                op.id("getJob")
                    .summary("Show a job: status, progress, timings")
                    .response_with::<200, Json<JobView>, _>(|r| r.description("the job"))
                    .error::<404>("`not_found`: no job with this id")
                    .v1_errors()
            }),
        )
        .api_route(
            "/v1/jobs/{id}/cancel",
            post_with(jobs::cancel, |op| {
                op.id("cancelJob")
                    .summary("Cancel a job; running shards stop within one batch")
                    .response_with::<200, Json<JobView>, _>(|r| r.description("the job, now cancelled (also when it already was)"))
                    .error::<404>("`not_found`: no job with this id")
                    .error::<409>("`conflict`: the job already succeeded or failed")
                    .v1_errors()
            }),
        )
        .api_route(
            "/v1/jobs/{id}/results",
            get_with(results::index, |op| {
                op.id("listResults")
                    .summary("The parts a finished job's manifest lists, with their sizes")
                    .description("Only parts `_manifest.json` lists: never another object in the output folder.")
                    .response_with::<200, Json<ResultsIndex>, _>(|r| r.description("the parts and the manifest"))
                    .error::<404>("`not_found`: no job with this id")
                    .error::<409>("`conflict`: the job has not succeeded (queued, running, cancelled; failed without partial=true), is a training job, or has no manifest")
                    .v1_errors()
            }),
        )
        .api_route(
            "/v1/jobs/{id}/results/{*name}",
            get_with(results::part, |op| {
                op.id("downloadResultPart")
                    .summary("Stream one part the manifest lists")
                    .response_with::<200, openapi::ObjectStream, _>(|r| {
                        r.description("the part's bytes as stored (`Content-Length` set), streamed")
                    })
                    .error::<404>("`not_found`: no job with this id, or the manifest lists no such part")
                    .error::<409>("`conflict`: as for the list of parts")
                    .v1_errors()
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            tokens,
            auth::authenticate,
        ));
    let mut all = ApiRouter::new().merge(v1).api_route(
        "/openapi.json",
        get_with(openapi_json, |op| {
            op.id("openapi")
                .summary("This description (OpenAPI 3.1)")
                .response_with::<200, Json<serde_json::Value>, _>(|r| {
                    r.description("the OpenAPI document")
                })
        }),
    );
    if serve_metrics {
        all = all.merge(ops_routes());
    }
    all
}

/// `/healthz`, `/readyz` (broker, Redis and S3 answer, and not draining) and `/metrics`:
/// on the API's port, or on `metrics.listen` with `api.serve_metrics = false`.
pub fn ops_router<S>(ctx: Arc<ApiContext>) -> Router<S> {
    ops_routes()
        .finish_api(&mut OpenApi::default())
        .with_state(ctx)
}

fn ops_routes() -> ApiRouter<Arc<ApiContext>> {
    ApiRouter::new()
        .api_route(
            "/healthz",
            get_with(healthz, |op| {
                op.id("healthz")
                    .summary("Liveness: the process answers")
                    .with(|mut op| {
                        openapi::set_response(op.inner_mut(), 200, openapi::text_response("`ok`"));
                        op
                    })
            }),
        )
        .api_route(
            "/readyz",
            get_with(ready, |op| {
                op.id("readyz")
                    .summary("Readiness: broker, Redis and S3 answer, and not draining")
                    .response_with::<200, Json<serde_json::Value>, _>(|r| {
                        r.description("`{\"ready\": true, \"checks\": {…}, \"failing\": {}}`")
                    })
                    .response_with::<503, Json<serde_json::Value>, _>(|r| {
                        r.description("`{\"ready\": false, …, \"failing\": {check: why}}`")
                    })
            }),
        )
        .api_route(
            "/metrics",
            get_with(metrics_text, |op| {
                op.id("metrics")
                    .summary("Prometheus metrics")
                    .with(|mut op| {
                        openapi::set_response(
                            op.inner_mut(),
                            200,
                            openapi::text_response("Prometheus text exposition format"),
                        );
                        op
                    })
            }),
        )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics_text() -> String {
    metrics::render()
}

async fn openapi_json() -> Json<serde_json::Value> {
    Json(openapi::document().clone())
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

/// 200 when the broker answers and has sluice's whole topology, Redis and S3 answer (each
/// within `metrics.probe_timeout_ms`), nothing reported into the readiness registry is
/// failing, and the process is not draining; else 503 naming each failing check and why
/// (see `crate::health`).
async fn ready(State(ctx): State<Arc<ApiContext>>) -> Response {
    let health = ctx.broker.health().clone();
    crate::telemetry::probe_dependencies(&health, &ctx.broker, &ctx.state, &ctx.storage).await;
    let mut extra = std::collections::BTreeMap::new();
    if ctx.draining.is_cancelled() {
        extra.insert("draining", "shutting down: takes no new work".to_string());
    }
    crate::health::answer(&health, crate::telemetry::PROBED, extra).into_response()
}
