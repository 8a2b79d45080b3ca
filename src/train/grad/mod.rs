//! Reverse-mode differentiation of ONNX graphs: a forward graph and a scalar loss become one
//! graph that also computes the loss's gradient for chosen inputs, in standard opset-17
//! operators only, so stock ONNX Runtime runs it. Each operator's rule lives once, in the
//! file of its family; a node on a path from a differentiated input to the loss whose
//! operator has no rule is refused before anything is built, naming operator and node.
//!
//! Values that carry no gradient (shape arithmetic, masks, token ids) need no rule: only
//! nodes that read a value depending on a differentiated input, and whose outputs reach the
//! loss, are differentiated.

mod elementwise;
pub mod emit;
mod linalg;
pub mod optimize;
mod reduce;
mod shape;

use std::collections::{HashMap, HashSet};

use super::onnx::{GraphProto, NodeProto, TensorTypeProto, TypeProto, ValueInfoProto, data_type};
pub use emit::Emitter;

/// Generated value names start with this; a graph already using it is refused.
pub const PREFIX: &str = "sluice.grad/";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GradError {
    /// The operator has no gradient rule; permanent for this graph.
    #[error(
        "cannot differentiate node `{node}`: operator {op} has no gradient rule (it lies between a trained parameter and the loss); freeze the parameters before it or rewrite it in supported operators"
    )]
    NoRule { op: String, node: String },
    /// The operator has a rule, but not for this use of it.
    #[error("cannot differentiate node `{node}` ({op}): {problem}")]
    Unsupported {
        op: String,
        node: String,
        problem: String,
    },
    /// The request does not fit the graph (unknown loss or parameter, mixed float types).
    #[error("cannot differentiate graph `{graph}`: {problem}")]
    Graph { graph: String, problem: String },
}

/// A forward graph with its gradient nodes appended.
#[derive(Debug, Clone)]
pub struct Gradients {
    /// The forward graph's nodes, then the backward nodes; same inputs and outputs.
    pub graph: GraphProto,
    /// `(parameter, gradient value)` for each requested parameter, in request order; a
    /// parameter the loss does not depend on gets zeros.
    pub grads: Vec<(String, String)>,
}

impl Gradients {
    /// Exposes every gradient as a graph output named `<prefix><parameter>`.
    pub fn expose(&mut self, prefix: &str) {
        let dtype = self.dtype();
        for (param, value) in &self.grads {
            let name = format!("{prefix}{param}");
            self.graph.node.push(NodeProto {
                input: vec![value.clone()],
                output: vec![name.clone()],
                name: format!("{PREFIX}expose/{param}"),
                op_type: "Identity".into(),
                ..Default::default()
            });
            self.graph.output.push(unshaped(&name, dtype));
        }
    }

    fn dtype(&self) -> i32 {
        let first = self.grads.first().map(|(p, _)| p.as_str()).unwrap_or("");
        float_type(&self.graph, first).unwrap_or(data_type::FLOAT)
    }
}

/// A graph output of element type `dtype` whose shape is left to the runtime.
pub fn unshaped(name: &str, dtype: i32) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: dtype,
                shape: None,
            }),
        }),
    }
}

/// What a rule sees of one forward node.
pub struct Node<'a> {
    pub proto: &'a NodeProto,
    /// The loss gradient of each output (`None`: the output does not reach the loss).
    pub gy: Vec<Option<String>>,
    /// Whether each input depends on a differentiated input (so wants a gradient).
    pub active: Vec<bool>,
}

impl Node<'_> {
    pub fn input(&self, i: usize) -> Option<&str> {
        emit::input(self.proto, i)
    }
    pub fn x(&self, i: usize) -> &str {
        self.input(i).unwrap_or("")
    }
    pub fn y(&self) -> &str {
        &self.proto.output[0]
    }
    pub fn wants(&self, i: usize) -> bool {
        self.active.get(i).copied().unwrap_or(false)
    }
    /// The gradient of output 0; a rule for a one-output operator reads this.
    pub fn g(&self) -> Result<&str, GradError> {
        if self.gy.iter().skip(1).any(Option::is_some) {
            return Err(self.unsupported("only its first output may reach the loss"));
        }
        self.gy
            .first()
            .and_then(|g| g.as_deref())
            .ok_or_else(|| self.unsupported("only its first output may reach the loss"))
    }
    pub fn label(&self) -> String {
        label(self.proto)
    }
    pub fn unsupported(&self, problem: &str) -> GradError {
        GradError::Unsupported {
            op: self.proto.op_type.clone(),
            node: self.label(),
            problem: problem.to_string(),
        }
    }
}

/// A gradient rule: the gradient for each input (`None` where none flows).
pub type Rule = fn(&mut Emitter, &Node<'_>) -> Result<Vec<Option<String>>, GradError>;

/// Operators whose outputs carry no gradient (integer, boolean or constant results).
const NO_GRADIENT: &[&str] = &[
    "Shape",
    "Size",
    "Constant",
    "ConstantOfShape",
    "Equal",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Not",
    "And",
    "Or",
    "Xor",
    "NonZero",
    "Range",
    "ArgMax",
    "ArgMin",
    "IsNaN",
    "IsInf",
    "Sign",
    "Floor",
    "Ceil",
    "Round",
    "EyeLike",
    "RandomNormalLike",
    "RandomUniformLike",
];

/// The rule for `op`, if it has one.
pub fn rule(op: &str) -> Option<Rule> {
    elementwise::rule(op)
        .or_else(|| linalg::rule(op))
        .or_else(|| reduce::rule(op))
        .or_else(|| shape::rule(op))
}

/// Operators with a gradient rule.
pub fn supported() -> Vec<&'static str> {
    let mut all: Vec<&str> = elementwise::OPS
        .iter()
        .chain(linalg::OPS)
        .chain(reduce::OPS)
        .chain(shape::OPS)
        .copied()
        .collect();
    all.sort_unstable();
    all
}

fn label(node: &NodeProto) -> String {
    if node.name.is_empty() {
        node.output.first().cloned().unwrap_or_default()
    } else {
        node.name.clone()
    }
}

fn is_float(elem_type: i32) -> bool {
    elem_type == data_type::FLOAT || elem_type == data_type::DOUBLE
}

/// The declared element type of a graph input or initializer.
fn float_type(graph: &GraphProto, name: &str) -> Option<i32> {
    graph
        .input
        .iter()
        .find(|i| i.name == name)
        .and_then(|i| i.tensor_shape().map(|(t, _)| t))
        .or_else(|| {
            graph
                .initializer
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.data_type)
        })
}

/// Whether a node's outputs can carry gradient (before looking at its inputs).
fn may_carry(node: &NodeProto) -> bool {
    if NO_GRADIENT.contains(&node.op_type.as_str()) {
        return false;
    }
    if node.op_type == "Cast" {
        return is_float(emit::attr_int(node, "to", 0) as i32);
    }
    true
}

/// Appends to `graph` the nodes computing d`loss`/d`p` for each `p` in `wrt` (graph inputs
/// or initializers of one float type). `loss` may have any shape: its gradient is seeded
/// with ones, i.e. the gradient of its sum.
///
/// Errors: `Graph` when `loss` or a parameter is unknown or types are mixed; `NoRule` or
/// `Unsupported` for the first node on a parameter-to-loss path that cannot be
/// differentiated.
pub fn differentiate(
    graph: &GraphProto,
    loss: &str,
    wrt: &[String],
) -> Result<Gradients, GradError> {
    let graph_error = |problem: String| GradError::Graph {
        graph: graph.name.clone(),
        problem,
    };
    let mut dtype = None;
    for p in wrt {
        let t = float_type(graph, p).ok_or_else(|| {
            graph_error(format!(
                "parameter `{p}` is neither a graph input nor an initializer"
            ))
        })?;
        if !is_float(t) || dtype.is_some_and(|d| d != t) {
            return Err(graph_error(format!(
                "parameter `{p}` has element type {t}; all parameters must be float or all double"
            )));
        }
        dtype = Some(t);
    }
    let dtype = dtype.unwrap_or(data_type::FLOAT);
    let produced = graph.node.iter().flat_map(|n| n.output.iter());
    let known: HashSet<&str> = graph
        .input
        .iter()
        .map(|i| i.name.as_str())
        .chain(graph.initializer.iter().map(|t| t.name.as_str()))
        .chain(produced.map(String::as_str))
        .collect();
    if !known.contains(loss) {
        return Err(graph_error(format!(
            "the loss `{loss}` is not a value of the graph"
        )));
    }
    if let Some(clash) = known.iter().find(|n| n.starts_with(PREFIX)) {
        return Err(graph_error(format!(
            "value `{clash}` uses the prefix {PREFIX} reserved for gradients"
        )));
    }

    // Forward: which values depend on a parameter.
    let mut active: HashSet<&str> = wrt.iter().map(String::as_str).collect();
    for node in &graph.node {
        if may_carry(node) && node.input.iter().any(|i| active.contains(i.as_str())) {
            active.extend(node.output.iter().map(String::as_str));
        }
    }
    // Backward: which of those the loss depends on; those nodes need rules.
    let mut needed: HashSet<&str> = HashSet::from([loss]);
    let mut plan: Vec<&NodeProto> = Vec::new();
    for node in graph.node.iter().rev() {
        let reaches = node.output.iter().any(|o| needed.contains(o.as_str()));
        let carries = node.output.iter().any(|o| active.contains(o.as_str()));
        if reaches && carries {
            if rule(&node.op_type).is_none() {
                return Err(GradError::NoRule {
                    op: node.op_type.clone(),
                    node: label(node),
                });
            }
            needed.extend(
                node.input
                    .iter()
                    .filter(|i| active.contains(i.as_str()))
                    .map(String::as_str),
            );
            plan.push(node);
        }
    }

    let mut e = Emitter::new(dtype, PREFIX);
    for input in &graph.input {
        let tensor = input.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
        // An input declared without a shape has no known rank.
        if let Some(shape) = tensor.and_then(|t| t.shape.as_ref()) {
            e.ranks.insert(input.name.clone(), shape.dim.len());
        }
    }
    for t in &graph.initializer {
        e.ranks.insert(t.name.clone(), t.dims.len());
    }
    let mut pending: HashMap<String, Vec<String>> = HashMap::new();
    if active.contains(loss) {
        let shape = e.shape(loss, None, None);
        let one = emit::float_tensor(dtype, "", &[1], &[1.0]);
        let seed = e.op(
            "ConstantOfShape",
            &[&shape],
            vec![emit::tensor("value", one)],
        );
        pending.insert(loss.to_string(), vec![seed]);
    }
    for proto in plan {
        let gy: Vec<Option<String>> = proto
            .output
            .iter()
            .map(|o| pending.remove(o).map(|parts| sum(&mut e, parts)))
            .collect();
        if gy.iter().all(Option::is_none) {
            continue;
        }
        let node = Node {
            proto,
            gy,
            active: proto
                .input
                .iter()
                .map(|i| active.contains(i.as_str()))
                .collect(),
        };
        let rule = rule(&proto.op_type).expect("checked when planning");
        let grads = rule(&mut e, &node)?;
        for (i, g) in grads.into_iter().enumerate() {
            if let Some(g) = g
                && node.wants(i)
            {
                pending.entry(proto.input[i].clone()).or_default().push(g);
            }
        }
    }
    let mut grads = Vec::new();
    for p in wrt {
        let g = match pending.remove(p) {
            Some(parts) => sum(&mut e, parts),
            None => e.zeros_like(p),
        };
        grads.push((p.clone(), g));
    }
    let mut out = graph.clone();
    out.node.extend(e.nodes);
    out.initializer.extend(e.initializers);
    Ok(Gradients { graph: out, grads })
}

/// The sum of gradient contributions (a value read by several nodes).
fn sum(e: &mut Emitter, mut parts: Vec<String>) -> String {
    if parts.len() == 1 {
        return parts.remove(0);
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    e.op("Sum", &refs, vec![])
}

#[cfg(test)]
mod tests;
