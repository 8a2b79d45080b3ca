//! One message taken from a queue, and every way it can be answered: ack, requeue, retry
//! later, dead-letter, hand back or keep as rejected. lapin's types stay inside `broker/`.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};

use super::{Broker, BrokerError, unix_secs};

/// A delivery from one of sluice's queues. It is answered at most once: after `ack`,
/// `requeue` or a successful hand-over to another queue, `is_answered` is true and further
/// answers are no-ops logged by the broker client.
#[derive(Debug)]
pub struct Delivery {
    inner: lapin::message::Delivery,
}

impl From<lapin::message::Delivery> for Delivery {
    fn from(inner: lapin::message::Delivery) -> Self {
        Self { inner }
    }
}

impl Delivery {
    /// The message body as published.
    pub fn body(&self) -> &[u8] {
        &self.inner.data
    }

    /// Whether the broker delivered this message before (to this or another consumer).
    pub fn redelivered(&self) -> bool {
        self.inner.redelivered
    }

    /// The publisher's `message_id` property.
    pub fn message_id(&self) -> Option<&str> {
        short(self.inner.properties.message_id())
    }

    /// The publisher's `reply_to` property.
    pub fn reply_to(&self) -> Option<&str> {
        short(self.inner.properties.reply_to())
    }

    /// The publisher's `correlation_id` property.
    pub fn correlation_id(&self) -> Option<&str> {
        short(self.inner.properties.correlation_id())
    }

    /// True once acked or requeued: a panic after that has nothing left to answer.
    pub fn is_answered(&self) -> bool {
        !self.inner.acker.usable()
    }

    /// Acknowledges the delivery. A failed ack is logged, not returned: the broker
    /// redelivers, and every task and submission is idempotent.
    pub async fn ack(&self) {
        if let Err(e) = self.inner.ack(BasicAckOptions::default()).await {
            tracing::warn!(error = %e, "ack failed; the message will be redelivered");
        }
    }

    /// Returns the delivery to the front of its queue at once.
    pub async fn requeue(&self) {
        let options = BasicNackOptions {
            requeue: true,
            ..Default::default()
        };
        if let Err(e) = self.inner.nack(options).await {
            tracing::warn!(error = %e, "nack failed; the broker requeues the message when the channel closes");
        }
    }

    /// Returns the delivery to its queue after `pause`, so an outage of a dependency does
    /// not spin through the queue.
    pub async fn requeue_after(&self, pause: Duration) {
        tokio::time::sleep(pause).await;
        self.requeue().await;
    }
}

impl Delivery {
    /// The publisher's headers with `extra` set on top (why sluice moved the message).
    fn headers_with<const N: usize>(&self, extra: [(&str, AMQPValue); N]) -> FieldTable {
        let mut headers = self.inner.properties.headers().clone().unwrap_or_default();
        for (name, value) in extra {
            headers.insert(name.into(), value);
        }
        headers
    }
}

fn short(value: &Option<ShortString>) -> Option<&str> {
    value.as_ref().map(|s| s.as_str())
}

impl Broker {
    /// Sends a delivery to the retry queue of `level`; it comes back to its queue after
    /// that level's delay. The caller acks the original afterwards.
    pub async fn retry_later(&self, delivery: &Delivery, level: usize) -> Result<(), BrokerError> {
        let level = level.min(self.topology.retry_levels().saturating_sub(1));
        let inner = &delivery.inner;
        self.publish(
            &self.topology.retry_exchange(level),
            inner.routing_key.as_str(),
            &inner.data,
            inner.properties.clone(),
        )
        .await
    }

    /// Queues a delivery's task again at once (same routing key and priority): for a task
    /// whose delivery was acked already (a leased shard handed back on shutdown).
    pub async fn publish_again(&self, delivery: &Delivery) -> Result<(), BrokerError> {
        let inner = &delivery.inner;
        self.publish(
            &self.topology.tasks_exchange(),
            inner.routing_key.as_str(),
            &inner.data,
            inner.properties.clone(),
        )
        .await
    }

    /// Sends a delivery to the dead-letter queue with the reason in a header.
    pub async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BrokerError> {
        let inner = &delivery.inner;
        let headers = delivery.headers_with([
            ("x-sluice-reason", AMQPValue::LongString(reason.into())),
            (
                "x-sluice-routing-key",
                AMQPValue::LongString(inner.routing_key.as_str().into()),
            ),
        ]);
        let properties = inner.properties.clone().with_headers(headers);
        self.publish(&self.topology.dead_exchange(), "", &inner.data, properties)
            .await
    }

    /// Keeps a submission that could not be accepted on the rejected queue: the original
    /// body and properties, plus headers saying why (`x-sluice-reason`, and a short
    /// `x-sluice-reason-class` for dashboards and scripts).
    pub async fn reject_submission(
        &self,
        delivery: &Delivery,
        reason: &str,
        class: &str,
    ) -> Result<(), BrokerError> {
        let inner = &delivery.inner;
        let headers = delivery.headers_with([
            ("x-sluice-reason", AMQPValue::LongString(reason.into())),
            ("x-sluice-reason-class", AMQPValue::LongString(class.into())),
            ("x-sluice-rejected-at", AMQPValue::Timestamp(unix_secs())),
        ]);
        // The submitter's properties, except an expiration: a kept rejection must not
        // expire off the rejected queue.
        let original = &inner.properties;
        let mut properties = BasicProperties::default().with_headers(headers);
        if let Some(value) = original.message_id() {
            properties = properties.with_message_id(value.clone());
        }
        if let Some(value) = original.correlation_id() {
            properties = properties.with_correlation_id(value.clone());
        }
        if let Some(value) = original.reply_to() {
            properties = properties.with_reply_to(value.clone());
        }
        if let Some(value) = original.app_id() {
            properties = properties.with_app_id(value.clone());
        }
        if let Some(value) = original.timestamp() {
            properties = properties.with_timestamp(*value);
        }
        self.publish(
            &self.topology.rejected_exchange(),
            "",
            &inner.data,
            properties,
        )
        .await
    }
}
