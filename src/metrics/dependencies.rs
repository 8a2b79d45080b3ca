//! The services sluice depends on: S3 requests, Redis round trips, failed calls and
//! broker topology declared again.

use prometheus::{Histogram, HistogramOpts, HistogramVec};

use super::family::{Counters, Family, Histograms};
use super::labels::*;
use super::{counter_vec, histogram, register};

declare! {
    /// S3 request latency by operation (`GetObject`, `PutObject`, `UploadPart`, …).
    pub static S3_REQUEST_SECONDS: Histograms<S3Op> =
        Family::new(
            register(
                HistogramVec::new(
                    HistogramOpts::new(
                        "sluice_s3_request_seconds",
                        "S3 request latency by operation.",
                    )
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    ]),
                    &["op"],
                )
                .expect("valid metric"),
            )
        );

    /// S3 requests that failed (not counting "not found" and "changed" answers).
    pub static S3_ERRORS: Counters<S3Op> =
        Family::new(
            counter_vec(
                "sluice_s3_errors_total",
                "S3 requests that failed, by operation (404 and 412 answers excluded).",
                &["op"],
            )
        );

    /// Bytes moved to and from S3: direction `sent|received`.
    pub static S3_BYTES: Counters<Direction> =
        Family::new(
            counter_vec(
                "sluice_s3_bytes_total",
                "Bytes sent to and received from S3 (bodies).",
                &["direction"],
            )
        );

    /// Round trip of a Redis PING, every few seconds, from every role.
    pub static REDIS_PING_SECONDS: Histogram =
        histogram(
            "sluice_redis_ping_seconds",
            "Round trip of a Redis PING, measured every 5 s by every role.",
            vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ],
        );

    /// Calls to a dependency that failed: `dependency` `s3|redis|amqp`, `kind` `timeout` (no
    /// answer within its deadline) or `error` (refused, reset, 5xx). Counted per try, so the
    /// SDK's own S3 retries show too.
    pub static DEPENDENCY_ERRORS: Counters<(Dependency, FailureKind)> =
        Family::new(
            counter_vec(
                "sluice_dependency_errors_total",
                "Failed calls to a dependency (per try), by dependency (s3|redis|amqp) and kind (timeout|error).",
                &["dependency", "kind"],
            )
        );

    /// Times sluice found part of its broker topology missing and declared it again: `trigger`
    /// `publish` (a publish found it gone), `consume` (a consumer found its queue gone) or
    /// `check` (the periodic check, or `Broker::ensure_topology`).
    pub static TOPOLOGY_REDECLARED: Counters<Trigger> =
        Family::new(
            counter_vec(
                "sluice_topology_redeclared_total",
                "Times missing queues or exchanges were declared again, by trigger (publish|consume|check).",
                &["trigger"],
            )
        );
}

/// Counts one failed call to `dependency`; `timeout` says whether it ran past its deadline.
pub fn dependency_error(dependency: Dependency, timeout: bool) {
    let kind = if timeout {
        FailureKind::Timeout
    } else {
        FailureKind::Error
    };
    DEPENDENCY_ERRORS.with((dependency, kind)).inc();
}
