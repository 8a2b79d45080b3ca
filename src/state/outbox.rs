//! The event outbox: job events written atomically with each state change, read by one relay
//! at a time (under a lease) and dropped once published.

use redis::AsyncCommands;

use super::{StateError, StateStore, scripts};

/// One job event as stored in the outbox stream, waiting to be published.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The stream entry id: the relay's cursor.
    pub id: String,
    /// `job.<state>`, the routing key.
    pub event: String,
    pub job_id: String,
    pub seq: u64,
    /// Empty when the submitter asked for no replies.
    pub reply_to: String,
    /// The event's JSON body (see `job::JobEvent`).
    pub body: String,
}

impl StateStore {
    /// Events not yet published: after the relay's cursor, oldest first, at most `count`.
    pub async fn unpublished_events(&self, count: usize) -> Result<Vec<StoredEvent>, StateError> {
        let mut conn = self.conn.clone();
        let cursor: Option<String> = conn.get(self.keys.events_cursor()).await?;
        let start = match cursor {
            Some(id) => format!("({id}"),
            None => "-".to_string(),
        };
        let reply: redis::streams::StreamRangeReply = conn
            .xrange_count(self.keys.events(), start, "+", count)
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .map(|entry| {
                let text = |name: &str| entry.get::<String>(name).unwrap_or_default();
                StoredEvent {
                    event: text("event"),
                    job_id: text("job"),
                    seq: entry.get::<u64>("seq").unwrap_or(0),
                    reply_to: text("reply_to"),
                    body: text("body"),
                    id: entry.id,
                }
            })
            .collect())
    }

    /// Records that every event up to `id` is published and drops them from the stream;
    /// refused (false) when `owner` no longer holds the relay lease, so a stalled relay
    /// that lost its lease cannot move the cursor under the new one.
    pub async fn mark_events_published(&self, owner: &str, id: &str) -> Result<bool, StateError> {
        let mut conn = self.conn.clone();
        let moved: i64 = scripts::ADVANCE_EVENT_CURSOR
            .key(self.keys.events_relay())
            .key(self.keys.events_cursor())
            .key(self.keys.events())
            .arg(owner)
            .arg(id)
            .invoke_async(&mut conn)
            .await?;
        Ok(moved == 1)
    }

    /// Takes or renews the event relay's lease for `ttl_ms`: true while `owner` holds it.
    pub async fn hold_event_relay(&self, owner: &str, ttl_ms: u64) -> Result<bool, StateError> {
        let mut conn = self.conn.clone();
        let held: i64 = scripts::HOLD_LEASE
            .key(self.keys.events_relay())
            .arg(owner)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    /// Gives the relay lease up (on shutdown), if `owner` holds it.
    pub async fn release_event_relay(&self, owner: &str) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: i64 = scripts::RELEASE_LEASE
            .key(self.keys.events_relay())
            .arg(owner)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::job::JobStatus;
    use crate::state::test_store::{TestStore, new_job, spec_json};

    #[tokio::test]
    async fn events_wait_in_the_outbox_until_the_lease_holder_marks_them() {
        let state = TestStore::new().await;
        let spec = spec_json();
        state
            .create_job(new_job("e", "s3://b/o/", &spec, None))
            .await
            .unwrap();
        let waiting = state.unpublished_events(10).await.unwrap();
        assert_eq!(waiting.len(), 1);
        let submitted = &waiting[0];
        assert_eq!(
            (submitted.event.as_str(), submitted.job_id.as_str()),
            ("job.submitted", "e")
        );
        assert_eq!((submitted.seq, submitted.reply_to.as_str()), (1, ""));
        let body: serde_json::Value = serde_json::from_str(&submitted.body).unwrap();
        assert_eq!(body["status"], "queued");
        assert_eq!(body["job_id"], "e");

        // Only the relay lease's holder moves the cursor.
        assert!(
            !state
                .mark_events_published("relay-a", &submitted.id)
                .await
                .unwrap()
        );
        assert!(state.hold_event_relay("relay-a", 60_000).await.unwrap());
        assert!(!state.hold_event_relay("relay-b", 60_000).await.unwrap());
        assert!(
            !state
                .mark_events_published("relay-b", &submitted.id)
                .await
                .unwrap()
        );
        assert_eq!(state.unpublished_events(10).await.unwrap().len(), 1);
        assert!(
            state
                .mark_events_published("relay-a", &submitted.id)
                .await
                .unwrap()
        );
        assert!(state.unpublished_events(10).await.unwrap().is_empty());

        // The next change's event comes after the cursor, numbered on.
        state.move_to("e", JobStatus::Planning, &[]).await.unwrap();
        state.move_to("e", JobStatus::Running, &[]).await.unwrap();
        let next = state.unpublished_events(10).await.unwrap();
        let seen: Vec<(&str, u64)> = next.iter().map(|e| (e.event.as_str(), e.seq)).collect();
        assert_eq!(seen, [("job.started", 2), ("job.progress", 3)]);
        assert_eq!(
            state.unpublished_events(1).await.unwrap(),
            next[..1].to_vec()
        );
    }

    #[tokio::test]
    async fn the_relay_lease_is_held_by_one_and_released_only_by_it() {
        let state = TestStore::new().await;
        assert!(state.hold_event_relay("a", 60_000).await.unwrap());
        // Renewing one's own lease succeeds.
        assert!(state.hold_event_relay("a", 60_000).await.unwrap());
        state.release_event_relay("b").await.unwrap();
        assert!(!state.hold_event_relay("b", 60_000).await.unwrap());
        state.release_event_relay("a").await.unwrap();
        assert!(state.hold_event_relay("b", 60_000).await.unwrap());
        assert!(!state.hold_event_relay("a", 60_000).await.unwrap());
    }
}
