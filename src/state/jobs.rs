//! Job records: create (idempotent, one job per output folder), discard, read, list, and
//! atomic status transitions along the state machine.

use std::collections::HashMap;

use redis::AsyncCommands;

use super::idempotency::IDEMPOTENCY_TTL_SECS;
use super::{JobRecord, StateError, StateStore, now_ms, scripts};
use crate::job::JobStatus;

/// Outcome of a status change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Moved; holds the previous status.
    Moved(JobStatus),
    /// Refused: the job is in this status, from which the move is not allowed.
    Refused(JobStatus),
}

/// Outcome of creating a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New(String),
    /// The idempotency key already named this job.
    Existing(String),
    /// This job, not yet ended, writes to the same output folder.
    OutputInUse(String),
}

/// What a new job starts with.
pub struct NewJob<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    /// The output folder, claimed for this job while it runs.
    pub output: &'a str,
    pub name: &'a str,
    pub spec_json: &'a str,
    pub pool: &'a str,
    pub source: &'a str,
    pub idempotency_key: Option<&'a str>,
    /// Where an AMQP submitter wants its replies (job id, then the final status).
    pub reply_to: Option<&'a str>,
    /// The submitter's own id for the submission, echoed in events and replies.
    pub correlation_id: Option<&'a str>,
}

impl StateStore {
    /// Creates a queued job, unless the idempotency key already names one (its id comes
    /// back) or a job that has not ended writes to the same output folder. Atomic:
    /// concurrent duplicates make one job.
    pub async fn create_job(&self, job: NewJob<'_>) -> Result<Created, StateError> {
        let mut conn = self.conn.clone();
        let idem = job
            .idempotency_key
            .map(|k| self.keys.idempotency(k))
            .unwrap_or_default();
        let now = now_ms().to_string();
        let (created, id): (i64, String) = scripts::CREATE_JOB
            .key(self.keys.job(job.id))
            .key(self.keys.jobs())
            .key(idem)
            .key(self.keys.output_claim(job.output))
            .key(self.keys.active())
            .key(self.keys.events())
            .arg(job.id)
            .arg(&now)
            .arg(IDEMPOTENCY_TTL_SECS)
            .arg(self.keys.job_prefix())
            .arg(&[
                ("name", job.name),
                ("kind", job.kind),
                ("output", job.output),
                ("reply_to", job.reply_to.unwrap_or("")),
                ("correlation_id", job.correlation_id.unwrap_or("")),
                ("spec", job.spec_json),
                ("pool", job.pool),
                ("source", job.source),
                ("idempotency_key", job.idempotency_key.unwrap_or("")),
                ("status", JobStatus::Queued.as_str()),
                ("created_ms", now.as_str()),
            ])
            .invoke_async(&mut conn)
            .await?;
        Ok(match created {
            1 => Created::New(id),
            2 => Created::OutputInUse(id),
            _ => Created::Existing(id),
        })
    }

    /// Removes a job that could not be queued, so the submission can be sent again. Its
    /// `job.submitted` may already be out, so it ends with a `job.failed` event saying why:
    /// event consumers still see exactly one final event.
    pub async fn discard_job(
        &self,
        id: &str,
        output: &str,
        idempotency_key: Option<&str>,
        reason: &str,
    ) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: i64 = scripts::DISCARD_JOB
            .key(self.keys.job(id))
            .key(self.keys.jobs())
            .key(self.keys.output_claim(output))
            .key(
                idempotency_key
                    .map(|k| self.keys.idempotency(k))
                    .unwrap_or_default(),
            )
            .key(self.keys.active())
            .key(self.keys.events())
            .arg(id)
            .arg(now_ms())
            .arg(reason)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<JobRecord, StateError> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> = conn.hgetall(self.keys.job(id)).await?;
        if fields.is_empty() {
            return Err(StateError::NotFound(id.to_string()));
        }
        let live: HashMap<String, u64> = conn.hgetall(self.keys.live(id)).await?;
        JobRecord::from_fields(id, fields, live.values().sum())
    }

    pub async fn status(&self, id: &str) -> Result<JobStatus, StateError> {
        let mut conn = self.conn.clone();
        let status: Option<String> = conn.hget(self.keys.job(id), "status").await?;
        let status = status.ok_or_else(|| StateError::NotFound(id.to_string()))?;
        JobStatus::parse(&status).ok_or_else(|| StateError::Corrupt {
            id: id.to_string(),
            reason: format!("unknown status `{status}`"),
        })
    }

    /// One field of the job's record as stored (`None` when absent).
    pub async fn field(&self, id: &str, name: &str) -> Result<Option<String>, StateError> {
        let mut conn = self.conn.clone();
        Ok(conn.hget(self.keys.job(id), name).await?)
    }

    /// Sets fields without a status change (plan results, model hash).
    pub async fn set_fields(&self, id: &str, fields: &[(&str, String)]) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: () = conn.hset_multiple(self.keys.job(id), fields).await?;
        Ok(())
    }

    /// Ids of jobs that have not ended.
    pub async fn active_jobs(&self) -> Result<Vec<String>, StateError> {
        let mut conn = self.conn.clone();
        Ok(conn.smembers(self.keys.active()).await?)
    }

    /// Moves the job to `to` if its current status is one of `from`, setting `fields` in
    /// the same atomic step.
    pub async fn transition(
        &self,
        id: &str,
        from: &[JobStatus],
        to: JobStatus,
        fields: &[(&str, String)],
    ) -> Result<Transition, StateError> {
        let mut conn = self.conn.clone();
        let allowed: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let (moved, current): (i64, String) = scripts::TRANSITION
            .key(self.keys.job(id))
            .key(self.keys.active())
            .key(self.keys.events())
            .arg(to.as_str())
            .arg(allowed.join(","))
            .arg(id)
            .arg(now_ms())
            .arg(fields)
            .invoke_async(&mut conn)
            .await?;
        if moved == -1 {
            return Err(StateError::NotFound(id.to_string()));
        }
        let current = JobStatus::parse(&current).ok_or_else(|| StateError::Corrupt {
            id: id.to_string(),
            reason: format!("unknown status `{current}`"),
        })?;
        Ok(if moved == 1 {
            Transition::Moved(current)
        } else {
            Transition::Refused(current)
        })
    }

    /// Moves along the state machine's own table (`JobStatus::allowed_from`).
    pub async fn move_to(
        &self,
        id: &str,
        to: JobStatus,
        fields: &[(&str, String)],
    ) -> Result<Transition, StateError> {
        self.transition(id, to.allowed_from(), to, fields).await
    }
}

#[cfg(test)]
mod tests {
    use super::{Created, Transition};
    use crate::job::JobStatus;
    use crate::state::StateError;
    use crate::state::test_store::{TestStore, new_job, spec_json};

    #[tokio::test]
    async fn a_created_job_reads_back_queued_with_its_fields() {
        let state = TestStore::new().await;
        let spec = spec_json();
        let created = state
            .create_job(new_job("job-1", "s3://b/out/", &spec, None))
            .await
            .unwrap();
        assert_eq!(created, Created::New("job-1".into()));
        let job = state.get("job-1").await.unwrap();
        assert_eq!(job.id, "job-1");
        assert_eq!(job.name, "unit-test");
        assert_eq!(job.status, JobStatus::Queued);
        assert_eq!(job.pool, "cpu");
        assert_eq!(job.source, "test");
        assert_eq!(job.spec.name, "rotten-tomatoes-embed");
        assert!(job.created_ms > 0);
        assert_eq!(state.status("job-1").await.unwrap(), JobStatus::Queued);
        assert_eq!(
            state.field("job-1", "kind").await.unwrap().as_deref(),
            Some("inference")
        );
        assert_eq!(state.field("job-1", "nothing").await.unwrap(), None);
        assert_eq!(
            state.active_jobs().await.unwrap(),
            vec!["job-1".to_string()]
        );
        assert!(matches!(state.get("job-2").await, Err(StateError::NotFound(id)) if id == "job-2"));
        assert!(matches!(
            state.status("job-2").await,
            Err(StateError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn one_running_job_per_output_folder() {
        let state = TestStore::new().await;
        let spec = spec_json();
        let first = state
            .create_job(new_job("a", "s3://b/out/", &spec, None))
            .await;
        assert_eq!(first.unwrap(), Created::New("a".into()));
        let second = state
            .create_job(new_job("b", "s3://b/out/", &spec, None))
            .await;
        assert_eq!(second.unwrap(), Created::OutputInUse("a".into()));
        assert!(matches!(state.get("b").await, Err(StateError::NotFound(_))));
        // Once the first has ended, the folder is free again.
        let cancelled = state.move_to("a", JobStatus::Cancelled, &[]).await.unwrap();
        assert_eq!(cancelled, Transition::Moved(JobStatus::Queued));
        let third = state
            .create_job(new_job("c", "s3://b/out/", &spec, None))
            .await;
        assert_eq!(third.unwrap(), Created::New("c".into()));
        assert_eq!(state.active_jobs().await.unwrap(), vec!["c".to_string()]);
    }

    #[tokio::test]
    async fn transitions_follow_the_state_machine_and_refuse_the_rest() {
        let state = TestStore::new().await;
        let spec = spec_json();
        state
            .create_job(new_job("j", "s3://b/o/", &spec, None))
            .await
            .unwrap();
        // Queued cannot jump to succeeded: refused, naming where the job is, nothing set.
        let refused = state
            .move_to("j", JobStatus::Succeeded, &[("error", "x".into())])
            .await
            .unwrap();
        assert_eq!(refused, Transition::Refused(JobStatus::Queued));
        assert_eq!(state.status("j").await.unwrap(), JobStatus::Queued);
        assert_eq!(state.field("j", "error").await.unwrap(), None);
        let explicit = state
            .transition("j", &[JobStatus::Running], JobStatus::Failed, &[])
            .await
            .unwrap();
        assert_eq!(explicit, Transition::Refused(JobStatus::Queued));

        let planning = state
            .move_to("j", JobStatus::Planning, &[("started_ms", "5".into())])
            .await
            .unwrap();
        assert_eq!(planning, Transition::Moved(JobStatus::Queued));
        assert_eq!(state.get("j").await.unwrap().started_ms, Some(5));
        let running = state.move_to("j", JobStatus::Running, &[]).await.unwrap();
        assert_eq!(running, Transition::Moved(JobStatus::Planning));
        let failed = state
            .move_to("j", JobStatus::Failed, &[("error", "disk full".into())])
            .await
            .unwrap();
        assert_eq!(failed, Transition::Moved(JobStatus::Running));
        let job = state.get("j").await.unwrap();
        assert_eq!(
            (job.status, job.error.as_deref()),
            (JobStatus::Failed, Some("disk full"))
        );
        assert!(state.active_jobs().await.unwrap().is_empty());
        // An ended job stays ended.
        let again = state.move_to("j", JobStatus::Running, &[]).await.unwrap();
        assert_eq!(again, Transition::Refused(JobStatus::Failed));
        assert!(matches!(
            state.move_to("nope", JobStatus::Planning, &[]).await,
            Err(StateError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_discarded_job_leaves_no_trace_but_its_final_event() {
        let state = TestStore::new().await;
        let spec = spec_json();
        state
            .create_job(new_job("d", "s3://b/o/", &spec, Some("key-d")))
            .await
            .unwrap();
        state
            .discard_job("d", "s3://b/o/", Some("key-d"), "broker down")
            .await
            .unwrap();
        assert!(matches!(state.get("d").await, Err(StateError::NotFound(_))));
        assert!(state.active_jobs().await.unwrap().is_empty());
        assert_eq!(state.job_for_idempotency_key("key-d").await.unwrap(), None);
        let events = state.unpublished_events(10).await.unwrap();
        let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(names, ["job.submitted", "job.failed"]);
        assert!(events[1].body.contains("broker down"), "{}", events[1].body);
        // Only the outbox stream is left; the submission can be sent again.
        let prefix_len = state.keys()[0].find(':').unwrap() + 1;
        let left: Vec<String> = state
            .keys()
            .iter()
            .map(|k| k[prefix_len..].into())
            .collect();
        assert_eq!(left, ["events"]);
        let again = state
            .create_job(new_job("d2", "s3://b/o/", &spec, Some("key-d")))
            .await;
        assert_eq!(again.unwrap(), Created::New("d2".into()));
    }
}
