//! The one consuming routine: connect with jittered back-off, at most `concurrency`
//! deliveries in hand, a stall watch for readiness, and a drain on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::watch::{self, ConsumerWatch};
use super::{Broker, BrokerError, Delivery, channel_err};

/// First and longest wait between attempts to (re)start a consumer.
const RECONNECT_INITIAL: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// What to consume and how much of it to hold.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub queue: String,
    /// Start of the consumer tag (`<tag>-<pid>-<uuid>`), to tell consumers apart in the
    /// broker's management UI.
    pub tag: &'static str,
    /// The readiness check that reports a stalled consumer.
    pub check: &'static str,
    /// Deliveries handled at once.
    pub concurrency: usize,
    /// Most unacknowledged deliveries the broker may push (at least `concurrency`).
    pub prefetch: u16,
    /// Cancel the consumer while every slot is busy, returning what it holds to the queue.
    /// Needed where handlers ack early (leased tasks free their prefetch slot at once):
    /// without the pause the broker fills the slot with a delivery that waits here,
    /// unacked, until its consumer timeout closes the channel.
    pub pause_when_busy: bool,
    /// Readiness fails when deliveries wait, a slot is free and none arrives this long.
    pub stall_after: Duration,
    /// How long shutdown waits for handlers still running; `None` waits for all of them.
    /// Whatever is unanswered after it goes back to the queue with the channel.
    pub drain_grace: Option<Duration>,
}

impl Broker {
    /// Consumes `subscription.queue` until `shutdown`, calling `handle` on each delivery in
    /// a task of its own; the handler answers the delivery. Reconnects when the broker goes
    /// away. On shutdown it stops taking deliveries, returns those not started, waits for
    /// running handlers within the grace period and closes its channel.
    pub async fn consume<F, Fut>(
        &self,
        subscription: Subscription,
        shutdown: CancellationToken,
        handle: F,
    ) where
        F: Fn(Delivery) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Subscription {
            queue,
            tag,
            check,
            concurrency,
            prefetch,
            pause_when_busy,
            stall_after,
            drain_grace,
        } = subscription;
        let prefetch = prefetch.max(u16::try_from(concurrency).unwrap_or(u16::MAX));
        let permits = Arc::new(Semaphore::new(concurrency));
        let tracker = TaskTracker::new();
        let watch = Arc::new(ConsumerWatch::default());
        let judging = CancellationToken::new();
        let judge = tokio::spawn(watch::judge(
            check,
            self.clone(),
            queue.clone(),
            watch.clone(),
            permits.clone(),
            stall_after,
            judging.clone(),
        ));
        let mut failures = 0u32;
        // Kept open while draining, so handlers still running can answer what they took.
        let mut channel: Option<Channel> = None;
        let mut consumer: Option<Consumer> = None;
        'connect: while !shutdown.is_cancelled() {
            if failures > 0 {
                let wait = crate::backoff::delay(failures - 1, RECONNECT_INITIAL, RECONNECT_MAX);
                tracing::info!(%queue, "consuming again in {wait:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => break 'connect,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            consumer = None;
            channel = None;
            let open = match self.channel(true).await {
                Ok(open) => channel.insert(open),
                Err(e) => {
                    tracing::warn!(%queue, error = %e, "cannot consume");
                    failures += 1;
                    continue;
                }
            };
            tracing::info!(%queue, concurrency, prefetch, "consuming");
            loop {
                let permit = tokio::select! {
                    _ = shutdown.cancelled() => break 'connect,
                    permit = permits.clone().acquire_owned() => permit.expect("semaphore never closed"),
                };
                if consumer.is_none() {
                    // Pausing: no more deliveries than slots to start them in.
                    let capacity = if pause_when_busy {
                        (permits.available_permits() + 1).min(usize::from(prefetch)) as u16
                    } else {
                        prefetch
                    };
                    match self.start_consumer(open, &queue, tag, capacity).await {
                        Ok(started) => {
                            // A fresh consumer gets a fresh grace period before it is judged.
                            watch.progressed();
                            consumer = Some(started);
                        }
                        Err(e) => {
                            tracing::warn!(%queue, error = %e, "cannot start the consumer");
                            failures += 1;
                            continue 'connect;
                        }
                    }
                }
                let active = consumer.as_mut().expect("started above");
                watch.set_listening(true);
                let next = tokio::select! {
                    _ = shutdown.cancelled() => break 'connect,
                    next = active.next() => next,
                };
                watch.set_listening(false);
                match next {
                    Some(Ok(delivery)) => {
                        failures = 0;
                        watch.progressed();
                        let work = handle(Delivery::from(delivery));
                        tracker.spawn(async move {
                            work.await;
                            drop(permit);
                        });
                    }
                    Some(Err(e)) => {
                        tracing::warn!(%queue, error = %e, "consumer failed; reconnecting");
                        failures += 1;
                        continue 'connect;
                    }
                    None => {
                        tracing::warn!(%queue, "consumer closed by the broker; reconnecting");
                        failures += 1;
                        continue 'connect;
                    }
                }
                if pause_when_busy && permits.available_permits() == 0 {
                    let full = consumer.take().expect("started above");
                    if let Err(e) = pause(open, full).await {
                        tracing::warn!(%queue, error = %e, "cannot pause the consumer; reconnecting");
                        failures += 1;
                        continue 'connect;
                    }
                }
            }
        }
        if let (Some(open), Some(active)) = (&channel, consumer.take())
            && let Err(e) = pause(open, active).await
        {
            tracing::warn!(%queue, error = %e, "cannot stop the consumer; its deliveries go back to the queue when the channel closes");
        }
        judging.cancel();
        let _ = judge.await;
        tracker.close();
        tracing::info!(%queue, in_flight = tracker.len(), grace = ?drain_grace, "draining");
        match drain_grace {
            Some(grace) => {
                if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
                    tracing::warn!(
                        %queue,
                        in_flight = tracker.len(),
                        "grace period over; returning unanswered deliveries to the queue"
                    );
                }
            }
            None => tracker.wait().await,
        }
        if let Some(open) = channel {
            let _ = open.close(200, "sluice shutting down".into()).await;
        }
    }

    /// A consumer of `queue` on `channel`, holding at most `prefetch` unacknowledged
    /// deliveries; a missing queue has the topology declared again.
    async fn start_consumer(
        &self,
        channel: &Channel,
        queue: &str,
        tag: &str,
        prefetch: u16,
    ) -> Result<Consumer, BrokerError> {
        let started = self
            .timed("consume", queue, async {
                channel
                    .basic_qos(prefetch, BasicQosOptions::default())
                    .await
                    .map_err(channel_err("qos"))?;
                let tag = format!("{tag}-{}-{}", std::process::id(), uuid::Uuid::new_v4());
                channel
                    .basic_consume(
                        queue.into(),
                        tag.into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(channel_err("consume"))
            })
            .await;
        self.heal_if_missing(&started).await;
        started
    }
}

/// Cancels `consumer` and returns to the queue whatever the broker pushed to it before the
/// cancel took effect.
async fn pause(channel: &Channel, mut consumer: Consumer) -> Result<(), String> {
    channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    // After the cancel the stream ends with what was already on its way.
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(next) = consumer.next().await {
            let delivery = Delivery::from(next.map_err(|e| e.to_string())?);
            delivery.requeue().await;
        }
        Ok::<(), String>(())
    })
    .await;
    drained.map_err(|_| "the cancelled consumer did not end within 10 s".to_string())?
}
