//! Redis job store: job records, atomic status transitions (Lua), shard commits and progress
//! counters, idempotency keys and per-task attempt counts, all under one key prefix.

mod attempts;
mod keys;
mod observed;
mod record;
mod scripts;
mod shard_lease;

use std::collections::HashMap;

use redis::AsyncCommands;

pub use attempts::Attempts;
pub use record::{JobRecord, ShardCommit};

use crate::health::Health;
use crate::job::JobStatus;
use crate::settings::RedisSettings;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("redis unavailable ({0}); will retry")]
    Unavailable(#[from] redis::RedisError),
    #[error(
        "redis refused the TLS connection ({0}): if a private CA signed its certificate, set redis.tls_ca_file to that CA's PEM file"
    )]
    TlsRefused(String),
    #[error("job {0} not found")]
    NotFound(String),
    #[error(
        "cannot read redis.tls_ca_file {path}: {source}; point it at the PEM file of the CA that signed Redis's certificate, or leave it empty to trust the system's roots"
    )]
    TlsCa {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("job record {id} is corrupt: {reason}")]
    Corrupt { id: String, reason: String },
}

impl StateError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StateError::Unavailable(_))
    }
}

/// A page of jobs, and the records met on the way that could not be read.
#[derive(Debug, Default)]
pub struct JobListing {
    pub jobs: Vec<JobRecord>,
    pub unreadable: Vec<UnreadableJob>,
}

/// A job record that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnreadableJob {
    pub id: String,
    pub reason: String,
}

/// Outcome of a status change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Moved; holds the previous status.
    Moved(JobStatus),
    /// Refused: the job is in this status, from which the move is not allowed.
    Refused(JobStatus),
}

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

/// Outcome of creating a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New(String),
    /// The idempotency key already named this job.
    Existing(String),
    /// This job, not yet ended, writes to the same output folder.
    OutputInUse(String),
}

/// What a new job starts with.
pub struct NewJob<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    /// The output folder, claimed for this job while it runs.
    pub output: &'a str,
    pub name: &'a str,
    pub spec_json: &'a str,
    pub pool: &'a str,
    pub source: &'a str,
    pub idempotency_key: Option<&'a str>,
    /// Where an AMQP submitter wants its replies (job id, then the final status).
    pub reply_to: Option<&'a str>,
    /// The submitter's own id for the submission, echoed in events and replies.
    pub correlation_id: Option<&'a str>,
}

/// Ownership of a long-running job (training): held while renewed, with a fencing token
/// that grows with every new holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub token: u64,
}

impl Lease {
    fn holder(&self) -> String {
        format!("{} {}", self.owner, self.token)
    }
}

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

#[derive(Clone)]
pub struct StateStore {
    conn: observed::Observed,
    keys: keys::Keys,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

const IDEMPOTENCY_TTL_SECS: u64 = 7 * 24 * 3600;

/// At most one `job.progress` event per job per this interval (plus one for the last shard).
const PROGRESS_EVENT_INTERVAL_MS: u64 = 1000;

impl StateStore {
    /// Connects to `redis.url`; a `rediss://` URL connects over TLS, verifying the server
    /// against the system's roots, or against `redis.tls_ca_file` when set.
    pub async fn connect(settings: &RedisSettings, prefix: &str) -> Result<Self, StateError> {
        Self::connect_with_health(settings, prefix, Health::new()).await
    }

    /// Like `connect`, with the deadlines of `redis.*`; commands that time out or cannot
    /// reach Redis are logged, counted and reported into `health` (check `redis`).
    pub async fn connect_with_health(
        settings: &RedisSettings,
        prefix: &str,
        health: Health,
    ) -> Result<Self, StateError> {
        let client = match settings.tls_ca_file.as_str() {
            "" => redis::Client::open(settings.url.as_str())?,
            path => {
                let root_cert = std::fs::read(path).map_err(|source| StateError::TlsCa {
                    path: path.to_string(),
                    source,
                })?;
                redis::Client::build_with_tls(
                    settings.url.as_str(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(root_cert),
                    },
                )?
            }
        };
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_millis(
                settings.connection_timeout_ms,
            )))
            .set_response_timeout(Some(std::time::Duration::from_millis(
                settings.response_timeout_ms,
            )));
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| match e.to_string() {
                text if text.contains("certificate") => StateError::TlsRefused(text),
                _ => StateError::Unavailable(e),
            })?;
        Ok(Self {
            conn: observed::Observed {
                inner: conn,
                health,
                server: observed::server_of(&settings.url),
            },
            keys: keys::Keys::new(prefix),
        })
    }

    /// The readiness registry this store reports into.
    pub fn health(&self) -> &Health {
        &self.conn.health
    }

    pub async fn ping(&self) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Creates a queued job, unless the idempotency key already names one (its id comes
    /// back) or a job that has not ended writes to the same output folder. Atomic:
    /// concurrent duplicates make one job.
    pub async fn create_job(&self, job: NewJob<'_>) -> Result<Created, StateError> {
        let mut conn = self.conn.clone();
        let idem = job
            .idempotency_key
            .map(|k| self.keys.idempotency(k))
            .unwrap_or_default();
        let now = now_ms().to_string();
        let (created, id): (i64, String) = scripts::CREATE_JOB
            .key(self.keys.job(job.id))
            .key(self.keys.jobs())
            .key(idem)
            .key(self.keys.output_claim(job.output))
            .key(self.keys.active())
            .key(self.keys.events())
            .arg(job.id)
            .arg(&now)
            .arg(IDEMPOTENCY_TTL_SECS)
            .arg(self.keys.job_prefix())
            .arg(&[
                ("name", job.name),
                ("kind", job.kind),
                ("output", job.output),
                ("reply_to", job.reply_to.unwrap_or("")),
                ("correlation_id", job.correlation_id.unwrap_or("")),
                ("spec", job.spec_json),
                ("pool", job.pool),
                ("source", job.source),
                ("idempotency_key", job.idempotency_key.unwrap_or("")),
                ("status", JobStatus::Queued.as_str()),
                ("created_ms", now.as_str()),
            ])
            .invoke_async(&mut conn)
            .await?;
        Ok(match created {
            1 => Created::New(id),
            2 => Created::OutputInUse(id),
            _ => Created::Existing(id),
        })
    }

    /// Removes a job that could not be queued, so the submission can be sent again. Its
    /// `job.submitted` may already be out, so it ends with a `job.failed` event saying why:
    /// event consumers still see exactly one final event.
    pub async fn discard_job(
        &self,
        id: &str,
        output: &str,
        idempotency_key: Option<&str>,
        reason: &str,
    ) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: i64 = scripts::DISCARD_JOB
            .key(self.keys.job(id))
            .key(self.keys.jobs())
            .key(self.keys.output_claim(output))
            .key(
                idempotency_key
                    .map(|k| self.keys.idempotency(k))
                    .unwrap_or_default(),
            )
            .key(self.keys.active())
            .key(self.keys.events())
            .arg(id)
            .arg(now_ms())
            .arg(reason)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<JobRecord, StateError> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> = conn.hgetall(self.keys.job(id)).await?;
        if fields.is_empty() {
            return Err(StateError::NotFound(id.to_string()));
        }
        let live: HashMap<String, u64> = conn.hgetall(self.keys.live(id)).await?;
        JobRecord::from_fields(id, fields, live.values().sum())
    }

    pub async fn status(&self, id: &str) -> Result<JobStatus, StateError> {
        let mut conn = self.conn.clone();
        let status: Option<String> = conn.hget(self.keys.job(id), "status").await?;
        let status = status.ok_or_else(|| StateError::NotFound(id.to_string()))?;
        JobStatus::parse(&status).ok_or_else(|| StateError::Corrupt {
            id: id.to_string(),
            reason: format!("unknown status `{status}`"),
        })
    }

    /// Newest first, optionally only jobs in `status`; records that cannot be read are left
    /// out (see `list_checked`).
    pub async fn list(
        &self,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StateError> {
        Ok(self.list_checked(status, limit).await?.jobs)
    }

    /// Newest first, optionally only jobs in `status`, up to `limit` jobs; a record that
    /// cannot be read does not stop the listing: it is named in `unreadable` (those met
    /// before the listing ended, at most `limit`), so one bad record never hides the rest.
    pub async fn list_checked(
        &self,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<JobListing, StateError> {
        let mut conn = self.conn.clone();
        let mut out = JobListing::default();
        let page = 200isize;
        let mut start = 0isize;
        while out.jobs.len() < limit {
            let ids: Vec<String> = conn
                .zrevrange(self.keys.jobs(), start, start + page - 1)
                .await?;
            if ids.is_empty() {
                break;
            }
            start += page;
            for id in ids {
                match self.get(&id).await {
                    Ok(job) if status.is_none_or(|s| s == job.status) => out.jobs.push(job),
                    Ok(_) | Err(StateError::NotFound(_)) => {}
                    Err(StateError::Corrupt { id, reason }) => {
                        // Filtered by status: a record whose status reads and differs is
                        // not one the caller asked for.
                        let other = match (status, self.status(&id).await) {
                            (Some(wanted), Ok(found)) => found != wanted,
                            _ => false,
                        };
                        if !other && out.unreadable.len() < limit {
                            tracing::warn!(job_id = %id, %reason, "job record unreadable; left out of the listing");
                            out.unreadable.push(UnreadableJob { id, reason });
                        }
                    }
                    Err(e) => return Err(e),
                }
                if out.jobs.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Moves the job to `to` if its current status is one of `from`, setting `fields` in
    /// the same atomic step.
    pub async fn transition(
        &self,
        id: &str,
        from: &[JobStatus],
        to: JobStatus,
        fields: &[(&str, String)],
    ) -> Result<Transition, StateError> {
        let mut conn = self.conn.clone();
        let allowed: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let (moved, current): (i64, String) = scripts::TRANSITION
            .key(self.keys.job(id))
            .key(self.keys.active())
            .key(self.keys.events())
            .arg(to.as_str())
            .arg(allowed.join(","))
            .arg(id)
            .arg(now_ms())
            .arg(fields)
            .invoke_async(&mut conn)
            .await?;
        if moved == -1 {
            return Err(StateError::NotFound(id.to_string()));
        }
        let current = JobStatus::parse(&current).ok_or_else(|| StateError::Corrupt {
            id: id.to_string(),
            reason: format!("unknown status `{current}`"),
        })?;
        Ok(if moved == 1 {
            Transition::Moved(current)
        } else {
            Transition::Refused(current)
        })
    }

    /// Moves along the state machine's own table (`JobStatus::allowed_from`).
    pub async fn move_to(
        &self,
        id: &str,
        to: JobStatus,
        fields: &[(&str, String)],
    ) -> Result<Transition, StateError> {
        self.transition(id, to.allowed_from(), to, fields).await
    }

    /// Sets fields without a status change (plan results, model hash).
    pub async fn set_fields(&self, id: &str, fields: &[(&str, String)]) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: () = conn.hset_multiple(self.keys.job(id), fields).await?;
        Ok(())
    }

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

    /// Stores what planning found in each input object (for the finisher's reconciliation).
    pub async fn save_inputs(
        &self,
        id: &str,
        objects: &[crate::job::accounting::PlannedObject],
    ) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let json = serde_json::to_string(objects).expect("planned objects serialise");
        let _: () = conn.set(self.keys.inputs(id), json).await?;
        Ok(())
    }

    /// What planning found in each input object; `None` for jobs planned by older versions.
    pub async fn inputs(
        &self,
        id: &str,
    ) -> Result<Option<Vec<crate::job::accounting::PlannedObject>>, StateError> {
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

    /// The stored shard tasks, in shard order (empty when none was stored).
    pub async fn plan(&self, id: &str) -> Result<Vec<(u32, String)>, StateError> {
        let mut conn = self.conn.clone();
        let raw: HashMap<u32, String> = conn.hgetall(self.keys.plan(id)).await?;
        let mut tasks: Vec<(u32, String)> = raw.into_iter().collect();
        tasks.sort_by_key(|(index, _)| *index);
        Ok(tasks)
    }

    /// Ids of jobs that have not ended.
    pub async fn active_jobs(&self) -> Result<Vec<String>, StateError> {
        let mut conn = self.conn.clone();
        Ok(conn.smembers(self.keys.active()).await?)
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

    pub async fn clear_live_rows(&self, id: &str, shard: u32) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: () = conn.hdel(self.keys.live(id), shard).await?;
        Ok(())
    }

    /// Deletes every key under this prefix: for tearing down a test namespace.
    pub async fn delete_all(&self) -> Result<u64, StateError> {
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

    /// The job an idempotency key names, if any (the drop folder asks before submitting).
    pub async fn job_for_idempotency_key(&self, key: &str) -> Result<Option<String>, StateError> {
        let mut conn = self.conn.clone();
        Ok(conn.get(self.keys.idempotency(key)).await?)
    }

    /// Whether a rejected submission (`key` from the submission consumer) is already kept.
    pub async fn rejection_kept(&self, key: &str) -> Result<bool, StateError> {
        let mut conn = self.conn.clone();
        Ok(conn.exists(self.keys.rejected(key)).await?)
    }

    /// Remembers (for the idempotency window) that a rejected submission is kept.
    pub async fn record_rejection(&self, key: &str) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: () = conn
            .set_ex(self.keys.rejected(key), now_ms(), IDEMPOTENCY_TTL_SECS)
            .await?;
        Ok(())
    }

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

    /// One field of the job's record as stored (`None` when absent).
    pub async fn field(&self, id: &str, name: &str) -> Result<Option<String>, StateError> {
        let mut conn = self.conn.clone();
        Ok(conn.hget(self.keys.job(id), name).await?)
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
}
