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
