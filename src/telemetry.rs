//! What every role exposes about itself: `/metrics` and `/healthz` on `metrics.listen` for
//! roles without the HTTP API, and a Redis round-trip probe.

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::state::StateStore;

/// Serves `/metrics` and `/healthz` until `stop`.
pub async fn serve(listener: tokio::net::TcpListener, stop: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok" }));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "metrics server failed");
    }
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
