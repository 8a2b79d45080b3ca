//! Shard leases: one worker owns an inference shard at a time, through a fenced Redis lease
//! with a TTL, plus an owner record that outlives the lease until the shard is committed or
//! handed back (so the sweeper can find shards whose owner died).

use std::collections::HashMap;

use redis::AsyncCommands;

use super::{Lease, StateError, StateStore, scripts};

impl StateStore {
    /// Takes the shard's lease for `ttl_ms` if nobody holds it; the lease carries a fencing
    /// token greater than any earlier holder's of this shard, and the shard is recorded as
    /// owned by that token.
    pub async fn acquire_shard_lease(
        &self,
        id: &str,
        shard: u32,
        owner: &str,
        ttl_ms: u64,
    ) -> Result<Option<Lease>, StateError> {
        let mut conn = self.conn.clone();
        let token: u64 = scripts::ACQUIRE_SHARD_LEASE
            .key(self.keys.shard_lease(id, shard))
            .key(self.keys.shard_fences(id))
            .key(self.keys.shard_owners(id))
            .arg(owner)
            .arg(ttl_ms)
            .arg(shard)
            .invoke_async(&mut conn)
            .await?;
        Ok((token > 0).then(|| Lease {
            owner: owner.to_string(),
            token,
        }))
    }

    /// Extends the shard's lease; false when it was lost (expired, maybe taken by another).
    pub async fn renew_shard_lease(
        &self,
        id: &str,
        shard: u32,
        lease: &Lease,
        ttl_ms: u64,
    ) -> Result<bool, StateError> {
        let mut conn = self.conn.clone();
        let renewed: i64 = scripts::RENEW_JOB_LEASE
            .key(self.keys.shard_lease(id, shard))
            .arg(lease.holder())
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(renewed == 1)
    }

    /// Gives the shard's lease up, if still held. With `disown` the shard's owner record goes
    /// too (the shard is committed, ended, or its task is queued again): leave it when
    /// nothing is queued, so the sweeper queues the shard again.
    pub async fn release_shard_lease(
        &self,
        id: &str,
        shard: u32,
        lease: &Lease,
        disown: bool,
    ) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: i64 = scripts::RELEASE_SHARD_LEASE
            .key(self.keys.shard_lease(id, shard))
            .key(self.keys.shard_owners(id))
            .arg(lease.holder())
            .arg(shard)
            .arg(lease.token)
            .arg(if disown { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Drops the shard's owner record while it still names `token` (its task was queued
    /// again); a newer owner's record is left alone.
    pub async fn disown_shard(&self, id: &str, shard: u32, token: u64) -> Result<(), StateError> {
        let lease = Lease {
            owner: String::new(),
            token,
        };
        // The lease key cannot hold this empty-owner holder: only the owner record goes.
        self.release_shard_lease(id, shard, &lease, true).await
    }

    /// Shards recorded as owned (shard → owner's fencing token), in shard order: running, or
    /// left behind by an owner that died or could not queue the shard again.
    pub async fn owned_shards(&self, id: &str) -> Result<Vec<(u32, u64)>, StateError> {
        let mut conn = self.conn.clone();
        let raw: HashMap<u32, u64> = conn.hgetall(self.keys.shard_owners(id)).await?;
        let mut owned: Vec<(u32, u64)> = raw.into_iter().collect();
        owned.sort_unstable();
        Ok(owned)
    }

    /// Whether any worker holds the shard's lease now.
    pub async fn shard_lease_held(&self, id: &str, shard: u32) -> Result<bool, StateError> {
        let mut conn = self.conn.clone();
        Ok(conn.exists(self.keys.shard_lease(id, shard)).await?)
    }

    /// How many times each shard was leased (shard → latest fencing token).
    pub async fn shard_lease_counts(&self, id: &str) -> Result<HashMap<u32, u64>, StateError> {
        let mut conn = self.conn.clone();
        Ok(conn.hgetall(self.keys.shard_fences(id)).await?)
    }
}
