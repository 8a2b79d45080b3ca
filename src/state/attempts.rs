//! Per-task attempt counts: how often a task was started and how often it failed by its own
//! error, so a worker that vanished (killed, evicted, disconnected) is told apart from a
//! task that failed.

use redis::AsyncCommands;

use super::{StateError, StateStore};

/// What the state store knows of one task's past runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attempts {
    /// Runs started, this one included; clean hand-backs are taken back.
    pub started: u64,
    /// Runs that ended in an error the task itself raised.
    pub failed: u64,
}

impl Attempts {
    /// Earlier runs that ended without any answer: their worker vanished mid-task. Every
    /// started run but this one either failed (counted), finished (the task would not run
    /// again) or was handed back (taken back), so the rest vanished.
    pub fn vanished(&self) -> u64 {
        self.started.saturating_sub(self.failed + 1)
    }
}

impl StateStore {
    /// The hash field of a task's failures; its starts live under the task key itself.
    fn failed_field(task_key: &str) -> String {
        format!("{task_key}:failed")
    }

    /// Counts the start of a run and returns the counts, this run included. Counted before
    /// the run, so a task that kills its worker is still counted.
    pub async fn count_start(&self, id: &str, task_key: &str) -> Result<Attempts, StateError> {
        let mut conn = self.conn.clone();
        // Signed: a reset racing a take-back can leave the count below zero for a moment.
        let (started, failed): (i64, Option<i64>) = redis::pipe()
            .atomic()
            .hincr(self.keys.attempts(id), task_key, 1)
            .hget(self.keys.attempts(id), Self::failed_field(task_key))
            .query_async(&mut conn)
            .await?;
        Ok(Attempts {
            started: started.max(1) as u64,
            failed: failed.unwrap_or(0).max(0) as u64,
        })
    }

    /// Takes back one counted start: the run never began (its lease was busy, the state
    /// store failed) or was handed back cleanly on shutdown.
    pub async fn uncount_start(&self, id: &str, task_key: &str) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn.hincr(self.keys.attempts(id), task_key, -1).await?;
        Ok(())
    }

    /// Counts a run that failed by its own error; returns the task's failures so far.
    pub async fn count_failure(&self, id: &str, task_key: &str) -> Result<u64, StateError> {
        let mut conn = self.conn.clone();
        let failed: i64 = conn
            .hincr(self.keys.attempts(id), Self::failed_field(task_key), 1)
            .await?;
        Ok(failed.max(1) as u64)
    }

    /// Starts the task's budget afresh, as if this run were its first: a training job that
    /// made progress since proves it neither kills its workers nor fails for good, and a
    /// long job must not die of three transient errors days apart.
    pub async fn start_afresh(&self, id: &str, task_key: &str) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: () = redis::pipe()
            .atomic()
            .hset(self.keys.attempts(id), task_key, 1)
            .ignore()
            .hdel(self.keys.attempts(id), Self::failed_field(task_key))
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Attempts;

    #[test]
    fn vanished_runs_are_the_starts_that_neither_failed_nor_are_running() {
        let first = Attempts {
            started: 1,
            failed: 0,
        };
        assert_eq!(first.vanished(), 0);
        let after_two_kills = Attempts {
            started: 3,
            failed: 0,
        };
        assert_eq!(after_two_kills.vanished(), 2);
        let after_failures = Attempts {
            started: 4,
            failed: 3,
        };
        assert_eq!(after_failures.vanished(), 0);
        let mixed = Attempts {
            started: 6,
            failed: 2,
        };
        assert_eq!(mixed.vanished(), 3);
        // Counts raced by a concurrent hand-back never go negative.
        let raced = Attempts {
            started: 1,
            failed: 2,
        };
        assert_eq!(raced.vanished(), 0);
    }
}
