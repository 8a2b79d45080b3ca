//! Turns a differentiated forward graph into a training step graph: the chosen
//! initializers become `param.*` inputs, the gradients are clipped by their global norm,
//! and AdamW (decoupled weight decay, bias correction, `lr` and `step` fed per step)
//! updates them — the same update and input/output names as the head's step graph.

use super::super::onnx::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, data_type};
use super::super::step::{AdamW, LOSS, LR, NEW_PREFIX, STEP, opt_input, param_input};
use super::emit::Emitter;
use super::{GradError, PREFIX, differentiate, unshaped};
use crate::train::builder::{IR_VERSION, OPSET};
use crate::train::onnx::{Dim, ValueInfoProto};

/// How the step treats the gradients before AdamW.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOptions {
    pub optimizer: AdamW,
    /// Scale all gradients down together when their global L2 norm exceeds this.
    pub clip_norm: Option<f32>,
}

/// Weight decay applies to matrices only: biases and LayerNorm scales (rank 1) keep none,
/// as BERT fine-tuning recipes do.
pub fn decays(dims: &[i64]) -> bool {
    dims.len() >= 2
}

/// The step graph: `graph`'s initializers named in `trained` become float inputs
/// `param.<name>` with AdamW state `opt.m.<name>`, `opt.v.<name>`; inputs `step` and `lr`
/// (float scalars) are added; outputs are `loss` (the batch's loss before the update) and
/// `new.<input>` for every parameter and state input. Other inputs of `graph` (the batch)
/// stay as they are.
///
/// Errors: a trained name that is not a float initializer, or what `differentiate` refuses.
pub fn step_graph(
    graph: &GraphProto,
    loss: &str,
    trained: &[String],
    options: &StepOptions,
) -> Result<ModelProto, GradError> {
    let mut g = graph.clone();
    let mut shapes = Vec::new();
    let mut dtype = data_type::FLOAT;
    for name in trained {
        let pos = g
            .initializer
            .iter()
            .position(|t| &t.name == name)
            .ok_or_else(|| GradError::Graph {
                graph: graph.name.clone(),
                problem: format!("trained parameter `{name}` is not an initializer"),
            })?;
        let t = g.initializer.remove(pos);
        dtype = t.data_type;
        let dims: Vec<Dim> = t.dims.iter().map(|&d| Dim::Fixed(d)).collect();
        let input = param_input(name);
        g.input
            .push(ValueInfoProto::tensor(&input, t.data_type, &dims));
        // The forward keeps reading `name`; it now comes from the input.
        g.node.insert(
            0,
            NodeProto {
                input: vec![input.clone()],
                output: vec![name.clone()],
                name: format!("{PREFIX}param/{name}"),
                op_type: "Identity".into(),
                ..Default::default()
            },
        );
        for slot in ["m", "v"] {
            g.input.push(ValueInfoProto::tensor(
                &opt_input(slot, name),
                t.data_type,
                &dims,
            ));
        }
        shapes.push(t.dims.clone());
    }
    let wrt: Vec<String> = trained.iter().map(|n| param_input(n)).collect();
    let grads = differentiate(&g, loss, &wrt)?;
    let mut g = grads.graph;
    let mut e = Emitter::new(dtype, &format!("{PREFIX}adamw/"));
    g.input.push(ValueInfoProto::tensor(STEP, dtype, &[]));
    g.input.push(ValueInfoProto::tensor(LR, dtype, &[]));

    let mut gs: Vec<String> = grads.grads.iter().map(|(_, v)| v.clone()).collect();
    if let Some(max_norm) = options.clip_norm {
        let squares: Vec<String> = gs
            .iter()
            .map(|v| {
                let sq = e.mul(v, v);
                e.op("ReduceSum", &[&sq], vec![super::emit::int("keepdims", 0)])
            })
            .collect();
        let refs: Vec<&str> = squares.iter().map(String::as_str).collect();
        let total = e.op("Sum", &refs, vec![]);
        let norm = e.op("Sqrt", &[&total], vec![]);
        let tiny = e.scalar(1e-6);
        let denom = e.add(&norm, &tiny);
        let max = e.scalar(max_norm as f64);
        let ratio = e.div(&max, &denom);
        let one = e.scalar(1.0);
        let factor = e.op("Min", &[&ratio, &one], vec![]);
        gs = gs.iter().map(|v| e.mul(v, &factor)).collect();
    }

    let o = &options.optimizer;
    let beta1 = e.scalar(o.beta1 as f64);
    let beta2 = e.scalar(o.beta2 as f64);
    let keep1 = e.scalar(1.0 - o.beta1 as f64);
    let keep2 = e.scalar(1.0 - o.beta2 as f64);
    let one = e.scalar(1.0);
    let eps = e.scalar(o.eps as f64);
    let decay = e.scalar(o.weight_decay as f64);
    let b1t = e.op("Pow", &[&beta1, STEP], vec![]);
    let b2t = e.op("Pow", &[&beta2, STEP], vec![]);
    let c1 = e.sub(&one, &b1t);
    let c2 = e.sub(&one, &b2t);
    let mut outputs = vec![(loss.to_string(), LOSS.to_string())];
    for ((name, grad), dims) in trained.iter().zip(&gs).zip(&shapes) {
        let p = param_input(name);
        let m = opt_input("m", name);
        let v = opt_input("v", name);
        let m_kept = e.mul(&beta1, &m);
        let m_part = e.mul(&keep1, grad);
        let m_new = e.add(&m_kept, &m_part);
        let v_kept = e.mul(&beta2, &v);
        let sq = e.mul(grad, grad);
        let v_part = e.mul(&keep2, &sq);
        let v_new = e.add(&v_kept, &v_part);
        let m_hat = e.div(&m_new, &c1);
        let v_hat = e.div(&v_new, &c2);
        let root = e.op("Sqrt", &[&v_hat], vec![]);
        let denom = e.add(&root, &eps);
        let mut update = e.div(&m_hat, &denom);
        if decays(dims) {
            let decayed = e.mul(&decay, &p);
            update = e.add(&update, &decayed);
        }
        let scaled = e.mul(LR, &update);
        let p_new = e.sub(&p, &scaled);
        for (value, input) in [(p_new, p), (m_new, m), (v_new, v)] {
            outputs.push((value, format!("{NEW_PREFIX}{input}")));
        }
    }
    g.output.clear();
    for (value, name) in outputs {
        e.nodes.push(NodeProto {
            input: vec![value],
            output: vec![name.clone()],
            name: format!("{PREFIX}out/{name}"),
            op_type: "Identity".into(),
            ..Default::default()
        });
        g.output.push(unshaped(&name, dtype));
    }
    g.node.extend(e.nodes);
    g.initializer.extend(e.initializers);
    Ok(ModelProto {
        ir_version: IR_VERSION,
        producer_name: "sluice".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: "sluice fine-tuning step: forward, loss, gradients, clipping, AdamW".into(),
        graph: Some(g),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        metadata_props: Vec::new(),
    })
}
