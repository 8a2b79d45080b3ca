//! Scale-out: the same many-shard job run by 1, 2 and 4 worker processes gives the same
//! output, row for row and bit for bit (shards are cut the same way and each shard's rows
//! are batched the same way whoever runs it); the throughput of each is printed (2 cores
//! bound it here, so more workers than cores do not go faster).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Cluster;
use sluice::job::JobStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_two_and_four_workers_write_identical_output() {
    let rows = 2400;
    let (body, expected) = common::rotten_tomatoes_jsonl(Some(rows));
    let ids: Vec<String> = expected.into_iter().map(|(id, _)| id).collect();
    let mut cluster = Cluster::new(16 * 1024).await;
    cluster.settings.worker.chunk_rows = 64;
    cluster.start(false).await;
    cluster.put("in.jsonl", body).await;
    let mut outputs: Vec<(usize, BTreeMap<String, Vec<f64>>)> = Vec::new();
    let mut report = Vec::new();
    let mut spawned = 0;
    for workers in [1usize, 2, 4] {
        // Each run has its own workers; the previous run's were stopped at its end.
        let first = spawned;
        for _ in 0..workers {
            cluster.spawn_worker_with(&[("SLUICE__WORKER__CHUNK_ROWS", "64")]);
            spawned += 1;
        }
        let output = format!("out-{workers}/");
        let started = Instant::now();
        let id = cluster
            .submit(&cluster.spec(&format!("scale-{workers}"), "in.jsonl", "jsonl", &output))
            .await;
        let job = cluster.wait(&id, Duration::from_secs(600)).await;
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
        assert!(job.progress.shards_total >= 8, "{job:?}");
        let written = cluster.output_rows(&output).await;
        common::assert_exactly_once(&written, &ids);
        let by_id: BTreeMap<String, Vec<f64>> = written
            .iter()
            .map(|row| {
                (
                    row["id"].as_str().unwrap().to_string(),
                    row["embedding"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_f64().unwrap())
                        .collect(),
                )
            })
            .collect();
        report.push(format!(
            "{workers} worker(s): {} shards, {seconds:.1} s, {:.0} rows/s",
            job.progress.shards_total,
            rows as f64 / seconds
        ));
        outputs.push((workers, by_id));
        for index in first..spawned {
            cluster.terminate_worker(index).await;
        }
    }
    eprintln!("{}", report.join("\n"));
    let (_, reference) = &outputs[0];
    for (workers, output) in &outputs[1..] {
        assert_eq!(output.len(), reference.len());
        for (id, vector) in reference {
            assert_eq!(
                output[id], *vector,
                "row {id} differs between 1 and {workers} workers"
            );
        }
    }
    cluster.stop().await;
}
