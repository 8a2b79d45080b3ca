//! Exponential back-off with full jitter, for the retries sluice makes itself (AMQP
//! publishes); S3 retries use the SDK's own (same shape, configured from `s3.*`).

use std::time::Duration;

/// The wait before retry number `attempt` (0 for the first retry): uniform in
/// `[initial/2, min(max, initial × 2^attempt)]`. The jitter spreads many clients retrying
/// after one outage; the floor keeps a retry from landing at once on a server still down.
pub fn delay(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let ceiling = initial
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(max);
    let floor = (initial / 2).min(ceiling);
    if ceiling <= floor {
        return ceiling;
    }
    let spread = (ceiling - floor).as_micros() as u64;
    floor + Duration::from_micros(rand::random_range(0..=spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_within_bounds_and_spread() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_millis(1_000));
        for attempt in 0..30 {
            let ceiling = (initial * 2u32.pow(attempt.min(10))).min(max);
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..200 {
                let d = delay(attempt, initial, max);
                assert!(d >= initial / 2 && d <= ceiling, "attempt {attempt}: {d:?}");
                seen.insert(d.as_micros());
            }
            // Jittered: 200 draws over a range of ≥ 50 ms are not all the same.
            assert!(
                seen.len() > 50,
                "attempt {attempt}: {} distinct",
                seen.len()
            );
        }
        assert_eq!(delay(3, Duration::ZERO, max), Duration::ZERO);
        assert_eq!(delay(0, max * 4, max), max);
    }
}
