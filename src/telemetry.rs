//! What every role exposes about itself: `/metrics`, `/healthz` and `/readyz` on
//! `metrics.listen` for roles without the HTTP API, the readiness probes of the
//! dependencies, and a Redis round-trip probe.

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::health::{self, Health};
use crate::metrics;
use crate::state::StateStore;
use crate::storage::Storage;

/// The checks `/readyz` always lists (`"ok"` or why not), besides any reported ones.
pub const PROBED: &[&str] = &["broker", "topology", "redis", "s3"];

/// The clients a role's readiness probes.
#[derive(Clone)]
pub struct Dependencies {
    pub broker: Broker,
    pub state: StateStore,
    pub storage: Storage,
}

/// Probes the broker (connection and topology), Redis (PING) and S3 (a bucket listing) at
/// once, each within `health.probe_timeout()`, reporting each outcome into `health`.
pub async fn probe_dependencies(
    health: &Health,
    broker: &Broker,
    state: &StateStore,
    storage: &Storage,
) {
    let deadline = health.probe_timeout();
    tokio::join!(
        health::probe(health, "broker", deadline, broker.probe()),
        health::probe(health, "redis", deadline, async {
            state.ping().await.map_err(|e| e.to_string())
        }),
        health::probe(health, "s3", deadline, async {
            storage.ping().await.map_err(|e| e.to_string())
        }),
    );
}

/// Serves `/metrics`, `/healthz` (the process is alive) and `/readyz` until `stop`; or,
/// given the API's own routes for them (`api.serve_metrics = false`), those. `/readyz`
/// answers 503 once `draining` (a shutting-down worker takes no new work, so nothing should
/// be routed to it), and, with `dependencies`, while one of them fails its probe or a
/// check reported into their registry fails (see `crate::health`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    api_routes: Option<Router>,
    dependencies: Option<Dependencies>,
    draining: CancellationToken,
    stop: CancellationToken,
) {
    let app = api_routes.unwrap_or_else(|| own_routes(draining, dependencies));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "metrics server failed");
    }
}

fn own_routes(draining: CancellationToken, dependencies: Option<Dependencies>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let (draining, dependencies) = (draining.clone(), dependencies.clone());
                async move { readiness(&draining, dependencies.as_ref()).await }
            }),
        )
}

async fn readiness(
    draining: &CancellationToken,
    dependencies: Option<&Dependencies>,
) -> (StatusCode, axum::Json<serde_json::Value>) {
    let (health, probed) = match dependencies {
        Some(d) => {
            let health = d.broker.health().clone();
            probe_dependencies(&health, &d.broker, &d.state, &d.storage).await;
            (health, PROBED)
        }
        None => (Health::new(), &[][..]),
    };
    let mut extra = std::collections::BTreeMap::new();
    if draining.is_cancelled() {
        extra.insert("draining", "shutting down: takes no new work".to_string());
    }
    health::answer(&health, probed, extra)
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
        let health = state.health().clone();
        let failed = health::probe(&health, "redis", health.probe_timeout(), async {
            state.ping().await.map_err(|e| e.to_string())
        })
        .await;
        if failed.is_none() {
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
        let server = tokio::spawn(serve(listener, None, None, draining.clone(), stop.clone()));
        let get = |path: &'static str| {
            let url = format!("{base}{path}");
            async move { reqwest::get(url).await.unwrap() }
        };
        assert_eq!(get("/readyz").await.status(), 200);
        draining.cancel();
        let answer = get("/readyz").await;
        assert_eq!(answer.status(), 503);
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(
            body["failing"]["draining"],
            "shutting down: takes no new work"
        );
        assert_eq!(get("/healthz").await.status(), 200);
        let metrics = get("/metrics").await.text().await.unwrap();
        assert!(metrics.contains("sluice_tasks_in_flight"), "{metrics}");
        stop.cancel();
        server.await.unwrap();
    }
}
