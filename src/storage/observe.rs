//! Request metrics for every S3 call (latency by operation, failures, bytes moved), taken
//! in one place: an interceptor on the SDK client, so multipart uploads and ranged reads
//! are counted like the rest.

use std::time::Instant;

use aws_sdk_s3::config::interceptors::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::{Storable, StoreReplace};

use crate::metrics;

#[derive(Debug)]
pub struct S3Metrics;

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

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = cfg.load::<Metadata>().map_or("unknown", |m| m.name());
        if let Some(Started(started)) = cfg.load::<Started>() {
            metrics::S3_REQUEST_SECONDS
                .with_label_values(&[op])
                .observe(started.elapsed().as_secs_f64());
        }
        let status = context.response().map(|r| r.status().as_u16());
        let failed = matches!(context.output_or_error(), Some(Err(_)) | None);
        // A missing object or a changed version is an answer, not a failure of S3.
        if failed && !matches!(status, Some(404 | 412)) {
            metrics::S3_ERRORS.with_label_values(&[op]).inc();
        }
        // The body is gone by now; its length is in the request's header.
        if let Some(sent) = context
            .request()
            .and_then(|r| r.headers().get("content-length"))
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&n| n > 0)
        {
            metrics::S3_BYTES.with_label_values(&["sent"]).inc_by(sent);
        }
        if let Some(received) = context
            .response()
            .filter(|_| !failed)
            .and_then(|r| r.headers().get("content-length"))
            .and_then(|v| v.parse::<u64>().ok())
        {
            metrics::S3_BYTES
                .with_label_values(&["received"])
                .inc_by(received);
        }
        Ok(())
    }
}
