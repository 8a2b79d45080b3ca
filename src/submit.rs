//! Accepting a job, whatever door it came through: check the spec against the world (the
//! model package exists), create the record (idempotently), queue the plan task. Nothing is
//! left half-created when a step fails.

use crate::broker::Broker;
use crate::engine::package::MANIFEST_FILE;
use crate::job::{JobSpec, SpecError, TaskMessage, new_job_id};
use crate::metrics;
use crate::state::{NewJob, StateStore};
use crate::storage::{Storage, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The submission itself is wrong; resending it unchanged will fail again.
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// A service sluice needs did not answer; the submission can be retried as is.
    #[error("cannot accept jobs right now: {0}")]
    Unavailable(String),
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
        source: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Submitted, SubmitError> {
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
            Err(e @ StorageError::Refused { .. }) => {
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
        let (id, created) = self
            .state
            .create_job(NewJob {
                id: &id,
                name: &spec.name,
                spec_json: &spec_json,
                pool: spec.pool.as_str(),
                source,
                idempotency_key,
            })
            .await
            .map_err(|e| SubmitError::Unavailable(e.to_string()))?;
        if !created {
            return Ok(Submitted { id, created });
        }
        let task =
            serde_json::to_vec(&TaskMessage::Plan { job_id: id.clone() }).expect("task serialises");
        if let Err(e) = self
            .broker
            .publish_task(spec.pool, spec.priority, &task)
            .await
        {
            // Undo the record so the submission can simply be sent again.
            if let Err(undo) = self.state.delete_job(&id, idempotency_key).await {
                tracing::error!(job_id = %id, error = %undo, "could not remove the job whose plan task was not queued");
            }
            return Err(SubmitError::Unavailable(e.to_string()));
        }
        metrics::JOBS_SUBMITTED.with_label_values(&[source]).inc();
        tracing::info!(job_id = %id, name = %spec.name, source, "job submitted");
        Ok(Submitted { id, created })
    }
}
