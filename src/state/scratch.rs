//! Dropping a scratch namespace: `sluice bench` runs real jobs under a `bench-*` prefix of its
//! own and removes every trace of them afterwards.

use redis::AsyncCommands;

use super::{StateError, StateStore};

/// The prefix every scratch namespace starts with (what `sluice bench` uses).
const SCRATCH_PREFIX: &str = "bench-";

impl StateStore {
    /// Deletes every key of this store's namespace, and returns how many went. Only for the
    /// throw-away `bench-*` namespace of `sluice bench`: on any other prefix it deletes
    /// nothing (and says so), so it can never wipe a service's real jobs.
    pub async fn drop_bench_namespace(&self) -> Result<u64, StateError> {
        if !self.keys.prefix().starts_with(SCRATCH_PREFIX) {
            tracing::warn!(
                prefix = self.keys.prefix(),
                "not a `{SCRATCH_PREFIX}*` scratch namespace; left as it is"
            );
            return Ok(0);
        }
        let mut conn = self.conn.clone();
        let keys: Vec<String> = {
            let mut iter: redis::AsyncIter<String> =
                conn.scan_match(self.keys.everything()).await?;
            let mut keys = Vec::new();
            while let Some(key) = futures::StreamExt::next(&mut iter).await {
                keys.push(key?);
            }
            keys
        };
        for batch in keys.chunks(500) {
            let _: () = conn.del(batch).await?;
        }
        Ok(keys.len() as u64)
    }
}
