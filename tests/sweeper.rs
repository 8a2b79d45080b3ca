//! Lost work is found again: a job whose plan task, or whose shard tasks, vanished from the
//! broker is picked up by the sweeper and still ends with every row exactly once.

mod common;

use std::time::Duration;

use common::Cluster;
use sluice::job::{JobStatus, Pool};

const FAST_SWEEP: [(&str, &str); 2] = [
    ("SLUICE__WORKER__SWEEP_INTERVAL_SECS", "1"),
    ("SLUICE__WORKER__STALL_AFTER_SECS", "3"),
];

#[tokio::test]
async fn lost_plan_and_shard_tasks_are_queued_again() {
    let (body, rows) = common::rotten_tomatoes_jsonl(Some(600));
    let mut cluster = Cluster::new(8 * 1024).await;
    cluster.settings.worker.chunk_rows = 32;
    cluster.start(false).await;
    cluster.put("in.jsonl", body).await;
    let broker = cluster.broker().await;
    let queue = broker.topology().task_queue(Pool::Cpu);

    // 1. The plan task is lost before any worker sees it.
    let id = cluster
        .submit(&cluster.spec("lost-work", "in.jsonl", "jsonl", "out/"))
        .await;
    assert_eq!(broker.purge(&queue).await.unwrap(), 1);

    // 2. A worker plans the job (the sweeper re-queues the plan), starts on the shards,
    //    and dies; then every shard task still queued is lost as well.
    let first = cluster.spawn_worker_with(&FAST_SWEEP);
    cluster
        .wait_until(&id, Duration::from_secs(120), |job| {
            job.progress.shards_done >= 1
        })
        .await;
    cluster.kill_worker(first).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lost = broker.purge(&queue).await.unwrap();
    assert!(lost > 0, "shard tasks were waiting");
    let job = cluster.client().job(&id).await.unwrap();
    assert_eq!(job.status, JobStatus::Running);
    assert!(job.progress.shards_done < job.progress.shards_total);

    // 3. A new worker's sweeper notices the stall and queues the uncommitted shards again.
    cluster.spawn_worker_with(&FAST_SWEEP);
    let job = cluster.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let ids: Vec<String> = rows.into_iter().map(|(id, _)| id).collect();
    common::assert_exactly_once(&cluster.output_rows("out/").await, &ids);
    cluster.stop().await;
}
