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
            .arg(commit.bytes)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| {
                if e.code() == Some("NOTFOUND") {
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

#[cfg(test)]
mod tests {
    use crate::job::JobStatus;
    use crate::state::test_store::TestStore;
    use crate::state::{ShardCommit, StateError};

    fn commit(shard: u32, rows: u64, failed_rows: u64) -> ShardCommit {
        ShardCommit {
            shard,
            part: format!("s3://b/out/part-{shard:05}.jsonl"),
            rows,
            failed_rows,
            errors_part: None,
            seconds: 1.5,
            worker: "host-1".into(),
            pieces: Vec::new(),
            truncated_rows: 1,
            ids_part: None,
            bytes: 10,
        }
    }

    #[tokio::test]
    async fn a_shard_committed_twice_counts_once_and_the_last_finishes() {
        let state = TestStore::new().await;
        let id = state.running_job(2).await;
        let first = state.commit_shard(&id, &commit(1, 10, 2)).await.unwrap();
        assert!(first.newly_committed);
        assert_eq!((first.shards_done, first.shards_total), (1, 2));
        assert_eq!(first.status, JobStatus::Running);
        assert!(!first.all_done());
        // A redelivery of the same shard changes nothing.
        let again = state.commit_shard(&id, &commit(1, 10, 2)).await.unwrap();
        assert!(!again.newly_committed);
        assert_eq!((again.shards_done, again.all_done()), (1, false));
        assert!(state.is_shard_committed(&id, 1).await.unwrap());
        assert!(!state.is_shard_committed(&id, 0).await.unwrap());

        let last = state.commit_shard(&id, &commit(0, 5, 0)).await.unwrap();
        assert!(last.newly_committed && last.all_done());
        assert_eq!(last.shards_done, 2);
        let job = state.get(&id).await.unwrap();
        assert_eq!(
            (job.shards_done, job.rows_done, job.rows_failed),
            (2, 15, 2)
        );
        assert_eq!(job.rows_truncated, 2);
        let commits = state.committed_shards(&id).await.unwrap();
        assert_eq!(commits, vec![commit(0, 5, 0), commit(1, 10, 2)]);
    }

    #[tokio::test]
    async fn only_a_running_job_counts_commits() {
        let state = TestStore::new().await;
        let id = state.running_job(1).await;
        state.move_to(&id, JobStatus::Cancelled, &[]).await.unwrap();
        let late = state.commit_shard(&id, &commit(0, 3, 0)).await.unwrap();
        assert!(!late.newly_committed);
        assert_eq!((late.shards_done, late.status), (0, JobStatus::Cancelled));
        assert!(state.committed_shards(&id).await.unwrap().is_empty());
        // A commit for a job that does not exist is `NotFound` (permanent), not an outage
        // to retry: the script's error code says which.
        let missing = state.commit_shard("no-such-job", &commit(0, 1, 0)).await;
        assert!(
            matches!(missing, Err(StateError::NotFound(ref id)) if id == "no-such-job"),
            "{missing:?}"
        );
    }

    #[tokio::test]
    async fn live_rows_show_in_flight_until_the_shard_commits() {
        let state = TestStore::new().await;
        let id = state.running_job(3).await;
        assert_eq!(state.live_rows(&id, 0).await.unwrap(), None);
        state.set_live_rows(&id, 0, 7).await.unwrap();
        state.set_live_rows(&id, 1, 4).await.unwrap();
        assert_eq!(state.live_rows(&id, 0).await.unwrap(), Some(7));
        let job = state.get(&id).await.unwrap();
        assert_eq!(job.rows_in_flight, 11);
        assert!(job.progress_ms.is_some());
        state.clear_live_rows(&id, 1).await.unwrap();
        assert_eq!(state.live_rows(&id, 1).await.unwrap(), None);
        // Committing a shard drops its live count.
        state.commit_shard(&id, &commit(0, 7, 0)).await.unwrap();
        assert_eq!(state.live_rows(&id, 0).await.unwrap(), None);
        assert_eq!(state.get(&id).await.unwrap().rows_in_flight, 0);
    }
}
