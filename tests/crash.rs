//! Crash safety: a worker killed with SIGKILL mid-job loses no row and duplicates none.

mod common;

use std::time::Duration;

use common::Cluster;
use sluice::job::JobStatus;

#[tokio::test]
async fn a_worker_killed_mid_job_loses_nothing_and_duplicates_nothing() {
    let (body, rows) = common::rotten_tomatoes_jsonl(Some(3000));
    let mut cluster = Cluster::new(24 * 1024).await;
    cluster.settings.worker.chunk_rows = 32;
    cluster.start(false).await;
    cluster.put("in.jsonl", body).await;
    let victim = cluster.spawn_worker();
    cluster.spawn_worker();
    let id = cluster
        .submit(&cluster.spec("crash", "in.jsonl", "jsonl", "out/"))
        .await;
    // Kill while shards are in flight and some are already committed.
    cluster
        .wait_until(&id, Duration::from_secs(300), |job| {
            job.progress.shards_done >= 2 && job.progress.rows_in_flight > 0
        })
        .await;
    cluster.kill_worker(victim).await;
    let job = cluster.wait(&id, Duration::from_secs(600)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let ids: Vec<String> = rows.into_iter().map(|(id, _)| id).collect();
    common::assert_exactly_once(&cluster.output_rows("out/").await, &ids);
    assert_eq!(job.progress.rows_done, 3000);
    cluster.stop().await;
}
