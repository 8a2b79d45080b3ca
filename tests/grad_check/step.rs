//! A fine-tuning step graph (forward, gradients, clipping by global norm, AdamW) on the tiny
//! encoder in float64: its update equals AdamW applied to finite-difference gradients, and
//! repeated steps on the batch lower the loss.

use sluice::train::grad::emit::float_tensor;
use sluice::train::grad::optimize::{StepOptions, decays, step_graph};
use sluice::train::onnx::{GraphProto, data_type::DOUBLE};
use sluice::train::step::AdamW;

use super::harness::{Case, Runner, encode, numeric_grads};

type Feeds = Vec<(String, Vec<i64>, Vec<f64>)>;

/// The case's graph with its parameters as initializers (what an exported model holds).
fn with_initializers(c: &Case) -> GraphProto {
    let mut g = c.graph();
    g.input.clear();
    for (p, dims, values) in &c.params {
        g.initializer.push(float_tensor(DOUBLE, p, dims, values));
    }
    g
}

/// Returns (max |graph − reference| / lr over all parameters, losses of `steps` steps).
pub fn check(c: &Case, steps: usize) -> (f64, Vec<f64>) {
    let names: Vec<String> = c.params.iter().map(|p| p.0.clone()).collect();
    let options = StepOptions {
        // A large eps keeps step 1 (≈ sign of the gradient) stable where a gradient is 0.
        optimizer: AdamW {
            eps: 1e-3,
            ..AdamW::default()
        },
        clip_norm: Some(0.1),
    };
    let model = step_graph(&with_initializers(c), &c.loss, &names, &options).unwrap();
    let mut runner = Runner::open("step", &encode(model.graph.unwrap()));
    let lr = 0.01;
    let mut feeds: Feeds = Vec::new();
    for (p, dims, values) in &c.params {
        feeds.push((format!("param.{p}"), dims.clone(), values.clone()));
        for slot in ["m", "v"] {
            feeds.push((
                format!("opt.{slot}.{p}"),
                dims.clone(),
                vec![0.0; values.len()],
            ));
        }
    }
    feeds.push(("step".into(), vec![], vec![1.0]));
    feeds.push(("lr".into(), vec![], vec![lr]));
    let outputs: Vec<String> = std::iter::once("loss".to_string())
        .chain(
            feeds
                .iter()
                .take(3 * names.len())
                .map(|f| format!("new.{}", f.0)),
        )
        .collect();

    // Reference: AdamW step 1 on clipped finite-difference gradients.
    let grads = numeric_grads(c);
    let norm = grads.iter().flatten().map(|g| g * g).sum::<f64>().sqrt();
    let factor = (0.1 / (norm + 1e-6)).min(1.0);
    let o = options.optimizer;
    let (b1, b2) = (o.beta1 as f64, o.beta2 as f64);
    let mut worst = 0.0f64;
    let first = runner.run(&feeds, &outputs);
    for (k, (_, dims, values)) in c.params.iter().enumerate() {
        let got = &first[1 + 3 * k];
        for (i, &p) in values.iter().enumerate() {
            let g = grads[k][i] * factor;
            let m_hat = (1.0 - b1) * g / (1.0 - b1);
            let v_hat = (1.0 - b2) * g * g / (1.0 - b2);
            let mut update = m_hat / (v_hat.sqrt() + o.eps as f64);
            if decays(dims) {
                update += o.weight_decay as f64 * p;
            }
            let want = p - lr * update;
            worst = worst.max((got[i] - want).abs() / lr);
        }
    }

    // Steps on the same batch, feeding the state back.
    let mut losses = vec![first[0][0]];
    let mut out = first;
    for t in 2..=steps {
        for (j, f) in feeds.iter_mut().take(3 * names.len()).enumerate() {
            f.2 = out[1 + j].clone();
        }
        let n = feeds.len();
        feeds[n - 2].2 = vec![t as f64];
        out = runner.run(&feeds, &outputs);
        losses.push(out[0][0]);
    }
    (worst, losses)
}
