//! Job leases: one owner of a long-running job at a time, fenced by a token that grows with
//! every holder, guarding its checkpoint pointer; and the sweeper's exclusive turn.

use redis::AsyncCommands;

use super::{StateError, StateStore, scripts};

/// Ownership of a long-running job (training): held while renewed, with a fencing token
/// that grows with every new holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub token: u64,
}

impl Lease {
    pub(super) fn holder(&self) -> String {
        format!("{} {}", self.owner, self.token)
    }
}

impl StateStore {
    /// Takes the job's lease for `ttl_ms` if nobody holds it; the lease carries a fencing
    /// token greater than any earlier holder's.
    pub async fn acquire_job_lease(
        &self,
        id: &str,
        owner: &str,
        ttl_ms: u64,
    ) -> Result<Option<Lease>, StateError> {
        let mut conn = self.conn.clone();
        let token: u64 = scripts::ACQUIRE_JOB_LEASE
            .key(self.keys.job_lease(id))
            .key(self.keys.job_fence(id))
            .arg(owner)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok((token > 0).then(|| Lease {
            owner: owner.to_string(),
            token,
        }))
    }

    /// Extends the lease; false when it was lost (expired, and maybe taken by another).
    pub async fn renew_job_lease(
        &self,
        id: &str,
        lease: &Lease,
        ttl_ms: u64,
    ) -> Result<bool, StateError> {
        let mut conn = self.conn.clone();
        let renewed: i64 = scripts::RENEW_JOB_LEASE
            .key(self.keys.job_lease(id))
            .arg(lease.holder())
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(renewed == 1)
    }

    /// Gives the lease up (the job was handed back or ended), if still held.
    pub async fn release_job_lease(&self, id: &str, lease: &Lease) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: i64 = scripts::RELEASE_LEASE
            .key(self.keys.job_lease(id))
            .arg(lease.holder())
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Whether any worker holds the job's lease now.
    pub async fn job_lease_held(&self, id: &str) -> Result<bool, StateError> {
        let mut conn = self.conn.clone();
        Ok(conn.exists(self.keys.job_lease(id)).await?)
    }

    /// The latest fencing token handed out for the job: how many times it was leased.
    pub async fn job_lease_count(&self, id: &str) -> Result<u64, StateError> {
        let mut conn = self.conn.clone();
        let count: Option<u64> = conn.get(self.keys.job_fence(id)).await?;
        Ok(count.unwrap_or(0))
    }

    /// Points the job at a new checkpoint, only while `lease` is held: a stale owner that
    /// lost its lease cannot move the pointer (fencing). False when refused.
    pub async fn commit_checkpoint(
        &self,
        id: &str,
        lease: &Lease,
        pointer: &str,
    ) -> Result<bool, StateError> {
        let mut conn = self.conn.clone();
        let committed: i64 = scripts::COMMIT_CHECKPOINT
            .key(self.keys.job_lease(id))
            .key(self.keys.checkpoint(id))
            .arg(lease.holder())
            .arg(pointer)
            .invoke_async(&mut conn)
            .await?;
        Ok(committed == 1)
    }

    /// The job's latest committed checkpoint pointer, if any.
    pub async fn checkpoint_pointer(&self, id: &str) -> Result<Option<String>, StateError> {
        let mut conn = self.conn.clone();
        Ok(conn.get(self.keys.checkpoint(id)).await?)
    }

    /// Takes the sweeper's turn for `ttl_secs`: true for exactly one caller at a time.
    pub async fn take_sweeper_turn(&self, owner: &str, ttl_secs: u64) -> Result<bool, StateError> {
        let mut conn = self.conn.clone();
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.keys.sweeper())
            .arg(owner)
            .arg("NX")
            .arg("EX")
            .arg(ttl_secs.max(1))
            .query_async(&mut conn)
            .await?;
        Ok(taken.is_some())
    }
}

#[cfg(test)]
mod tests {
    use crate::state::test_store::TestStore;

    #[tokio::test]
    async fn a_job_lease_has_one_holder_and_fences_out_a_stale_one() {
        let state = TestStore::new().await;
        assert!(!state.job_lease_held("j").await.unwrap());
        assert_eq!(state.job_lease_count("j").await.unwrap(), 0);
        let a = state
            .acquire_job_lease("j", "worker-a", 60_000)
            .await
            .unwrap();
        let a = a.expect("a free lease is taken");
        assert_eq!((a.owner.as_str(), a.token), ("worker-a", 1));
        // A second owner cannot take a held lease.
        let b = state
            .acquire_job_lease("j", "worker-b", 60_000)
            .await
            .unwrap();
        assert_eq!(b, None);
        assert!(state.renew_job_lease("j", &a, 60_000).await.unwrap());
        assert!(state.commit_checkpoint("j", &a, "ckpt-1").await.unwrap());
        assert!(state.job_lease_held("j").await.unwrap());

        state.release_job_lease("j", &a).await.unwrap();
        assert!(!state.job_lease_held("j").await.unwrap());
        let b = state
            .acquire_job_lease("j", "worker-b", 60_000)
            .await
            .unwrap();
        let b = b.expect("a released lease is free");
        assert_eq!(b.token, 2, "each holder gets a greater token");
        // The stale holder can neither renew, checkpoint nor release.
        assert!(!state.renew_job_lease("j", &a, 60_000).await.unwrap());
        assert!(
            !state
                .commit_checkpoint("j", &a, "ckpt-stale")
                .await
                .unwrap()
        );
        state.release_job_lease("j", &a).await.unwrap();
        assert!(state.job_lease_held("j").await.unwrap());
        assert_eq!(
            state.checkpoint_pointer("j").await.unwrap().as_deref(),
            Some("ckpt-1")
        );
        assert!(state.commit_checkpoint("j", &b, "ckpt-2").await.unwrap());
        assert_eq!(
            state.checkpoint_pointer("j").await.unwrap().as_deref(),
            Some("ckpt-2")
        );
        assert_eq!(state.job_lease_count("j").await.unwrap(), 2);
        // The same owner name with an old token is still stale.
        let old_b = crate::state::Lease {
            owner: "worker-b".into(),
            token: 1,
        };
        assert!(!state.renew_job_lease("j", &old_b, 60_000).await.unwrap());
        // Leases are per job.
        let other = state
            .acquire_job_lease("k", "worker-a", 60_000)
            .await
            .unwrap();
        assert_eq!(other.map(|l| l.token), Some(1));
    }

    #[tokio::test]
    async fn the_sweepers_turn_goes_to_one_caller_at_a_time() {
        let state = TestStore::new().await;
        assert!(state.take_sweeper_turn("sweeper-1", 60).await.unwrap());
        assert!(!state.take_sweeper_turn("sweeper-2", 60).await.unwrap());
        // Not even the holder takes it twice within its turn.
        assert!(!state.take_sweeper_turn("sweeper-1", 60).await.unwrap());
        let ttl = state.ttl_secs("sweeper");
        assert!((1..=60).contains(&ttl), "ttl {ttl}");
        // A zero TTL still expires (never a turn held forever).
        let other = TestStore::new().await;
        assert!(other.take_sweeper_turn("sweeper-1", 0).await.unwrap());
        assert!((0..=1).contains(&other.ttl_secs("sweeper")));
    }
}
