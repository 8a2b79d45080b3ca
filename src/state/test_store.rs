//! For the unit tests: a `StateStore` on a random key prefix of the real Redis that `.ci/run`
//! starts (`SLUICE_TEST_REDIS_URL`, else `redis://127.0.0.1:6379`), wiped when dropped.

use std::ops::Deref;

use redis::Commands;

use super::{Created, NewJob, StateStore, Transition};
use crate::job::JobStatus;
use crate::settings::RedisSettings;

pub(super) struct TestStore {
    store: StateStore,
    prefix: String,
    url: String,
}

impl TestStore {
    /// A store on a fresh `test-state-…` prefix. Panics, saying why, when Redis cannot be
    /// reached: these tests need it, and passing without it would prove nothing.
    pub(super) async fn new() -> Self {
        Self::with_prefix_start("test-state-").await
    }

    /// A store on a fresh prefix that starts with `start`.
    pub(super) async fn with_prefix_start(start: &str) -> Self {
        let url = std::env::var("SLUICE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
        let prefix = format!(
            "{start}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let settings = RedisSettings {
            url: url.clone(),
            connection_timeout_ms: 3_000,
            ..RedisSettings::default()
        };
        let unreachable = |e: &dyn std::fmt::Display| -> ! {
            panic!(
                "the state unit tests need a real Redis at {url} (.ci/run starts one; or set \
                 SLUICE_TEST_REDIS_URL), but it cannot be reached: {e}"
            )
        };
        let store = match StateStore::connect(&settings, &prefix).await {
            Ok(store) => store,
            Err(e) => unreachable(&e),
        };
        if let Err(e) = store.ping().await {
            unreachable(&e);
        }
        Self { store, prefix, url }
    }

    /// Every key under this store's prefix, sorted.
    pub(super) fn keys(&self) -> Vec<String> {
        let mut conn = self.raw();
        let mut keys: Vec<String> = conn
            .scan_match(format!("{}:*", self.prefix))
            .expect("SCAN")
            .map(|key| key.expect("SCAN entry"))
            .collect();
        keys.sort();
        keys
    }

    /// Seconds until `key` (under this prefix) expires: -1 without a TTL, -2 when absent.
    pub(super) fn ttl_secs(&self, key: &str) -> i64 {
        self.raw()
            .ttl(format!("{}:{key}", self.prefix))
            .expect("TTL")
    }

    /// Creates a job and moves it to running with `shards` shards planned; returns its id.
    pub(super) async fn running_job(&self, shards: u64) -> String {
        let id = crate::job::new_job_id();
        let (spec, output) = (spec_json(), format!("s3://b/out/{id}/"));
        let created = self.create_job(new_job(&id, &output, &spec, None)).await;
        assert_eq!(created.unwrap(), Created::New(id.clone()));
        let planning = self.move_to(&id, JobStatus::Planning, &[]).await;
        assert_eq!(planning.unwrap(), Transition::Moved(JobStatus::Queued));
        let fields = [("shards_total", shards.to_string())];
        let running = self.move_to(&id, JobStatus::Running, &fields).await;
        assert_eq!(running.unwrap(), Transition::Moved(JobStatus::Planning));
        id
    }

    fn raw(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .and_then(|client| client.get_connection())
            .expect("a plain connection to the test Redis")
    }
}

impl Deref for TestStore {
    type Target = StateStore;
    fn deref(&self) -> &StateStore {
        &self.store
    }
}

impl Drop for TestStore {
    /// Wipes the prefix (SCAN + DEL), failed tests included; blocking, as Drop cannot await.
    fn drop(&mut self) {
        let wiped = redis::Client::open(self.url.as_str())
            .and_then(|client| client.get_connection())
            .and_then(|mut conn| {
                let keys: Vec<String> = conn
                    .scan_match(format!("{}:*", self.prefix))?
                    .collect::<Result<_, _>>()?;
                for batch in keys.chunks(500) {
                    let _: () = conn.del(batch)?;
                }
                Ok(())
            });
        if let Err(e) = wiped {
            eprintln!("could not wipe test prefix {}: {e}", self.prefix);
        }
    }
}

/// The spec every test job carries (a real example, so records read back).
pub(super) fn spec_json() -> String {
    let spec = crate::job::parse_toml_spec(include_str!("../../jobs/rotten-tomatoes-embed.toml"))
        .expect("example spec parses");
    serde_json::to_string(&spec).expect("spec serialises")
}

/// A new inference job writing to `output`, with an optional idempotency key.
pub(super) fn new_job<'a>(
    id: &'a str,
    output: &'a str,
    spec_json: &'a str,
    idempotency_key: Option<&'a str>,
) -> NewJob<'a> {
    NewJob {
        id,
        kind: "inference",
        output,
        name: "unit-test",
        spec_json,
        pool: "cpu",
        source: "test",
        idempotency_key,
        reply_to: None,
        correlation_id: None,
    }
}
