//! A model package whose `max_length` its model cannot run (more tokens than the model has
//! position embeddings) is refused by `sluice model push`, and a manifest edited by hand
//! past the limit fails its jobs at once, as a permanent error naming the field — not after
//! the retry ladder with an ONNX Runtime broadcast error.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use sluice::cli::PushOptions;
use sluice::job::JobStatus;
use sluice::uri::S3Uri;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_refuses_a_max_length_beyond_the_models_positions() {
    let cluster = Cluster::new(4 * 1024).await;
    let assets = common::assets();
    let target = S3Uri::parse(&cluster.uri("models/too-long/")).unwrap();
    let err = sluice::cli::push(
        &cluster.storage,
        &assets.model_dir,
        &target,
        &PushOptions {
            name: Some("all-MiniLM-L6-v2".into()),
            max_length: Some(1024),
            dimension: Some(384),
            precision: "int8".into(),
            engine: cluster.settings.engine.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("max_length = 1024 is larger than the model's 512 token positions")
            && err.contains("position_embeddings")
            && err.contains("use max_length = 512 or less"),
        "{err}"
    );
    // Nothing of the package was uploaded.
    assert_eq!(cluster.keys("models/too-long/").await, Vec::<String>::new());
    // The model's own limit is accepted.
    let manifest = sluice::cli::push(
        &cluster.storage,
        &assets.model_dir,
        &target,
        &PushOptions {
            name: Some("all-MiniLM-L6-v2".into()),
            max_length: Some(512),
            dimension: Some(384),
            precision: "int8".into(),
            engine: cluster.settings.engine.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("max_length 512 is the model's limit");
    assert_eq!(manifest.manifest.max_length, 512);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_edited_past_the_limit_fails_its_job_at_once() {
    let mut cluster = Cluster::new(4 * 1024).await;
    // A retryable failure would wait a minute on this ladder; a permanent one does not.
    cluster.settings.amqp.retry_delays_ms = vec![20_000, 20_000, 20_000];
    cluster.start(true).await;

    // The pushed package, its manifest edited by hand to 1024 and uploaded beside the files.
    let assets = common::assets();
    let package = cluster.uri("models/edited/");
    let prefix = S3Uri::parse(&package).unwrap();
    for name in ["model.onnx", "tokenizer.json"] {
        cluster
            .storage
            .put_file(&prefix.join(name), &assets.model_dir.join(name))
            .await
            .unwrap();
    }
    let pushed = cluster
        .get_text("models/minilm/sluice-model.toml")
        .await
        .expect("the pushed manifest");
    assert!(pushed.contains("max_length = 256"), "{pushed}");
    cluster
        .put(
            "models/edited/sluice-model.toml",
            pushed.replace("max_length = 256", "max_length = 1024"),
        )
        .await;

    let (body, _) = common::rotten_tomatoes_jsonl(Some(40));
    cluster.put("in.jsonl", body).await;
    let mut spec = cluster.spec("edited", "in.jsonl", "jsonl", "out/");
    spec["model"] = package.clone().into();
    let started = Instant::now();
    let id = cluster.submit(&spec).await;
    let job = cluster.wait(&id, Duration::from_secs(60)).await;
    let took = started.elapsed();
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    let error = job.error.clone().unwrap_or_default();
    assert!(
        error.contains(&format!("model package {package}"))
            && error.contains("max_length = 1024 is larger than the model's 512 token positions"),
        "{error}"
    );
    assert!(
        took < Duration::from_secs(15),
        "failed after {took:?}: retried instead of failing at once"
    );
    assert!(cluster.keys("out/_SUCCESS").await.is_empty());
    cluster.stop().await;
}
