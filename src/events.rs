//! The event relay: publishes the job events the state store records (its outbox stream) to
//! the events exchange, in order, and sends AMQP submitters their final reply.
//!
//! Every role runs a relay; a Redis lease lets one publish at a time, so events of one job
//! leave in the order they were recorded. Delivery is at-least-once: a relay that dies after
//! publishing but before moving the cursor publishes those events again (same `message_id`).
//!
//! Final replies go only to queues `ReplyPolicy` allows: a record written before that rule
//! (or by a door that did not check) never gets a reply onto sluice's own queues.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, BrokerError};
use crate::job::{FINAL_EVENTS, JobEvent, ReplyPolicy, SubmissionReply};
use crate::metrics;
use crate::state::{StateError, StateStore, StoredEvent};

/// How long the relay lease lasts without renewal (renewed every pass).
const LEASE_MS: u64 = 10_000;
/// Pause between passes when there was nothing to publish.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Pause between attempts of a relay that does not hold the lease.
const STANDBY_POLL: Duration = Duration::from_secs(1);
/// Longest wait for one publish confirm: well inside the lease.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(3);
/// Events published per pass before the cursor moves.
const BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("RabbitMQ did not confirm an event within {PUBLISH_TIMEOUT:?}; will retry")]
    Timeout,
}

/// Relays until `stop` is cancelled, then makes a last pass so the events of work that just
/// drained leave with this process.
pub async fn run(state: StateStore, broker: Broker, replies: ReplyPolicy, stop: CancellationToken) {
    let owner = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4());
    loop {
        let pause = match relay_once(&state, &broker, &replies, &owner).await {
            Ok(Pass::Published) => Duration::ZERO,
            Ok(Pass::Idle) => IDLE_POLL,
            Ok(Pass::Standby) => STANDBY_POLL,
            Err(e) => {
                tracing::warn!(error = %e, "event relay pass failed; retrying");
                STANDBY_POLL
            }
        };
        if stop.is_cancelled() {
            break;
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
    // Last pass: a bounded drain, then hand the lease over at once.
    for _ in 0..16 {
        match relay_once(&state, &broker, &replies, &owner).await {
            Ok(Pass::Published) => continue,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "event relay could not drain at shutdown; another relay will");
                break;
            }
        }
    }
    if let Err(e) = state.release_event_relay(&owner).await {
        tracing::debug!(error = %e, "event relay lease not released; it expires");
    }
}

enum Pass {
    Published,
    Idle,
    Standby,
}

async fn relay_once(
    state: &StateStore,
    broker: &Broker,
    replies: &ReplyPolicy,
    owner: &str,
) -> Result<Pass, RelayError> {
    if !state.hold_event_relay(owner, LEASE_MS).await? {
        return Ok(Pass::Standby);
    }
    let events = state.unpublished_events(BATCH).await?;
    let Some(last) = events.last() else {
        return Ok(Pass::Idle);
    };
    for event in &events {
        // Checked before every publish, so a relay that stalled past its lease stops
        // before a second relay's events could interleave with its own.
        if !state.hold_event_relay(owner, LEASE_MS).await? {
            return Ok(Pass::Standby);
        }
        publish(broker, replies, event).await?;
    }
    if !state.mark_events_published(owner, &last.id).await? {
        tracing::warn!("event relay lost its lease mid-pass; the new holder continues");
        return Ok(Pass::Standby);
    }
    Ok(Pass::Published)
}

async fn publish(
    broker: &Broker,
    replies: &ReplyPolicy,
    stored: &StoredEvent,
) -> Result<(), RelayError> {
    let message_id = format!("{}:{}", stored.job_id, stored.seq);
    tokio::time::timeout(
        PUBLISH_TIMEOUT,
        broker.publish_event(&stored.event, &message_id, stored.body.as_bytes()),
    )
    .await
    .map_err(|_| RelayError::Timeout)??;
    metrics::EVENTS_PUBLISHED
        .with_label_values(&[stored.event.as_str()])
        .inc();
    if !stored.reply_to.is_empty() && FINAL_EVENTS.contains(&stored.event.as_str()) {
        if let Err(reason) = replies.check(&stored.reply_to) {
            tracing::warn!(job_id = %stored.job_id, %reason, "final reply not sent");
            return Ok(());
        }
        // Best effort: a submitter's full or broken reply queue must not hold up the
        // events of every other job.
        match tokio::time::timeout(PUBLISH_TIMEOUT, reply_final(broker, stored)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(job_id = %stored.job_id, reply_to = %stored.reply_to, error = %e, "final reply not sent")
            }
            Err(_) => {
                tracing::warn!(job_id = %stored.job_id, reply_to = %stored.reply_to, "final reply timed out; not sent")
            }
        }
    }
    Ok(())
}

/// The `finished` reply to the submitter that asked for one.
async fn reply_final(broker: &Broker, stored: &StoredEvent) -> Result<(), BrokerError> {
    let event: Option<JobEvent> = match serde_json::from_str(&stored.body) {
        Ok(event) => Some(event),
        Err(e) => {
            tracing::error!(job_id = %stored.job_id, error = %e, "job event body does not parse; replying without it");
            None
        }
    };
    let correlation_id = event.as_ref().and_then(|e| e.correlation_id.clone());
    let reply = SubmissionReply {
        outcome: "finished".into(),
        job_id: Some(stored.job_id.clone()),
        status: stored.event.strip_prefix("job.").map(str::to_string),
        reason: event.as_ref().and_then(|e| e.error.clone()),
        reason_class: None,
        event,
    };
    let body = serde_json::to_vec(&reply).expect("reply serialises");
    if !broker
        .reply(&stored.reply_to, correlation_id.as_deref(), &body)
        .await?
    {
        tracing::warn!(job_id = %stored.job_id, reply_to = %stored.reply_to, "reply queue is gone; final reply dropped");
    }
    Ok(())
}
