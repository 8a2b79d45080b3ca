//! Deadlines and self-healing for the broker: every operation under a timeout (logged and
//! counted when it fails), publishes retried with jittered back-off, and the topology checked
//! (passive declares) and re-declared when a queue or exchange has gone missing — after a
//! failed publish, before consuming, and periodically.

use std::future::Future;
use std::time::Duration;

use lapin::{BasicProperties, Channel};
use tokio_util::sync::CancellationToken;

use super::{Broker, BrokerError};
use crate::metrics::{self, Trigger};
use crate::settings::AmqpSettings;

/// What `amqp.*` allows each operation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub operation_timeout: Duration,
    pub publish_attempts: u32,
    pub publish_backoff: Duration,
    pub topology_check: Duration,
}

impl From<&AmqpSettings> for Limits {
    fn from(s: &AmqpSettings) -> Self {
        Self {
            operation_timeout: Duration::from_millis(s.operation_timeout_ms),
            publish_attempts: s.publish_attempts.max(1),
            publish_backoff: Duration::from_millis(s.publish_backoff_ms),
            topology_check: Duration::from_secs(s.topology_check_secs.max(1)),
        }
    }
}

impl BrokerError {
    /// A failure that says the broker lacks a queue or exchange of ours: unroutable (no
    /// queue bound) or a channel the broker closed (404 on a missing exchange, or in its
    /// wake).
    fn may_be_missing_topology(&self) -> bool {
        matches!(
            self,
            BrokerError::Unroutable { .. } | BrokerError::Channel { .. }
        )
    }
}

impl Broker {
    /// Runs one broker operation under `amqp.operation_timeout_ms`; a failure or timeout is
    /// logged (warn, with the operation and its target), counted, and marks `broker`
    /// failing in readiness when the broker itself is unreachable.
    pub(super) async fn timed<T>(
        &self,
        op: &'static str,
        target: &str,
        operation: impl Future<Output = Result<T, BrokerError>>,
    ) -> Result<T, BrokerError> {
        let after = self.limits.operation_timeout;
        let error = match tokio::time::timeout(after, operation).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e,
            Err(_) => BrokerError::Timeout {
                op,
                target: target.to_string(),
                after,
            },
        };
        let timed_out = matches!(error, BrokerError::Timeout { .. });
        metrics::dependency_error(metrics::Dependency::Amqp, timed_out);
        tracing::warn!(dependency = "amqp", op, target, timed_out, error = %error, "RabbitMQ operation failed");
        if matches!(
            error,
            BrokerError::Timeout { .. } | BrokerError::Connect { .. }
        ) {
            self.health.report("broker", Some(error.to_string()));
        }
        Err(error)
    }

    /// Marks the publishing channel for replacement if it is still `channel`.
    pub(super) async fn mark_stale(&self, channel: &Channel) {
        if let Some(live) = self.inner.lock().await.as_mut()
            && live.publisher.id() == channel.id()
        {
            live.stale = true;
        }
    }

    /// Closes a channel no longer used, without waiting on a broker that may not answer.
    pub(super) fn close_later(&self, channel: Channel) {
        if !channel.status().connected() {
            return;
        }
        let after = self.limits.operation_timeout;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(after, channel.close(200, "replaced".into())).await;
        });
    }

    /// Publishes with a confirm, retrying timeouts, closed channels and nacks up to
    /// `amqp.publish_attempts` with jittered back-off; when the failure may be a missing
    /// queue or exchange of ours, the topology is checked and re-declared, then retried once.
    pub(super) async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), BrokerError> {
        let mut healed = false;
        let mut failures = 0;
        loop {
            let error = match self
                .publish_once(exchange, routing_key, body, properties.clone(), mandatory)
                .await
            {
                Ok(()) => {
                    self.health.report("broker", None);
                    return Ok(());
                }
                Err(e) => e,
            };
            // The default exchange ("") routes to a submitter's reply queue, not ours.
            let ours = !exchange.is_empty();
            if ours && !healed && error.may_be_missing_topology() {
                healed = true;
                match self.heal(Trigger::Publish).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "checking the topology after a failed publish")
                    }
                }
            }
            if matches!(error, BrokerError::Unroutable { .. }) {
                return Err(error);
            }
            failures += 1;
            if failures >= self.limits.publish_attempts {
                return Err(error);
            }
            let wait = crate::backoff::delay(
                failures - 1,
                self.limits.publish_backoff,
                self.limits.operation_timeout,
            );
            tracing::warn!(
                exchange,
                routing_key,
                error = %error,
                "publish failed; retrying in {wait:?} (amqp.publish_attempts)"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// After a consume refused with 404 (the queue is gone, e.g. deleted under a consumer,
    /// which the broker then cancelled): declares the topology again, so the caller's next
    /// try (on a new channel: the 404 closed this one) finds the queue.
    pub(super) async fn heal_if_missing<T>(&self, started: &Result<T, BrokerError>) {
        if let Err(BrokerError::Channel { source, .. }) = started
            && super::topology::is_not_found(source)
            && let Err(e) = self.heal(Trigger::Consume).await
        {
            tracing::warn!(error = %e, "could not declare the topology again after a consumer found its queue gone");
        }
    }

    /// Checks that every queue and exchange of sluice's topology exists and declares them
    /// again if any is missing (deleted by an operator, lost with a broker node's data).
    /// Returns whether something was re-declared. Cheap when all is there (passive declares
    /// on a channel of its own); one check at a time per process, and a caller arriving
    /// while one runs waits for it rather than starting another. Consumers call it before
    /// consuming again after the broker cancelled them (a deleted queue does that).
    pub async fn ensure_topology(&self) -> Result<bool, BrokerError> {
        self.heal(Trigger::Check).await
    }

    async fn heal(&self, trigger: Trigger) -> Result<bool, BrokerError> {
        let _one_at_a_time = match self.healing.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                // Another task is checking right now: its outcome is ours.
                let _wait = self.healing.lock().await;
                return Ok(false);
            }
        };
        let Some(missing) = self.find_missing().await? else {
            return Ok(false);
        };
        self.health.report(
            "topology",
            Some(format!(
                "{missing} is missing on the broker; sluice is declaring its topology again"
            )),
        );
        tracing::warn!(dependency = "amqp", %missing, trigger = trigger.as_str(), "RabbitMQ topology incomplete; declaring it again");
        let channel = self.channel(true).await?;
        let declared = self
            .timed(
                "declare topology",
                &missing,
                self.topology.declare(&channel),
            )
            .await;
        self.close_later(channel);
        declared?;
        metrics::TOPOLOGY_REDECLARED.with(trigger).inc();
        self.health.report("topology", None);
        tracing::info!(%missing, trigger = trigger.as_str(), "RabbitMQ topology declared again");
        Ok(true)
    }

    /// The first missing queue or exchange of ours, if any; reports `topology` into
    /// readiness either way (it does not re-declare).
    pub async fn find_missing(&self) -> Result<Option<String>, BrokerError> {
        let channel = self.channel(true).await?;
        let found = self
            .timed(
                "check topology",
                self.topology.tasks_exchange().as_str(),
                self.topology.find_missing(&channel),
            )
            .await;
        self.close_later(channel);
        let missing = found?;
        self.health.report(
            "topology",
            missing
                .as_ref()
                .map(|m| format!("{m} is missing on the broker; it is declared again within amqp.topology_check_secs")),
        );
        Ok(missing)
    }

    /// Readiness probe: the broker answers and the topology is complete (reported as
    /// `topology`).
    pub async fn probe(&self) -> Result<(), String> {
        self.find_missing()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Every `amqp.topology_check_secs`, checks the topology and re-declares what is
    /// missing, until `stop`.
    pub async fn maintain_topology(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.limits.topology_check) => {}
            }
            if let Err(e) = self.ensure_topology().await {
                tracing::warn!(error = %e, "periodic topology check failed; trying again at the next one");
            }
        }
    }
}
