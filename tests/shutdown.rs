//! Scale-down: a worker told to stop (SIGTERM) mid-job finishes its current batch, hands its
//! shard back untouched and exits quickly; another worker finishes the job, every row once.

mod common;

use std::time::Duration;

use common::Cluster;
use sluice::job::JobStatus;

#[tokio::test]
async fn sigterm_hands_work_back_and_exits_within_the_grace_period() {
    let (body, rows) = common::rotten_tomatoes_jsonl(Some(1500));
    let mut cluster = Cluster::new(64 * 1024).await;
    // Small chunks, so live progress shows the shard is mid-way when the signal comes.
    cluster.settings.worker.chunk_rows = 32;
    cluster.start(false).await;
    cluster.put("in.jsonl", body).await;
    let leaving = cluster.spawn_worker();
    let id = cluster
        .submit(&cluster.spec("scale-down", "in.jsonl", "jsonl", "out/"))
        .await;
    cluster
        .wait_until(&id, Duration::from_secs(120), |job| {
            job.progress.rows_in_flight > 0
        })
        .await;
    let (exit, took) = cluster.terminate_worker(leaving).await;
    assert!(exit.success(), "worker exit status {exit:?}");
    // Well inside the 10 s grace period: it stops after one batch, not after its shard.
    assert!(
        took < Duration::from_secs(8),
        "worker took {took:?} to stop"
    );
    let job = cluster.client().job(&id).await.unwrap();
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(
        job.progress.rows_in_flight, 0,
        "the handed-back shard left no live progress: {job:?}"
    );

    cluster.spawn_worker();
    let job = cluster.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let ids: Vec<String> = rows.into_iter().map(|(id, _)| id).collect();
    common::assert_exactly_once(&cluster.output_rows("out/").await, &ids);
    cluster.stop().await;
}
