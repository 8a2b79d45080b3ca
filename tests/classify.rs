//! Train → package → bulk classify, against the real services: a head trained on review
//! embeddings is written as a classifier package; a `task = "classify"` job over the
//! held-out reviews gives each row a label and class probabilities, and the accuracy
//! computed from the output parts matches the evaluation of the head.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::Cluster;
use prost::Message;
use sluice::job::JobStatus;
use sluice::settings::ExecutionProvider;
use sluice::train::checkpoint::Checkpoint;
use sluice::train::eval::evaluate;
use sluice::train::package::{ClassifierPackage, write_classifier_package};
use sluice::train::split::stratified_split;
use sluice::train::trainer::{
    Dataset, Decay, Finish, Flow, Observer, Schedule, TrainConfig, fresh_start, train,
};
use sluice::train::{
    AdamW, HeadLayout, StepSession, TrainError, build_inference_graph, build_step_graph,
};
use sluice::uri::S3Uri;

struct Quiet;

impl Observer for Quiet {
    fn on_checkpoint(&mut self, _: &Checkpoint) -> Result<Flow, TrainError> {
        Ok(Flow::Continue)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trained_head_serves_a_bulk_classify_job() {
    let mut cluster = Cluster::new(32 * 1024).await;
    cluster.start(true).await;
    let storage = cluster.storage.clone();
    let names = ["fresh", "rotten"];
    let rows = common::rotten_tomatoes_reviews(Some(2000));
    cluster
        .put("train/reviews.csv", common::reviews_csv(&rows))
        .await;
    let encoder = S3Uri::parse(&cluster.model_uri).unwrap();
    let (models, embedder) = cluster.encoder().await;
    let (features, _) = cluster
        .labelled_features(&embedder, "train/", "cache/")
        .await;
    let labels: Vec<usize> = features
        .labels
        .iter()
        .map(|l| names.iter().position(|n| n == l).unwrap())
        .collect();
    let (train_rows, eval_rows) = stratified_split(&labels, 0.2, 42);
    let pick = |rows: &[usize]| Dataset {
        dim: features.dim,
        features: rows
            .iter()
            .flat_map(|&r| features.features[r * features.dim..(r + 1) * features.dim].to_vec())
            .collect(),
        labels: rows.iter().map(|&r| labels[r]).collect(),
    };
    let (train_set, eval_set) = (pick(&train_rows), pick(&eval_rows));

    let layout = HeadLayout {
        input_dim: features.dim,
        classes: 2,
        hidden: vec![64],
        dropout: 0.1,
    };
    let mut engine = cluster.settings.engine.clone();
    engine.execution_provider = ExecutionProvider::Cpu;
    let graph = build_step_graph(&layout, &AdamW::default()).encode_to_vec();
    let config = TrainConfig {
        batch_size: 32,
        epochs: 8,
        seed: 7,
        schedule: Schedule {
            peak_lr: 1e-3,
            warmup_steps: 20,
            decay: Decay::Cosine,
        },
        checkpoint_every: 0,
        dropout: layout.dropout,
        class_weights: Vec::new(),
        selection: None,
    };
    let done = {
        let (engine, layout) = (engine.clone(), layout.clone());
        tokio::task::spawn_blocking(move || {
            let mut session = StepSession::open("head", &graph, &engine).unwrap();
            let start = fresh_start(&session, layout.initial_parameters(7), 7).unwrap();
            match train(&mut session, &train_set, &config, start, &mut Quiet).unwrap() {
                Finish::Completed(done) => done,
                Finish::Stopped(_) => panic!("stopped"),
            }
        })
        .await
        .unwrap()
    };
    let report = evaluate(&layout, &done.state.params, &eval_set, &engine).unwrap();

    // The package: encoder files copied, head exported, labels, report.
    let encoder_manifest = models.manifest(&encoder).await.unwrap();
    let sentiment = S3Uri::parse(&cluster.uri("models/sentiment/")).unwrap();
    let manifest = write_classifier_package(
        &storage,
        &ClassifierPackage {
            name: "rt-sentiment",
            encoder: &encoder,
            encoder_manifest: &encoder_manifest,
            head: build_inference_graph(&layout, &done.state.params).encode_to_vec(),
            labels: names.iter().map(|s| s.to_string()).collect(),
            report: serde_json::json!({"eval_accuracy": report.accuracy}),
        },
        &sentiment,
    )
    .await
    .unwrap();
    assert_ne!(manifest.model_sha256(), encoder_manifest.model_sha256());

    // Bulk classify over the held-out reviews.
    let mut held_out = String::new();
    let mut truth = HashMap::new();
    for &r in &eval_rows {
        let id = format!("r{r}");
        held_out.push_str(&format!(
            "{}\n",
            serde_json::json!({"id": id, "text": rows[r].0})
        ));
        truth.insert(id, rows[r].1.clone());
    }
    cluster.put("heldout.jsonl", held_out).await;
    let mut spec = cluster.spec("classify-heldout", "heldout.jsonl", "jsonl", "classified/");
    spec["model"] = sentiment.to_string().into();
    spec["task"] = "classify".into();
    let id = cluster.submit(&spec).await;
    let job = cluster.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let output = cluster.output_rows("classified/").await;
    assert_eq!(output.len(), eval_rows.len());
    let mut correct = 0;
    for row in &output {
        let label = row["label"].as_str().unwrap();
        let probabilities = row["probabilities"].as_object().unwrap();
        let sum: f64 = probabilities.values().map(|p| p.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-4, "{row}");
        let best = probabilities
            .iter()
            .max_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap()))
            .unwrap()
            .0;
        assert_eq!(best, label);
        if truth[row["id"].as_str().unwrap()] == label {
            correct += 1;
        }
    }
    let accuracy = correct as f64 / output.len() as f64;
    eprintln!(
        "held-out accuracy: {:.4} from the classify job's output, {:.4} from evaluating the head",
        accuracy, report.accuracy
    );
    assert!(report.accuracy > 0.7, "{report:?}");
    // The job embeds in other batches than training did: a near-tie may flip, no more.
    assert!((accuracy - report.accuracy).abs() <= 1.0 / eval_rows.len() as f64 + 1e-9);

    // A classify job on an embedding package is refused with the reason.
    let mut wrong = cluster.spec("classify-wrong", "heldout.jsonl", "jsonl", "wrong/");
    wrong["task"] = "classify".into();
    let id = cluster.submit(&wrong).await;
    let job = cluster.wait(&id, Duration::from_secs(120)).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert!(job.error.unwrap().contains("is an embedding model"));
    cluster.stop().await;
}
