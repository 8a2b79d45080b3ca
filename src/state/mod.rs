//! Redis job store: job records, atomic status transitions (Lua), shard commits and progress
//! counters, idempotency keys and per-task attempt counts, all under one key prefix.
//!
//! This file holds the store, its connection and its error; each concern is an
//! `impl StateStore` block of its own: `jobs` (create, read, transitions), `listing`, `plan`
//! (shard tasks, planned inputs), `shards` (commits, live rows), `outbox` (job events),
//! `idempotency`, `leases` (job leases, checkpoints, the sweeper's turn), `shard_lease`,
//! `attempts`, `scratch` (bench's throw-away namespace). Every key name lives in `keys`,
//! every Lua script in `scripts`.

mod attempts;
mod idempotency;
mod jobs;
mod keys;
mod leases;
mod listing;
mod observed;
mod outbox;
mod plan;
mod record;
mod scratch;
mod scripts;
mod shard_lease;
mod shards;
#[cfg(test)]
mod test_store;

pub use attempts::Attempts;
pub use jobs::{Created, NewJob, Transition};
pub use leases::Lease;
pub use listing::{JobListing, UnreadableJob};
pub use outbox::StoredEvent;
pub use record::{JobRecord, ShardCommit};
pub use shards::CommitOutcome;

use crate::health::Health;
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
}
