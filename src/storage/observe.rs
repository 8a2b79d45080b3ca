//! Request metrics for every S3 call (latency by operation, failures, bytes moved), taken
//! in one place: an interceptor on the SDK client, so multipart uploads and ranged reads
//! are counted like the rest. It also logs each try that timed out or could not reach S3,
//! and reports S3's state into readiness.

use std::time::Instant;

use aws_sdk_s3::config::interceptors::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextRef,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::{Storable, StoreReplace};

use crate::health::Health;
use crate::metrics;

#[derive(Debug)]
pub struct S3Metrics {
    pub health: Health,
}

/// Why a try failed, when the fault is S3's (or the way to it) rather than an answer such
/// as 404: `Some(timed_out)`.
fn dependency_failure(context: &FinalizerInterceptorContextRef<'_>) -> Option<(bool, String)> {
    let Some(Err(err)) = context.output_or_error() else {
        return None;
    };
    let status = context.response().map(|r| r.status().as_u16());
    let timed_out =
        err.is_timeout_error() || err.as_connector_error().is_some_and(|c| c.is_timeout());
    let unreachable = err.is_connector_error() || err.is_timeout_error() || status.is_none();
    let server = matches!(status, Some(408 | 429 | 500..=599));
    if !(timed_out || unreachable || server) {
        return None;
    }
    let reason = match status {
        Some(code) if !timed_out => format!("HTTP {code}"),
        _ => aws_sdk_s3::error::DisplayErrorContext(err).to_string(),
    };
    Some((timed_out, reason))
}

/// The request's URL (bucket and key with path-style addressing), kept before it is sent:
/// once a try fails the request is gone from the context.
#[derive(Debug, Clone)]
struct Target(String);

impl Storable for Target {
    type Storer = StoreReplace<Self>;
}

fn target(cfg: &ConfigBag) -> String {
    cfg.load::<Target>()
        .map(|t| t.0.clone())
        .unwrap_or_default()
}

#[derive(Debug, Clone)]
struct Started(Instant);

impl Storable for Started {
    type Storer = StoreReplace<Self>;
}

impl Intercept for S3Metrics {
    fn name(&self) -> &'static str {
        "sluice-s3-metrics"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state().store_put(Started(Instant::now()));
        Ok(())
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let uri = context.request().uri();
        let mut target: String = uri.chars().take(200).collect();
        if uri.len() > target.len() {
            target.push('…');
        }
        cfg.interceptor_state().store_put(Target(target));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some((timed_out, reason)) = dependency_failure(context) {
            let op = cfg.load::<Metadata>().map_or("unknown", |m| m.name());
            metrics::dependency_error(metrics::Dependency::S3, timed_out);
            tracing::warn!(
                dependency = "s3",
                op,
                target = %target(cfg),
                timed_out,
                error = %reason,
                "S3 try failed; the SDK retries it while s3.max_attempts and s3.operation_timeout_ms allow"
            );
        }
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = cfg.load::<Metadata>().map_or("unknown", |m| m.name());
        match dependency_failure(context) {
            Some((_, reason)) => self
                .health
                .report("s3", Some(format!("{op} {}: {reason}", target(cfg)))),
            None => self.health.report("s3", None),
        }
        if let Some(Started(started)) = cfg.load::<Started>() {
            metrics::S3_REQUEST_SECONDS
                .with(s3_op(op))
                .observe(started.elapsed().as_secs_f64());
        }
        let status = context.response().map(|r| r.status().as_u16());
        let failed = matches!(context.output_or_error(), Some(Err(_)) | None);
        // A missing object or a changed version is an answer, not a failure of S3.
        if failed && !matches!(status, Some(404 | 412)) {
            metrics::S3_ERRORS.with(s3_op(op)).inc();
        }
        // The body is gone by now; its length is in the request's header.
        if let Some(sent) = context
            .request()
            .and_then(|r| r.headers().get("content-length"))
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&n| n > 0)
        {
            metrics::S3_BYTES
                .with(metrics::Direction::Sent)
                .inc_by(sent);
        }
        if let Some(received) = context
            .response()
            .filter(|_| !failed)
            .and_then(|r| r.headers().get("content-length"))
            .and_then(|v| v.parse::<u64>().ok())
        {
            metrics::S3_BYTES
                .with(metrics::Direction::Received)
                .inc_by(received);
        }
        Ok(())
    }
}

/// The label of an SDK operation name; one sluice does not expect is `other`.
fn s3_op(name: &str) -> metrics::S3Op {
    metrics::S3Op::named(name).unwrap_or(metrics::S3Op::Other)
}
