//! Where the services are and how long to wait for them: RabbitMQ, Redis and S3.

use serde::{Deserialize, Serialize};

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
