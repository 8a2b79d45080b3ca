//! Inference shards are owned through fenced Redis leases, not through held deliveries: on a
//! RabbitMQ node of its own with `consumer_timeout` at 5 s (checked every second), shards that
//! each run well past the timeout are leased, run and committed once each, with no channel
//! cut off; a worker killed mid-shard has its shard queued again by the sweeper once the
//! lease expires, and another worker finishes the job, every row once.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::Cluster;
use common::broker_node::BrokerNode;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use sluice::job::JobStatus;
use sluice::settings::Settings;
use sluice::state::StateStore;

/// Short leases and a fast sweep, so a dead owner's shard moves on within seconds.
const LEASED: &[(&str, &str)] = &[
    ("SLUICE__WORKER__SHARD_LEASE_TTL_SECS", "4"),
    ("SLUICE__WORKER__SHARD_HEARTBEAT_SECS", "1"),
    ("SLUICE__WORKER__SWEEP_INTERVAL_SECS", "1"),
];

/// The broker checks consumer timeouts on its channel tick: every second instead of every
/// minute.
const FAST_TICK: &str = "[{rabbit, [{channel_tick_interval, 1000}]}].";

fn count(log: &str, sign: &str) -> usize {
    log.matches(sign).count()
}

#[tokio::test]
async fn shard_leases_are_fenced_per_shard_and_remember_their_owner() {
    let settings = Settings::default();
    let prefix = format!(
        "test-shard-lease-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let state = StateStore::connect(&settings.redis, &prefix)
        .await
        .expect("Redis (is it running?)");
    let job = sluice::job::new_job_id();
    let a = state
        .acquire_shard_lease(&job, 0, "worker-a", 300)
        .await
        .unwrap()
        .expect("free lease");
    assert!(
        state
            .acquire_shard_lease(&job, 0, "worker-b", 300)
            .await
            .unwrap()
            .is_none(),
        "a held shard lease is not taken"
    );
    // Another shard of the same job is leased on its own.
    let other = state
        .acquire_shard_lease(&job, 1, "worker-b", 300)
        .await
        .unwrap()
        .expect("other shard free");
    assert_eq!((a.token, other.token), (1, 1));
    assert!(state.renew_shard_lease(&job, 0, &a, 300).await.unwrap());
    assert_eq!(
        state.owned_shards(&job).await.unwrap(),
        vec![(0, 1), (1, 1)]
    );

    // worker-a stalls past its lease: its owner record stays (the sweeper's clue), and
    // worker-c takes over with a greater token.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!state.shard_lease_held(&job, 0).await.unwrap());
    assert_eq!(state.owned_shards(&job).await.unwrap()[0], (0, 1));
    let c = state
        .acquire_shard_lease(&job, 0, "worker-c", 5_000)
        .await
        .unwrap()
        .expect("expired lease is free");
    assert_eq!(c.token, 2);
    assert!(
        !state.renew_shard_lease(&job, 0, &a, 300).await.unwrap(),
        "loss noticed"
    );
    // The stale owner can neither release the new lease nor drop the new owner's record.
    state.release_shard_lease(&job, 0, &a, true).await.unwrap();
    state.disown_shard(&job, 0, a.token).await.unwrap();
    assert!(state.shard_lease_held(&job, 0).await.unwrap());
    assert_eq!(state.owned_shards(&job).await.unwrap()[0], (0, 2));

    // A hand-back releases the lease but keeps the record until the task is queued again.
    state.release_shard_lease(&job, 0, &c, false).await.unwrap();
    assert!(!state.shard_lease_held(&job, 0).await.unwrap());
    assert_eq!(state.owned_shards(&job).await.unwrap()[0], (0, 2));
    state.disown_shard(&job, 0, c.token).await.unwrap();
    // A finished shard goes in one step.
    state
        .release_shard_lease(&job, 1, &other, true)
        .await
        .unwrap();
    assert!(state.owned_shards(&job).await.unwrap().is_empty());
    assert_eq!(
        state.shard_lease_counts(&job).await.unwrap(),
        HashMap::from([(0, 2), (1, 1)])
    );
    let wiped = common::state::wipe_prefix(&settings.redis, &prefix)
        .await
        .unwrap();
    assert!(
        wiped >= 1,
        "the shard leases' keys were under the test's prefix"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_longer_than_the_consumer_timeout_run_once() {
    let node = BrokerNode::start_with("consumer_timeout = 5000", Some(FAST_TICK)).await;
    let (body, rows) = common::rotten_tomatoes_jsonl(Some(3000));
    let mut cluster = Cluster::new(body.len().div_ceil(3) as u64).await;
    cluster.settings.amqp.url = node.url.clone();
    // Small chunks: slow shards, and live progress all along.
    cluster.settings.worker.chunk_rows = 16;
    cluster.start(false).await;
    let state = StateStore::connect(&cluster.settings.redis, &cluster.settings.prefix)
        .await
        .unwrap();
    cluster.put("in.jsonl", body).await;

    // The control: a consumer that holds one delivery unacknowledged is cut off.
    let connection = Connection::connect(&node.url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = format!("{}.control", cluster.settings.prefix);
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"held",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "control".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _held = consumer
        .next()
        .await
        .expect("a delivery")
        .expect("delivery");
    let holding = Instant::now();

    // Two workers for three shards: one shard waits in the queue while two run, as in a
    // busy pool, and a redelivered shard would find a worker to run it twice.
    let workers = [
        cluster.spawn_worker_with(LEASED),
        cluster.spawn_worker_with(LEASED),
    ];
    let id = cluster
        .submit(&cluster.spec("long-shards", "in.jsonl", "jsonl", "out/"))
        .await;
    let job = cluster.wait(&id, Duration::from_secs(900)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert_eq!(job.progress.shards_total, 3);

    let cut_off = tokio::time::timeout(Duration::from_secs(30), async {
        while channel.status().connected() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    assert!(
        cut_off.is_ok(),
        "the broker never enforced its consumer timeout"
    );
    eprintln!("control consumer cut off within {:.0?}", holding.elapsed());

    let commits = state.committed_shards(&id).await.unwrap();
    let seconds: Vec<f64> = commits.iter().map(|c| c.seconds).collect();
    eprintln!("shard seconds: {seconds:?}");
    assert!(
        seconds.iter().all(|s| *s > 8.0),
        "every shard must run well past the 5 s consumer timeout and a tick: {seconds:?}"
    );
    let ids: Vec<String> = rows.into_iter().map(|(id, _)| id).collect();
    common::assert_exactly_once(&cluster.output_rows("out/").await, &ids);

    // Each shard leased, run and committed once; no delivery cut off or duplicated.
    assert_eq!(
        state.shard_lease_counts(&id).await.unwrap(),
        HashMap::from([(0, 1), (1, 1), (2, 1)])
    );
    // Deliveries a worker handled, per shard (a dropped duplicate is taken back).
    let attempts = std::process::Command::new("redis-cli")
        .args([
            "HGETALL",
            &format!("{}:job:{id}:attempts", cluster.settings.prefix),
        ])
        .output()
        .expect("run redis-cli");
    let attempts = String::from_utf8_lossy(&attempts.stdout).to_string();
    let fields: Vec<&str> = attempts.lines().collect();
    let deliveries: std::collections::BTreeMap<&str, &str> = fields
        .chunks(2)
        .filter(|pair| pair[0].starts_with("shard-") && !pair[0].contains(':'))
        .map(|pair| (pair[0], pair[1]))
        .collect();
    eprintln!("deliveries handled per shard: {deliveries:?}");
    assert_eq!(
        deliveries,
        [("shard-0", "1"), ("shard-1", "1"), ("shard-2", "1")].into(),
        "{attempts}"
    );
    let logs: String = workers
        .iter()
        .map(|w| std::fs::read_to_string(cluster.role_log("worker", *w)).unwrap())
        .collect();
    eprintln!(
        "shard leased: {}, shard committed: {}, duplicates dropped: {}, consumer closed: {}",
        count(&logs, "shard leased"),
        count(&logs, "shard committed"),
        count(&logs, "dropping the duplicate delivery"),
        count(&logs, "reconnecting"),
    );
    assert_eq!(count(&logs, "shard leased"), 3, "{logs}");
    assert_eq!(count(&logs, "shard committed"), 3, "{logs}");
    for sign in ["dropping the duplicate", "reconnecting", "timed out"] {
        assert!(!logs.contains(sign), "worker logs show {sign:?}:\n{logs}");
    }
    cluster.stop().await;
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owners_shard_is_queued_again_once_its_lease_expires() {
    let (body, rows) = common::rotten_tomatoes_jsonl(Some(1500));
    let mut cluster = Cluster::new(body.len().div_ceil(3) as u64).await;
    cluster.settings.worker.chunk_rows = 16;
    cluster.start(false).await;
    let state = StateStore::connect(&cluster.settings.redis, &cluster.settings.prefix)
        .await
        .unwrap();
    cluster.put("in.jsonl", body).await;
    let victim = cluster.spawn_worker_with(LEASED);
    let id = cluster
        .submit(&cluster.spec("killed-owner", "in.jsonl", "jsonl", "out/"))
        .await;
    cluster
        .wait_until(&id, Duration::from_secs(300), |job| {
            job.progress.rows_in_flight > 0
        })
        .await;
    let owned = state.owned_shards(&id).await.unwrap();
    assert_eq!(owned.len(), 1, "one shard in the victim's hands: {owned:?}");
    let (lost_shard, _) = owned[0];
    // Its delivery was acked when the lease was taken: only the sweeper can bring it back.
    cluster.kill_worker(victim).await;
    let killed = Instant::now();

    let survivor = cluster.spawn_worker_with(LEASED);
    let job = cluster.wait(&id, Duration::from_secs(600)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let ids: Vec<String> = rows.into_iter().map(|(id, _)| id).collect();
    common::assert_exactly_once(&cluster.output_rows("out/").await, &ids);
    let counts = state.shard_lease_counts(&id).await.unwrap();
    eprintln!(
        "shard {lost_shard} lost with its worker; job done {:.0?} after the kill; leases per shard: {counts:?}",
        killed.elapsed()
    );
    assert_eq!(counts.len(), job.progress.shards_total as usize);
    for (shard, leases) in &counts {
        let expected = if *shard == lost_shard { 2 } else { 1 };
        assert_eq!(*leases, expected, "shard {shard}: {counts:?}");
    }
    assert!(state.owned_shards(&id).await.unwrap().is_empty());
    let log = std::fs::read_to_string(cluster.role_log("worker", survivor)).unwrap();
    assert_eq!(
        count(&log, "shard's lease expired without a commit"),
        1,
        "{log}"
    );
    cluster.stop().await;
}
