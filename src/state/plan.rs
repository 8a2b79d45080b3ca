//! A job's plan: the shard tasks it was cut into and what planning found in each input, kept
//! so redeliveries and the sweeper re-publish the same shards and the finisher can reconcile.

use std::collections::HashMap;

use redis::AsyncCommands;

use super::{StateError, StateStore};
use crate::job::accounting::PlannedObject;

impl StateStore {
    /// Stores the job's shard tasks (index → task JSON), so a redelivered plan and the
    /// sweeper re-publish exactly the same shards instead of cutting the input again.
    pub async fn save_plan(&self, id: &str, tasks: &[String]) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic().del(self.keys.plan(id));
        for (index, task) in tasks.iter().enumerate() {
            pipe.hset(self.keys.plan(id), index, task);
        }
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// The stored shard tasks, in shard order (empty when none was stored).
    pub async fn plan(&self, id: &str) -> Result<Vec<(u32, String)>, StateError> {
        let mut conn = self.conn.clone();
        let raw: HashMap<u32, String> = conn.hgetall(self.keys.plan(id)).await?;
        let mut tasks: Vec<(u32, String)> = raw.into_iter().collect();
        tasks.sort_by_key(|(index, _)| *index);
        Ok(tasks)
    }

    /// Stores what planning found in each input object (for the finisher's reconciliation).
    pub async fn save_inputs(&self, id: &str, objects: &[PlannedObject]) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let json = serde_json::to_string(objects).expect("planned objects serialise");
        let _: () = conn.set(self.keys.inputs(id), json).await?;
        Ok(())
    }

    /// What planning found in each input object; `None` for jobs planned by older versions.
    pub async fn inputs(&self, id: &str) -> Result<Option<Vec<PlannedObject>>, StateError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = conn.get(self.keys.inputs(id)).await?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| StateError::Corrupt {
                id: id.to_string(),
                reason: format!("planned inputs: {e}"),
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use crate::job::accounting::PlannedObject;
    use crate::state::test_store::TestStore;

    #[tokio::test]
    async fn a_saved_plan_reads_back_in_shard_order_and_replaces_the_last() {
        let state = TestStore::new().await;
        assert!(state.plan("j").await.unwrap().is_empty());
        let tasks: Vec<String> = (0..12).map(|i| format!("{{\"shard\":{i}}}")).collect();
        state.save_plan("j", &tasks).await.unwrap();
        let plan = state.plan("j").await.unwrap();
        assert_eq!(plan.len(), 12);
        assert_eq!(plan[10], (10, "{\"shard\":10}".to_string()));
        assert!(
            plan.iter()
                .enumerate()
                .all(|(i, (index, _))| *index as usize == i)
        );
        state.save_plan("j", &tasks[..2]).await.unwrap();
        assert_eq!(state.plan("j").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn planned_inputs_are_absent_until_saved() {
        let state = TestStore::new().await;
        assert_eq!(state.inputs("j").await.unwrap(), None);
        let objects = vec![PlannedObject {
            uri: "s3://b/in/a.jsonl".into(),
            etag: "\"abc\"".into(),
            bytes: 1234,
            records: 10,
            blank: 1,
            ..PlannedObject::default()
        }];
        state.save_inputs("j", &objects).await.unwrap();
        assert_eq!(state.inputs("j").await.unwrap(), Some(objects));
    }
}
