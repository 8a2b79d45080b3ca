//! Compression jobs end to end, against the real services: the fp32 MiniLM-L3 package
//! quantized to int8, gated on its sample (cosine to the float model, speed side by side),
//! written, and then serving an embed job; a classifier trained by sluice compressed and
//! gated on its accuracy too; an impossible gate failing with its numbers and no package.

mod common;

use std::time::Duration;

use common::Cluster;
use serde_json::{Value, json};
use sluice::cli::PushOptions;
use sluice::job::JobStatus;
use sluice::uri::S3Uri;

const LABELS: [&str; 2] = ["fresh", "rotten"];

async fn push_l3(cluster: &Cluster) -> String {
    let model = cluster.uri("models/l3/");
    let options = PushOptions {
        name: Some("paraphrase-MiniLM-L3-v2".into()),
        max_length: Some(128),
        dimension: Some(384),
        precision: "fp32".into(),
        engine: cluster.settings.engine.clone(),
        ..Default::default()
    };
    sluice::cli::push(
        &cluster.storage,
        &common::assets().l3_dir,
        &S3Uri::parse(&model).unwrap(),
        &options,
    )
    .await
    .unwrap();
    model
}

/// Every `step`-th review, so both labels are in the sample.
fn reviews(rows: usize, step: usize) -> String {
    let (all, _) = common::rotten_tomatoes_jsonl(None);
    all.lines()
        .step_by(step)
        .take(rows)
        .map(|l| format!("{l}\n"))
        .collect()
}

fn compress_spec(cluster: &Cluster, model: &str, output: &str, compress: Value) -> Value {
    json!({
        "api_version": "sluice/v1",
        "kind": "compress",
        "name": "l3-int8",
        "model": model,
        "input": {"uri": cluster.uri("sample.jsonl"), "format": "jsonl", "text_field": "text", "label_field": "label"},
        "output": {"uri": cluster.uri(output)},
        "compress": compress,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_l3_package_compresses_past_the_gate_and_serves_an_embed_job() {
    let mut cluster = Cluster::new(1 << 20).await;
    cluster.start(true).await;
    let model = push_l3(&cluster).await;
    cluster.put("sample.jsonl", reviews(300, 7)).await;
    let spec = compress_spec(
        &cluster,
        &model,
        "models/l3-int8/",
        json!({"sample_rows": 300, "speed_rounds": 4}),
    );
    let id = cluster.submit(&spec).await;
    let job = cluster.wait(&id, Duration::from_secs(120)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let report = job.compression.clone().expect("report on the job");
    eprintln!("L3 compression report: {report:#}");
    assert_eq!(report["gate"]["passed"], true, "{report}");
    assert_eq!(report["sample"]["rows"], 300);
    // 3 layers × Q, K, V, attention output, feed-forward up; the feed-forward down
    // projections (after GELU) and the attention products stay float.
    let rewrite = &report["method"]["graphs"][0]["rewrite"];
    assert_eq!(rewrite["matmuls_quantized"], 15, "{report}");
    assert_eq!(rewrite["left_in_float"], 9, "{report}");
    let cosine = report["agreement"]["mean_cosine"].as_f64().unwrap();
    assert!((0.99..=1.0).contains(&cosine), "{report}");
    let float_rate = report["float"]["figures"]["rows_per_second"]
        .as_f64()
        .unwrap();
    let int8_rate = report["int8"]["figures"]["rows_per_second"]
        .as_f64()
        .unwrap();
    assert!(float_rate > 0.0 && int8_rate > 0.0, "{report}");
    assert_eq!(
        report["int8"]["figures"]["passes_rows_per_second"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // The package: manifest last, the report beside it, int8 weights smaller than float.
    let manifest = cluster
        .get_text("models/l3-int8/sluice-model.toml")
        .await
        .expect("int8 package manifest");
    assert!(manifest.contains("precision = \"int8\""), "{manifest}");
    let stored: Value = serde_json::from_str(
        &cluster
            .get_text("models/l3-int8/compression-report.json")
            .await
            .expect("report in the package"),
    )
    .unwrap();
    assert_eq!(stored, report);
    let (float_bytes, int8_bytes) = (
        report["float"]["bytes"].as_u64().unwrap(),
        report["int8"]["bytes"].as_u64().unwrap(),
    );
    assert!(
        int8_bytes + 10_000_000 < float_bytes,
        "{float_bytes} -> {int8_bytes}"
    );

    // The int8 package serves an ordinary embed job.
    cluster.put("embed.jsonl", reviews(100, 11)).await;
    let mut embed = cluster.spec("embed-int8", "embed.jsonl", "jsonl", "out/");
    embed["model"] = cluster.uri("models/l3-int8/").into();
    let id = cluster.submit(&embed).await;
    let job = cluster.wait(&id, Duration::from_secs(60)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let rows = cluster.output_rows("out/").await;
    assert_eq!(rows.len(), 100);
    assert!(
        rows.iter()
            .all(|r| r["embedding"].as_array().unwrap().len() == 384)
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impossible_gate_fails_with_its_numbers_and_writes_no_package() {
    let mut cluster = Cluster::new(1 << 20).await;
    cluster.start(true).await;
    let model = push_l3(&cluster).await;
    cluster.put("sample.jsonl", reviews(64, 13)).await;
    let spec = compress_spec(
        &cluster,
        &model,
        "models/l3-strict/",
        json!({"sample_rows": 64, "speed_rounds": 1, "gate": {"min_cosine": 0.99999}}),
    );
    let id = cluster.submit(&spec).await;
    let job = cluster.wait(&id, Duration::from_secs(120)).await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    let error = job.error.clone().unwrap();
    assert!(
        error.contains("compression gate failed on 64 sample rows")
            && error.contains("< gate.min_cosine 0.99999")
            && error.contains("not written"),
        "{error}"
    );
    let report = job.compression.clone().expect("figures kept on the job");
    assert_eq!(report["gate"]["passed"], false, "{report}");
    assert!(cluster.keys("models/l3-strict/").await.is_empty());
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trained_classifier_compresses_within_its_accuracy_gate() {
    let mut cluster = Cluster::new(1 << 20).await;
    cluster.start(true).await;
    let model = push_l3(&cluster).await;
    cluster.put("train.jsonl", reviews(600, 5)).await;
    let training = json!({
        "api_version": "sluice/v1",
        "kind": "training",
        "name": "rt-l3",
        "model": model,
        "input": {"uri": cluster.uri("train.jsonl"), "format": "jsonl", "text_field": "text", "label_field": "label"},
        "output": {"uri": cluster.uri("models/rt-l3/")},
        "training": {"labels": LABELS, "epochs": 4, "batch_size": 32, "seed": 3, "optimizer": {"lr": 0.01}},
    });
    let id = cluster.submit(&training).await;
    let job = cluster.wait(&id, Duration::from_secs(120)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");

    cluster.put("sample.jsonl", reviews(300, 9)).await;
    let spec = compress_spec(
        &cluster,
        &cluster.uri("models/rt-l3/"),
        "models/rt-l3-int8/",
        // One row is 0.33 points of 300: allow three label changes.
        json!({"sample_rows": 300, "speed_rounds": 3, "gate": {"max_accuracy_drop": 1.0}}),
    );
    let id = cluster.submit(&spec).await;
    let job = cluster.wait(&id, Duration::from_secs(120)).await;
    let report = job.compression.clone().expect("report on the job");
    eprintln!("classifier compression report: {report:#}");
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert_eq!(report["task"], "classify");
    let float = report["float"]["figures"]["accuracy_percent"]
        .as_f64()
        .unwrap();
    let int8 = report["int8"]["figures"]["accuracy_percent"]
        .as_f64()
        .unwrap();
    assert!(float > 60.0 && float - int8 <= 1.0, "{report}");
    assert!(report["agreement"]["label_changes"].as_u64().is_some());
    let manifest = cluster
        .get_text("models/rt-l3-int8/sluice-model.toml")
        .await
        .unwrap();
    assert!(manifest.contains("head.onnx") && manifest.contains("precision = \"int8\""));
    cluster.stop().await;
}
