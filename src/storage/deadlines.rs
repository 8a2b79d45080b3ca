//! The S3 client's deadlines and retry policy, from `s3.*` settings.

use std::time::Duration;

use aws_sdk_s3::config::StalledStreamProtectionConfig;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;

use crate::settings::S3Settings;

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

/// Connect, first-byte, per-try and whole-request deadlines.
pub fn timeouts(s: &S3Settings) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(ms(s.connect_timeout_ms))
        .read_timeout(ms(s.read_timeout_ms))
        .operation_attempt_timeout(ms(s.operation_attempt_timeout_ms))
        .operation_timeout(ms(s.operation_timeout_ms))
        .build()
}

/// The SDK's standard retries (timeouts, connection errors, 5xx, throttling), with
/// exponential back-off and full jitter between `initial_backoff_ms` and `max_backoff_ms`.
pub fn retries(s: &S3Settings) -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(s.max_attempts)
        .with_initial_backoff(ms(s.initial_backoff_ms))
        .with_max_backoff(ms(s.max_backoff_ms))
}

/// A body (upload or download) that stops moving fails after `stall_grace_ms`, instead of
/// holding its task forever once the request itself has been answered.
pub fn stall_protection(s: &S3Settings) -> StalledStreamProtectionConfig {
    StalledStreamProtectionConfig::enabled()
        .grace_period(ms(s.stall_grace_ms))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_become_the_sdk_policy() {
        let mut s = S3Settings {
            connect_timeout_ms: 1_500,
            operation_attempt_timeout_ms: 700,
            ..Default::default()
        };
        s.max_attempts = 4;
        let t = timeouts(&s);
        assert_eq!(t.connect_timeout(), Some(ms(1_500)));
        assert_eq!(t.operation_attempt_timeout(), Some(ms(700)));
        assert_eq!(t.operation_timeout(), Some(ms(300_000)));
        assert_eq!(t.read_timeout(), Some(ms(60_000)));
        let r = retries(&s);
        assert_eq!(r.max_attempts(), 4);
        assert_eq!(r.initial_backoff(), ms(200));
        assert_eq!(r.max_backoff(), ms(20_000));
        assert_eq!(stall_protection(&s).grace_period(), ms(20_000));
    }
}
