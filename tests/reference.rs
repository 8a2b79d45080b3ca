//! sluice's embeddings against an independent implementation: the Python onnxruntime +
//! tokenizers pipeline in `scripts/reference_embeddings.py`, run here on the same texts.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::Cluster;
use sluice::job::JobStatus;

#[tokio::test]
async fn embeddings_match_the_python_reference_pipeline() {
    let assets = common::assets();
    // 200 reviews, including the longest ones (truncation) and a few very short.
    let (all, rows) = common::rotten_tomatoes_jsonl(None);
    let mut lines: Vec<&str> = all.lines().collect();
    lines.sort_by_key(|l| std::cmp::Reverse(l.len()));
    let mut chosen: std::collections::BTreeSet<usize> = (0..20).collect();
    chosen.extend(lines.len() - 10..lines.len());
    chosen.extend((0..lines.len()).step_by(lines.len() / 170));
    let input: String = chosen.iter().map(|&i| format!("{}\n", lines[i])).collect();
    assert!(rows.len() > 200);

    let dir = tempfile::tempdir().unwrap();
    let input_path = dir.path().join("input.jsonl");
    let reference_path = dir.path().join("reference.jsonl");
    std::fs::write(&input_path, &input).unwrap();
    let status = std::process::Command::new(&assets.reference_python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/reference_embeddings.py"
        ))
        .arg(&assets.model_dir)
        .arg(&input_path)
        .arg(&reference_path)
        .status()
        .expect("run the Python reference");
    assert!(status.success(), "reference script failed");
    let reference: HashMap<String, Vec<f64>> = std::fs::read_to_string(&reference_path)
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
        .collect();

    let mut cluster = Cluster::new(1 << 20).await;
    cluster.start(true).await;
    cluster.put("in.jsonl", input).await;
    let id = cluster
        .submit(&cluster.spec("reference", "in.jsonl", "jsonl", "out/"))
        .await;
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
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norms = a.iter().map(|x| x * x).sum::<f64>().sqrt()
            * b.iter().map(|x| x * x).sum::<f64>().sqrt();
        let cosine = dot / norms;
        worst = worst.min(cosine);
        assert!(cosine >= 0.9999, "{id}: cosine {cosine}");
    }
    eprintln!(
        "{} embeddings, worst cosine to the Python reference {worst:.7}",
        ours.len()
    );
    cluster.stop().await;
}
