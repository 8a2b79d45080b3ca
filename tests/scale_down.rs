//! Scale-down under load: workers are stopped with SIGTERM again and again, mid-inference and
//! mid-training. Each exits well within its grace period and hands its work back (the shard
//! to the queue, the training job through a checkpoint); the next worker carries on. Every
//! row ends up written once, and the training job completes with an unbroken loss curve. A
//! second signal makes a worker exit at once, still losing nothing.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use serde_json::json;
use sluice::job::JobStatus;
use sluice::state::StateStore;
use sluice::train::checkpoint::decode;
use sluice::uri::S3Uri;

const WORKER: &[(&str, &str)] = &[
    ("SLUICE__WORKER__SWEEP_INTERVAL_SECS", "1"),
    ("SLUICE__WORKER__CHUNK_ROWS", "32"),
];

/// Stops a worker: SIGTERM (twice when `impatient`); returns what it took and its exit code.
async fn stop(cluster: &mut Cluster, worker: usize, impatient: bool) -> (Option<i32>, Duration) {
    let sent = Instant::now();
    cluster.signal_worker(worker, "TERM");
    if impatient {
        cluster.signal_worker(worker, "TERM");
    }
    let exit = cluster.wait_worker(worker).await;
    let took = sent.elapsed();
    // The grace period is 10 s; a batch or a step is far shorter.
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    if impatient {
        // 130 when the second signal came while it drained; 0 if it had drained already.
        assert!(
            matches!(exit.code(), Some(0 | 130)),
            "after two signals: {exit:?}"
        );
    } else {
        assert_eq!(exit.code(), Some(0), "a clean exit after SIGTERM");
    }
    (exit.code(), took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_stopped_again_and_again_lose_and_duplicate_nothing() {
    let (body, rows) = common::rotten_tomatoes_jsonl(Some(3000));
    let ids: Vec<String> = rows.into_iter().map(|(id, _)| id).collect();
    let mut cluster = Cluster::new(24 * 1024).await;
    cluster.start(false).await;
    let state = StateStore::connect(&cluster.settings.redis, &cluster.settings.prefix)
        .await
        .unwrap();
    cluster.put("in.jsonl", body).await;

    // Inference: a worker every 4 s, each stopped mid-shard; one of them impatiently.
    let inference = cluster
        .submit(&cluster.spec("scale-down", "in.jsonl", "jsonl", "out/"))
        .await;
    let mut stops = Vec::new();
    for round in 0..4 {
        let worker = cluster.spawn_worker_with(WORKER);
        cluster
            .wait_until(&inference, Duration::from_secs(120), |job| {
                job.progress.rows_in_flight > 0
            })
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        stops.push(("inference", stop(&mut cluster, worker, round == 1).await));
    }
    let before = cluster.client().job(&inference).await.unwrap();
    assert_eq!(
        before.status,
        JobStatus::Running,
        "the job ended before the last stop"
    );
    let finisher = cluster.spawn_worker_with(WORKER);
    let done = cluster.wait(&inference, Duration::from_secs(600)).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    common::assert_exactly_once(&cluster.output_rows("out/").await, &ids);
    // Idle now; the training rounds below bring their own workers.
    stop(&mut cluster, finisher, false).await;

    // Training: each worker is stopped once it has checkpointed further than the last.
    let (small, _) = common::rotten_tomatoes_jsonl(Some(600));
    cluster.put("train.jsonl", small).await;
    let training = cluster
        .submit(&json!({
            "api_version": "sluice/v1",
            "kind": "training",
            "name": "scale-down-training",
            "model": cluster.model_uri,
            "input": {"uri": cluster.uri("train.jsonl"), "format": "jsonl"},
            "output": {"uri": cluster.uri("models/t/")},
            "training": {"labels": ["fresh", "rotten"], "epochs": 600, "batch_size": 16,
                         "checkpoint_every": 50, "head": {"type": "mlp", "hidden": [128], "dropout": 0.1}}
        }))
        .await;
    let mut reached = 0;
    for round in 0..3 {
        let worker = cluster.spawn_worker_with(WORKER);
        let job = cluster
            .wait_until(&training, Duration::from_secs(180), |job| {
                job.training
                    .as_ref()
                    .and_then(|t| t.checkpoint_step)
                    .is_some_and(|s| s > reached + 200)
            })
            .await;
        reached = job.training.unwrap().checkpoint_step.unwrap();
        stops.push(("training", stop(&mut cluster, worker, round == 1).await));
    }
    let job = cluster.client().job(&training).await.unwrap();
    assert_eq!(
        job.status,
        JobStatus::Running,
        "the job ended before the last stop"
    );
    cluster.spawn_worker_with(WORKER);
    let done = cluster.wait(&training, Duration::from_secs(600)).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    let progress = done.training.unwrap();
    assert!(progress.resumes >= 3, "resumed {} times", progress.resumes);
    let pointer = state.checkpoint_pointer(&training).await.unwrap().unwrap();
    let bytes = cluster
        .storage
        .get_bytes(&S3Uri::parse(&pointer).unwrap())
        .await
        .unwrap();
    let last = decode(&pointer, &bytes).unwrap();
    // Every step once: the curve has no gap and no repeat.
    assert_eq!(last.losses.len() as u64, progress.total_steps);
    assert!(last.losses.iter().all(|l| l.is_finite()));
    eprintln!(
        "stops: {stops:?}; training resumed {} times over {} leases",
        progress.resumes,
        state.job_lease_count(&training).await.unwrap()
    );
    cluster.stop().await;
}
