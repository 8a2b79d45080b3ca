//! Idempotency: which job a submission's idempotency key names, and which rejected
//! submissions are already kept, both for the idempotency window.

use redis::AsyncCommands;

use super::{StateError, StateStore, now_ms};

/// How long an idempotency key (and a kept rejection) is remembered.
pub(super) const IDEMPOTENCY_TTL_SECS: u64 = 7 * 24 * 3600;

impl StateStore {
    /// The job an idempotency key names, if any (the drop folder asks before submitting).
    pub async fn job_for_idempotency_key(&self, key: &str) -> Result<Option<String>, StateError> {
        let mut conn = self.conn.clone();
        Ok(conn.get(self.keys.idempotency(key)).await?)
    }

    /// Whether a rejected submission (`key` from the submission consumer) is already kept.
    pub async fn rejection_kept(&self, key: &str) -> Result<bool, StateError> {
        let mut conn = self.conn.clone();
        Ok(conn.exists(self.keys.rejected(key)).await?)
    }

    /// Remembers (for the idempotency window) that a rejected submission is kept.
    pub async fn record_rejection(&self, key: &str) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: () = conn
            .set_ex(self.keys.rejected(key), now_ms(), IDEMPOTENCY_TTL_SECS)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::IDEMPOTENCY_TTL_SECS;
    use crate::state::Created;
    use crate::state::test_store::{TestStore, new_job, spec_json};

    #[tokio::test]
    async fn an_idempotency_key_names_one_job_for_the_window() {
        let state = TestStore::new().await;
        let spec = spec_json();
        assert_eq!(state.job_for_idempotency_key("k").await.unwrap(), None);
        let first = state
            .create_job(new_job("a", "s3://b/1/", &spec, Some("k")))
            .await;
        assert_eq!(first.unwrap(), Created::New("a".into()));
        // The same submission again (even with a new id and folder) is the same job.
        let again = state
            .create_job(new_job("b", "s3://b/2/", &spec, Some("k")))
            .await;
        assert_eq!(again.unwrap(), Created::Existing("a".into()));
        assert_eq!(state.active_jobs().await.unwrap(), vec!["a".to_string()]);
        assert_eq!(
            state.job_for_idempotency_key("k").await.unwrap().as_deref(),
            Some("a")
        );
        assert_eq!(
            state.get("a").await.unwrap().spec.name,
            "rotten-tomatoes-embed"
        );
        let ttl = state.ttl_secs("idem:k");
        assert!(ttl > 0 && ttl <= IDEMPOTENCY_TTL_SECS as i64, "ttl {ttl}");
        // Another key is another job.
        let other = state
            .create_job(new_job("c", "s3://b/3/", &spec, Some("k2")))
            .await;
        assert_eq!(other.unwrap(), Created::New("c".into()));
    }

    #[tokio::test]
    async fn a_kept_rejection_is_remembered_per_key() {
        let state = TestStore::new().await;
        assert!(!state.rejection_kept("r1").await.unwrap());
        state.record_rejection("r1").await.unwrap();
        assert!(state.rejection_kept("r1").await.unwrap());
        assert!(!state.rejection_kept("r2").await.unwrap());
        let ttl = state.ttl_secs("rejected:r1");
        assert!(ttl > IDEMPOTENCY_TTL_SECS as i64 - 60, "ttl {ttl}");
        // Rejections and idempotency keys are separate names.
        assert_eq!(state.job_for_idempotency_key("r1").await.unwrap(), None);
    }
}
