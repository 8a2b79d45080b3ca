//! Whether a consumer makes progress: messages waiting in its queue while a slot stays free
//! and nothing arrives for long means the consumer is stuck, and readiness must say so.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Broker;

/// Judges a consumer of `queue` every few seconds until `shutdown`, reporting a stall as
/// the readiness check `check` and in the log (once when it starts, once when it ends);
/// `permits` are the consumer's free slots. The check is cleared on return.
pub async fn judge(
    check: &'static str,
    broker: Broker,
    queue: String,
    watch: Arc<ConsumerWatch>,
    permits: Arc<Semaphore>,
    after: Duration,
    shutdown: CancellationToken,
) {
    let every = (after / 4).clamp(Duration::from_secs(1), Duration::from_secs(15));
    let mut stalled = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        // An unreachable broker is the broker check's to report, not this one's.
        let Ok(waiting) = broker.queue_depth(&queue).await else {
            continue;
        };
        // A consumer waiting for its next delivery holds the permit that delivery will use.
        let free = permits.available_permits() + usize::from(watch.is_listening());
        let verdict = watch.stalled(waiting, free, after, now_ms());
        if verdict.is_some() != stalled {
            stalled = verdict.is_some();
            match &verdict {
                Some(reason) => tracing::warn!(%queue, "{reason}"),
                None => tracing::info!(%queue, "consumer receiving again"),
            }
        }
        broker.health().report(check, verdict);
    }
    broker.health().report(check, None);
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Deliveries seen by the consumer, shared with the loop that judges it.
#[derive(Debug)]
pub struct ConsumerWatch {
    last_delivery_ms: AtomicU64,
    listening: AtomicBool,
}

impl Default for ConsumerWatch {
    fn default() -> Self {
        // A consumer that never received anything is judged from its start.
        Self {
            last_delivery_ms: AtomicU64::new(now_ms()),
            listening: AtomicBool::new(false),
        }
    }
}

impl ConsumerWatch {
    /// A delivery arrived (or the consumer (re)started and gets a fresh grace period).
    pub fn progressed(&self) {
        self.last_delivery_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The consumer waits for a delivery (`true`) or stopped waiting (`false`): while it
    /// waits, it holds a permit that is a free slot all the same.
    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Relaxed);
    }

    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    /// Why the consumer looks stuck, or `None`: `waiting` tasks sit in the queue, `free`
    /// slots could take them, yet nothing was delivered for longer than `after`.
    pub fn stalled(&self, waiting: u32, free: usize, after: Duration, now: u64) -> Option<String> {
        let quiet_ms = now.saturating_sub(self.last_delivery_ms.load(Ordering::Relaxed));
        (waiting > 0 && free > 0 && quiet_ms > after.as_millis() as u64).then(|| {
            format!(
                "consumer received nothing for {} s while {waiting} messages wait and {free} \
                 slots are free; check the broker connection (it reconnects on its own)",
                quiet_ms / 1000
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(60);

    #[test]
    fn stuck_only_when_work_waits_a_slot_is_free_and_nothing_came() {
        let watch = ConsumerWatch::default();
        let now = now_ms();
        assert_eq!(
            watch.stalled(5, 1, AFTER, now + 10_000),
            None,
            "still in grace"
        );
        let reason = watch
            .stalled(5, 1, AFTER, now + 61_000)
            .expect("61 s quiet with work waiting");
        assert!(
            reason.contains("5 messages wait") && reason.contains("1 slots"),
            "{reason}"
        );
        assert_eq!(
            watch.stalled(0, 1, AFTER, now + 61_000),
            None,
            "empty queue"
        );
        assert_eq!(
            watch.stalled(5, 0, AFTER, now + 61_000),
            None,
            "every slot busy"
        );
        watch.progressed();
        assert_eq!(
            watch.stalled(5, 1, AFTER, now_ms() + 1_000),
            None,
            "a delivery resets"
        );
    }
}
