//! What an upstream system does over HTTP, and how a test watches: job specs, submitting,
//! polling jobs until they end, the broker's queues.

use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::api::JobView;
use sluice::job::JobStatus;

use super::Cluster;

impl Cluster {
    /// A job spec as JSON, for the test's bucket and model.
    pub fn spec(&self, name: &str, input_key: &str, format: &str, output_key: &str) -> Value {
        serde_json::json!({
            "api_version": "sluice/v1",
            "kind": "inference",
            "name": name,
            "model": self.model_uri,
            "task": "embed",
            "input": {"uri": self.uri(input_key), "format": format, "text_field": "text", "id_field": "id"},
            "output": {"uri": self.uri(output_key)},
            "max_error_rate": 0.0
        })
    }

    /// POSTs a spec; returns status and body.
    pub async fn post_spec(&self, spec: &Value, idempotency_key: Option<&str>) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}/v1/jobs", self.base_url()))
            .header("content-type", "application/json")
            .body(spec.to_string());
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.expect("POST /v1/jobs");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON answer"))
    }

    pub async fn submit(&self, spec: &Value) -> String {
        let (status, body) = self.post_spec(spec, None).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// Polls until the job reaches a terminal status.
    pub async fn wait(&self, id: &str, limit: Duration) -> JobView {
        let started = Instant::now();
        loop {
            let job = self.client().job(id).await.expect("GET job");
            if job.status.is_terminal() {
                return job;
            }
            assert!(
                started.elapsed() < limit,
                "job {id} still {} after {limit:?}: {job:?}",
                job.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls until `check` holds for the job.
    pub async fn wait_until(
        &self,
        id: &str,
        limit: Duration,
        check: impl Fn(&JobView) -> bool,
    ) -> JobView {
        let started = Instant::now();
        loop {
            let job = self.client().job(id).await.expect("GET job");
            if check(&job) {
                return job;
            }
            assert!(
                started.elapsed() < limit,
                "job {id} never reached the condition: {job:?}"
            );
            assert!(
                !job.status.is_terminal() || job.status == JobStatus::Succeeded,
                "job ended: {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn broker(&self) -> sluice::broker::Broker {
        let topology = sluice::broker::Topology::new(
            &self.settings.prefix,
            &self.settings.amqp.retry_delays_ms,
        );
        sluice::broker::Broker::connect(&self.settings.amqp, topology)
            .await
            .expect("connect to RabbitMQ")
    }

    /// Waits until the dead-letter queue holds `count` tasks.
    pub async fn wait_dead_letters(&self, count: u32) {
        let topology = sluice::broker::Topology::new(&self.settings.prefix, &[]);
        let broker = sluice::broker::Broker::connect(&self.settings.amqp, topology.clone())
            .await
            .expect("connect to RabbitMQ");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let depth = broker
                .queue_depth(&topology.dead_queue())
                .await
                .expect("queue depth");
            if depth >= count {
                assert_eq!(depth, count, "more dead letters than expected");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "dead-letter queue holds {depth}, expected {count}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Polls `check` until it holds, failing the test after `limit` with `what`.
pub async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
