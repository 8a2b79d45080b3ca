//! Training jobs end to end, against the real services: a `kind = "training"` job trains a
//! head on review embeddings, shows its progress, checkpoints, writes a classifier package
//! with its report, and a bulk `classify` job with that package reproduces the report's
//! held-out accuracy; a second job on the same data skips the encoder (feature cache); a
//! user-supplied step graph trains under the contract; bad input fails early, saying why.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::Cluster;
use prost::Message;
use serde_json::{Value, json};
use sluice::job::JobStatus;
use sluice::train::split::stratified_split;
use sluice::uri::S3Uri;

const LABELS: [&str; 2] = ["fresh", "rotten"];

fn training_spec(cluster: &Cluster, name: &str, input: &str, output: &str) -> Value {
    json!({
        "api_version": "sluice/v1",
        "kind": "training",
        "name": name,
        "model": cluster.model_uri,
        "input": {"uri": cluster.uri(input), "format": "jsonl", "text_field": "text", "label_field": "label"},
        "output": {"uri": cluster.uri(output)},
        "training": {
            "labels": LABELS,
            "head": {"type": "mlp", "hidden": [64], "dropout": 0.1},
            "batch_size": 32,
            "epochs": 6,
            "seed": 7,
            "checkpoint_every": 25,
            "keep_checkpoints": 2,
            "eval": {"fraction": 0.2},
            "optimizer": {"lr": 0.001, "weight_decay": 0.01},
            "schedule": {"warmup_steps": 20, "decay": "cosine"}
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_job_packages_a_classifier_that_bulk_inference_serves() {
    let mut cluster = Cluster::new(32 * 1024).await;
    cluster.start(true).await;
    let (jsonl, _) = common::rotten_tomatoes_jsonl(Some(2000));
    cluster.put("train/reviews.jsonl", jsonl.clone()).await;
    let rows: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let id = cluster
        .submit(&training_spec(
            &cluster,
            "rt-sentiment",
            "train/reviews.jsonl",
            "models/sentiment/",
        ))
        .await;
    // Progress while it runs: step, epoch, loss, and (after an epoch) evaluation and ETA.
    let running = cluster
        .wait_until(&id, Duration::from_secs(300), |job| {
            job.training
                .as_ref()
                .is_some_and(|t| t.eval.is_some() && t.step > 0 && t.loss.is_some())
                || job.status == JobStatus::Succeeded
        })
        .await;
    let job = cluster.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let progress = job.training.clone().expect("training progress");
    assert_eq!(progress.step, progress.total_steps);
    assert_eq!(progress.epoch, 6);
    assert_eq!(progress.train_rows + progress.eval_rows, 2000);
    assert_eq!(progress.eval_history.len(), 6, "{progress:?}");
    assert_eq!(job.progress.fraction, 1.0);
    if let Some(seen) = running
        .training
        .filter(|_| running.status == JobStatus::Running)
    {
        assert!(seen.step < seen.total_steps);
        assert!(seen.eta_seconds.is_some(), "{seen:?}");
    }
    assert_eq!(progress.features_cached, Some(false));

    // The package: manifest, head, labels, report; the last two checkpoints.
    let manifest = cluster
        .get_text("models/sentiment/sluice-model.toml")
        .await
        .expect("package manifest");
    assert!(manifest.contains("classify"), "{manifest}");
    let report: Value = serde_json::from_str(
        &cluster
            .get_text("models/sentiment/training-report.json")
            .await
            .expect("training report"),
    )
    .unwrap();
    assert_eq!(
        report["eval"]["accuracy"].as_f64(),
        Some(progress.eval.unwrap().accuracy)
    );
    // The package holds the best epoch by macro-F1 (the default), the earliest on ties.
    let best = progress
        .eval_history
        .iter()
        .copied()
        .reduce(|best, e| if e.macro_f1 > best.macro_f1 { e } else { best })
        .unwrap();
    assert_eq!(report["selected"]["rule"], "best");
    assert_eq!(report["selected"]["metric"], "macro_f1");
    assert_eq!(report["selected"]["step"], best.step);
    assert_eq!(progress.best_step, Some(best.step));
    let eval = best;
    assert_eq!(
        report["loss_curve"].as_array().unwrap().len() as u64,
        progress.total_steps
    );
    assert_eq!(report["labels"], json!(LABELS));
    let curves = cluster
        .get_text("models/sentiment/training-curves.svg")
        .await
        .expect("the curves beside the report");
    assert!(curves.starts_with("<svg") && curves.matches("<circle").count() >= 6 * 3);
    assert!(eval.accuracy > 0.7, "{eval:?}");
    let checkpoints = cluster.keys("models/sentiment/checkpoints/").await;
    assert_eq!(checkpoints.len(), 2, "{checkpoints:?}");
    assert!(
        checkpoints
            .iter()
            .any(|k| k.contains(&format!("step-{:010}-", progress.total_steps))),
        "{checkpoints:?}"
    );

    // Bulk classify over exactly the rows the job held out (same seeded split).
    let labels: Vec<usize> = rows
        .iter()
        .map(|r| LABELS.iter().position(|l| r["label"] == *l).unwrap())
        .collect();
    let (_, held_out) = stratified_split(&labels, 0.2, 7);
    assert_eq!(held_out.len() as u64, progress.eval_rows);
    let mut body = String::new();
    let mut truth = HashMap::new();
    for &r in &held_out {
        body.push_str(&format!("{}\n", rows[r]));
        truth.insert(
            rows[r]["id"].as_str().unwrap().to_string(),
            rows[r]["label"].as_str().unwrap().to_string(),
        );
    }
    cluster.put("heldout.jsonl", body).await;
    let mut spec = cluster.spec("classify-heldout", "heldout.jsonl", "jsonl", "classified/");
    spec["model"] = cluster.uri("models/sentiment/").into();
    spec["task"] = "classify".into();
    let classify = cluster.submit(&spec).await;
    let done = cluster.wait(&classify, Duration::from_secs(300)).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    let output = cluster.output_rows("classified/").await;
    assert_eq!(output.len(), held_out.len());
    let correct = output
        .iter()
        .filter(|row| truth[row["id"].as_str().unwrap()] == row["label"].as_str().unwrap())
        .count();
    let accuracy = correct as f64 / output.len() as f64;
    eprintln!(
        "held-out accuracy {accuracy:.4} from the classify job, {:.4} for the selected epoch in the training report (F1 {:.4})",
        eval.accuracy, eval.macro_f1
    );
    // The job embeds in other batches than training did: a near-tie may flip, no more.
    assert!((accuracy - eval.accuracy).abs() <= 1.0 / held_out.len() as f64 + 1e-9);

    // The same data again: the features come from the cache, the encoder is skipped.
    let mut again = training_spec(&cluster, "rt-again", "train/reviews.jsonl", "models/again/");
    again["training"]["epochs"] = 1.into();
    let again = cluster.submit(&again).await;
    let again = cluster.wait(&again, Duration::from_secs(300)).await;
    assert_eq!(again.status, JobStatus::Succeeded, "{again:?}");
    let cached = again.training.unwrap();
    assert_eq!(cached.features_cached, Some(true));
    eprintln!(
        "features: {:.2} s embedding 2000 reviews, {:.2} s from the cache",
        progress.features_seconds.unwrap(),
        cached.features_seconds.unwrap()
    );
    assert!(cached.features_seconds.unwrap() < progress.features_seconds.unwrap() / 5.0);

    // What the worker reported to Prometheus.
    let metrics = reqwest::get(format!("{}/metrics", cluster.base_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for wanted in [
        "sluice_training_steps_total",
        "sluice_checkpoints_total{outcome=\"committed\"}",
        "sluice_feature_cache_total{result=\"hit\"}",
        "sluice_job_leases_total{event=\"acquired\"}",
    ] {
        assert!(metrics.contains(wanted), "{wanted} missing");
    }
    cluster.stop().await;
}

/// What a user reaches for with a small or skewed data set, with default settings: the
/// feature cache's bucket did not exist, early stopping ends the run, balanced class weights,
/// the last or the best epoch packaged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_stopping_class_weights_and_a_cache_bucket_nobody_created() {
    let mut cluster = Cluster::new(32 * 1024).await;
    let cache_bucket = format!("{}-cache", cluster.bucket);
    cluster.settings.training.feature_cache = format!("s3://{cache_bucket}/features/");
    cluster.start(true).await;
    // Skewed: 3 in 4 rows fresh.
    let (jsonl, _) = common::rotten_tomatoes_jsonl(None);
    let skewed: String = jsonl
        .lines()
        .filter(|l| l.contains("\"fresh\""))
        .take(600)
        .chain(jsonl.lines().filter(|l| l.contains("\"rotten\"")).take(200))
        .map(|l| format!("{l}\n"))
        .collect();
    cluster.put("skewed/reviews.jsonl", skewed).await;

    let mut spec = training_spec(
        &cluster,
        "rt-small",
        "skewed/reviews.jsonl",
        "models/small/",
    );
    spec["training"]["epochs"] = 30.into();
    spec["training"]["head"] = json!({"type": "linear"});
    spec["training"]["optimizer"]["lr"] = 0.05.into();
    spec["training"]["early_stopping"] = json!({"patience": 2, "min_delta": 0.002});
    spec["training"]["class_weights"] = "balanced".into();
    spec["training"]["eval"]["metric"] = "loss".into();
    let id = cluster.submit(&spec).await;
    let job = cluster.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let progress = job.training.unwrap();
    let history = &progress.eval_history;
    let best = history
        .iter()
        .copied()
        .reduce(|best, e| if e.loss < best.loss - 0.002 { e } else { best })
        .unwrap();
    let best_index = history.iter().position(|e| e.step == best.step).unwrap();
    eprintln!(
        "stopped early: {} after {} of 30 epochs, best epoch {} (loss {:.4}, accuracy {:.4})",
        progress.stopped_early,
        history.len(),
        best.epoch,
        best.loss,
        best.accuracy
    );
    // It ran until patience ran out after the best epoch: 2 evaluations later, or to the end.
    assert!(progress.stopped_early, "{progress:?}");
    assert_eq!(history.len(), best_index + 1 + 2, "{history:?}");
    assert!(progress.step < progress.total_steps);
    assert_eq!(progress.best_step, Some(best.step));
    let report: Value = serde_json::from_str(
        &cluster
            .get_text("models/small/training-report.json")
            .await
            .expect("training report"),
    )
    .unwrap();
    assert_eq!(report["stopped_early"], true);
    assert_eq!(report["selected"]["step"], best.step);
    assert_eq!(report["selected"]["metric"], "loss");
    assert_eq!(report["class_weights"], "balanced");
    // The cache bucket was created and holds the features.
    let cache = S3Uri::parse(&format!("s3://{cache_bucket}/features/")).unwrap();
    let cached = cluster.storage.list(&cache).await.unwrap();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].uri.key.ends_with(".safetensors"));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_graph_sluice_did_not_build_trains_a_job() {
    let mut cluster = Cluster::new(32 * 1024).await;
    cluster.start(true).await;
    let (jsonl, _) = common::rotten_tomatoes_jsonl(Some(600));
    cluster.put("train/reviews.jsonl", jsonl).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sgd.onnx");
    let built = std::process::Command::new(common::assets().reference_python)
        .arg("docs/examples/custom_step_graph.py")
        .arg(&path)
        .args(["--features", "384", "--classes", "2", "--head-names"])
        .output()
        .expect("run docs/examples/custom_step_graph.py");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    cluster
        .put("graphs/sgd.onnx", std::fs::read(&path).unwrap())
        .await;

    let mut spec = training_spec(&cluster, "custom", "train/reviews.jsonl", "models/custom/");
    spec["training"]["head"] = json!({"type": "linear"});
    spec["training"]["step_graph"] = cluster.uri("graphs/sgd.onnx").into();
    spec["training"]["optimizer"]["lr"] = 0.5.into();
    spec["training"]["epochs"] = 10.into();
    let id = cluster.submit(&spec).await;
    let job = cluster.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let progress = job.training.unwrap();
    let report: Value = serde_json::from_str(
        &cluster
            .get_text("models/custom/training-report.json")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(report["step_graph"], cluster.uri("graphs/sgd.onnx"));
    let losses: Vec<f64> = report["loss_curve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_f64().unwrap())
        .collect();
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, last) = (&losses[..15], &losses[losses.len() - 15..]);
    eprintln!(
        "custom SGD graph: loss {:.4} -> {:.4}, held-out accuracy {:.4}",
        mean(first),
        mean(last),
        progress.eval.unwrap().accuracy
    );
    assert!(
        mean(last) < mean(first) * 0.9,
        "the loss did not fall: {losses:?}"
    );
    assert!(progress.eval.unwrap().accuracy > 0.6);
    // The exported head holds what the custom graph trained.
    let head = cluster
        .get_text("models/custom/sluice-model.toml")
        .await
        .unwrap();
    assert!(head.contains("head.onnx"), "{head}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_training_input_fails_early_naming_the_problem() {
    let mut cluster = Cluster::new(32 * 1024).await;
    cluster.start(true).await;
    let (jsonl, _) = common::rotten_tomatoes_jsonl(Some(40));
    let mut lines: Vec<String> = jsonl.lines().map(str::to_string).collect();
    lines[6] = json!({"id": "odd", "text": "so-so", "label": "meh"}).to_string();
    cluster
        .put("bad/unknown-label.jsonl", lines.join("\n"))
        .await;
    cluster
        .put("bad/no-label.csv", "text,category\n\"good film\",fresh\n")
        .await;
    cluster.put("bad/empty.jsonl", "\n\n").await;
    cluster.put("good/reviews.jsonl", jsonl.clone()).await;
    // A valid ONNX graph that is not a step graph: the exported inference head.
    let layout = sluice::train::HeadLayout::linear(384, 2);
    let not_a_step_graph =
        sluice::train::build_inference_graph(&layout, &layout.initial_parameters(1))
            .encode_to_vec();
    cluster.put("graphs/head.onnx", not_a_step_graph).await;
    cluster
        .put("graphs/garbage.onnx", b"not onnx at all".to_vec())
        .await;

    let mut cases = Vec::new();
    let spec =
        |name: &str, input: &str| training_spec(&cluster, name, input, &format!("out/{name}/"));
    cases.push((
        spec("unknown-label", "bad/unknown-label.jsonl"),
        vec!["line 7", "\"meh\"", "training.labels"],
    ));
    let mut csv = spec("no-label", "bad/no-label.csv");
    csv["input"]["format"] = "csv".into();
    cases.push((csv, vec!["column \"label\" missing", "text, category"]));
    cases.push((spec("empty", "bad/empty.jsonl"), vec!["empty"]));
    let mut graph = spec("not-step-graph", "good/reviews.jsonl");
    graph["training"]["step_graph"] = cluster.uri("graphs/head.onnx").into();
    cases.push((graph, vec!["step graph", "batch.features"]));
    let mut garbage = spec("garbage-graph", "good/reviews.jsonl");
    garbage["training"]["step_graph"] = cluster.uri("graphs/garbage.onnx").into();
    cases.push((garbage, vec!["garbage.onnx"]));
    let mut missing = spec("missing-graph", "good/reviews.jsonl");
    missing["training"]["step_graph"] = cluster.uri("graphs/nowhere.onnx").into();
    cases.push((missing, vec!["nowhere.onnx not found"]));

    let mut ids = Vec::new();
    for (spec, _) in &cases {
        ids.push(cluster.submit(spec).await);
    }
    for ((_, wanted), id) in cases.iter().zip(&ids) {
        let job = cluster.wait(id, Duration::from_secs(120)).await;
        assert_eq!(job.status, JobStatus::Failed, "{job:?}");
        let error = job.error.unwrap_or_default();
        for part in wanted {
            assert!(error.contains(part), "{part:?} not in {error:?}");
        }
        eprintln!("{}: {error}", job.name);
        // Nothing was packaged.
        let output = S3Uri::parse(&job.output_uri).unwrap();
        assert!(
            cluster
                .keys(&format!("{}sluice-model.toml", output.key))
                .await
                .is_empty(),
            "a failed job left a package"
        );
    }

    // Refused at submission: the spec itself is wrong.
    let mut bad = training_spec(&cluster, "one-label", "good/reviews.jsonl", "out/x/");
    bad["training"]["labels"] = json!(["fresh"]);
    let (status, body) = cluster.post_spec(&bad, None).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("training.labels"), "{body}");
    cluster.stop().await;
}
