//! Accepting a job, whatever door it came through: check the spec against the world (the
//! model package exists), create the record (idempotently), queue the plan task. Nothing is
//! left half-created when a step fails.

use crate::broker::Broker;
use crate::job::MANIFEST_FILE;
use crate::job::{
    Allowance, JobSpec, JobStatus, LocationRefused, SpecError, TaskMessage, new_job_id,
};
use crate::metrics;
use crate::state::{Created, NewJob, StateStore, now_ms};
use crate::storage::{Storage, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The submission itself is wrong; resending it unchanged will fail again.
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// The spec names an S3 location its submitter may not use.
    #[error(transparent)]
    Forbidden(#[from] LocationRefused),
    /// Another job that has not ended writes to the same output folder.
    #[error("{0}")]
    OutputInUse(String),
    /// A service sluice needs did not answer; the submission can be retried as is.
    #[error("cannot accept jobs right now: {0}")]
    Unavailable(String),
}

/// Where a submission came from, and what its sender asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin<'a> {
    /// `http`, `amqp` or `ingest`: shown in listings, events and metrics.
    pub source: &'a str,
    /// The same key always names the same job (`Idempotency-Key`, AMQP `message_id`, the
    /// dropped file's key and ETag).
    pub idempotency_key: Option<&'a str>,
    /// AMQP `reply_to`: the queue that gets the final status.
    pub reply_to: Option<&'a str>,
    /// AMQP `correlation_id`, echoed in events and replies.
    pub correlation_id: Option<&'a str>,
    /// A redelivery: whoever handled this submission before may have died between creating
    /// the job and queuing its plan task, so a job still queued gets its plan task again
    /// at once (a duplicate plan task is harmless).
    pub redelivered: bool,
    /// The S3 locations this submitter's jobs may use; `None` for any.
    pub allowance: Option<&'a Allowance>,
}

impl<'a> Origin<'a> {
    pub fn new(source: &'a str) -> Self {
        Self {
            source,
            ..Default::default()
        }
    }
}

/// A job accepted, or the one an idempotency key already named.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub id: String,
    /// False when the idempotency key matched an earlier submission.
    pub created: bool,
}

#[derive(Clone)]
pub struct Submitter {
    state: StateStore,
    broker: Broker,
    storage: Storage,
}

impl Submitter {
    pub fn new(state: StateStore, broker: Broker, storage: Storage) -> Self {
        Self {
            state,
            broker,
            storage,
        }
    }

    /// `spec` must already be parsed and validated (`job::parse_*_spec`).
    pub async fn submit(
        &self,
        spec: &JobSpec,
        origin: &Origin<'_>,
    ) -> Result<Submitted, SubmitError> {
        let Origin {
            source,
            idempotency_key,
            reply_to,
            correlation_id,
            redelivered,
            allowance,
        } = *origin;
        // Before any I/O, so a refused submitter learns nothing about other buckets.
        if let Some(allowance) = allowance {
            allowance.check(spec)?;
        }
        let package = spec.model_uri();
        match self.storage.head(&package.join(MANIFEST_FILE)).await {
            Ok(_) => {}
            Err(StorageError::NotFound { .. }) => {
                return Err(SpecError {
                    field: "model".into(),
                    message: format!(
                        "no model package at {package} ({MANIFEST_FILE} not found); push one with `sluice model push DIR {package}`"
                    ),
                }
                .into());
            }
            Err(e @ (StorageError::Refused { .. } | StorageError::NoSuchBucket { .. })) => {
                return Err(SpecError {
                    field: "model".into(),
                    message: e.to_string(),
                }
                .into());
            }
            Err(e) => return Err(SubmitError::Unavailable(e.to_string())),
        }
        let id = new_job_id();
        let spec_json = serde_json::to_string(spec).expect("spec serialises");
        let output = spec.output_uri().to_string();
        let created = self
            .state
            .create_job(NewJob {
                id: &id,
                kind: spec.kind.as_str(),
                output: &output,
                name: &spec.name,
                spec_json: &spec_json,
                pool: spec.pool.as_str(),
                source,
                idempotency_key,
                reply_to,
                correlation_id,
            })
            .await
            .map_err(|e| SubmitError::Unavailable(e.to_string()))?;
        let (id, created) = match created {
            Created::New(id) => (id, true),
            Created::Existing(id) => (id, false),
            Created::OutputInUse(other) => {
                return Err(SubmitError::OutputInUse(format!(
                    "job spec field `output.uri`: {output} is the output of job {other}, which has not ended; choose another folder or wait for it"
                )));
            }
        };
        let task =
            serde_json::to_vec(&TaskMessage::Plan { job_id: id.clone() }).expect("task serialises");
        if !created {
            let stranded_after = if redelivered { 0 } else { STRANDED_AFTER_MS };
            self.requeue_if_stranded(&id, &task, stranded_after).await;
            return Ok(Submitted { id, created });
        }
        if let Err(e) = self
            .broker
            .publish_task(spec.pool, spec.priority, &task)
            .await
        {
            // Undo the record so the submission can simply be sent again.
            let reason =
                format!("not queued ({e}); the submission was refused and can be sent again");
            if let Err(undo) = self
                .state
                .discard_job(&id, &output, idempotency_key, &reason)
                .await
            {
                tracing::error!(job_id = %id, error = %undo, "could not remove the job whose plan task was not queued");
            }
            return Err(SubmitError::Unavailable(e.to_string()));
        }
        metrics::JOBS_SUBMITTED
            .with((
                spec.kind.into(),
                metrics::Source::named(source).unwrap_or(metrics::Source::Http),
            ))
            .inc();
        tracing::info!(job_id = %id, name = %spec.name, source, "job submitted");
        Ok(Submitted { id, created })
    }

    /// A job still `queued` long after it was created may have lost its plan task (the
    /// process that created it died before publishing): the resubmission queues it again.
    /// A duplicate plan task is harmless.
    async fn requeue_if_stranded(&self, id: &str, task: &[u8], stranded_after_ms: u64) {
        let Ok(job) = self.state.get(id).await else {
            return;
        };
        if job.status != JobStatus::Queued
            || now_ms().saturating_sub(job.created_ms) < stranded_after_ms
        {
            return;
        }
        match self
            .broker
            .publish_task(job.spec.pool, job.spec.priority, task)
            .await
        {
            Ok(()) => {
                tracing::warn!(job_id = %id, "job was still queued; its plan task is queued again")
            }
            Err(e) => {
                tracing::warn!(job_id = %id, error = %e, "could not queue the stranded job's plan task")
            }
        }
    }
}

/// How long a job may sit in `queued` before a resubmission queues its plan task again.
const STRANDED_AFTER_MS: u64 = 30_000;
