//! `rows_in_flight`: rows a running shard has read count as in flight until its commit, even
//! when the shard is one chunk; a shard whose worker died stops counting once the sweeper
//! queues it again, and a finished job shows none.

mod common;

use std::time::Duration;

use common::Cluster;
use sluice::job::JobStatus;

/// Short shard leases and a fast sweep, so a dead owner's shard is found within seconds.
const LEASED: &[(&str, &str)] = &[
    ("SLUICE__WORKER__SHARD_LEASE_TTL_SECS", "4"),
    ("SLUICE__WORKER__SHARD_HEARTBEAT_SECS", "1"),
    ("SLUICE__WORKER__SWEEP_INTERVAL_SECS", "1"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_read_count_in_flight_until_commit_and_a_dead_shard_stops_counting() {
    const ROWS: usize = 1200;
    let (body, rows) = common::rotten_tomatoes_jsonl(Some(ROWS));
    // One shard, read as one chunk: before any row is embedded, all of them are in flight.
    let mut cluster = Cluster::new(body.len() as u64 * 2).await;
    cluster.settings.worker.chunk_rows = 4096;
    cluster.start(false).await;
    cluster.put("in.jsonl", body).await;
    let victim = cluster.spawn_worker_with(LEASED);
    let id = cluster
        .submit(&cluster.spec("in-flight", "in.jsonl", "jsonl", "out/"))
        .await;
    let running = cluster
        .wait_until(&id, Duration::from_secs(120), |job| {
            job.progress.rows_in_flight > 0
        })
        .await;
    assert_eq!(running.status, JobStatus::Running, "{running:?}");
    assert_eq!(running.progress.shards_total, 1, "{running:?}");
    assert_eq!(
        (running.progress.rows_in_flight, running.progress.rows_done),
        (ROWS as u64, 0),
        "the shard's rows are read, none committed: {running:?}"
    );
    // JSONL with an id field is cut without reading: the row total is not known yet and
    // the fraction counts committed bytes, none so far.
    assert!(!running.progress.rows_total_known, "{running:?}");
    assert_eq!(
        (running.progress.bytes_done, running.progress.fraction),
        (0, 0.0),
        "{running:?}"
    );

    // The owner dies mid-chunk; a worker of another pool only sweeps (it takes no cpu task),
    // so nothing redoes the shard while its stale count is watched.
    cluster.kill_worker(victim).await;
    let sweeper = cluster.spawn_worker_with(&[LEASED, &[("SLUICE__WORKER__POOL", "gpu")]].concat());
    let orphaned = cluster
        .wait_until(&id, Duration::from_secs(60), |job| {
            job.progress.rows_in_flight == 0
        })
        .await;
    assert_eq!(orphaned.status, JobStatus::Running, "{orphaned:?}");
    assert_eq!(orphaned.progress.rows_done, 0, "{orphaned:?}");
    let log = std::fs::read_to_string(cluster.role_log("worker", sweeper)).unwrap();
    assert!(
        log.contains("shard's lease expired without a commit"),
        "the sweeper queued the shard again: {log}"
    );

    cluster.spawn_worker_with(LEASED);
    let job = cluster.wait(&id, Duration::from_secs(120)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert_eq!(
        (job.progress.rows_done, job.progress.rows_in_flight),
        (ROWS as u64, 0),
        "{job:?}"
    );
    let ids: Vec<String> = rows.into_iter().map(|(id, _)| id).collect();
    common::assert_exactly_once(&cluster.output_rows("out/").await, &ids);
    cluster.stop().await;
}
