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

#[cfg(test)]
mod tests {
    use crate::state::test_store::TestStore;

    #[tokio::test]
    async fn only_a_bench_namespace_is_dropped() {
        let kept = TestStore::new().await;
        kept.record_rejection("r").await.unwrap();
        assert_eq!(kept.drop_bench_namespace().await.unwrap(), 0);
        assert_eq!(kept.keys().len(), 1, "a non-bench namespace is left alone");

        let bench = TestStore::with_prefix_start("bench-unit-").await;
        bench.record_rejection("r").await.unwrap();
        bench.take_sweeper_turn("s", 60).await.unwrap();
        assert_eq!(bench.drop_bench_namespace().await.unwrap(), 2);
        assert!(bench.keys().is_empty());
    }
}
