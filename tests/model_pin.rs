//! A job runs one exact model package: when the package is pushed again mid-job with only
//! its tokenizer changed (the model file, and so the model's hash, the same), the remaining
//! shards refuse to mix two packages in one output and the job fails saying why.

mod common;

use std::time::Duration;

use common::Cluster;
use sluice::cli::PushOptions;
use sluice::job::JobStatus;
use sluice::uri::S3Uri;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokenizer_pushed_again_mid_job_fails_the_job_instead_of_mixing_packages() {
    let mut cluster = Cluster::new(4 * 1024).await;
    cluster.settings.worker.chunk_rows = 64;
    cluster.start(false).await;
    let (body, _) = common::rotten_tomatoes_jsonl(Some(2400));
    cluster.put("in.jsonl", body).await;
    cluster.spawn_worker_with(&[("SLUICE__WORKER__CHUNK_ROWS", "64")]);
    let id = cluster
        .submit(&cluster.spec("pinned", "in.jsonl", "jsonl", "out/"))
        .await;
    let running = cluster
        .wait_until(&id, Duration::from_secs(120), |job| {
            job.progress.shards_done >= 1
        })
        .await;
    assert!(
        running.progress.shards_done < running.progress.shards_total,
        "the job ended before the re-push: {running:?}"
    );

    // The same model file, a tokenizer that differs by one trailing newline.
    let assets = common::assets();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        assets.model_dir.join("model.onnx"),
        dir.path().join("model.onnx"),
    )
    .unwrap();
    let mut tokenizer = std::fs::read(assets.model_dir.join("tokenizer.json")).unwrap();
    tokenizer.push(b'\n');
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer).unwrap();
    sluice::cli::push(
        &cluster.storage,
        dir.path(),
        &S3Uri::parse(&cluster.model_uri).unwrap(),
        &PushOptions {
            name: Some("all-MiniLM-L6-v2".into()),
            max_length: Some(256),
            dimension: Some(384),
            precision: "int8".into(),
            engine: cluster.settings.engine.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let job = cluster.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    let error = job.error.clone().unwrap_or_default();
    assert!(
        error.contains("changed while the job ran") && error.contains(&cluster.model_uri),
        "{error}"
    );
    assert!(
        job.progress.shards_done < job.progress.shards_total,
        "{job:?}"
    );
    cluster.stop().await;
}
