//! The overlapped shard pipeline: it writes byte-identical parts (and errors parts) to the
//! serial one on the same input, and a cancel still stops a running shard within batches,
//! not at the end of its window of rows.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use sluice::job::JobStatus;
use sluice::uri::S3Uri;

const MINUTE: Duration = Duration::from_secs(60);

/// Review snippets with unparseable and blank lines among them, so the errors part's order
/// is compared too.
fn input(rows: usize) -> String {
    let (body, _) = common::rotten_tomatoes_jsonl(Some(rows));
    let mut out = String::new();
    for (index, line) in body.lines().enumerate() {
        out.push_str(line);
        out.push('\n');
        match index % 97 {
            13 => out.push_str("{\"id\": \"broken\", \"text\": \n"),
            41 => out.push('\n'),
            _ => {}
        }
    }
    out
}

/// Every part and errors part under `prefix`, by file name, with its bytes.
async fn parts(cluster: &Cluster, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for key in cluster.keys(prefix).await {
        let name = key.strip_prefix(prefix).unwrap().to_string();
        if !(name.starts_with("part-") || name.starts_with("errors/")) {
            continue;
        }
        let bytes = cluster
            .storage
            .get_bytes(&S3Uri::parse(&cluster.uri(&key)).unwrap())
            .await
            .unwrap();
        out.push((name, bytes));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapped_and_serial_pipelines_write_identical_parts() {
    let body = input(360);
    // Two shards; small chunks and a window of three chunks, so every shard has several
    // windows, each spanning chunks, and a window ends mid-shard.
    let mut cluster = Cluster::new(body.len() as u64 / 2 + 1).await;
    cluster.settings.worker.chunk_rows = 40;
    cluster.settings.worker.sort_window_rows = 100;
    cluster.settings.engine.max_batch_rows = 8;
    cluster.start(false).await;
    cluster.put("in.jsonl", body).await;
    for (mode, depth) in [("serial", "0"), ("overlapped", "3")] {
        let worker = cluster.spawn_worker_with(&[("SLUICE__WORKER__PIPELINE_DEPTH", depth)]);
        for format in ["jsonl", "parquet"] {
            let mut spec = cluster.spec(mode, "in.jsonl", "jsonl", &format!("{mode}-{format}/"));
            spec["output"]["format"] = format.into();
            spec["max_error_rate"] = 0.5.into();
            let id = cluster.submit(&spec).await;
            let job = cluster.wait(&id, MINUTE).await;
            assert_eq!(job.status, JobStatus::Succeeded, "{mode} {format}: {job:?}");
            assert_eq!(job.progress.shards_total, 2, "{job:?}");
        }
        cluster.kill_worker(worker).await;
    }
    for format in ["jsonl", "parquet"] {
        let serial = parts(&cluster, &format!("serial-{format}/")).await;
        let overlapped = parts(&cluster, &format!("overlapped-{format}/")).await;
        let names: Vec<&String> = serial.iter().map(|(name, _)| name).collect();
        assert_eq!(
            names.iter().filter(|n| n.starts_with("part-")).count(),
            2,
            "{format}: {names:?}"
        );
        assert!(
            names.iter().any(|n| n.starts_with("errors/")),
            "{format}: the broken lines have an errors part: {names:?}"
        );
        assert_eq!(
            names,
            overlapped.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            "{format}"
        );
        for ((name, a), (_, b)) in serial.iter().zip(&overlapped) {
            assert!(a == b, "{format} {name}: the parts differ");
        }
    }
    cluster.stop().await;
}

/// Batches the engine has run in this process.
fn batches() -> u64 {
    sluice::metrics::INFERENCE_BATCH_ROWS.get_sample_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_shard_within_batches_of_its_window() {
    const ROWS: usize = 3000;
    let (body, _) = common::rotten_tomatoes_jsonl(Some(ROWS));
    // One shard, one window of every row: without the per-batch stop the engine would run
    // all ROWS / 4 batches before looking up.
    let mut cluster = Cluster::new(body.len() as u64 * 2).await;
    cluster.settings.worker.sort_window_rows = ROWS;
    cluster.settings.engine.max_batch_rows = 4;
    cluster.settings.engine.intra_op_threads = 1;
    cluster.start(true).await;
    cluster.put("in.jsonl", body).await;
    let before = batches();
    let id = cluster
        .submit(&cluster.spec("cancel-window", "in.jsonl", "jsonl", "out/"))
        .await;
    let started = Instant::now();
    while batches() < before + 20 {
        assert!(
            started.elapsed() < MINUTE,
            "the shard never started running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancelled = cluster.client().cancel(&id).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    let at_cancel = batches();
    // The worker notices within its status poll (250 ms), the engine before its next batch.
    let mut last = at_cancel;
    loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let now = batches();
        if now == last {
            break;
        }
        last = now;
        assert!(started.elapsed() < MINUTE, "the engine kept running");
    }
    let after = last - at_cancel;
    let total = (ROWS / 4) as u64;
    assert!(
        after < total / 4 && last - before < total,
        "{after} batches ran after the cancel ({} in all, {total} in the window)",
        last - before
    );
    assert!(cluster.keys("out/").await.is_empty(), "no part appears");
    let job = cluster.client().job(&id).await.unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    cluster.stop().await;
}
