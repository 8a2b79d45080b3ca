//! Service restarts mid-job: RabbitMQ and Redis each drop every connection while shards are
//! in flight; the job still succeeds with every row exactly once.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use sluice::job::JobStatus;

fn restart(service: &str) {
    let status = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh"))
        .args(["restart", service])
        .status()
        .expect("run scripts/services.sh");
    assert!(status.success(), "restarting {service} failed");
}

/// Polls the job through outages (the API answers 503 while Redis is down).
async fn wait_tolerant(
    cluster: &Cluster,
    id: &str,
    limit: Duration,
    done: impl Fn(&sluice::api::JobView) -> bool,
) -> sluice::api::JobView {
    let started = Instant::now();
    loop {
        if let Ok(job) = cluster.client().job(id).await
            && done(&job)
        {
            return job;
        }
        assert!(
            started.elapsed() < limit,
            "job {id} not there after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn broker_and_redis_restarts_mid_job_lose_nothing() {
    let (body, rows) = common::rotten_tomatoes_jsonl(Some(2500));
    let mut cluster = Cluster::new(16 * 1024).await;
    cluster.settings.worker.chunk_rows = 32;
    cluster.start(false).await;
    cluster.put("in.jsonl", body).await;
    cluster.spawn_worker();
    let id = cluster
        .submit(&cluster.spec("restarts", "in.jsonl", "jsonl", "out/"))
        .await;

    wait_tolerant(&cluster, &id, Duration::from_secs(120), |j| {
        j.progress.shards_done >= 1
    })
    .await;
    restart("rabbitmq");
    let after_broker = wait_tolerant(&cluster, &id, Duration::from_secs(180), |j| {
        j.progress.shards_done >= 3 || j.status.is_terminal()
    })
    .await;
    assert!(
        !after_broker.status.is_terminal() || after_broker.status == JobStatus::Succeeded,
        "{after_broker:?}"
    );
    restart("redis");
    let job = wait_tolerant(&cluster, &id, Duration::from_secs(300), |j| {
        j.status.is_terminal()
    })
    .await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert_eq!(job.progress.rows_done, 2500);
    let ids: Vec<String> = rows.into_iter().map(|(id, _)| id).collect();
    common::assert_exactly_once(&cluster.output_rows("out/").await, &ids);
    cluster.stop().await;
}
