//! A poison task — one whose run panics or fails every time — ends in the dead-letter queue
//! with its reason after the bounded retries, while the worker keeps taking other work.

mod common;

use std::time::Duration;

use common::Cluster;
use sluice::job::JobStatus;

#[tokio::test]
async fn a_poison_task_is_dead_lettered_while_other_jobs_flow() {
    let (body, rows) = common::rotten_tomatoes_jsonl(Some(200));
    let mut cluster = Cluster::new(1 << 20).await;
    // The API only: tasks wait in the queue until the worker below starts.
    cluster.start(false).await;
    cluster.put("in.jsonl", body).await;
    let poison = cluster
        .submit(&cluster.spec("poison", "in.jsonl", "jsonl", "poison-out/"))
        .await;
    // A record no front door would accept today (an older release, a hand edit): its
    // input key is far past S3's 1,024 bytes, which makes the S3 client panic.
    let client = redis::Client::open(cluster.settings.redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}:job:{poison}", cluster.settings.prefix);
    let spec: String = redis::cmd("HGET")
        .arg(&key)
        .arg("spec")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    spec["input"]["uri"] = cluster.uri(&"k".repeat(70_000)).into();
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("spec")
        .arg(spec.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    let healthy = cluster
        .submit(&cluster.spec("healthy", "in.jsonl", "jsonl", "healthy-out/"))
        .await;
    // One slot: the poison task must not hold it.
    cluster.spawn_worker_with(&[("SLUICE__WORKER__CONCURRENCY", "1")]);

    let job = cluster.wait(&healthy, Duration::from_secs(300)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let ids: Vec<String> = rows.into_iter().map(|(id, _)| id).collect();
    common::assert_exactly_once(&cluster.output_rows("healthy-out/").await, &ids);

    let failed = cluster.wait(&poison, Duration::from_secs(120)).await;
    assert_eq!(failed.status, JobStatus::Failed, "{failed:?}");
    let error = failed.error.unwrap_or_default();
    assert!(
        error.contains("plan of job") && error.contains("failed 4 times"),
        "the reason names the task and its bounded attempts: {error}"
    );
    assert!(!error.contains("will retry"), "{error}");
    cluster.wait_dead_letters(1).await;
    cluster.stop().await;
}
