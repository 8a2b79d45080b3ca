//! Bring your own model: `sluice model push` reads what the model says about itself (graph,
//! config.json, sentence-transformers files, tokenizer files) and runs it once before
//! uploading. The fp32 MiniLM-L3 from its registry package is pushed with no size flags (also
//! re-saved with ONNX external data) and run as an embed job against the Python reference;
//! flags that disagree with the model's config warn, and a wrong dimension is refused.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::Cluster;
use sluice::cli::PushOptions;
use sluice::job::JobStatus;
use sluice::job::{ModelManifest, Pooling};
use sluice::uri::S3Uri;

fn texts() -> String {
    let (all, _) = common::rotten_tomatoes_jsonl(Some(60));
    all
}

/// The independent pipeline (`scripts/reference_embeddings.py`): id → embedding.
fn python_reference(model_dir: &Path, input: &str, max_length: usize) -> HashMap<String, Vec<f64>> {
    let assets = common::assets();
    let dir = tempfile::tempdir().unwrap();
    let (input_path, out) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    std::fs::write(&input_path, input).unwrap();
    let status = std::process::Command::new(&assets.reference_python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/reference_embeddings.py"
        ))
        .args([model_dir, &input_path, &out])
        .args(["--max-length", &max_length.to_string()])
        .status()
        .expect("run the Python reference");
    assert!(status.success(), "reference script failed");
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let e = v["embedding"].as_array().unwrap().iter();
            let e = e.map(|x| x.as_f64().unwrap()).collect();
            (v["id"].as_str().unwrap().to_string(), e)
        })
        .collect()
}

/// Runs the texts through `model` as an embed job; the worst cosine to the reference.
async fn worst_cosine(
    cluster: &Cluster,
    model: &str,
    out: &str,
    reference: &HashMap<String, Vec<f64>>,
) -> f64 {
    let mut spec = cluster.spec("own-model", "in.jsonl", "jsonl", out);
    spec["model"] = model.into();
    let id = cluster.submit(&spec).await;
    let job = cluster.wait(&id, Duration::from_secs(120)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let rows = cluster.output_rows(out).await;
    assert_eq!(rows.len(), reference.len());
    rows.iter()
        .map(|row| {
            let ours: Vec<f64> = row["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let theirs = &reference[row["id"].as_str().unwrap()];
            assert_eq!(ours.len(), 384);
            let dot: f64 = ours.iter().zip(theirs).map(|(a, b)| a * b).sum();
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            dot / (norm(&ours) * norm(theirs))
        })
        .fold(1.0, f64::min)
}

async fn manifest_at(cluster: &Cluster, key: &str) -> ModelManifest {
    let text = cluster
        .get_text(&format!("{key}sluice-model.toml"))
        .await
        .expect("manifest");
    ModelManifest::parse(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_l3_model_pushed_as_it_comes_and_with_external_data_matches_python() {
    let assets = common::assets();
    let mut cluster = Cluster::new(1 << 20).await;
    cluster.start(true).await;
    let input = texts();
    cluster.put("in.jsonl", input.clone()).await;
    let reference = python_reference(&assets.l3_dir, &input, 512);

    // As the README shows it: `sluice model push DIR URI`, no size flags.
    let pushed = cluster
        .command()
        .args(["model", "push"])
        .arg(&assets.l3_dir)
        .arg(cluster.uri("models/l3/"))
        .output()
        .await
        .expect("run sluice model push");
    let stderr = String::from_utf8_lossy(&pushed.stderr);
    assert!(pushed.status.success(), "{stderr}");
    let manifest = manifest_at(&cluster, "models/l3/").await;
    assert_eq!(
        (manifest.dimension, manifest.max_length, manifest.pooling),
        (384, 512, Pooling::Mean),
        "read from the graph: {manifest:?}"
    );
    let worst = worst_cosine(&cluster, &cluster.uri("models/l3/"), "out/", &reference).await;
    assert!(worst >= 0.9999, "worst cosine {worst}");

    // The same model with its weights in `model.onnx_data`, as exports over 2 GB come.
    let dir = tempfile::tempdir().unwrap();
    let script = "import onnx, sys\n\
        m = onnx.load(sys.argv[1])\n\
        onnx.save(m, sys.argv[2], save_as_external_data=True, all_tensors_to_one_file=True, location='model.onnx_data', size_threshold=1024)\n";
    let status = std::process::Command::new(&assets.reference_python)
        .args(["-c", script])
        .arg(assets.l3_dir.join("model.onnx"))
        .arg(dir.path().join("model.onnx"))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::copy(
        assets.l3_dir.join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let target = S3Uri::parse(&cluster.uri("models/l3-external/")).unwrap();
    let options = PushOptions {
        engine: cluster.settings.engine.clone(),
        ..Default::default()
    };
    let pushed = sluice::cli::push(&cluster.storage, dir.path(), &target, &options)
        .await
        .unwrap();
    let files = &pushed.manifest.files;
    assert!(files["model.onnx"].size < 1 << 20, "{files:?}");
    assert!(files["model.onnx_data"].size > 60 << 20, "{files:?}");
    assert_eq!(
        manifest_at(&cluster, "models/l3-external/").await.files,
        *files
    );
    let worst_external = worst_cosine(
        &cluster,
        &cluster.uri("models/l3-external/"),
        "out-external/",
        &reference,
    )
    .await;
    assert!(worst_external >= 0.9999, "worst cosine {worst_external}");
    eprintln!(
        "fp32 MiniLM-L3 pushed from its graph: worst cosine to Python {worst:.7}, with external data {worst_external:.7}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_that_disagree_with_the_config_warn_and_a_wrong_size_is_refused() {
    let assets = common::assets();
    let cluster = Cluster::new(1 << 20).await;
    let dir = tempfile::tempdir().unwrap();
    for name in ["model.onnx", "tokenizer.json"] {
        std::os::unix::fs::symlink(assets.l3_dir.join(name), dir.path().join(name)).unwrap();
    }
    // What a sentence-transformers folder of this model holds (no Normalize module).
    let files = [
        (
            "config.json",
            r#"{"model_type": "bert", "hidden_size": 384, "max_position_embeddings": 512}"#,
        ),
        (
            "modules.json",
            r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"#,
        ),
        (
            "1_Pooling/config.json",
            r#"{"word_embedding_dimension": 384, "pooling_mode_mean_tokens": true}"#,
        ),
        (
            "tokenizer_config.json",
            r#"{"pad_token": "[PAD]", "cls_token": "[CLS]", "model_max_length": 512}"#,
        ),
    ];
    std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let target = S3Uri::parse(&cluster.uri("models/st/")).unwrap();
    let options = PushOptions {
        engine: cluster.settings.engine.clone(),
        ..Default::default()
    };
    let pushed = sluice::cli::push(&cluster.storage, dir.path(), &target, &options)
        .await
        .unwrap();
    assert!(pushed.warnings.is_empty(), "{:?}", pushed.warnings);
    let m = &pushed.manifest;
    assert_eq!(
        (m.pooling, m.normalize, m.dimension, m.max_length, m.pad_id),
        (Pooling::Mean, false, 384, 512, Some(0))
    );

    let disagreeing = PushOptions {
        pooling: Some(Pooling::Cls),
        max_length: Some(128),
        ..options.clone()
    };
    let pushed = sluice::cli::push(&cluster.storage, dir.path(), &target, &disagreeing)
        .await
        .unwrap();
    let warnings = pushed.warnings.join("\n");
    assert!(
        warnings.contains("--pooling Cls overrides Mean from 1_Pooling/config.json"),
        "{warnings}"
    );
    assert!(
        warnings.contains("--max-length 128 overrides 512"),
        "{warnings}"
    );
    assert_eq!(
        (pushed.manifest.pooling, pushed.manifest.max_length),
        (Pooling::Cls, 128)
    );

    // A size the model does not have is found by running it, before anything is uploaded.
    let wrong = PushOptions {
        dimension: Some(768),
        ..options.clone()
    };
    let other = S3Uri::parse(&cluster.uri("models/wrong/")).unwrap();
    let err = sluice::cli::push(&cluster.storage, dir.path(), &other, &wrong)
        .await
        .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("--dimension 768 overrides 384") || err.contains("dimension 768"),
        "{err}"
    );
    assert!(err.contains("running one text through the model"), "{err}");
    assert!(cluster.keys("models/wrong/").await.is_empty());
}
