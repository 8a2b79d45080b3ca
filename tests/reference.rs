//! sluice's embeddings against an independent implementation: the Python onnxruntime +
//! tokenizers pipeline in `scripts/reference_embeddings.py`, run here on the same texts, for
//! the int8 MiniLM-L6 and the fp32 MiniLM-L3 (which has no token_type_ids input and an
//! unnamed output).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use common::Cluster;
use sluice::cli::PushOptions;
use sluice::job::JobStatus;
use sluice::uri::S3Uri;

/// 200 reviews, including the longest ones (truncation at 128 tokens for L3), the shortest,
/// and a long synthetic one that both models must truncate.
fn sample_input() -> String {
    let (all, _) = common::rotten_tomatoes_jsonl(None);
    let mut lines: Vec<&str> = all.lines().collect();
    lines.sort_by_key(|l| std::cmp::Reverse(l.len()));
    let mut chosen: BTreeSet<usize> = (0..20).collect();
    chosen.extend(lines.len() - 10..lines.len());
    chosen.extend((0..lines.len()).step_by(lines.len() / 170));
    let mut input: String = chosen.iter().map(|&i| format!("{}\n", lines[i])).collect();
    let long = "a film that goes on and on and never quite ends ".repeat(60);
    input.push_str(&serde_json::json!({"id": "very-long", "text": long}).to_string());
    input.push('\n');
    input
}

fn python_reference(model_dir: &Path, input: &str, max_length: usize) -> HashMap<String, Vec<f64>> {
    let assets = common::assets();
    let dir = tempfile::tempdir().unwrap();
    let input_path = dir.path().join("input.jsonl");
    let reference_path = dir.path().join("reference.jsonl");
    std::fs::write(&input_path, input).unwrap();
    let status = std::process::Command::new(&assets.reference_python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/reference_embeddings.py"
        ))
        .arg(model_dir)
        .arg(&input_path)
        .arg(&reference_path)
        .args(["--max-length", &max_length.to_string()])
        .status()
        .expect("run the Python reference");
    assert!(status.success(), "reference script failed");
    std::fs::read_to_string(&reference_path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let e = v["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            (v["id"].as_str().unwrap().to_string(), e)
        })
        .collect()
}

/// Runs the sample through a sluice job with `model_uri` and compares every vector.
async fn compare(
    cluster: &mut Cluster,
    model_uri: &str,
    reference: &HashMap<String, Vec<f64>>,
    input: String,
) -> f64 {
    cluster.put("in.jsonl", input).await;
    let mut spec = cluster.spec("reference", "in.jsonl", "jsonl", "out/");
    spec["model"] = model_uri.into();
    let id = cluster.submit(&spec).await;
    let job = cluster.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let ours = cluster.output_rows("out/").await;
    assert_eq!(ours.len(), reference.len());
    assert!(ours.len() >= 100);
    let mut worst = 1.0f64;
    for row in &ours {
        let id = row["id"].as_str().unwrap();
        let a: Vec<f64> = row["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let b = &reference[id];
        assert_eq!(a.len(), b.len());
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norms = a.iter().map(|x| x * x).sum::<f64>().sqrt()
            * b.iter().map(|x| x * x).sum::<f64>().sqrt();
        let cosine = dot / norms;
        worst = worst.min(cosine);
        assert!(cosine >= 0.9999, "{id}: cosine {cosine}");
    }
    worst
}

#[tokio::test]
async fn int8_minilm_l6_matches_the_python_reference() {
    let assets = common::assets();
    let input = sample_input();
    let reference = python_reference(&assets.model_dir, &input, 256);
    let mut cluster = Cluster::new(1 << 20).await;
    cluster.start(true).await;
    let model = cluster.model_uri.clone();
    let worst = compare(&mut cluster, &model, &reference, input).await;
    eprintln!(
        "int8 MiniLM-L6: {} embeddings, worst cosine to Python {worst:.7}",
        reference.len()
    );
    cluster.stop().await;
}

#[tokio::test]
async fn fp32_minilm_l3_matches_the_python_reference() {
    let assets = common::assets();
    let input = sample_input();
    let reference = python_reference(&assets.l3_dir, &input, 128);
    let mut cluster = Cluster::new(1 << 20).await;
    cluster.start(true).await;
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
        &assets.l3_dir,
        &S3Uri::parse(&model).unwrap(),
        &options,
    )
    .await
    .unwrap();
    let worst = compare(&mut cluster, &model, &reference, input).await;
    eprintln!(
        "fp32 MiniLM-L3: {} embeddings, worst cosine to Python {worst:.7}",
        reference.len()
    );
    cluster.stop().await;
}
