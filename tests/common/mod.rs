//! Shared harness for the integration tests: each test gets its own queue/key prefix and its
//! own bucket on the real services that `scripts/test.sh` starts, an in-process API, and
//! worker processes of the real binary when it needs them.
#![allow(dead_code)]

pub mod amqp;

pub mod broker_node;
pub mod prometheus_node;
pub mod redis_node;
pub mod state;
pub mod tls;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::api::JobView;
use sluice::app::{self, Roles};
use sluice::cli::{Client, PushOptions};
use sluice::job::JobStatus;
use sluice::settings::Settings;
use sluice::storage::Storage;
use sluice::uri::S3Uri;
use tokio_util::sync::CancellationToken;

/// Paths of the registry-package assets (`scripts/assets.sh` prints them; `scripts/test.sh`
/// exports them).
pub struct Assets {
    pub ort_dylib: String,
    pub model_dir: PathBuf,
    /// paraphrase-MiniLM-L3-v2, fp32.
    pub l3_dir: PathBuf,
    pub rotten_tomatoes_csv: PathBuf,
    pub news_csv: PathBuf,
    pub reference_python: String,
}

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suite with scripts/test.sh, which fetches the model, data and runtime and exports it")
    })
}

pub fn assets() -> Assets {
    Assets {
        ort_dylib: required("SLUICE_TEST_ORT_DYLIB"),
        model_dir: required("SLUICE_TEST_MODEL_DIR").into(),
        l3_dir: required("SLUICE_TEST_L3_DIR").into(),
        rotten_tomatoes_csv: required("SLUICE_TEST_RT_CSV").into(),
        news_csv: required("SLUICE_TEST_NEWS_CSV").into(),
        reference_python: required("SLUICE_TEST_REF_PYTHON"),
    }
}

/// One test's world: random prefix and bucket, the model pushed into it.
pub struct Cluster {
    pub settings: Settings,
    pub bucket: String,
    pub storage: Storage,
    pub model_uri: String,
    shutdown: CancellationToken,
    running: Option<app::Running>,
    pub client: Option<Client>,
    workers: Vec<tokio::process::Child>,
}

impl Cluster {
    /// Settings for a fresh namespace; `shard_bytes` sets how finely inputs are cut.
    pub async fn new(shard_bytes: u64) -> Self {
        let assets = assets();
        let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let mut settings = Settings {
            prefix: format!("test-{tag}"),
            ..Default::default()
        };
        settings.api.listen = "127.0.0.1:0".into();
        settings.engine.ort_dylib_path = assets.ort_dylib.clone();
        settings.planner.shard_bytes = shard_bytes;
        settings.amqp.retry_delays_ms = vec![200, 500, 1000];
        settings.worker.shutdown_grace_secs = 10;
        settings.worker.model_cache_dir = std::env::temp_dir().join("sluice-test-models");
        let bucket = format!("sluice-test-{tag}");
        settings.training.feature_cache = format!("s3://{bucket}/features/");
        // Short leases, so a dead trainer's job moves on within seconds.
        settings.training.lease_ttl_secs = 4;
        settings.training.heartbeat_secs = 1;
        let storage = Storage::connect(&settings.s3).await;
        storage
            .create_bucket(&bucket)
            .await
            .expect("create test bucket (is the S3 server up?)");
        let model_uri = format!("s3://{bucket}/models/minilm/");
        let options = PushOptions {
            name: Some("all-MiniLM-L6-v2".into()),
            max_length: 256,
            dimension: 384,
            precision: "int8".into(),
        };
        sluice::cli::push(
            &storage,
            &assets.model_dir,
            &S3Uri::parse(&model_uri).unwrap(),
            &options,
        )
        .await
        .expect("push the model package");
        Self {
            settings,
            bucket,
            storage,
            model_uri,
            shutdown: CancellationToken::new(),
            running: None,
            client: None,
            workers: Vec::new(),
        }
    }

    /// Starts the API (and, with `worker`, an in-process worker) in this process.
    pub async fn start(&mut self, worker: bool) -> &Client {
        let roles = Roles {
            api: true,
            worker,
            ingest: false,
        };
        let running = app::start(self.settings.clone(), roles, self.shutdown.clone())
            .await
            .expect("start sluice");
        let addr = running.api_addr.expect("api started");
        self.client = Some(Client::new(&format!("http://{addr}")));
        self.running = Some(running);
        self.client.as_ref().unwrap()
    }

    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("call start() first")
    }

    pub fn base_url(&self) -> String {
        // The client hides its base; rebuild it from the running API.
        format!(
            "http://{}",
            self.running.as_ref().unwrap().api_addr.unwrap()
        )
    }

    /// Environment that makes a `sluice` process use this cluster's settings.
    pub fn env(&self) -> HashMap<String, String> {
        let s = &self.settings;
        let mut env = HashMap::from([
            ("SLUICE__PREFIX".into(), s.prefix.clone()),
            ("SLUICE__AMQP__URL".into(), s.amqp.url.clone()),
            ("SLUICE__REDIS__URL".into(), s.redis.url.clone()),
            // Several processes per host: each takes a free port for its metrics.
            ("SLUICE__METRICS__LISTEN".into(), "127.0.0.1:0".into()),
            (
                "SLUICE__ENGINE__ORT_DYLIB_PATH".into(),
                s.engine.ort_dylib_path.clone(),
            ),
            ("SLUICE__ENGINE__INTRA_OP_THREADS".into(), "1".into()),
            (
                "SLUICE__PLANNER__SHARD_BYTES".into(),
                s.planner.shard_bytes.to_string(),
            ),
            (
                "SLUICE__AMQP__RETRY_DELAYS_MS".into(),
                "200,500,1000".into(),
            ),
            (
                "SLUICE__WORKER__MODEL_CACHE_DIR".into(),
                s.worker.model_cache_dir.display().to_string(),
            ),
            ("SLUICE__WORKER__SHUTDOWN_GRACE_SECS".into(), "10".into()),
            (
                "SLUICE__TRAINING__FEATURE_CACHE".into(),
                s.training.feature_cache.clone(),
            ),
            (
                "SLUICE__TRAINING__LEASE_TTL_SECS".into(),
                s.training.lease_ttl_secs.to_string(),
            ),
            (
                "SLUICE__TRAINING__HEARTBEAT_SECS".into(),
                s.training.heartbeat_secs.to_string(),
            ),
            (
                "SLUICE__WORKER__CHUNK_ROWS".into(),
                s.worker.chunk_rows.to_string(),
            ),
        ]);
        for (name, value) in [
            ("SLUICE__AMQP__TLS_CA_FILE", &s.amqp.tls_ca_file),
            ("SLUICE__REDIS__TLS_CA_FILE", &s.redis.tls_ca_file),
        ] {
            if !value.is_empty() {
                env.insert(name.into(), value.clone());
            }
        }
        env
    }

    /// Starts a `sluice worker` process; returns its index for `kill_worker`.
    pub fn spawn_worker(&mut self) -> usize {
        self.spawn_worker_with(&[])
    }

    /// Starts a `sluice worker` process with extra `SLUICE__…` settings.
    pub fn spawn_worker_with(&mut self, extra: &[(&str, &str)]) -> usize {
        self.spawn_role("worker", extra)
    }

    /// Where the `index`-th process `spawn_role` started (as `role`) writes its log.
    pub fn role_log(&self, role: &str, index: usize) -> PathBuf {
        std::env::temp_dir().join(format!("{}-{role}-{index}.log", self.settings.prefix))
    }

    /// Starts a `sluice <role>` process (`worker`, `api`, `ingest`) with extra settings;
    /// returns its index for `kill_worker`/`terminate_worker`.
    pub fn spawn_role(&mut self, role: &str, extra: &[(&str, &str)]) -> usize {
        let log = self.role_log(role, self.workers.len());
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg(role)
            .envs(self.env())
            .env("SLUICE_LOG", "info")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("worker log file"))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn sluice {role}: {e}"));
        self.workers.push(child);
        self.workers.len() - 1
    }

    /// SIGTERM, then waits for the worker to exit by itself; returns its exit status and how
    /// long it took.
    pub async fn terminate_worker(&mut self, index: usize) -> (std::process::ExitStatus, Duration) {
        let child = &mut self.workers[index];
        let pid = child.id().expect("worker still running");
        let sent = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .expect("worker exits after SIGTERM")
            .expect("reap worker");
        (exit, sent.elapsed())
    }

    /// Sends `signal` (`TERM`, `INT`, …) to a worker without waiting for it.
    pub fn signal_worker(&self, index: usize, signal: &str) {
        let pid = self.workers[index].id().expect("worker still running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for a worker to exit (at most a minute); its exit status.
    pub async fn wait_worker(&mut self, index: usize) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(60), self.workers[index].wait())
            .await
            .expect("worker exits")
            .expect("reap worker")
    }

    /// SIGKILL: the worker gets no chance to clean up.
    pub async fn kill_worker(&mut self, index: usize) {
        let child = &mut self.workers[index];
        child.start_kill().expect("kill worker");
        child.wait().await.expect("reap worker");
    }

    pub fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    pub async fn put(&self, key: &str, body: impl Into<Vec<u8>>) {
        self.storage
            .put(
                &S3Uri::parse(&self.uri(key)).unwrap(),
                body.into(),
                "application/octet-stream",
            )
            .await
            .expect("upload test input");
    }

    pub async fn get_text(&self, key: &str) -> Option<String> {
        self.storage
            .get_bytes(&S3Uri::parse(&self.uri(key)).unwrap())
            .await
            .ok()
            .map(|b| String::from_utf8(b).expect("utf-8 output"))
    }

    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        self.storage
            .list(&S3Uri::parse(&self.uri(prefix)).unwrap())
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.uri.key)
            .collect()
    }

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

    /// Every output row of a finished job, from the parts its manifest lists.
    pub async fn output_rows(&self, output_key: &str) -> Vec<Value> {
        let manifest: Value = serde_json::from_str(
            &self
                .get_text(&format!("{output_key}_manifest.json"))
                .await
                .expect("manifest"),
        )
        .unwrap();
        let mut rows = Vec::new();
        for part in manifest["parts"].as_array().unwrap() {
            let key = S3Uri::parse(part["uri"].as_str().unwrap()).unwrap().key;
            let text = self
                .get_text(&key)
                .await
                .expect("part listed in manifest exists");
            rows.extend(
                text.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()),
            );
        }
        rows
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), running.wait()).await;
        }
        for child in &mut self.workers {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        // Leave nothing behind on the shared services.
        let topology = sluice::broker::Topology::new(
            &self.settings.prefix,
            &self.settings.amqp.retry_delays_ms,
        );
        if let Ok(broker) = sluice::broker::Broker::connect(&self.settings.amqp, topology).await {
            let _ = broker.delete_topology().await;
        }
        let _ = state::wipe_prefix(&self.settings.redis, &self.settings.prefix).await;
    }
}

/// The Rotten Tomatoes review snippets (plots dropped) as JSONL lines with ids `rt-00000`….
pub fn rotten_tomatoes_jsonl(limit: Option<usize>) -> (String, Vec<(String, String)>) {
    let mut reader =
        csv::Reader::from_path(assets().rotten_tomatoes_csv).expect("rotten tomatoes csv");
    let mut out = String::new();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.expect("csv record");
        if &record[0] == "plot" {
            continue;
        }
        let id = format!("rt-{:05}", rows.len());
        out.push_str(
            &serde_json::json!({"id": id, "text": &record[1], "label": &record[0]}).to_string(),
        );
        out.push('\n');
        rows.push((id, record[1].to_string()));
        if limit.is_some_and(|l| rows.len() >= l) {
            break;
        }
    }
    (out, rows)
}

/// Asserts every expected id appears exactly once and every embedding is a unit vector of
/// 384 numbers.
pub fn assert_exactly_once(rows: &[Value], expected_ids: &[String]) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for row in rows {
        *seen
            .entry(row["id"].as_str().expect("string id"))
            .or_default() += 1;
        let embedding = row["embedding"].as_array().expect("embedding array");
        assert_eq!(embedding.len(), 384);
        let norm: f64 = embedding
            .iter()
            .map(|v| v.as_f64().unwrap().powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "norm {norm} for {}", row["id"]);
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "duplicated ids: {duplicates:?}");
    let missing: Vec<_> = expected_ids
        .iter()
        .filter(|id| !seen.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} ids missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(rows.len(), expected_ids.len());
}

/// Rotten Tomatoes review snippets (plots dropped) as (text, label), in file order.
pub fn rotten_tomatoes_reviews(limit: Option<usize>) -> Vec<(String, String)> {
    let mut reader =
        csv::Reader::from_path(assets().rotten_tomatoes_csv).expect("rotten tomatoes csv");
    let mut reviews = Vec::new();
    for record in reader.records() {
        let record = record.expect("csv record");
        if &record[0] == "plot" {
            continue;
        }
        reviews.push((record[1].to_string(), record[0].to_string()));
        if limit.is_some_and(|l| reviews.len() >= l) {
            break;
        }
    }
    reviews
}

/// Reviews as CSV with columns `text,label`.
pub fn reviews_csv(reviews: &[(String, String)]) -> String {
    let mut body = "text,label\n".to_string();
    for (text, label) in reviews {
        body.push_str(&format!("\"{}\",{label}\n", text.replace('"', "\"\"")));
    }
    body
}

/// ONNX Runtime on the CPU with one thread: for step graphs and heads in tests.
pub fn cpu_engine() -> sluice::settings::EngineSettings {
    sluice::settings::EngineSettings {
        ort_dylib_path: assets().ort_dylib,
        execution_provider: sluice::settings::ExecutionProvider::Cpu,
        intra_op_threads: 1,
        ..Default::default()
    }
}

impl Cluster {
    /// A model cache on this cluster's storage, and the pushed encoder loaded from it.
    pub async fn encoder(&self) -> (sluice::worker::ModelCache, sluice::engine::Embedder) {
        let models = sluice::worker::ModelCache::new(
            self.storage.clone(),
            self.settings.worker.model_cache_dir.clone(),
            self.settings.engine.clone(),
        );
        let embedder = models
            .get(&S3Uri::parse(&self.model_uri).unwrap())
            .await
            .expect("load the encoder");
        (models, embedder)
    }

    /// Features of the `text,label` CSV objects under `folder`, through the cache under
    /// `cache`.
    pub async fn labelled_features(
        &self,
        embedder: &sluice::engine::Embedder,
        folder: &str,
        cache: &str,
    ) -> (
        sluice::train::features::FeatureSet,
        sluice::train::features::CacheOutcome,
    ) {
        let objects = self
            .storage
            .list(&S3Uri::parse(&self.uri(folder)).unwrap())
            .await
            .expect("list training data");
        sluice::train::features::load_or_embed(
            &self.storage,
            &S3Uri::parse(&self.uri(cache)).unwrap(),
            embedder,
            &objects,
            sluice::job::InputFormat::Csv,
            "text",
            "label",
        )
        .await
        .expect("features")
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

/// Writes `docs/examples/custom_step_graph.py`'s graph (softmax regression, SGD with
/// momentum, built with the `onnx` package, not by sluice) to `path`.
pub fn custom_step_graph(path: &std::path::Path, features: usize, classes: usize, extra: &[&str]) {
    let built = std::process::Command::new(assets().reference_python)
        .arg("docs/examples/custom_step_graph.py")
        .arg(path)
        .args([
            "--features",
            &features.to_string(),
            "--classes",
            &classes.to_string(),
        ])
        .args(extra)
        .output()
        .expect("run docs/examples/custom_step_graph.py");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
