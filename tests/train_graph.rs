//! The training step graph on the real ONNX Runtime: its gradients and AdamW updates match
//! an independent f64 computation (itself checked by finite differences), for a linear head
//! and an MLP with dropout; a malformed step graph is refused naming the problem.

mod common;

use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sluice::settings::EngineSettings;
use sluice::train::builder::GraphBuilder;
use sluice::train::onnx::Dim;
use sluice::train::reference::{ReferenceState, loss_and_grads};
use sluice::train::{
    AdamW, HeadLayout, StepBatch, StepSession, Tensors, TrainError, build_inference_graph,
    build_step_graph,
};

fn engine() -> EngineSettings {
    common::cpu_engine()
}

/// A batch of `rows` random features, random one-hot targets, and dropout masks.
struct Batch {
    rows: usize,
    features: Vec<f32>,
    targets: Vec<f32>,
    masks: Vec<Vec<f32>>,
}

fn batch(layout: &HeadLayout, rows: usize, seed: u64) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let features = (0..rows * layout.input_dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut targets = vec![0.0; rows * layout.classes];
    for r in 0..rows {
        targets[r * layout.classes + rng.random_range(0..layout.classes)] = 1.0;
    }
    let keep = 1.0 - layout.dropout;
    let masks = if layout.dropout > 0.0 {
        layout
            .hidden
            .iter()
            .map(|&width| {
                (0..rows * width)
                    .map(|_| {
                        if rng.random::<f32>() < keep {
                            1.0 / keep
                        } else {
                            0.0
                        }
                    })
                    .collect()
            })
            .collect()
    } else {
        Vec::new()
    };
    Batch {
        rows,
        features,
        targets,
        masks,
    }
}

/// The batch with each one-hot target scaled by its class's weight, as `class_weights` does.
fn weighted(mut b: Batch, layout: &HeadLayout) -> Batch {
    const WEIGHTS: [f32; 4] = [0.4, 2.5, 1.7, 0.9];
    for (i, t) in b.targets.iter_mut().enumerate() {
        *t *= WEIGHTS[(i % layout.classes) % 4];
    }
    b
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y).abs())
        .fold(0.0, f64::max)
}

fn layouts() -> Vec<(&'static str, HeadLayout)> {
    vec![
        ("linear", HeadLayout::linear(12, 3)),
        (
            "mlp",
            HeadLayout {
                input_dim: 12,
                classes: 3,
                hidden: vec![10, 6],
                dropout: 0.25,
            },
        ),
    ]
}

#[test]
fn the_reference_gradients_match_finite_differences() {
    for ((label, layout), class_weights) in layouts()
        .into_iter()
        .flat_map(|l| [(l.clone(), false), (l, true)])
    {
        let params = layout.initial_parameters(3);
        let b = batch(&layout, 7, 11);
        let b = if class_weights {
            weighted(b, &layout)
        } else {
            b
        };
        let (_, grads) =
            loss_and_grads(&layout, &params, &b.features, &b.targets, b.rows, &b.masks);
        let h = 1e-3f32;
        for (name, _) in layout.parameters() {
            for index in [0, params[&name].len() / 2, params[&name].len() - 1] {
                let loss_at = |delta: f32| {
                    let mut moved: Tensors = params.clone();
                    moved.get_mut(&name).unwrap().data[index] += delta;
                    loss_and_grads(&layout, &moved, &b.features, &b.targets, b.rows, &b.masks).0
                };
                let numeric = (loss_at(h) - loss_at(-h)) / (2.0 * h as f64);
                let analytic = grads[&name][index];
                assert!(
                    (numeric - analytic).abs() < 1e-4 + 1e-3 * analytic.abs(),
                    "{label} {name}[{index}]: finite difference {numeric}, analytic {analytic}"
                );
            }
        }
    }
}

#[test]
fn the_step_graph_matches_the_reference_over_many_steps() {
    let optimizer = AdamW {
        weight_decay: 0.05,
        ..Default::default()
    };
    for ((label, layout), class_weights) in layouts()
        .into_iter()
        .flat_map(|l| [(l.clone(), false), (l, true)])
    {
        let model = build_step_graph(&layout, &optimizer).encode_to_vec();
        let mut session = StepSession::open(label, &model, &engine()).unwrap();
        assert!(session.contract().has_grads);
        let start = layout.initial_parameters(5);
        let mut state = session.initial_state(start.clone()).unwrap();
        let mut reference = ReferenceState::new(&start);
        let mut first_loss = None;
        let mut last_loss = 0.0;
        // The same 4 batches again and again: the loss must fall.
        for step in 0..40u64 {
            let b = batch(&layout, 16, 100 + step % 4);
            let b = if class_weights {
                weighted(b, &layout)
            } else {
                b
            };
            let lr = 0.03;
            let out = session
                .step(
                    &mut state,
                    &StepBatch {
                        rows: b.rows,
                        features: &b.features,
                        targets: &b.targets,
                        dropout: b.masks.clone(),
                    },
                    lr,
                )
                .unwrap();
            let current = reference.tensors(&layout);
            let (loss, grads) =
                loss_and_grads(&layout, &current, &b.features, &b.targets, b.rows, &b.masks);
            assert!(
                (out.loss as f64 - loss).abs() < 1e-4,
                "{label} step {step}: loss {} vs {loss}",
                out.loss
            );
            for (name, g) in &grads {
                let diff = max_abs_diff(&out.grads[name].data, g);
                assert!(
                    diff < 1e-4,
                    "{label} step {step}: grad {name} differs by {diff}"
                );
            }
            reference.adamw(&optimizer, &grads, lr as f64);
            for (name, p) in &reference.params {
                let diff = max_abs_diff(&state.params[name].data, p);
                assert!(diff < 1e-4, "{label} step {step}: {name} differs by {diff}");
            }
            first_loss.get_or_insert(out.loss);
            last_loss = out.loss;
        }
        assert_eq!(state.step, 40);
        assert!(
            last_loss < first_loss.unwrap() * 0.9,
            "{label}: loss {} → {last_loss}",
            first_loss.unwrap()
        );
    }
}

#[test]
fn the_exported_head_computes_probabilities_from_trained_parameters() {
    let layout = HeadLayout {
        input_dim: 12,
        classes: 3,
        hidden: vec![8],
        dropout: 0.5,
    };
    let params = layout.initial_parameters(9);
    let model = build_inference_graph(&layout, &params).encode_to_vec();
    let (mut session, _) = sluice::engine::open_session(
        sluice::engine::ModelSource::Memory {
            name: "head",
            bytes: &model,
        },
        &engine(),
    )
    .unwrap();
    let b = batch(&layout, 5, 1);
    let input = ort::value::Tensor::from_array((vec![5i64, 12], b.features.clone())).unwrap();
    let outputs = session.run(ort::inputs!["features" => input]).unwrap();
    let (_, probs) = outputs["probabilities"]
        .try_extract_tensor::<f32>()
        .unwrap();
    // No dropout at inference: softmax of the reference logits.
    let expected = sluice::train::reference::logits(&layout, &params, &b.features, 5);
    assert_eq!(probs.len(), 15);
    for (row, logits) in probs.chunks(3).zip(expected.chunks(3)) {
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
        for (p, l) in row.iter().zip(logits) {
            let want = (l - max).exp() / sum;
            assert!((*p as f64 - want).abs() < 1e-5, "{row:?} vs {logits:?}");
        }
    }
}

#[test]
fn malformed_step_graphs_are_refused_naming_the_problem() {
    let err = StepSession::open("garbage.onnx", b"not an onnx model", &engine())
        .err()
        .unwrap();
    assert!(matches!(err, TrainError::Contract { .. }), "{err}");
    assert!(err.to_string().contains("garbage.onnx"), "{err}");

    // A valid ONNX model that is no step graph: features in, logits out, no parameters.
    let mut b = GraphBuilder::new("not_a_step");
    let x = b.input("batch.features", &[Dim::Named("batch"), Dim::Fixed(4)]);
    let y = b.op("Relu", &[&x], vec![]);
    b.output(&y, "logits", &[Dim::Named("batch"), Dim::Fixed(4)]);
    let model = b.finish("", &[]).encode_to_vec();
    let err = StepSession::open("custom-step.onnx", &model, &engine())
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(
        text.contains("custom-step.onnx") && text.contains("batch.targets"),
        "{text}"
    );
}

#[test]
fn a_step_graph_sluice_did_not_build_trains_under_the_contract() {
    // Softmax regression with SGD + momentum, written with the `onnx` Python package.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("custom.onnx");
    common::custom_step_graph(&path, 12, 3, &["--momentum", "0.9"]);
    let bytes = std::fs::read(&path).unwrap();
    let mut session = StepSession::open("custom.onnx", &bytes, &engine()).unwrap();
    let contract = session.contract().clone();
    assert_eq!(
        contract
            .params
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["w", "b"]
    );
    assert_eq!(contract.opt.len(), 2);
    assert!(!contract.has_grads);

    // Its parameters under sluice's names, for the reference computation.
    let layout = HeadLayout::linear(12, 3);
    let start = layout.initial_parameters(21);
    let mut params = Tensors::new();
    params.insert("w".into(), start["head.weight"].clone());
    params.insert("b".into(), start["head.bias"].clone());
    let mut state = session.initial_state(params).unwrap();
    let (lr, momentum) = (0.05f64, 0.9f64);
    let mut reference = ReferenceState::new(&start);
    let mut velocity: std::collections::BTreeMap<String, Vec<f64>> = reference
        .params
        .iter()
        .map(|(k, v)| (k.clone(), vec![0.0; v.len()]))
        .collect();
    let mut losses = Vec::new();
    for step in 0..30u64 {
        let b = batch(&layout, 16, 200 + step % 3);
        let out = session
            .step(
                &mut state,
                &StepBatch {
                    rows: b.rows,
                    features: &b.features,
                    targets: &b.targets,
                    dropout: vec![],
                },
                lr as f32,
            )
            .unwrap();
        let (loss, grads) = loss_and_grads(
            &layout,
            &reference.tensors(&layout),
            &b.features,
            &b.targets,
            b.rows,
            &[],
        );
        assert!(
            (out.loss as f64 - loss).abs() < 1e-4,
            "step {step}: {} vs {loss}",
            out.loss
        );
        for (name, g) in &grads {
            let v = velocity.get_mut(name).unwrap();
            let p = reference.params.get_mut(name).unwrap();
            for i in 0..g.len() {
                v[i] = momentum * v[i] + g[i];
                p[i] -= lr * v[i];
            }
        }
        let diff_w = max_abs_diff(&state.params["w"].data, &reference.params["head.weight"]);
        let diff_b = max_abs_diff(&state.params["b"].data, &reference.params["head.bias"]);
        assert!(
            diff_w < 1e-4 && diff_b < 1e-4,
            "step {step}: {diff_w} {diff_b}"
        );
        losses.push(out.loss);
    }
    assert!(losses[29] < losses[0] * 0.9, "{losses:?}");
}
