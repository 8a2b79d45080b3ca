//! sluice's int8 rewrite against `onnxruntime.quantization.quantize_dynamic` on the fp32
//! MiniLM-L3: the same int8 weights and scales, and the same outputs on the same inputs
//! (`scripts/compress_reference.py` does the Python side).

mod common;

use std::path::Path;

use sluice::compress::{QuantizeOptions, quantize_model};

fn compare(per_channel: bool) -> serde_json::Value {
    let assets = common::assets();
    let source = assets.l3_dir.join("model.onnx");
    let bytes = std::fs::read(&source).unwrap();
    let (int8, summary) = quantize_model(
        &bytes,
        &assets.l3_dir,
        "model.onnx",
        // Everything onnxruntime quantizes, GELU outputs included.
        QuantizeOptions {
            per_channel,
            after_gelu: true,
        },
    )
    .unwrap();
    // 3 layers × (Q, K, V, attention output, two feed-forward); the attention products
    // (both inputs computed) stay float.
    assert_eq!(summary.matmuls_quantized, 18, "{summary:?}");
    assert_eq!(summary.left_in_float, 6, "{summary:?}");
    assert!(
        int8.len() < bytes.len(),
        "{} >= {}",
        int8.len(),
        bytes.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("int8.onnx");
    std::fs::write(&ours, int8).unwrap();
    let out = dir.path().join("figures.json");
    let mut command = std::process::Command::new(&assets.reference_python);
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/compress_reference.py"))
        .args([&source, &ours, &out]);
    if per_channel {
        command.arg("--per-channel");
    }
    let status = command.status().expect("run the Python reference");
    assert!(status.success(), "compress_reference.py failed");
    let figures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    eprintln!("per_channel={per_channel}: {figures}");
    figures
}

fn check(figures: &serde_json::Value) {
    assert_eq!(figures["weights_compared"], 18, "{figures}");
    assert_eq!(figures["missing"].as_array().unwrap().len(), 0, "{figures}");
    // Identical arithmetic: every int8 weight equal (an f32 rounding tie may differ by one).
    assert!(
        figures["equal_fraction"].as_f64().unwrap() > 0.99999,
        "{figures}"
    );
    assert!(figures["max_step"].as_i64().unwrap() <= 1, "{figures}");
    assert!(
        figures["max_scale_rel_err"].as_f64().unwrap() < 1e-6,
        "{figures}"
    );
    // Same graph, same weights: the same hidden states.
    assert!(
        figures["max_abs_diff_ours_vs_ort"].as_f64().unwrap() < 1e-3,
        "{figures}"
    );
    let ours = figures["mean_cosine_ours_vs_fp32"].as_f64().unwrap();
    let theirs = figures["mean_cosine_ort_vs_fp32"].as_f64().unwrap();
    assert!((ours - theirs).abs() < 1e-3 && ours > 0.9, "{figures}");
    let ops: Vec<&str> = figures["ops_ours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(ops.contains(&"MatMulInteger") && ops.contains(&"DynamicQuantizeLinear"));
}

/// Both variants in one test: the Python side loads three sessions each, one at a time.
#[test]
fn int8_per_tensor_and_per_channel_match_onnxruntime() {
    check(&compare(false));
    check(&compare(true));
}
