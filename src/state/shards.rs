//! Shard progress: each shard's output committed exactly once with its row counts, and the
//! live row counts of shards still running.

use std::collections::HashMap;

use redis::AsyncCommands;

use super::{ShardCommit, StateError, StateStore, now_ms, scripts};
use crate::job::JobStatus;

/// At most one `job.progress` event per job per this interval (plus one for the last shard).
const PROGRESS_EVENT_INTERVAL_MS: u64 = 1000;

/// Outcome of committing one shard's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitOutcome {
    /// False when the shard had already been committed (a redelivery).
    pub newly_committed: bool,
    pub shards_done: u64,
    pub shards_total: u64,
    pub status: JobStatus,
}

impl CommitOutcome {
    pub fn all_done(&self) -> bool {
        self.shards_total > 0 && self.shards_done >= self.shards_total
    }
}

impl StateStore {
    /// Records a shard's committed output exactly once and counts its rows; the caller that
    /// sees `all_done()` finishes the job.
    pub async fn commit_shard(
        &self,
        id: &str,
        commit: &ShardCommit,
    ) -> Result<CommitOutcome, StateError> {
        let mut conn = self.conn.clone();
        let record = serde_json::to_string(commit).expect("shard commit serialises");
        let (newly, done, total, status): (i64, u64, u64, String) = scripts::COMMIT_SHARD
            .key(self.keys.job(id))
            .key(self.keys.shards(id))
            .key(self.keys.live(id))
            .key(self.keys.events())
            .arg(commit.shard)
            .arg(record)
            .arg(commit.rows)
            .arg(commit.failed_rows)
            .arg(now_ms())
            .arg(PROGRESS_EVENT_INTERVAL_MS)
            .arg(commit.truncated_rows)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| {
                if e.to_string().contains("no such job") {
                    StateError::NotFound(id.to_string())
                } else {
                    StateError::Unavailable(e)
                }
            })?;
        let status = JobStatus::parse(&status).ok_or_else(|| StateError::Corrupt {
            id: id.to_string(),
            reason: format!("unknown status `{status}`"),
        })?;
        Ok(CommitOutcome {
            newly_committed: newly == 1,
            shards_done: done,
            shards_total: total,
            status,
        })
    }

    /// Every committed shard, in shard order.
    pub async fn committed_shards(&self, id: &str) -> Result<Vec<ShardCommit>, StateError> {
        let mut conn = self.conn.clone();
        let raw: HashMap<String, String> = conn.hgetall(self.keys.shards(id)).await?;
        let mut commits = raw
            .values()
            .map(|json| {
                serde_json::from_str::<ShardCommit>(json).map_err(|e| StateError::Corrupt {
                    id: id.to_string(),
                    reason: format!("shard record: {e}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        commits.sort_by_key(|c| c.shard);
        Ok(commits)
    }

    pub async fn is_shard_committed(&self, id: &str, shard: u32) -> Result<bool, StateError> {
        let mut conn = self.conn.clone();
        Ok(conn.hexists(self.keys.shards(id), shard).await?)
    }

    /// Rows a shard has processed so far but not yet committed (live progress).
    /// Records a running shard's progress (and that the job is alive).
    pub async fn set_live_rows(&self, id: &str, shard: u32, rows: u64) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: () = redis::pipe()
            .hset(self.keys.live(id), shard, rows)
            .hset(self.keys.job(id), "progress_ms", now_ms())
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Rows a running shard has reported so far (`None` before its first chunk).
    pub async fn live_rows(&self, id: &str, shard: u32) -> Result<Option<u64>, StateError> {
        let mut conn = self.conn.clone();
        Ok(conn.hget(self.keys.live(id), shard).await?)
    }

    pub async fn clear_live_rows(&self, id: &str, shard: u32) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: () = conn.hdel(self.keys.live(id), shard).await?;
        Ok(())
    }
}
