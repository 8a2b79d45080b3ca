//! Typed settings: built-in defaults → `sluice.toml` → `SLUICE__…` environment → `validate()`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything sluice can be configured with. One value is built at start and passed down.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Namespace for every queue, exchange and Redis key, so several deployments (or tests)
    /// can share one broker and one Redis without seeing each other.
    pub prefix: String,
    pub amqp: AmqpSettings,
    pub redis: RedisSettings,
    pub s3: S3Settings,
    pub api: ApiSettings,
    pub worker: WorkerSettings,
    pub engine: EngineSettings,
    pub planner: PlannerSettings,
    pub ingest: IngestSettings,
    pub training: TrainingSettings,
    pub metrics: MetricsSettings,
}

/// Where roles without the HTTP API (worker, ingest) serve `/metrics`, `/healthz` and
/// `/readyz`; the API serves them on its own port unless `api.serve_metrics` is false.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// `host:port`; empty turns it off. Give each process on one host its own port.
    pub listen: String,
    /// Deadline of each readiness probe (Redis PING, S3, the broker and its topology); keep
    /// it under the orchestrator's probe timeout.
    pub probe_timeout_ms: u64,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            probe_timeout_ms: 2_000,
        }
    }
}

/// How workers run training jobs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSettings {
    /// A training job is owned through a Redis lease of this length, renewed every
    /// `heartbeat_secs`; when its worker dies, another resumes the job once it expires.
    pub lease_ttl_secs: u64,
    pub heartbeat_secs: u64,
    /// S3 folder where encoder features are cached, keyed by the encoder's sha256 and the
    /// data objects' ETags, so later epochs and later jobs on the same data skip the encoder.
    pub feature_cache: String,
}

impl Default for TrainingSettings {
    fn default() -> Self {
        Self {
            lease_ttl_secs: 30,
            heartbeat_secs: 5,
            feature_cache: "s3://sluice-cache/features/".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpSettings {
    pub url: String,
    /// Deliveries a worker holds unacknowledged at once (per consumer).
    pub prefetch: u16,
    /// Back-off of each retry, in milliseconds; its length is the number of retries before a
    /// task is dead-lettered.
    pub retry_delays_ms: Vec<u64>,
    /// A task whose runs vanished (their worker killed, evicted, out of memory or
    /// disconnected before it answered) more than this many times is failed and
    /// dead-lettered at its next start: it may be what kills its workers. Only vanished runs count: failures the task raises
    /// itself are bounded by `retry_delays_ms`, and clean hand-backs on shutdown count
    /// nowhere, so worker churn does not spend a healthy job's retries.
    pub max_deliveries: u64,
    /// A consumer (a worker's tasks, the API's submissions) reports itself not ready when
    /// its queue holds messages, a slot is free and nothing was delivered for this long:
    /// the broker stopped feeding it.
    pub consumer_stall_secs: u64,
    /// PEM file of the CA that signed the broker's certificate, for an `amqps://` URL whose
    /// broker uses a private CA; empty trusts the system's roots.
    pub tls_ca_file: String,
    /// Deadline of each broker operation (connect, declare, publish, publisher confirm); one
    /// that overruns is logged, counted and retried or reported, never waited on forever.
    pub operation_timeout_ms: u64,
    /// Tries of one publish (timeouts, closed channels, nacks), with jittered exponential
    /// back-off from `publish_backoff_ms` between them.
    pub publish_attempts: u32,
    pub publish_backoff_ms: u64,
    /// How often every queue and exchange is checked (passive declares) and re-declared if
    /// missing, e.g. deleted by an operator or lost with a broker node's data.
    pub topology_check_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://` or, for TLS, `rediss://`; credentials may be in the URL
    /// (`rediss://:password@host:6380/`).
    pub url: String,
    /// PEM file of the CA that signed Redis's certificate, for a `rediss://` URL whose server
    /// uses a private CA; empty trusts the system's roots.
    pub tls_ca_file: String,
    /// Deadline of opening (or re-opening) the connection.
    pub connection_timeout_ms: u64,
    /// Deadline of each command's answer; one that overruns is logged, counted and failed.
    pub response_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// Endpoint of an S3-compatible server; empty means AWS itself.
    pub endpoint: String,
    pub region: String,
    /// Static credentials; empty means the standard AWS chain (env, profile, instance role).
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Path-style addressing (`http://host/bucket/key`), which MinIO and moto need.
    pub force_path_style: bool,
    /// Output parts are uploaded in multipart chunks of this size (S3's minimum is 5 MiB).
    pub part_size_bytes: usize,
    /// Deadline of opening a TCP (and TLS) connection.
    pub connect_timeout_ms: u64,
    /// Deadline of the first byte of an answer once a request is sent.
    pub read_timeout_ms: u64,
    /// Deadline of one try of a request (the SDK retries it within `operation_timeout_ms`).
    pub operation_attempt_timeout_ms: u64,
    /// Deadline of a whole request, retries included. Streaming a body afterwards is bounded
    /// by `stall_grace_ms` instead, so large objects are not cut off.
    pub operation_timeout_ms: u64,
    /// A body transfer that moves no bytes for this long fails (stalled-stream protection).
    pub stall_grace_ms: u64,
    /// Tries of one request (1 = no retries); retries wait an exponential back-off with
    /// jitter from `initial_backoff_ms` up to `max_backoff_ms`.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Address the HTTP API listens on (`api` and `serve`).
    pub listen: String,
    /// Base URL the CLI talks to.
    pub url: String,
    /// Largest accepted job spec, in bytes (HTTP body or AMQP message).
    pub max_body_bytes: usize,
    /// Whether the `api` role consumes job submissions from upstream systems over AMQP.
    pub amqp_submissions: bool,
    /// AMQP submissions handled at once (also the consumer's prefetch).
    pub submission_concurrency: usize,
    /// S3 prefixes that jobs submitted over AMQP may read and write (`s3://bucket/` or
    /// `s3://bucket/prefix/`), or `*` for any; a spec naming anything else is kept on the
    /// rejected queue (`forbidden_location`).
    pub amqp_allow: Vec<String>,
    /// Bearer tokens the HTTP API accepts, stored as sha256 (`sluice token new` makes one).
    /// With none here nor in `tokens_file`, the API is open, and says so at start.
    pub tokens: Vec<ApiToken>,
    /// A TOML file of more `[[tokens]]` (a mounted secret), read at start; empty for none.
    pub tokens_file: String,
    /// The token the CLI sends (`SLUICE__API__CLIENT_TOKEN`).
    pub client_token: String,
    /// Serve `/healthz`, `/readyz` and `/metrics` (always without a token) on the API's
    /// port. With `false` they move to `metrics.listen`, e.g. a port only the cluster sees.
    pub serve_metrics: bool,
    /// Queues an AMQP submission's `reply_to` may name, as globs (`*`: any characters),
    /// besides the broker's direct reply-to (`amq.rabbitmq.reply-to…`), which is always
    /// allowed. sluice's own queues (`{prefix}.…`) are refused whatever this says; a
    /// submission naming any other queue is kept on the rejected queue
    /// (`forbidden_reply_to`).
    pub reply_queue_patterns: Vec<String>,
}

/// One API token: who it is, what it may do, and which S3 locations its jobs may touch.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    pub name: String,
    /// Hex sha256 of the token; the token itself is never stored.
    pub sha256: String,
    /// `submit`, `read`, `cancel`, `admin` (all of them).
    pub scopes: Vec<String>,
    /// S3 prefixes its jobs may read and write (`s3://bucket/` or `s3://bucket/prefix/`), or
    /// `*` for any.
    #[serde(default)]
    pub allow: Vec<String>,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("allow", &self.allow)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Which pool's tasks this worker takes.
    pub pool: crate::job::Pool,
    /// Tasks processed at once by one worker process.
    pub concurrency: usize,
    /// Local folder where model packages are cached by sha256.
    pub model_cache_dir: PathBuf,
    /// On SIGTERM, how long in-flight tasks may run before the worker gives them back.
    pub shutdown_grace_secs: u64,
    /// Rows parsed and sent to the engine at once; the engine sorts each chunk by length, so
    /// larger chunks pad less (1024 measured ~7% faster than 256 on MiniLM-L6, 2 cores).
    pub chunk_rows: usize,
    /// How often one worker looks for stalled jobs whose queued work was lost.
    pub sweep_interval_secs: u64,
    /// A job with no sign of life (progress, commit) for this long has its missing work
    /// queued again. Must exceed the time one chunk of rows takes.
    pub stall_after_secs: u64,
    /// A shard task is owned through a Redis lease of this length, renewed every
    /// `shard_heartbeat_secs`, and its delivery is acked as soon as the lease is held, so a
    /// shard may run longer than the broker's `consumer_timeout`. When its worker dies, the
    /// sweeper queues the shard again once the lease has expired.
    pub shard_lease_ttl_secs: u64,
    pub shard_heartbeat_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Path of `libonnxruntime.so.1.31.x`; when unset, `ORT_DYLIB_PATH` is used. For CUDA,
    /// the `onnxruntime-gpu` build's library (with its provider libraries beside it).
    pub ort_dylib_path: String,
    /// `auto` (CUDA when the library has it and it starts, else CPU), `cpu` or `cuda`
    /// (CUDA or refuse to start).
    pub execution_provider: ExecutionProvider,
    /// Which GPU a CUDA worker uses (one worker, one GPU).
    pub gpu_device_id: i32,
    pub intra_op_threads: usize,
    pub inter_op_threads: usize,
    /// Most rows in one inference batch.
    pub max_batch_rows: usize,
    /// Most padded tokens (rows × longest row) in one inference batch.
    pub max_batch_tokens: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PlannerSettings {
    /// Target input bytes per shard; small objects are grouped up to this size.
    pub shard_bytes: u64,
    /// Longest input record in bytes; a longer one is a row error naming its line and size,
    /// and is never held in memory whole.
    pub max_record_bytes: usize,
}

/// The S3 drop folder watched by `sluice ingest`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Folder watched for new files: `<inbox><pipeline>/<file>`.
    pub inbox: String,
    /// Results of a dropped file go to `<outbox><pipeline>/<version>/<file>/`.
    pub outbox: String,
    /// Inputs whose job succeeded move to `<archive><pipeline>/<version>/<file>`.
    pub archive: String,
    /// Inputs that could not be processed move to `<failed><pipeline>/<version>/<file>`,
    /// next to `<file>.error.json` saying why.
    pub failed: String,
    /// How often the inbox is listed.
    pub poll_interval_secs: u64,
    /// Sub-folder of the inbox → job template (a TOML job spec; `input.uri`, `output.uri`
    /// and the input format are filled in per file).
    pub pipelines: std::collections::BTreeMap<String, PathBuf>,
    /// Most new files submitted per scan, so one huge drop cannot starve the rest.
    pub max_new_files_per_scan: usize,
    /// Pipeline → S3 prefixes its jobs may read and write (or `*`), checked for every
    /// dropped file and for the template when `ingest` starts; a pipeline not listed may use
    /// any location.
    pub allow: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            inbox: "s3://sluice-drop/inbox/".into(),
            outbox: "s3://sluice-drop/outbox/".into(),
            archive: "s3://sluice-drop/archive/".into(),
            failed: "s3://sluice-drop/failed/".into(),
            poll_interval_secs: 10,
            pipelines: [(
                "embed".to_string(),
                PathBuf::from("jobs/pipelines/embed.toml"),
            )]
            .into(),
            max_new_files_per_scan: 500,
            allow: Default::default(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            prefix: "sluice".into(),
            amqp: AmqpSettings::default(),
            redis: RedisSettings::default(),
            s3: S3Settings::default(),
            api: ApiSettings::default(),
            worker: WorkerSettings::default(),
            engine: EngineSettings::default(),
            planner: PlannerSettings::default(),
            ingest: IngestSettings::default(),
            training: TrainingSettings::default(),
            metrics: MetricsSettings::default(),
        }
    }
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            prefetch: 2,
            retry_delays_ms: vec![1_000, 5_000, 30_000],
            max_deliveries: 30,
            consumer_stall_secs: 60,
            tls_ca_file: String::new(),
            operation_timeout_ms: 10_000,
            publish_attempts: 3,
            publish_backoff_ms: 200,
            topology_check_secs: 15,
        }
    }
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".into(),
            tls_ca_file: String::new(),
            connection_timeout_ms: 5_000,
            response_timeout_ms: 10_000,
        }
    }
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:9000".into(),
            region: "us-east-1".into(),
            access_key_id: "sluice".into(),
            secret_access_key: "sluice-secret".into(),
            force_path_style: true,
            part_size_bytes: 8 * 1024 * 1024,
            connect_timeout_ms: 5_000,
            read_timeout_ms: 60_000,
            operation_attempt_timeout_ms: 120_000,
            operation_timeout_ms: 300_000,
            stall_grace_ms: 20_000,
            max_attempts: 5,
            initial_backoff_ms: 200,
            max_backoff_ms: 20_000,
        }
    }
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            url: "http://127.0.0.1:8080".into(),
            max_body_bytes: 1024 * 1024,
            amqp_submissions: true,
            submission_concurrency: 8,
            amqp_allow: vec!["*".into()],
            tokens: Vec::new(),
            tokens_file: String::new(),
            client_token: String::new(),
            serve_metrics: true,
            reply_queue_patterns: crate::job::default_reply_queue_patterns(),
        }
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        let cache = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir)
            .join(".cache/sluice/models");
        Self {
            pool: crate::job::Pool::Cpu,
            concurrency: 1,
            model_cache_dir: cache,
            shutdown_grace_secs: 30,
            chunk_rows: 1024,
            sweep_interval_secs: 30,
            stall_after_secs: 300,
            shard_lease_ttl_secs: 30,
            shard_heartbeat_secs: 5,
        }
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            ort_dylib_path: String::new(),
            execution_provider: ExecutionProvider::Auto,
            gpu_device_id: 0,
            intra_op_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            inter_op_threads: 1,
            max_batch_rows: 32,
            max_batch_tokens: 32 * 128,
        }
    }
}

impl Default for PlannerSettings {
    fn default() -> Self {
        Self {
            shard_bytes: 512 * 1024,
            max_record_bytes: crate::storage::records::MAX_RECORD_BYTES,
        }
    }
}

/// A setting that is missing or out of range.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("settings: {0}")]
    Load(#[from] config::ConfigError),
    #[error("setting {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Settings {
    /// Defaults, then `file` (or `./sluice.toml` when it exists), then `SLUICE__SECTION__KEY`
    /// environment variables (e.g. `SLUICE__AMQP__URL`), then validation.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let defaults = config::Config::try_from(&Settings::default())?;
        let mut builder = config::Config::builder().add_source(defaults);
        match file {
            Some(path) => builder = builder.add_source(config::File::from(path).required(true)),
            None => builder = builder.add_source(config::File::with_name("sluice").required(false)),
        }
        let mut settings: Settings = builder
            .add_source(
                config::Environment::with_prefix("SLUICE")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("amqp.retry_delays_ms")
                    .with_list_parse_key("api.amqp_allow")
                    .try_parsing(true),
            )
            .build()?
            .try_deserialize()?;
        // The variable ONNX Runtime's own tools use, honoured when the setting is unset.
        if settings.engine.ort_dylib_path.is_empty()
            && let Ok(path) = std::env::var("ORT_DYLIB_PATH")
        {
            settings.engine.ort_dylib_path = path;
        }
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |field, reason: &str| {
            Err(SettingsError::Invalid {
                field,
                reason: reason.to_string(),
            })
        };
        if self.prefix.is_empty()
            || !self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return invalid("prefix", "must be non-empty, letters, digits, '-' or '_'");
        }
        if self.amqp.prefetch == 0 {
            return invalid("amqp.prefetch", "must be at least 1");
        }
        if self.amqp.consumer_stall_secs == 0 {
            return invalid(
                "amqp.consumer_stall_secs",
                "must be at least 1 (seconds a consumer may receive nothing while work waits)",
            );
        }
        if self.amqp.max_deliveries == 0 {
            return invalid(
                "amqp.max_deliveries",
                "must be at least 1 (runs whose worker vanished before a task is given up)",
            );
        }
        if self.worker.concurrency == 0 {
            return invalid("worker.concurrency", "must be at least 1");
        }
        if self.worker.chunk_rows == 0 {
            return invalid("worker.chunk_rows", "must be at least 1");
        }
        if self.worker.sweep_interval_secs == 0 || self.worker.stall_after_secs == 0 {
            return invalid(
                "worker.sweep_interval_secs",
                "sweep_interval_secs and stall_after_secs must be at least 1",
            );
        }
        if self.worker.shard_heartbeat_secs == 0
            || self.worker.shard_lease_ttl_secs < 2 * self.worker.shard_heartbeat_secs
        {
            return invalid(
                "worker.shard_lease_ttl_secs",
                "shard_heartbeat_secs must be at least 1 and shard_lease_ttl_secs at least twice shard_heartbeat_secs",
            );
        }
        if self.engine.max_batch_rows == 0 {
            return invalid("engine.max_batch_rows", "must be at least 1");
        }
        if self.engine.intra_op_threads == 0 {
            return invalid("engine.intra_op_threads", "must be at least 1");
        }
        if self.planner.shard_bytes < 1024 {
            return invalid("planner.shard_bytes", "must be at least 1024");
        }
        if self.planner.max_record_bytes < 1024 {
            return invalid("planner.max_record_bytes", "must be at least 1024");
        }
        if self.s3.part_size_bytes < 5 * 1024 * 1024 {
            return invalid(
                "s3.part_size_bytes",
                "S3 needs multipart parts of at least 5 MiB",
            );
        }
        if let Err(reason) = crate::job::Allowance::parse("", &self.api.amqp_allow) {
            return Err(SettingsError::Invalid {
                field: "api.amqp_allow",
                reason,
            });
        }
        for (pipeline, allow) in &self.ingest.allow {
            if !self.ingest.pipelines.contains_key(pipeline) {
                return Err(SettingsError::Invalid {
                    field: "ingest.allow",
                    reason: format!(
                        "names pipeline {pipeline:?}, which ingest.pipelines does not have"
                    ),
                });
            }
            if let Err(reason) = crate::job::Allowance::parse("", allow) {
                return Err(SettingsError::Invalid {
                    field: "ingest.allow",
                    reason: format!("pipeline {pipeline:?}: {reason}"),
                });
            }
        }
        for (field, url, scheme, ca_file) in [
            (
                "amqp.tls_ca_file",
                &self.amqp.url,
                "amqps://",
                &self.amqp.tls_ca_file,
            ),
            (
                "redis.tls_ca_file",
                &self.redis.url,
                "rediss://",
                &self.redis.tls_ca_file,
            ),
        ] {
            if let Err(reason) = check_ca_file(url, scheme, ca_file) {
                return Err(SettingsError::Invalid { field, reason });
            }
        }
        if !self.api.serve_metrics && self.metrics.listen.is_empty() {
            return invalid(
                "api.serve_metrics",
                "is false, so health, readiness and metrics need their own port: set metrics.listen",
            );
        }
        if let Err((field, reason)) = self.check_deadlines() {
            return invalid(field, reason);
        }
        if self.api.submission_concurrency == 0 {
            return invalid("api.submission_concurrency", "must be at least 1");
        }
        if self.ingest.poll_interval_secs == 0 || self.ingest.max_new_files_per_scan == 0 {
            return invalid(
                "ingest.poll_interval_secs",
                "poll_interval_secs and max_new_files_per_scan must be at least 1",
            );
        }
        if self.training.heartbeat_secs == 0
            || self.training.lease_ttl_secs < 2 * self.training.heartbeat_secs
        {
            return invalid(
                "training.lease_ttl_secs",
                "heartbeat_secs must be at least 1 and lease_ttl_secs at least twice heartbeat_secs",
            );
        }
        for (field, uri) in [
            ("training.feature_cache", &self.training.feature_cache),
            ("ingest.inbox", &self.ingest.inbox),
            ("ingest.outbox", &self.ingest.outbox),
            ("ingest.archive", &self.ingest.archive),
            ("ingest.failed", &self.ingest.failed),
        ] {
            if !uri.starts_with("s3://") || !uri.ends_with('/') {
                return invalid(field, "must be an S3 folder: s3://bucket/prefix/");
            }
        }
        let inbox = &self.ingest.inbox;
        for (field, uri) in [
            ("ingest.outbox", &self.ingest.outbox),
            ("ingest.archive", &self.ingest.archive),
            ("ingest.failed", &self.ingest.failed),
        ] {
            if uri.starts_with(inbox.as_str()) || inbox.starts_with(uri.as_str()) {
                return invalid(field, "must not overlap ingest.inbox");
            }
        }
        for name in self.ingest.pipelines.keys() {
            if name.is_empty() || name.contains('/') {
                return invalid(
                    "ingest.pipelines",
                    "each pipeline is one inbox sub-folder name, without '/'",
                );
            }
        }
        if self.api.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid("api.listen", "must be HOST:PORT, e.g. 127.0.0.1:8080");
        }
        Ok(())
    }
}

impl Settings {
    /// Every deadline and retry count is positive: a zero would mean "never wait" or
    /// "never try", not "no limit".
    fn check_deadlines(&self) -> Result<(), (&'static str, &'static str)> {
        let (s3, redis, amqp) = (&self.s3, &self.redis, &self.amqp);
        for (field, value) in [
            ("s3.connect_timeout_ms", s3.connect_timeout_ms),
            ("s3.read_timeout_ms", s3.read_timeout_ms),
            (
                "s3.operation_attempt_timeout_ms",
                s3.operation_attempt_timeout_ms,
            ),
            ("s3.operation_timeout_ms", s3.operation_timeout_ms),
            ("s3.stall_grace_ms", s3.stall_grace_ms),
            ("s3.max_attempts", s3.max_attempts.into()),
            ("redis.connection_timeout_ms", redis.connection_timeout_ms),
            ("redis.response_timeout_ms", redis.response_timeout_ms),
            ("amqp.operation_timeout_ms", amqp.operation_timeout_ms),
            ("amqp.publish_attempts", amqp.publish_attempts.into()),
            ("amqp.topology_check_secs", amqp.topology_check_secs),
            ("metrics.probe_timeout_ms", self.metrics.probe_timeout_ms),
        ] {
            if value == 0 {
                return Err((field, "must be at least 1"));
            }
        }
        if s3.max_backoff_ms < s3.initial_backoff_ms {
            return Err((
                "s3.max_backoff_ms",
                "must be at least s3.initial_backoff_ms",
            ));
        }
        Ok(())
    }
}

/// A CA file only makes sense for a TLS URL, and must hold a certificate: caught at start
/// rather than as a connection that keeps failing.
fn check_ca_file(url: &str, scheme: &str, ca_file: &str) -> Result<(), String> {
    if ca_file.is_empty() {
        return Ok(());
    }
    if !url.starts_with(scheme) {
        return Err(format!(
            "is set, but the URL is not {scheme}…: use a {scheme} URL for TLS, or clear the setting"
        ));
    }
    let text =
        std::fs::read_to_string(ca_file).map_err(|e| format!("cannot read {ca_file}: {e}"))?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "{ca_file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_needs_a_tls_url_and_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let mut settings = Settings::default();
        settings.redis.tls_ca_file = pem.display().to_string();
        let err = settings.validate().unwrap_err().to_string();
        assert!(
            err.contains("redis.tls_ca_file") && err.contains("rediss://"),
            "{err}"
        );
        settings.redis.url = "rediss://localhost:6380/".into();
        settings.validate().unwrap();

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        settings.amqp.url = "amqps://u:p@localhost:5671/%2f".into();
        settings.amqp.tls_ca_file = empty.display().to_string();
        let err = settings.validate().unwrap_err().to_string();
        assert!(
            err.contains("amqp.tls_ca_file") && err.contains("no PEM certificate"),
            "{err}"
        );
        settings.amqp.tls_ca_file = "/nonexistent/ca.pem".into();
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains("cannot read /nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn defaults_validate() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn every_dependency_has_a_deadline_by_default_and_zero_is_refused() {
        let s = Settings::default();
        assert_eq!(
            (
                s.s3.connect_timeout_ms,
                s.s3.operation_attempt_timeout_ms,
                s.s3.operation_timeout_ms
            ),
            (5_000, 120_000, 300_000)
        );
        assert_eq!(
            (
                s.s3.max_attempts,
                s.s3.initial_backoff_ms,
                s.s3.max_backoff_ms
            ),
            (5, 200, 20_000)
        );
        assert_eq!(
            (s.redis.connection_timeout_ms, s.redis.response_timeout_ms),
            (5_000, 10_000)
        );
        assert_eq!(
            (s.amqp.operation_timeout_ms, s.amqp.topology_check_secs),
            (10_000, 15)
        );
        assert_eq!(s.metrics.probe_timeout_ms, 2_000);
        // An old config file without the new keys still loads, with these defaults.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "[s3]\nregion = \"eu-west-1\"\n[redis]\nurl = \"redis://r:6379/\"\n",
        )
        .unwrap();
        let loaded = Settings::load(Some(&path)).unwrap();
        assert_eq!(loaded.s3.read_timeout_ms, 60_000);
        assert_eq!(loaded.redis.response_timeout_ms, 10_000);
        let mut bad = Settings::default();
        bad.s3.operation_timeout_ms = 0;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("s3.operation_timeout_ms"), "{err}");
        let mut bad = Settings::default();
        bad.s3.max_backoff_ms = 10;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("s3.max_backoff_ms"), "{err}");
    }

    #[test]
    fn allowances_name_known_pipelines_and_real_prefixes() {
        let mut settings = Settings::default();
        settings
            .ingest
            .allow
            .insert("embed".into(), vec!["s3://drop/".into()]);
        settings.validate().unwrap();
        settings
            .ingest
            .allow
            .insert("embedd".into(), vec!["s3://drop/".into()]);
        let err = settings.validate().unwrap_err().to_string();
        assert!(
            err.contains("ingest.allow") && err.contains("\"embedd\""),
            "{err}"
        );

        let mut settings = Settings::default();
        settings.api.amqp_allow = vec!["drop/".into()];
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains("api.amqp_allow"), "{err}");
    }

    #[test]
    fn file_then_env_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "prefix = \"from-file\"\n[planner]\nshard_bytes = 4096\n",
        )
        .unwrap();
        let settings = Settings::load(Some(&path)).unwrap();
        assert_eq!(settings.prefix, "from-file");
        assert_eq!(settings.planner.shard_bytes, 4096);
        assert_eq!(settings.amqp, AmqpSettings::default());
    }

    #[test]
    fn bad_value_names_the_field() {
        let mut settings = Settings::default();
        settings.planner.shard_bytes = 1;
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains("planner.shard_bytes"), "{err}");
    }

    #[test]
    fn a_shard_lease_outlasts_two_heartbeats() {
        let mut settings = Settings::default();
        settings.worker.shard_lease_ttl_secs = 9;
        settings.worker.shard_heartbeat_secs = 5;
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains("worker.shard_lease_ttl_secs"), "{err}");
        settings.worker.shard_lease_ttl_secs = 10;
        settings.validate().unwrap();
    }
}
