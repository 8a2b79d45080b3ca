//! What every role exposes about itself: `/metrics`, `/healthz` and `/readyz` on
//! `metrics.listen` for roles without the HTTP API, and a Redis round-trip probe.

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::state::StateStore;

/// Serves `/metrics`, `/healthz` (the process is alive) and `/readyz` (503 once `draining`:
/// a shutting-down worker takes no new work, so nothing should be routed to it) until `stop`;
/// or, given the API's own routes for them (`api.serve_metrics = false`), those, whose
/// readiness also checks the broker, Redis and S3.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api_routes: Option<Router>,
    draining: CancellationToken,
    stop: CancellationToken,
) {
    let app = api_routes.unwrap_or_else(|| own_routes(draining));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "metrics server failed");
    }
}

fn own_routes(draining: CancellationToken) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let draining = draining.is_cancelled();
                async move {
                    if draining {
                        (StatusCode::SERVICE_UNAVAILABLE, "draining")
                    } else {
                        (StatusCode::OK, "ready")
                    }
                }
            }),
        )
}

async fn render() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(),
    )
}

/// Times a Redis PING every 5 s into `sluice_redis_ping_seconds`, until `stop`.
pub async fn probe_redis(state: StateStore, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let started = Instant::now();
        if state.ping().await.is_ok() {
            metrics::REDIS_PING_SECONDS.observe(started.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_turns_off_while_draining_and_metrics_stay_up() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (draining, stop) = (CancellationToken::new(), CancellationToken::new());
        let server = tokio::spawn(serve(listener, None, draining.clone(), stop.clone()));
        let get = |path: &'static str| {
            let url = format!("{base}{path}");
            async move { reqwest::get(url).await.unwrap() }
        };
        assert_eq!(get("/readyz").await.status(), 200);
        draining.cancel();
        let answer = get("/readyz").await;
        assert_eq!(answer.status(), 503);
        assert_eq!(answer.text().await.unwrap(), "draining");
        assert_eq!(get("/healthz").await.status(), 200);
        let metrics = get("/metrics").await.text().await.unwrap();
        assert!(metrics.contains("sluice_tasks_in_flight"), "{metrics}");
        stop.cancel();
        server.await.unwrap();
    }
}
