//! `Settings::validate`: every setting in range, checked once at start with the field named.

use super::{Settings, SettingsError};

impl Settings {
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
        if self.worker.sort_window_rows == 0 {
            return invalid("worker.sort_window_rows", "must be at least 1");
        }
        if self.engine.tokenize_threads == 0 {
            return invalid("engine.tokenize_threads", "must be at least 1");
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
