//! Full size with separate worker processes: the whole Rotten Tomatoes set across two
//! workers. (One test per file: integration test files run one after another, so the heavy
//! ones never compete for the two cores.)

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::Cluster;
use serde_json::Value;
use sluice::job::JobStatus;

#[tokio::test]
async fn rotten_tomatoes_across_two_worker_processes() {
    let (body, rows) = common::rotten_tomatoes_jsonl(None);
    assert_eq!(rows.len(), 12_808);
    // ~2 MB of input cut into shards of ~200 KB.
    let mut cluster = Cluster::new(200 * 1024).await;
    cluster.start(false).await;
    cluster.put("input/rotten_tomatoes.jsonl", body).await;
    cluster.spawn_worker();
    cluster.spawn_worker();
    let id = cluster
        .submit(&cluster.spec(
            "rotten-tomatoes",
            "input/rotten_tomatoes.jsonl",
            "jsonl",
            "out/",
        ))
        .await;
    let job = cluster.wait(&id, Duration::from_secs(900)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert!(job.progress.shards_total >= 8, "{job:?}");
    assert_eq!(job.progress.rows_done, 12_808);
    let ids: Vec<String> = rows.into_iter().map(|(id, _)| id).collect();
    common::assert_exactly_once(&cluster.output_rows("out/").await, &ids);
    let manifest: Value =
        serde_json::from_str(&cluster.get_text("out/_manifest.json").await.unwrap()).unwrap();
    let workers: HashSet<&str> = manifest["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["worker"].as_str().unwrap())
        .collect();
    assert_eq!(
        workers.len(),
        2,
        "both worker processes took shards: {workers:?}"
    );
    assert_eq!(manifest["rows"]["succeeded"], 12_808);
    assert!(cluster.get_text("out/_SUCCESS").await.is_some());
    eprintln!(
        "rotten tomatoes: {} rows in {:.1} s = {:.1} rows/s over {} shards, 2 workers",
        job.progress.rows_done,
        job.timings.elapsed_seconds.unwrap(),
        job.timings.rows_per_second.unwrap(),
        job.progress.shards_total
    );
    cluster.stop().await;
}
