//! The tensor task's engine on a real non-text model: a scikit-learn pipeline trained here on
//! the wine table bundled with scikit-learn, converted with skl2onnx (string labels, ZipMap
//! probabilities), run over 100,000 rows in batches of varying size; every label and
//! probability equals scikit-learn's own. Mapping errors name the input or output.

mod common;

use std::path::Path;
use std::time::Instant;

use serde_json::Value;
use serde_json::value::RawValue;
use sluice::engine::{EngineError, TensorEngine, feed_row};
use sluice::job::TensorSpec;
use sluice::settings::EngineSettings;

const ROWS: usize = 100_000;

/// Trains, converts and writes `model.onnx`, `rows.jsonl` (13 features per row, as named
/// fields) and `expected.jsonl` (scikit-learn's label and probabilities per row).
const SCRIPT: &str = r#"
import json, sys
import numpy as np
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skl2onnx import to_onnx

out, rows = sys.argv[1], int(sys.argv[2])
wine = load_wine()
X, y = wine.data, wine.target_names[wine.target]
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
onx = to_onnx(model, X[:1].astype(np.float32), target_opset=17)
open(f"{out}/model.onnx", "wb").write(onx.SerializeToString())
rng = np.random.default_rng(7)
base = X[rng.integers(0, len(X), rows)]
data = (base * rng.normal(1.0, 0.05, base.shape)).astype(np.float32)
# scikit-learn on the same float32 values the model is fed.
labels = model.predict(data.astype(np.float64))
probs = model.predict_proba(data.astype(np.float64))
names = [f"f{i}" for i in range(X.shape[1])]
with open(f"{out}/rows.jsonl", "w") as f, open(f"{out}/expected.jsonl", "w") as e:
    for i in range(rows):
        row = {"id": i}
        row.update({n: float(v) for n, v in zip(names, data[i])})
        f.write(json.dumps(row) + "\n")
        e.write(json.dumps({"label": str(labels[i]), "probabilities": dict(zip(model.classes_.tolist(), probs[i].tolist()))}) + "\n")
"#;

fn prepare(dir: &Path) {
    let assets = common::assets();
    let status = std::process::Command::new(&assets.reference_python)
        .args(["-c", SCRIPT])
        .arg(dir)
        .arg(ROWS.to_string())
        .status()
        .expect("run python (scripts/assets.sh installs scikit-learn and skl2onnx)");
    assert!(status.success(), "training script failed");
}

fn spec(text: &str) -> TensorSpec {
    toml::from_str(text).unwrap()
}

fn settings() -> EngineSettings {
    EngineSettings {
        ort_dylib_path: common::assets().ort_dylib,
        ..EngineSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scikit_learn_classifier_runs_on_named_inputs_and_equals_scikit_learn() {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let names: Vec<String> = (0..13).map(|i| format!("\"f{i}\"")).collect();
    let spec = spec(&format!("inputs = {{ X = [{}] }}", names.join(", ")));
    let (folder, chosen, engine_settings) = (dir.path().to_path_buf(), spec.clone(), settings());
    let engine =
        tokio::task::spawn_blocking(move || TensorEngine::load(&folder, &chosen, &engine_settings))
            .await
            .unwrap()
            .unwrap();
    assert!(engine.plan().classifier.is_some(), "{:?}", engine.plan());

    // Rows parsed as the worker reads them: each field's raw JSON value.
    let fields = spec.fields();
    let text = std::fs::read_to_string(dir.path().join("rows.jsonl")).unwrap();
    let mut feeds = Vec::with_capacity(ROWS);
    for line in text.lines() {
        let row: std::collections::HashMap<String, Box<RawValue>> =
            serde_json::from_str(line).unwrap();
        let values: Vec<Box<RawValue>> = fields.iter().map(|f| row[f].clone()).collect();
        feeds.push(feed_row(engine.plan(), &fields, &values).unwrap());
    }
    // Batches of varying size, as chunks and length-sorted batches come.
    let started = Instant::now();
    let mut answers = Vec::with_capacity(ROWS);
    let sizes = [1usize, 7, 256, 1000, 4096];
    let mut rest = feeds.as_slice();
    let mut turn = 0;
    while !rest.is_empty() {
        let take = sizes[turn % sizes.len()].min(rest.len());
        let (batch, after) = rest.split_at(take);
        answers.extend(engine.run(batch.to_vec()).await.unwrap());
        rest = after;
        turn += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "tensor task: {ROWS} rows in {seconds:.2} s through the engine: {:.0} rows/s",
        ROWS as f64 / seconds
    );

    let expected = std::fs::read_to_string(dir.path().join("expected.jsonl")).unwrap();
    let mut worst = 0f64;
    for (i, (ours, theirs)) in answers.iter().zip(expected.lines()).enumerate() {
        let theirs: Value = serde_json::from_str(theirs).unwrap();
        let get = |key: &str| &ours.iter().find(|(k, _)| k == key).unwrap().1;
        assert_eq!(get("label"), &theirs["label"], "row {i}: {ours:?}");
        let (ours_p, theirs_p) = (get("probabilities"), &theirs["probabilities"]);
        let ours_p = ours_p.as_object().unwrap();
        assert_eq!(ours_p.len(), 3, "row {i}: {ours_p:?}");
        for (class, p) in ours_p {
            let diff = (p.as_f64().unwrap() - theirs_p[class].as_f64().unwrap()).abs();
            worst = worst.max(diff);
        }
    }
    assert_eq!(answers.len(), ROWS);
    assert!(worst < 1e-4, "largest probability difference {worst}");
    eprintln!("labels equal on all {ROWS} rows; largest probability difference {worst:.2e}");
}

#[tokio::test]
async fn mapping_errors_name_the_input_and_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let assets = common::assets();
    let status = std::process::Command::new(&assets.reference_python)
        .args(["-c", SCRIPT])
        .arg(dir.path())
        .arg("10")
        .status()
        .unwrap();
    assert!(status.success());
    let check = |text: &str| {
        let spec = spec(text);
        match TensorEngine::check(dir.path(), &spec, &settings()) {
            Err(EngineError::Model(message)) => message,
            other => panic!("{text}: {other:?}"),
        }
    };
    let e = check(r#"inputs = { Y = "f0" }"#);
    assert!(e.contains("tensor.inputs names \"Y\", which the model has no input of; its inputs: X (float32 [?, 13])"), "{e}");
    let e = check("inputs = {}");
    assert!(
        e.contains("model input \"X\" (float32 [?, 13]) has no field mapped to it"),
        "{e}"
    );
    let e = check(
        r#"inputs = { X = "f0" }
outputs = ["output_probabilities"]"#,
    );
    assert!(e.contains("tensor.outputs names \"output_probabilities\", which the model has no output of; its outputs: output_label (string [?]), output_probability (sequence of map(string → float32))"), "{e}");
    let e = check(
        r#"inputs = { X = "f0" }
tokenize = ["f0"]"#,
    );
    assert!(e.contains("dtype mismatch"), "{e}");
}
