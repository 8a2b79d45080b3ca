//! The finite-difference check: a forward graph in float64 with named parameter inputs and a
//! scalar loss; its gradient graph runs once on ONNX Runtime, the forward alone runs twice
//! per parameter element (central differences), and the two are compared.
//!
//! ONNX Runtime has no float64 Erf kernel, so in both graphs each Erf node is evaluated by
//! its Taylor series in standard operators (60 terms: below 1e-12 absolute error for
//! |x| ≤ 3, which the tests' inputs keep to); the Erf rule under test reads only the Erf's
//! input, so it is still checked against an independent evaluation of erf.

use std::borrow::Cow;
use std::collections::BTreeMap;

use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sluice::engine::{ModelSource, open_session};
use sluice::train::builder::{IR_VERSION, OPSET};
use sluice::train::grad::emit::Emitter;
use sluice::train::grad::{differentiate, unshaped};
use sluice::train::onnx::{
    Dim, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto,
    data_type::DOUBLE,
};

/// A forward graph under test: parameters fed as inputs, and the loss value.
pub struct Case {
    pub name: String,
    pub e: Emitter,
    pub params: Vec<(String, Vec<i64>, Vec<f64>)>,
    pub loss: String,
}

/// Starts a case whose parameters are random in `range` (seeded by the name).
pub fn case(name: &str, params: &[(&str, &[i64])], range: (f64, f64)) -> (Case, Vec<String>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed(name));
    let params: Vec<(String, Vec<i64>, Vec<f64>)> = params
        .iter()
        .map(|(p, dims)| {
            let n: i64 = dims.iter().product();
            let values = (0..n).map(|_| rng.random_range(range.0..range.1)).collect();
            (p.to_string(), dims.to_vec(), values)
        })
        .collect();
    let names = params.iter().map(|p| p.0.clone()).collect();
    let mut e = Emitter::new(DOUBLE, "t/");
    for (p, dims, _) in &params {
        e.ranks.insert(p.clone(), dims.len());
    }
    (
        Case {
            name: name.to_string(),
            e,
            params,
            loss: String::new(),
        },
        names,
    )
}

fn seed(name: &str) -> u64 {
    name.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ b as u64).wrapping_mul(1099511628211)
    })
}

impl Case {
    /// The loss Σ y ⊙ R for a random R of `y`'s shape, so every element of y gets its own
    /// upstream gradient.
    pub fn weighted_sum(&mut self, y: &str, dims: &[i64]) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed(&self.name) ^ 0x5eed);
        let n: i64 = dims.iter().product();
        let r: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let r = self.e.constant(dims, &r);
        let prod = self.e.mul(y, &r);
        self.loss = self.e.op(
            "ReduceSum",
            &[&prod],
            vec![sluice::train::builder::int("keepdims", 0)],
        );
    }

    /// An int64 constant of any shape (indices, masks).
    pub fn int64(&mut self, name: &str, dims: &[i64], values: &[i64]) -> String {
        self.e
            .initializers
            .push(TensorProto::int64(name, dims, values));
        name.to_string()
    }

    /// The forward graph: parameters as inputs, the loss as output.
    pub fn graph(&self) -> GraphProto {
        GraphProto {
            name: self.name.clone(),
            node: self.e.nodes.clone(),
            initializer: self.e.initializers.clone(),
            input: self
                .params
                .iter()
                .map(|(p, dims, _)| {
                    let dims: Vec<Dim> = dims.iter().map(|&d| Dim::Fixed(d)).collect();
                    ValueInfoProto::tensor(p, DOUBLE, &dims)
                })
                .collect(),
            output: vec![unshaped(&self.loss, DOUBLE)],
        }
    }
}

/// A model of `graph` (Erf lowered) as bytes.
pub fn encode(mut graph: GraphProto) -> Vec<u8> {
    lower_erf(&mut graph);
    ModelProto {
        ir_version: IR_VERSION,
        producer_name: "sluice-test".into(),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        ..Default::default()
    }
    .encode_to_vec()
}

/// Replaces every Erf node by erf(x) = 2/√π · x · Σₙ (−x²)ⁿ / (n!(2n+1)) in Horner form.
fn lower_erf(graph: &mut GraphProto) {
    const TERMS: usize = 60;
    let mut nodes = Vec::new();
    let mut e = Emitter::new(DOUBLE, "erf.series/");
    for node in std::mem::take(&mut graph.node) {
        if node.op_type != "Erf" {
            nodes.push(node);
            continue;
        }
        let start = e.nodes.len();
        let x = node.input[0].as_str();
        let z = e.mul(x, x);
        let coeff = |n: usize| {
            let fact: f64 = (1..=n).map(|k| k as f64).product();
            let sign = if n.is_multiple_of(2) { 1.0 } else { -1.0 };
            sign / (fact * (2 * n + 1) as f64)
        };
        let mut p = e.scalar(coeff(TERMS - 1));
        for n in (0..TERMS - 1).rev() {
            let pz = e.mul(&p, &z);
            let c = e.scalar(coeff(n));
            p = e.add(&pz, &c);
        }
        let k = e.scalar(std::f64::consts::FRAC_2_SQRT_PI);
        let xp = e.mul(x, &p);
        let y = e.mul(&xp, &k);
        let mut lowered: Vec<NodeProto> = e.nodes[start..].to_vec();
        let last = lowered.last_mut().expect("series nodes");
        assert_eq!(last.output[0], y);
        last.output[0] = node.output[0].clone();
        nodes.extend(lowered);
    }
    graph.node = nodes;
    graph.initializer.extend(e.initializers);
}

pub struct Runner {
    session: ort::session::Session,
}

impl Runner {
    pub fn open(name: &str, bytes: &[u8]) -> Self {
        let settings = super::common::cpu_engine();
        let (session, _) = open_session(ModelSource::Memory { name, bytes }, &settings)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        Self { session }
    }

    pub fn run(
        &mut self,
        params: &[(String, Vec<i64>, Vec<f64>)],
        outputs: &[String],
    ) -> Vec<Vec<f64>> {
        let inputs: Vec<(Cow<'_, str>, ort::session::SessionInputValue<'_>)> = params
            .iter()
            .map(|(p, dims, values)| {
                let t = ort::value::Tensor::from_array((dims.clone(), values.clone())).unwrap();
                (Cow::Owned(p.clone()), t.into())
            })
            .collect();
        let out = self.session.run(inputs).expect("run");
        outputs
            .iter()
            .map(|o| {
                out[o.as_str()]
                    .try_extract_tensor::<f64>()
                    .unwrap()
                    .1
                    .to_vec()
            })
            .collect()
    }
}

/// Per parameter: max |analytic − numeric| / max |numeric|.
pub type Errors = BTreeMap<String, f64>;

/// The loss gradient of every parameter by central differences (h = 1e-5).
pub fn numeric_grads(case: &Case) -> Vec<Vec<f64>> {
    let mut fwd = Runner::open(&case.name, &encode(case.graph()));
    let loss = [case.loss.clone()];
    let h = 1e-5;
    let mut grads = Vec::new();
    for (k, (_, _, values)) in case.params.iter().enumerate() {
        let mut numeric = Vec::with_capacity(values.len());
        for i in 0..values.len() {
            let mut at = |delta: f64| {
                let mut params = case.params.clone();
                params[k].2[i] += delta;
                fwd.run(&params, &loss)[0][0]
            };
            numeric.push((at(h) - at(-h)) / (2.0 * h));
        }
        grads.push(numeric);
    }
    grads
}

/// Differentiates the case, runs both ways and returns the relative error per parameter.
pub fn check(case: &Case) -> Errors {
    let forward = case.graph();
    let wrt: Vec<String> = case.params.iter().map(|p| p.0.clone()).collect();
    let mut grads =
        differentiate(&forward, &case.loss, &wrt).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    grads.expose("grad.");
    let outputs: Vec<String> = wrt.iter().map(|p| format!("grad.{p}")).collect();
    let mut backward = Runner::open(&case.name, &encode(grads.graph));
    let analytic = backward.run(&case.params, &outputs);
    let numeric = numeric_grads(case);
    let mut errors = Errors::new();
    for (k, (p, _, _)) in case.params.iter().enumerate() {
        let scale = numeric[k].iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let worst = analytic[k]
            .iter()
            .zip(&numeric[k])
            .fold(0.0f64, |m, (a, n)| m.max((a - n).abs()));
        // A gradient that is zero in exact arithmetic (attention's key bias: softmax ignores
        // a per-query constant) is compared absolutely.
        let scale = if scale > 1e-9 { scale } else { 1.0 };
        errors.insert(p.clone(), worst / scale);
    }
    errors
}

/// The largest error of a check.
pub fn worst(errors: &Errors) -> f64 {
    errors.values().fold(0.0, |m, &v| m.max(v))
}
