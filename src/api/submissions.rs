//! The AMQP front door: upstream systems publish job specs to the submissions exchange; each
//! becomes a job once per `message_id`, or is kept on the rejected queue with the reason.
//! The original delivery is acked only after one of those is durable.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, Delivery, Subscription};
use crate::job::{Allowance, ReplyPolicy, SubmissionReply, parse_json_spec_within};
use crate::metrics::{self, RejectionClass, SubmissionOutcome};
use crate::state::StateStore;
use crate::submit::{Origin, SubmitError, Submitted, Submitter};

/// How long a submission that met an outage waits before going back to the queue, so an
/// outage does not spin through the messages.
const REQUEUE_PAUSE: Duration = Duration::from_secs(1);

/// Longest accepted `message_id` (it becomes a Redis key).
const MAX_MESSAGE_ID_LEN: usize = 200;

pub struct SubmissionConsumer {
    pub submitter: Submitter,
    pub broker: Broker,
    pub state: StateStore,
    pub max_body_bytes: usize,
    pub concurrency: usize,
    /// What AMQP-submitted jobs may read and write (`api.amqp_allow`).
    pub allowance: Allowance,
    /// Which `reply_to` queues are answered (`api.reply_queue_patterns`).
    pub replies: ReplyPolicy,
    /// Readiness fails when submissions wait, a slot is free and none arrived this long.
    pub stall_after: Duration,
}

/// Why a submission was refused: kept with it on the rejected queue.
#[derive(Debug, Clone, PartialEq)]
struct Rejection {
    /// Short, fixed set (also the `x-sluice-reason-class` header and the metric's label).
    class: RejectionClass,
    reason: String,
}

enum Outcome {
    Accepted(Submitted),
    Rejected(Rejection),
    /// Redis, S3 or the broker did not answer: the delivery goes back to the queue.
    Unavailable(String),
}

impl SubmissionConsumer {
    /// Consumes until `shutdown`, then finishes the submissions in hand and returns; what
    /// was prefetched but not started goes back to the queue (see `Broker::consume`).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let subscription = Subscription {
            queue: self.broker.topology().submissions_queue(),
            tag: "sluice-submissions",
            check: "submission_consumer",
            concurrency: self.concurrency,
            prefetch: u16::try_from(self.concurrency).unwrap_or(u16::MAX),
            // Submissions are answered within one handling: a held slot is never idle.
            pause_when_busy: false,
            stall_after: self.stall_after,
            drain_grace: None,
        };
        self.broker
            .consume(subscription, shutdown, |delivery| {
                let this = self.clone();
                async move { this.handle_guarded(delivery).await }
            })
            .await;
    }

    /// `handle`, with a panic anywhere in it caught: the submission is kept on the rejected
    /// queue (`panicked`) and acked, so one poison message cannot hold a consumer slot or
    /// come back forever.
    async fn handle_guarded(&self, delivery: Delivery) {
        let Err(panic) = AssertUnwindSafe(self.handle(&delivery))
            .catch_unwind()
            .await
        else {
            return;
        };
        let rejection = panicked(&*panic);
        if delivery.is_answered() {
            // Answered already (accepted or rejected) before the panic: nothing to undo.
            tracing::error!(reason = %rejection.reason, "panic after the submission was answered");
            return;
        }
        if let Err(e) = self.keep_rejected(&delivery, &rejection).await {
            tracing::warn!(error = %e, "could not keep a submission whose handling panicked; it goes back to the queue");
            delivery.requeue_after(REQUEUE_PAUSE).await;
            return;
        }
        metrics::SUBMISSIONS_REJECTED.with(rejection.class).inc();
        delivery.ack().await;
    }

    async fn handle(&self, delivery: &Delivery) {
        let message_id = delivery.message_id().map(str::to_string);
        let reply_to = delivery.reply_to().map(str::to_string);
        let correlation_id = delivery.correlation_id().map(str::to_string);
        let deciding = self.decide(
            delivery,
            message_id.as_deref(),
            reply_to.as_deref(),
            correlation_id.as_deref(),
        );
        // Caught here too, so the submission still gets its rejection reply.
        let outcome = guarded(deciding).await;
        let reply = match outcome {
            Outcome::Accepted(submitted) => {
                let outcome = if submitted.created {
                    SubmissionOutcome::Accepted
                } else {
                    SubmissionOutcome::Duplicate
                };
                metrics::SUBMISSIONS.with(outcome).inc();
                let outcome = outcome.as_str();
                tracing::info!(job_id = %submitted.id, message_id = ?message_id, outcome, "AMQP submission handled");
                SubmissionReply {
                    outcome: outcome.into(),
                    job_id: Some(submitted.id),
                    status: None,
                    reason: None,
                    reason_class: None,
                    event: None,
                }
            }
            Outcome::Rejected(rejection) => {
                if let Err(e) = self.keep_rejected(delivery, &rejection).await {
                    tracing::warn!(error = %e, "could not keep a rejected submission; it goes back to the queue");
                    delivery.requeue_after(REQUEUE_PAUSE).await;
                    return;
                }
                metrics::SUBMISSIONS
                    .with(metrics::SubmissionOutcome::Rejected)
                    .inc();
                metrics::SUBMISSIONS_REJECTED.with(rejection.class).inc();
                tracing::warn!(message_id = ?message_id, class = rejection.class.as_str(), reason = %rejection.reason, "AMQP submission rejected");
                SubmissionReply {
                    outcome: "rejected".into(),
                    job_id: None,
                    status: None,
                    reason: Some(rejection.reason),
                    reason_class: Some(rejection.class.as_str().into()),
                    event: None,
                }
            }
            Outcome::Unavailable(reason) => {
                metrics::SUBMISSIONS
                    .with(metrics::SubmissionOutcome::Requeued)
                    .inc();
                tracing::warn!(message_id = ?message_id, %reason, "cannot handle a submission now; it goes back to the queue");
                delivery.requeue_after(REQUEUE_PAUSE).await;
                return;
            }
        };
        // A refused reply_to was refused with the submission: it gets no reply.
        if let Some(reply_to) = reply_to
            .as_deref()
            .filter(|queue| self.replies.check(queue).is_ok())
        {
            let body = serde_json::to_vec(&reply).expect("reply serialises");
            match self
                .broker
                .reply(reply_to, correlation_id.as_deref(), &body)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(%reply_to, "reply queue does not exist; reply dropped")
                }
                // The job exists or the rejection is kept: the reply is not worth a
                // redelivery (which would answer `duplicate` anyway).
                Err(e) => tracing::warn!(%reply_to, error = %e, "could not send the reply"),
            }
        }
        // A failed ack means a redelivery later: the message_id makes that harmless.
        delivery.ack().await;
    }

    async fn decide(
        &self,
        delivery: &Delivery,
        message_id: Option<&str>,
        reply_to: Option<&str>,
        correlation_id: Option<&str>,
    ) -> Outcome {
        let body = delivery.body();
        if body.len() > self.max_body_bytes {
            return reject(
                RejectionClass::TooLarge,
                format!(
                    "submission is {} bytes; the limit is {} (api.max_body_bytes)",
                    body.len(),
                    self.max_body_bytes
                ),
            );
        }
        let message_id = match message_id {
            Some(id)
                if !id.is_empty()
                    && id.len() <= MAX_MESSAGE_ID_LEN
                    && id.chars().all(|c| c.is_ascii_graphic()) =>
            {
                id
            }
            _ => {
                return reject(
                    RejectionClass::MissingMessageId,
                    format!(
                        "set the message_id property (1-{MAX_MESSAGE_ID_LEN} visible ASCII characters): it is the idempotency key that makes redelivered or re-sent submissions one job"
                    ),
                );
            }
        };
        if let Some(Err(reason)) = reply_to.map(|queue| self.replies.check(queue)) {
            return reject(RejectionClass::ForbiddenReplyTo, reason);
        }
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(body) {
            return reject(RejectionClass::NotJson, format!("body is not JSON: {e}"));
        }
        let spec = match parse_json_spec_within(body, self.max_body_bytes) {
            Ok(spec) => spec,
            Err(e) => return reject(RejectionClass::InvalidSpec, e.to_string()),
        };
        let key = format!("amqp:{message_id}");
        let origin = Origin {
            source: "amqp",
            idempotency_key: Some(&key),
            reply_to,
            correlation_id,
            redelivered: delivery.redelivered(),
            allowance: Some(&self.allowance),
        };
        match self.submitter.submit(&spec, &origin).await {
            Ok(submitted) => Outcome::Accepted(submitted),
            Err(SubmitError::Invalid(e)) if e.field == "model" => {
                reject(RejectionClass::UnknownModel, e.to_string())
            }
            Err(SubmitError::Invalid(e)) => reject(RejectionClass::InvalidSpec, e.to_string()),
            Err(SubmitError::OutputInUse(reason)) => reject(RejectionClass::OutputInUse, reason),
            Err(SubmitError::Forbidden(refused)) => {
                reject(RejectionClass::ForbiddenLocation, refused.to_string())
            }
            Err(SubmitError::Unavailable(reason)) => Outcome::Unavailable(reason),
        }
    }

    /// Puts the submission on the rejected queue, once: a redelivery of a submission already
    /// kept (the process died before its ack) is only acked.
    async fn keep_rejected(
        &self,
        delivery: &Delivery,
        rejection: &Rejection,
    ) -> Result<(), String> {
        let key = rejection_key(delivery);
        if self
            .state
            .rejection_kept(&key)
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(());
        }
        self.broker
            .reject_submission(delivery, &rejection.reason, rejection.class.as_str())
            .await
            .map_err(|e| e.to_string())?;
        self.state
            .record_rejection(&key)
            .await
            .map_err(|e| e.to_string())
    }
}

fn reject(class: RejectionClass, reason: String) -> Outcome {
    // Bounded: the reason travels as a message header, which must fit one AMQP frame.
    let reason = crate::uri::abbreviated(&reason, 2000);
    Outcome::Rejected(Rejection { class, reason })
}

/// `deciding`, with a panic in it turned into a `panicked` rejection.
async fn guarded(deciding: impl std::future::Future<Output = Outcome>) -> Outcome {
    AssertUnwindSafe(deciding)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Outcome::Rejected(panicked(&*panic)))
}

/// The rejection for a submission whose handling panicked; counts and logs the panic.
fn panicked(panic: &(dyn std::any::Any + Send)) -> Rejection {
    metrics::INTAKE_PANICS.with(metrics::Door::Amqp).inc();
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    tracing::error!(panic = %what, "handling an AMQP submission panicked; it is kept on the rejected queue");
    Rejection {
        class: RejectionClass::Panicked,
        reason: format!(
            "sluice could not handle this submission (it panicked: {}); it was not retried, to keep the queue moving: report it with this message",
            crate::uri::abbreviated(&what, 500)
        ),
    }
}

/// Identifies one submission for the rejected-once check: its `message_id` with a digest of
/// the body (a re-send with a fixed body under the same id is a new submission).
fn rejection_key(delivery: &Delivery) -> String {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(delivery.body()));
    let id = delivery.message_id().unwrap_or_default();
    let id_digest = hex::encode(sha2::Sha256::digest(id.as_bytes()));
    format!("{}:{}", &id_digest[..32], &digest[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poisoned() -> Outcome {
        panic!("poison {}", 42)
    }

    #[tokio::test]
    async fn a_panic_while_deciding_becomes_a_counted_panicked_rejection() {
        let panics = || metrics::INTAKE_PANICS.with(metrics::Door::Amqp).get();
        let before = panics();
        match guarded(async { poisoned() }).await {
            Outcome::Rejected(rejection) => {
                assert_eq!(rejection.class, RejectionClass::Panicked);
                assert!(
                    rejection.reason.contains("poison 42"),
                    "{}",
                    rejection.reason
                );
            }
            _ => panic!("not a rejection"),
        }
        assert_eq!(panics(), before + 1);
        match guarded(async { reject(RejectionClass::NotJson, "x".repeat(5000)) }).await {
            Outcome::Rejected(rejection) => {
                assert_eq!(rejection.class, RejectionClass::NotJson);
                assert!(rejection.reason.len() < 2100, "the reason is bounded");
            }
            _ => panic!("not a rejection"),
        }
        assert_eq!(panics(), before + 1);
    }
}
