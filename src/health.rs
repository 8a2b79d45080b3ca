//! Readiness registry: named checks any component reports into, plus deadline-bound probes.
//!
//! One [`Health`] per process (built in `app::Services::connect`, cloned into the broker,
//! the Redis store and the S3 client, reachable as `broker.health()`, `state.health()`,
//! `storage.health()`). Both `/readyz` endpoints (the API's and `telemetry`'s, for roles
//! without the API) answer 503 while any check is failing, with a JSON body naming each
//! failing check and why:
//!
//! ```json
//! {"ready": false, "checks": {"s3": "list buckets timed out after 2s", "redis": "ok"},
//!  "failing": {"s3": "list buckets timed out after 2s"}}
//! ```
//!
//! API, for a component that wants readiness to follow something it watches:
//!
//! - `health.report("my-check", Some(reason))` marks `my-check` failing with `reason` (what
//!   is wrong and what to look at); `health.report("my-check", None)` clears it. Reports are
//!   level-triggered: report the current state whenever it is known; the latest wins, there
//!   is no expiry. Check names are `&'static str`, one per thing watched (e.g. `"s3"`,
//!   `"redis"`, `"broker"`, `"topology"`, `"consumer.cpu"`).
//! - `health.failing()` lists the failing checks and their reasons.
//! - [`probe`] runs one active check under a deadline (`health.probe_timeout()`, from
//!   `metrics.probe_timeout_ms`) and reports its outcome (a timeout is a failure naming the
//!   deadline). `/readyz` probes `broker` (connection and `topology`), `redis` and `s3` on
//!   each call (`telemetry::probe_dependencies`).
//!
//! Calls to the dependencies report on their own: an S3, Redis or RabbitMQ call that times
//! out or cannot reach its server marks `s3`, `redis` or `broker` failing, and the next call
//! or probe that succeeds clears it; a missing queue or exchange marks `topology` failing
//! until it has been declared again.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The shared readiness registry (cheap to clone; clones share the checks).
#[derive(Clone)]
pub struct Health {
    failing: Arc<Mutex<BTreeMap<&'static str, String>>>,
    probe_timeout: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Self::with_probe_timeout(Duration::from_secs(2))
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.failing()).finish()
    }
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry whose active probes get `deadline` each (`metrics.probe_timeout_ms`).
    pub fn with_probe_timeout(deadline: Duration) -> Self {
        Self {
            failing: Arc::default(),
            probe_timeout: deadline,
        }
    }

    /// The deadline of each active probe.
    pub fn probe_timeout(&self) -> Duration {
        self.probe_timeout
    }

    /// Sets the state of `check`: `Some(reason)` failing, `None` passing. A change is logged
    /// once (warn when it starts failing, info when it recovers), not every report.
    pub fn report(&self, check: &'static str, failing: Option<String>) {
        let mut checks = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match failing {
            Some(reason) => {
                if checks.get(check) != Some(&reason) {
                    tracing::warn!(check, %reason, "readiness check failing");
                }
                checks.insert(check, reason);
            }
            None => {
                if let Some(reason) = checks.remove(check) {
                    tracing::info!(check, was = %reason, "readiness check recovered");
                }
            }
        }
    }

    /// The failing checks, by name, with their reasons; empty when ready.
    pub fn failing(&self) -> BTreeMap<&'static str, String> {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_failing(&self, check: &str) -> bool {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(check)
    }
}

/// Runs `check` under `deadline`, reports its outcome as `name` into `health`, and returns
/// it (`None` when it passed). A check that overruns fails with "timed out after …".
pub async fn probe<F>(
    health: &Health,
    name: &'static str,
    deadline: Duration,
    check: F,
) -> Option<String>
where
    F: Future<Output = Result<(), String>>,
{
    let outcome = match tokio::time::timeout(deadline, check).await {
        Ok(Ok(())) => None,
        Ok(Err(reason)) => Some(reason),
        Err(_) => Some(format!(
            "no answer within {deadline:?} (metrics.probe_timeout_ms); is it up and reachable?"
        )),
    };
    health.report(name, outcome.clone());
    outcome
}

/// The readiness answer: 200 with every check `"ok"`, or 503 listing the failing ones under
/// `failing` (and in `checks` with their reasons). `extra` are checks this endpoint computed
/// itself (e.g. `draining`), merged with the registry's.
pub fn answer(
    health: &Health,
    probed: &[&'static str],
    extra: BTreeMap<&'static str, String>,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    let mut failing = health.failing();
    failing.extend(extra);
    let mut checks = serde_json::Map::new();
    for name in probed {
        checks.insert((*name).to_string(), "ok".into());
    }
    for (name, reason) in &failing {
        checks.insert((*name).to_string(), reason.clone().into());
    }
    let ready = failing.is_empty();
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let failing: serde_json::Map<String, serde_json::Value> = failing
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    (
        status,
        axum::Json(serde_json::json!({"ready": ready, "checks": checks, "failing": failing})),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_and_probes_set_and_clear_checks() {
        let health = Health::new();
        health.report(
            "consumer.cpu",
            Some("no progress for 60s with 3 waiting".into()),
        );
        assert_eq!(
            health.failing().get("consumer.cpu").map(String::as_str),
            Some("no progress for 60s with 3 waiting")
        );
        let slow = probe(&health, "s3", Duration::from_millis(20), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        })
        .await
        .expect("a probe past its deadline fails");
        assert!(slow.contains("20ms"), "{slow}");
        let (status, axum::Json(body)) = answer(&health, &["s3", "redis"], BTreeMap::new());
        assert_eq!(status, 503);
        assert_eq!(body["checks"]["redis"], "ok");
        assert_eq!(body["failing"]["s3"], slow.as_str());
        assert_eq!(body["failing"].as_object().unwrap().len(), 2);

        health.report("consumer.cpu", None);
        assert_eq!(
            probe(&health, "s3", Duration::from_secs(1), async { Ok(()) }).await,
            None
        );
        let (status, axum::Json(body)) = answer(&health, &["s3"], BTreeMap::new());
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["ready"], true);
        assert_eq!(body["checks"]["s3"], "ok");
        let (status, axum::Json(body)) = answer(
            &health,
            &[],
            BTreeMap::from([("draining", "shutting down".to_string())]),
        );
        assert_eq!(status, 503);
        assert_eq!(body["failing"]["draining"], "shutting down");
    }
}
