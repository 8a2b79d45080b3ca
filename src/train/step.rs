//! The training step as an ONNX graph: forward, softmax cross-entropy, the backward pass and
//! the AdamW update, in standard operators only (opset 17), so ONNX Runtime runs it on the
//! CPU or CUDA provider like any model. Parameters and optimiser state go in and come out.
//!
//! The step-graph contract (also what a user-supplied graph must follow):
//! - inputs `param.<name>` (float, static shape): the parameters;
//! - inputs `opt.<slot>.<name>` (float, static shape): optimiser state, zeros at the start;
//! - input `batch.features` (float `[batch, features]`) and `batch.targets` (float
//!   `[batch, classes]`, one-hot; with class weights, each row scaled by its class's weight,
//!   which the built-in graph's loss and gradient honour);
//! - input `step` (float scalar): the 1-based number of this update;
//! - input `lr` (float scalar): this step's learning rate (sluice applies the schedule);
//! - optional inputs `dropout.<i>` (float `[batch, width]`): keep-masks already scaled by
//!   1/(1-p), drawn by sluice from the job's seeded generator;
//! - outputs `loss` (float scalar: the batch's mean loss before the update), and
//!   `new.<input>` for every `param.*` and `opt.*` input;
//! - optional outputs `grad.<name>` (the loss gradient of `param.<name>`) and `logits`.

use super::builder::{GraphBuilder, int};
use super::head::HeadLayout;
use super::onnx::{Dim, ModelProto, data_type};

pub const FEATURES: &str = "batch.features";
pub const TARGETS: &str = "batch.targets";
pub const STEP: &str = "step";
pub const LR: &str = "lr";
pub const LOSS: &str = "loss";
pub const LOGITS: &str = "logits";
pub const PARAM_PREFIX: &str = "param.";
pub const OPT_PREFIX: &str = "opt.";
pub const DROPOUT_PREFIX: &str = "dropout.";
pub const NEW_PREFIX: &str = "new.";
pub const GRAD_PREFIX: &str = "grad.";

/// AdamW with decoupled weight decay (Loshchilov & Hutter), as in PyTorch's `AdamW`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Applied to weights only, not biases.
    pub weight_decay: f32,
}

impl Default for AdamW {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// The optimiser-state slots AdamW keeps per parameter.
pub const ADAMW_SLOTS: [&str; 2] = ["m", "v"];

pub fn param_input(name: &str) -> String {
    format!("{PARAM_PREFIX}{name}")
}

pub fn opt_input(slot: &str, name: &str) -> String {
    format!("{OPT_PREFIX}{slot}.{name}")
}

pub fn dropout_input(layer: usize) -> String {
    format!("{DROPOUT_PREFIX}{layer}")
}

fn dims(shape: &[usize]) -> Vec<Dim> {
    shape.iter().map(|&n| Dim::Fixed(n as i64)).collect()
}

const BATCH: Dim = Dim::Named("batch");

/// Values one forward pass leaves for the backward pass.
struct Forward {
    logits: String,
    /// Per dense layer: its input activation and (for hidden layers) pre-activation and
    /// dropout mask.
    layers: Vec<LayerValues>,
}

struct LayerValues {
    input: String,
    pre_activation: Option<String>,
    mask: Option<String>,
}

/// `x` through the head; `params` maps parameter names to graph values; with `dropout`,
/// hidden activations are multiplied by the `dropout.<i>` masks.
fn forward(
    b: &mut GraphBuilder,
    layout: &HeadLayout,
    x: &str,
    param: &dyn Fn(&str) -> String,
    dropout: bool,
) -> Forward {
    let mut current = x.to_string();
    let mut layers = Vec::new();
    let all = layout.layers();
    for (i, layer) in all.iter().enumerate() {
        let product = b.matmul(&current, &param(&layer.weight));
        let z = b.add(&product, &param(&layer.bias));
        let is_hidden = i + 1 < all.len();
        if !is_hidden {
            layers.push(LayerValues {
                input: current,
                pre_activation: None,
                mask: None,
            });
            return Forward { logits: z, layers };
        }
        let relu = b.op("Relu", &[&z], vec![]);
        let (activation, mask) = if dropout {
            let mask = b.input(
                &dropout_input(i),
                &[BATCH, Dim::Fixed(layer.outputs as i64)],
            );
            (b.mul(&relu, &mask), Some(mask))
        } else {
            (relu, None)
        };
        layers.push(LayerValues {
            input: current,
            pre_activation: Some(z),
            mask,
        });
        current = activation;
    }
    unreachable!("a head has at least its output layer")
}

/// The training step graph for `layout` with AdamW's constants baked in.
pub fn build_step_graph(layout: &HeadLayout, optimizer: &AdamW) -> ModelProto {
    let mut b = GraphBuilder::new("sluice_train_step");
    let params = layout.parameters();
    for (name, shape) in &params {
        b.input(&param_input(name), &dims(shape));
        for slot in ADAMW_SLOTS {
            b.input(&opt_input(slot, name), &dims(shape));
        }
    }
    let x = b.input(FEATURES, &[BATCH, Dim::Fixed(layout.input_dim as i64)]);
    let targets = b.input(TARGETS, &[BATCH, Dim::Fixed(layout.classes as i64)]);
    let step = b.input(STEP, &[]);
    let lr = b.input(LR, &[]);
    let use_dropout = layout.dropout > 0.0 && !layout.hidden.is_empty();
    let fwd = forward(&mut b, layout, &x, &|name| param_input(name), use_dropout);

    // Mean softmax cross-entropy.
    let log_probs = b.op("LogSoftmax", &[&fwd.logits], vec![int("axis", -1)]);
    let picked = b.mul(&targets, &log_probs);
    let per_row = b.reduce_sum(&picked, &[1]);
    let mean = b.op("ReduceMean", &[&per_row], vec![int("keepdims", 0)]);
    let loss = b.op("Neg", &[&mean], vec![]);

    // d loss / d logits = (softmax · Σ targets - targets) / batch: one-hot targets scaled
    // by the class weight w give w · (softmax - one-hot), the weighted loss's gradient.
    let batch_size = b.op("Shape", &[&x], vec![int("start", 0), int("end", 1)]);
    let batch_size = b.op(
        "Cast",
        &[&batch_size],
        vec![int("to", data_type::FLOAT as i64)],
    );
    let probs = b.op("Exp", &[&log_probs], vec![]);
    let row_axis = b.ints(&[1]);
    let weight = b.op(
        "ReduceSum",
        &[&targets, &row_axis],
        vec![int("keepdims", 1)],
    );
    let scaled = b.mul(&probs, &weight);
    let diff = b.sub(&scaled, &targets);
    let mut upstream = b.div(&diff, &batch_size);

    let layers = layout.layers();
    let mut grads: Vec<(String, String)> = Vec::new();
    for (i, layer) in layers.iter().enumerate().rev() {
        let values = &fwd.layers[i];
        // dz: through dropout and ReLU for hidden layers.
        let dz = match &values.pre_activation {
            None => upstream.clone(),
            Some(z) => {
                let through_mask = match &values.mask {
                    Some(mask) => b.mul(&upstream, mask),
                    None => upstream.clone(),
                };
                let zero = b.scalar(0.0);
                let positive = b.op("Greater", &[z, &zero], vec![]);
                let gate = b.op(
                    "Cast",
                    &[&positive],
                    vec![int("to", data_type::FLOAT as i64)],
                );
                b.mul(&through_mask, &gate)
            }
        };
        let input_t = b.transpose(&values.input);
        grads.push((layer.weight.clone(), b.matmul(&input_t, &dz)));
        grads.push((layer.bias.clone(), b.reduce_sum(&dz, &[0])));
        if i > 0 {
            let weight_t = b.transpose(&param_input(&layer.weight));
            upstream = b.matmul(&dz, &weight_t);
        }
    }

    // AdamW.
    let beta1 = b.scalar(optimizer.beta1);
    let beta2 = b.scalar(optimizer.beta2);
    let one_minus_beta1 = b.scalar(1.0 - optimizer.beta1);
    let one_minus_beta2 = b.scalar(1.0 - optimizer.beta2);
    let one = b.scalar(1.0);
    let eps = b.scalar(optimizer.eps);
    let decay = b.scalar(optimizer.weight_decay);
    let beta1_t = b.op("Pow", &[&beta1, &step], vec![]);
    let beta2_t = b.op("Pow", &[&beta2, &step], vec![]);
    let correction1 = b.sub(&one, &beta1_t);
    let correction2 = b.sub(&one, &beta2_t);
    for (name, grad) in &grads {
        let p = param_input(name);
        let m = opt_input("m", name);
        let v = opt_input("v", name);
        let m_kept = b.mul(&beta1, &m);
        let m_new_part = b.mul(&one_minus_beta1, grad);
        let m_new = b.add(&m_kept, &m_new_part);
        let v_kept = b.mul(&beta2, &v);
        let grad_sq = b.mul(grad, grad);
        let v_new_part = b.mul(&one_minus_beta2, &grad_sq);
        let v_new = b.add(&v_kept, &v_new_part);
        let m_hat = b.div(&m_new, &correction1);
        let v_hat = b.div(&v_new, &correction2);
        let root = b.op("Sqrt", &[&v_hat], vec![]);
        let denom = b.add(&root, &eps);
        let mut update = b.div(&m_hat, &denom);
        if HeadLayout::decays(name) {
            let decayed = b.mul(&decay, &p);
            update = b.add(&update, &decayed);
        }
        let scaled = b.mul(&lr, &update);
        let p_new = b.sub(&p, &scaled);
        let shape = &params
            .iter()
            .find(|(n, _)| n == name)
            .expect("grad of a param")
            .1;
        b.output(&p_new, &format!("{NEW_PREFIX}{p}"), &dims(shape));
        b.output(&m_new, &format!("{NEW_PREFIX}{m}"), &dims(shape));
        b.output(&v_new, &format!("{NEW_PREFIX}{v}"), &dims(shape));
        b.output(grad, &format!("{GRAD_PREFIX}{name}"), &dims(shape));
    }
    b.output(&loss, LOSS, &[]);
    b.output(
        &fwd.logits,
        LOGITS,
        &[BATCH, Dim::Fixed(layout.classes as i64)],
    );
    b.finish(
        "sluice training step: head forward, softmax cross-entropy, backward, AdamW",
        &[("sluice.graph", "train-step".to_string())],
    )
}

/// The exported head: `features` `[batch, features]` → `logits` and `probabilities`
/// `[batch, classes]`, parameters baked in, no dropout.
pub fn build_inference_graph(layout: &HeadLayout, params: &super::head::Tensors) -> ModelProto {
    let mut b = GraphBuilder::new("sluice_head");
    for (name, shape) in layout.parameters() {
        let tensor = &params[&name];
        let dims: Vec<i64> = shape.iter().map(|&n| n as i64).collect();
        b.named_constant(&name, &dims, &tensor.data);
    }
    let x = b.input("features", &[BATCH, Dim::Fixed(layout.input_dim as i64)]);
    let fwd = forward(&mut b, layout, &x, &|name| name.to_string(), false);
    let probs = b.op("Softmax", &[&fwd.logits], vec![int("axis", -1)]);
    let out = [BATCH, Dim::Fixed(layout.classes as i64)];
    b.output(&fwd.logits, LOGITS, &out);
    b.output(&probs, "probabilities", &out);
    b.finish(
        "sluice classifier head: features -> logits, probabilities",
        &[("sluice.graph", "head".to_string())],
    )
}
