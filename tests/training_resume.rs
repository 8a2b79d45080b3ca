//! Training survives its workers: a trainer killed with SIGKILL mid-run, and another stopped
//! with SIGTERM, each leave the job to the next worker, which resumes from the last
//! checkpoint; the job ends with the same weights, optimiser state and loss curve as an
//! uninterrupted run of the same job (same seed, same thread settings).

mod common;

use std::time::Duration;

use common::Cluster;
use serde_json::json;
use sluice::api::JobView;
use sluice::job::JobStatus;
use sluice::state::StateStore;
use sluice::train::checkpoint::{Checkpoint, decode};
use sluice::uri::S3Uri;

/// Worker settings for this test: the sweeper looks every second.
const WORKER: &[(&str, &str)] = &[("SLUICE__WORKER__SWEEP_INTERVAL_SECS", "1")];

fn spec(cluster: &Cluster, name: &str, output: &str) -> serde_json::Value {
    json!({
        "api_version": "sluice/v1",
        "kind": "training",
        "name": name,
        "model": cluster.model_uri,
        "input": {"uri": cluster.uri("train/reviews.jsonl"), "format": "jsonl"},
        "output": {"uri": cluster.uri(output)},
        "training": {
            "labels": ["fresh", "rotten"],
            "head": {"type": "mlp", "hidden": [128], "dropout": 0.2},
            "batch_size": 32,
            "epochs": 40,
            "seed": 11,
            "checkpoint_every": 10,
            "keep_checkpoints": 3,
            "optimizer": {"lr": 0.001},
            "schedule": {"warmup_steps": 30, "decay": "linear"}
        }
    })
}

async fn final_checkpoint(cluster: &Cluster, state: &StateStore, id: &str) -> Checkpoint {
    let pointer = state
        .checkpoint_pointer(id)
        .await
        .unwrap()
        .expect("a final checkpoint");
    let bytes = cluster
        .storage
        .get_bytes(&S3Uri::parse(&pointer).unwrap())
        .await
        .unwrap();
    decode(&pointer, &bytes).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Waits until the job's committed checkpoint is at least `step`.
async fn wait_for_checkpoint(cluster: &Cluster, id: &str, step: u64) -> JobView {
    cluster
        .wait_until(id, Duration::from_secs(240), |job| {
            job.training
                .as_ref()
                .and_then(|t| t.checkpoint_step)
                .is_some_and(|s| s >= step)
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_stopped_trainers_hand_over_without_changing_the_result() {
    let mut cluster = Cluster::new(32 * 1024).await;
    cluster.start(false).await;
    let state = StateStore::connect(&cluster.settings.redis, &cluster.settings.prefix)
        .await
        .unwrap();
    let (jsonl, _) = common::rotten_tomatoes_jsonl(Some(1500));
    cluster.put("train/reviews.jsonl", jsonl).await;

    // The uninterrupted run.
    let first = cluster.spawn_worker_with(WORKER);
    let reference = cluster
        .submit(&spec(&cluster, "reference", "models/ref/"))
        .await;
    let started = std::time::Instant::now();
    let done = cluster.wait(&reference, Duration::from_secs(300)).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    let total = done.training.as_ref().unwrap().total_steps;
    eprintln!("uninterrupted: {total} steps in {:.1?}", started.elapsed());

    // The same job again: SIGKILL its worker after a third of the steps.
    let id = cluster
        .submit(&spec(&cluster, "interrupted", "models/crash/"))
        .await;
    let before_kill = wait_for_checkpoint(&cluster, &id, total / 3).await;
    cluster.kill_worker(first).await;
    let killed_at = before_kill.training.unwrap();
    eprintln!(
        "SIGKILL at checkpoint step {:?} (step {})",
        killed_at.checkpoint_step, killed_at.step
    );
    assert!(killed_at.step < total, "the run ended before the kill");

    // A second worker takes over once the lease expires, from the last checkpoint.
    let second = cluster.spawn_worker_with(WORKER);
    let resumed = cluster
        .wait_until(&id, Duration::from_secs(120), |job| {
            job.training.as_ref().is_some_and(|t| t.resumes >= 1)
        })
        .await;
    assert!(resumed.training.unwrap().step >= killed_at.checkpoint_step.unwrap());
    // Then SIGTERM: it checkpoints at the next step, gives the job back and exits.
    let before_term = wait_for_checkpoint(&cluster, &id, 2 * total / 3).await;
    let (exit, took) = cluster.terminate_worker(second).await;
    assert!(exit.success(), "worker exit: {exit:?}");
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");
    let after_term = cluster.client().job(&id).await.unwrap();
    let handed = after_term.training.unwrap();
    assert_eq!(after_term.status, JobStatus::Running);
    assert_eq!(
        handed.checkpoint_step,
        Some(handed.step),
        "no checkpoint at the step it stopped"
    );
    eprintln!(
        "SIGTERM at step {} (after {:?} checkpoints), exited in {took:.1?}",
        handed.step,
        before_term.training.unwrap().checkpoint_step
    );
    assert!(handed.step < total);

    // A third worker finishes it: the handed-back task is already queued.
    cluster.spawn_worker_with(WORKER);
    let done = cluster.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    let progress = done.training.unwrap();
    assert_eq!(progress.resumes, 2, "{progress:?}");
    // Three owners in all, one after the other.
    assert_eq!(state.job_lease_count(&id).await.unwrap(), 3);

    let (a, b) = (
        final_checkpoint(&cluster, &state, &reference).await,
        final_checkpoint(&cluster, &state, &id).await,
    );
    assert_eq!(a.state.step, b.state.step);
    let mut worst = 0.0f32;
    for (name, tensor) in a.state.params.iter().chain(&a.state.opt) {
        let other = b
            .state
            .params
            .get(name)
            .or_else(|| b.state.opt.get(name))
            .unwrap_or_else(|| panic!("{name} missing after resume"));
        assert_eq!(tensor.shape, other.shape, "{name}");
        worst = worst.max(max_abs_diff(&tensor.data, &other.data));
    }
    // The loss curve carries on where it stopped: no jump, no missing or repeated steps.
    assert_eq!(a.losses.len() as u64, total);
    let curve = max_abs_diff(&a.losses, &b.losses);
    eprintln!("after SIGKILL + SIGTERM: max |Δ| weights/optimiser {worst:e}, loss curve {curve:e}");
    assert!(worst <= 1e-6, "weights differ by {worst}");
    assert!(curve <= 1e-6, "loss curves differ by {curve}");
    cluster.stop().await;
}
