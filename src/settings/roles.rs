//! Settings of each role: the HTTP API, workers, the planner, the drop-folder ingest,
//! training and the metrics listener.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// PEM file of CA certificates the CLI trusts besides the system's, for an `https://`
    /// api.url signed by a private CA (`SLUICE__API__CA_CERT`); empty for none.
    pub ca_cert: String,
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
    /// Chunks buffered between a shard's stages (read → engine → write), so S3 reads and
    /// part writes overlap the engine's work. 0 runs the stages one after another (the
    /// serial pipeline, same output bytes, for comparison and debugging).
    pub pipeline_depth: usize,
    /// Rows the engine orders by token length at once: whole chunks, gathered until this
    /// many rows (at least one chunk), so batches pad less than one chunk alone would.
    pub sort_window_rows: usize,
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
            ca_cert: String::new(),
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
            pipeline_depth: 2,
            sort_window_rows: 4096,
            sweep_interval_secs: 30,
            stall_after_secs: 300,
            shard_lease_ttl_secs: 30,
            shard_heartbeat_secs: 5,
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
