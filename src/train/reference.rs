//! An independent, plain-Rust (f64) computation of what the step graph computes: the head's
//! loss, its gradients and the AdamW update. Tests check the ONNX graph against it and it
//! against finite differences.

use std::collections::BTreeMap;

use super::head::{HeadLayout, Tensors};
use super::step::AdamW;

/// Gradients by parameter name, in f64.
pub type Grads = BTreeMap<String, Vec<f64>>;

/// `[rows, inner] · [inner, cols]`.
fn matmul(a: &[f64], b: &[f64], rows: usize, inner: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows * cols];
    for r in 0..rows {
        for k in 0..inner {
            let x = a[r * inner + k];
            for c in 0..cols {
                out[r * cols + c] += x * b[k * cols + c];
            }
        }
    }
    out
}

fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = a[r * cols + c];
        }
    }
    out
}

fn widen(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| v as f64).collect()
}

/// What the forward pass leaves for the backward pass.
struct Forward {
    /// Each dense layer's input.
    inputs: Vec<Vec<f64>>,
    /// Each dense layer's pre-activation.
    pre: Vec<Vec<f64>>,
    logits: Vec<f64>,
}

fn forward(
    layout: &HeadLayout,
    params: &Tensors,
    features: &[f32],
    rows: usize,
    masks: &[Vec<f32>],
) -> Forward {
    let layers = layout.layers();
    let mut inputs: Vec<Vec<f64>> = Vec::new();
    let mut pre: Vec<Vec<f64>> = Vec::new();
    let mut current = widen(features);
    for (i, layer) in layers.iter().enumerate() {
        let w = widen(&params[&layer.weight].data);
        let b = widen(&params[&layer.bias].data);
        let mut z = matmul(&current, &w, rows, layer.inputs, layer.outputs);
        for r in 0..rows {
            for c in 0..layer.outputs {
                z[r * layer.outputs + c] += b[c];
            }
        }
        inputs.push(current);
        if i + 1 == layers.len() {
            pre.push(z.clone());
            current = z;
            break;
        }
        let mut a: Vec<f64> = z.iter().map(|&v| v.max(0.0)).collect();
        if let Some(mask) = masks.get(i) {
            for (v, m) in a.iter_mut().zip(mask) {
                *v *= *m as f64;
            }
        }
        pre.push(z);
        current = a;
    }
    Forward {
        inputs,
        pre,
        logits: current,
    }
}

/// The head's logits for a batch, `[rows, classes]`, without dropout.
pub fn logits(layout: &HeadLayout, params: &Tensors, features: &[f32], rows: usize) -> Vec<f64> {
    forward(layout, params, features, rows, &[]).logits
}

/// Mean softmax cross-entropy of the batch and its gradient for every parameter; `targets`
/// are one-hot rows, each optionally scaled by its class weight; `masks` are the dropout
/// keep-masks of the hidden layers (empty for none).
pub fn loss_and_grads(
    layout: &HeadLayout,
    params: &Tensors,
    features: &[f32],
    targets: &[f32],
    rows: usize,
    masks: &[Vec<f32>],
) -> (f64, Grads) {
    let layers = layout.layers();
    let Forward {
        inputs,
        pre,
        logits,
    } = forward(layout, params, features, rows, masks);
    let classes = layout.classes;
    let targets = widen(targets);
    let mut loss = 0.0;
    let mut upstream = vec![0.0; rows * classes];
    for r in 0..rows {
        let row = &logits[r * classes..(r + 1) * classes];
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
        // Targets may be one-hot rows scaled by a class weight: d/dz of -Σ t log softmax(z)
        // is softmax(z) · Σ t - t.
        let mass: f64 = targets[r * classes..(r + 1) * classes].iter().sum();
        for c in 0..classes {
            let log_p = row[c] - max - sum.ln();
            loss -= targets[r * classes + c] * log_p;
            upstream[r * classes + c] =
                (log_p.exp() * mass - targets[r * classes + c]) / rows as f64;
        }
    }
    loss /= rows as f64;
    let mut grads = Grads::new();
    for (i, layer) in layers.iter().enumerate().rev() {
        let mut dz = upstream.clone();
        if i + 1 < layers.len() {
            if let Some(mask) = masks.get(i) {
                for (v, m) in dz.iter_mut().zip(mask) {
                    *v *= *m as f64;
                }
            }
            for (v, z) in dz.iter_mut().zip(&pre[i]) {
                if *z <= 0.0 {
                    *v = 0.0;
                }
            }
        }
        let input_t = transpose(&inputs[i], rows, layer.inputs);
        grads.insert(
            layer.weight.clone(),
            matmul(&input_t, &dz, layer.inputs, rows, layer.outputs),
        );
        let mut db = vec![0.0; layer.outputs];
        for r in 0..rows {
            for c in 0..layer.outputs {
                db[c] += dz[r * layer.outputs + c];
            }
        }
        grads.insert(layer.bias.clone(), db);
        if i > 0 {
            let w_t = transpose(
                &widen(&params[&layer.weight].data),
                layer.inputs,
                layer.outputs,
            );
            upstream = matmul(&dz, &w_t, rows, layer.outputs, layer.inputs);
        }
    }
    (loss, grads)
}

/// Parameters and AdamW moments in f64.
#[derive(Debug, Clone, Default)]
pub struct ReferenceState {
    pub params: BTreeMap<String, Vec<f64>>,
    pub m: BTreeMap<String, Vec<f64>>,
    pub v: BTreeMap<String, Vec<f64>>,
    pub step: u64,
}

impl ReferenceState {
    pub fn new(params: &Tensors) -> Self {
        let zeros = |t: &super::head::Tensor| vec![0.0; t.len()];
        Self {
            params: params
                .iter()
                .map(|(k, t)| (k.clone(), widen(&t.data)))
                .collect(),
            m: params.iter().map(|(k, t)| (k.clone(), zeros(t))).collect(),
            v: params.iter().map(|(k, t)| (k.clone(), zeros(t))).collect(),
            step: 0,
        }
    }

    /// One AdamW update with `grads` (PyTorch's `AdamW` arithmetic).
    pub fn adamw(&mut self, optimizer: &AdamW, grads: &Grads, lr: f64) {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (optimizer.beta1 as f64, optimizer.beta2 as f64);
        let c1 = 1.0 - b1.powi(t);
        let c2 = 1.0 - b2.powi(t);
        for (name, g) in grads {
            let decay = if HeadLayout::decays(name) {
                optimizer.weight_decay as f64
            } else {
                0.0
            };
            let p = self.params.get_mut(name).expect("param");
            let m = self.m.get_mut(name).expect("m");
            let v = self.v.get_mut(name).expect("v");
            for i in 0..g.len() {
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                let update = (m[i] / c1) / ((v[i] / c2).sqrt() + optimizer.eps as f64);
                p[i] -= lr * (update + decay * p[i]);
            }
        }
    }

    /// The parameters as f32 tensors (to feed the loss function again).
    pub fn tensors(&self, layout: &HeadLayout) -> Tensors {
        layout
            .parameters()
            .into_iter()
            .map(|(name, shape)| {
                let data = self.params[&name].iter().map(|&v| v as f32).collect();
                (name, super::head::Tensor { shape, data })
            })
            .collect()
    }
}
