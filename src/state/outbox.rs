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
