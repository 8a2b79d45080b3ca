//! Worker churn: workers SIGKILLed every few seconds during one job. Their runs vanish; they
//! must not count as failures, so the job still succeeds, exactly once.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Cluster;
use sluice::job::JobStatus;

/// Short shard leases and sweeps, so a killed worker's shard moves on within seconds.
const LEASED: &[(&str, &str)] = &[
    ("SLUICE__WORKER__SHARD_LEASE_TTL_SECS", "3"),
    ("SLUICE__WORKER__SHARD_HEARTBEAT_SECS", "1"),
    ("SLUICE__WORKER__SWEEP_INTERVAL_SECS", "1"),
];

/// The job's per-task attempt counts, as the workers recorded them in Redis.
async fn attempts(cluster: &Cluster, id: &str) -> BTreeMap<String, u64> {
    let client = redis::Client::open(cluster.settings.redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("HGETALL")
        .arg(format!("{}:job:{id}:attempts", cluster.settings.prefix))
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_job_under_continuous_worker_churn_succeeds_exactly_once() {
    let (body, rows) = common::rotten_tomatoes_jsonl(Some(1500));
    let mut cluster = Cluster::new(8 * 1024).await;
    cluster.settings.worker.chunk_rows = 8;
    cluster.start(false).await;
    cluster.put("in.jsonl", body).await;
    let mut workers: Vec<usize> = (0..3).map(|_| cluster.spawn_worker_with(LEASED)).collect();
    let id = cluster
        .submit(&cluster.spec("churn", "in.jsonl", "jsonl", "out/"))
        .await;

    // Kill the oldest worker every 3 s and start a fresh one, until the job ends: each
    // worker lives about 9 s, shorter than most runs of a loaded machine's shards.
    let started = Instant::now();
    let mut kills = 0;
    let job = loop {
        let job = cluster.client().job(&id).await.expect("GET job");
        if job.status.is_terminal() {
            break job;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "job still {} after 10 min of churn: {job:?}",
            job.status
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let victim = workers.remove(0);
        cluster.kill_worker(victim).await;
        kills += 1;
        workers.push(cluster.spawn_worker_with(LEASED));
    };
    eprintln!("{kills} workers killed in {:.0?}", started.elapsed());
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let ids: Vec<String> = rows.into_iter().map(|(id, _)| id).collect();
    common::assert_exactly_once(&cluster.output_rows("out/").await, &ids);
    assert_eq!(job.progress.rows_done, 1500);

    // Kills did land mid-shard (some shard was started again after its worker vanished),
    // and none of those runs was counted as a failure.
    let attempts = attempts(&cluster, &id).await;
    eprintln!("attempts: {attempts:?}");
    let restarted = attempts
        .iter()
        .filter(|(task, started)| {
            task.starts_with("shard-") && !task.contains(':') && **started > 1
        })
        .count();
    assert!(
        kills >= 3,
        "the job ended before the churn began: {kills} kills"
    );
    assert!(
        restarted >= 1,
        "no shard run was cut off by {kills} kills; the test did not churn: {attempts:?}"
    );
    let failures: Vec<_> = attempts
        .iter()
        .filter(|(task, _)| task.ends_with(":failed"))
        .collect();
    assert!(
        failures.is_empty(),
        "vanished runs were counted as failures: {failures:?}"
    );
    cluster.stop().await;
}
