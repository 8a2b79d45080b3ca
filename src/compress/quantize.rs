//! The rewrite: every MatMul (and Gemm) whose second input is a 2-D float initializer
//! becomes `DynamicQuantizeLinear(A) → MatMulInteger(A_q, W_q, A_zp, W_zp) → Cast → Mul(A_scale
//! · W_scale)`, with `W` stored as symmetric int8, as `onnxruntime.quantization.
//! quantize_dynamic` writes it (standard opset-11 ops: ONNX Runtime fuses them into its own
//! int8 kernels when it loads the model). Fields and nodes the rewrite does not change are
//! copied byte for byte.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use prost::Message;

use super::CompressError;
use super::math::{self, Quantized};
use super::tensor::{FLOAT, INT8, Tensor};
use super::wire::{self, Field, put_bytes};
use crate::train::onnx::{
    AttributeProto, NodeProto, OperatorSetIdProto, ValueInfoProto, attribute_type,
};

/// How weights are quantized.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuantizeOptions {
    /// One scale per output column instead of one per weight.
    pub per_channel: bool,
    /// Also quantize MatMuls that read a GELU's output (a transformer's feed-forward
    /// down-projection). Left float by default: those long-tailed activations lose most
    /// under per-tensor uint8 (on MiniLM-L3, mean cosine to float 0.973 with them, 0.998
    /// without, for most of the speed).
    pub after_gelu: bool,
}

/// How far back from a MatMul's input a GELU is looked for (GELU written out as
/// `x · (1 + erf(x / √2)) · 0.5` puts Erf four nodes back).
const GELU_DEPTH: usize = 4;

/// What the rewrite did, for the report.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct QuantizeSummary {
    pub matmuls_quantized: usize,
    pub gemms_quantized: usize,
    /// MatMul/Gemm nodes left in float: both inputs computed (attention scores), a
    /// weight that is not a 2-D float initializer, or (by default) a GELU's output as input.
    pub left_in_float: usize,
    /// Bytes of the weights that were quantized, as float and as int8.
    pub weight_bytes_fp32: u64,
    pub weight_bytes_int8: u64,
}

// ModelProto / GraphProto field numbers the rewrite touches.
const MODEL_GRAPH: u32 = 7;
const MODEL_OPSET: u32 = 8;
const GRAPH_NODE: u32 = 1;
const GRAPH_INITIALIZER: u32 = 5;
const GRAPH_INPUT: u32 = 11;
const GRAPH_OUTPUT: u32 = 12;
const ATTRIBUTE_GRAPH: i32 = 5;
const ATTRIBUTE_GRAPHS: i32 = 10;
/// DynamicQuantizeLinear's first opset.
const MIN_OPSET: i64 = 11;
/// Protobuf's message size limit: a model over it needs external data.
const MAX_MODEL_BYTES: usize = 2 << 30;

/// Quantizes the model in `bytes` (`what` names it in errors; `dir` holds its external
/// data files, if any: their tensors are brought inline). Returns the int8 model's bytes.
pub fn quantize_model(
    bytes: &[u8],
    dir: &Path,
    what: &str,
    options: QuantizeOptions,
) -> Result<(Vec<u8>, QuantizeSummary), CompressError> {
    let malformed = |problem: String| CompressError::Malformed {
        what: what.to_string(),
        problem,
    };
    let model = wire::fields(bytes).map_err(&malformed)?;
    check_opset(&model, what)?;
    let graph = model
        .iter()
        .find(|f| f.tag == MODEL_GRAPH)
        .and_then(|f| f.payload)
        .ok_or_else(|| malformed("it has no graph".into()))?;
    let (graph, summary) = Rewrite::new(graph, dir, what, options)?.run()?;
    let mut out = Vec::with_capacity(graph.len() + 1024);
    for field in &model {
        if field.tag == MODEL_GRAPH {
            put_bytes(&mut out, MODEL_GRAPH, &graph);
        } else {
            out.extend_from_slice(field.raw);
        }
    }
    if out.len() >= MAX_MODEL_BYTES {
        return Err(CompressError::Unsupported {
            what: what.into(),
            problem: format!(
                "the int8 model would be {} bytes, over protobuf's 2 GiB limit",
                out.len()
            ),
        });
    }
    Ok((out, summary))
}

fn check_opset(model: &[Field<'_>], what: &str) -> Result<(), CompressError> {
    for field in model.iter().filter(|f| f.tag == MODEL_OPSET) {
        let opset = OperatorSetIdProto::decode(field.payload.unwrap_or_default()).map_err(|e| {
            CompressError::Malformed {
                what: what.into(),
                problem: format!("opset_import: {e}"),
            }
        })?;
        if (opset.domain.is_empty() || opset.domain == "ai.onnx") && opset.version < MIN_OPSET {
            return Err(CompressError::Unsupported {
                what: what.into(),
                problem: format!(
                    "opset {} is older than {MIN_OPSET}, the first with DynamicQuantizeLinear; export the model again with opset {MIN_OPSET} or later",
                    opset.version
                ),
            });
        }
    }
    Ok(())
}

/// One graph being rewritten.
struct Rewrite<'a> {
    fields: Vec<Field<'a>>,
    what: &'a str,
    options: QuantizeOptions,
    /// Initializers by name (external data already inline).
    initializers: HashMap<String, Tensor>,
    /// Initializers whose data was brought inline: written re-encoded.
    inlined: HashSet<String>,
    /// Names that are graph inputs (an initializer that is one can be overridden: left alone).
    graph_inputs: HashSet<String>,
    /// Every value name in use, so new names never collide.
    taken: HashSet<String>,
    /// Per initializer: how many node inputs and graph outputs read it.
    uses: HashMap<String, usize>,
    /// Subgraphs may read outer initializers unseen: keep every original then.
    has_subgraphs: bool,
    /// Each value's producing node: op type and inputs.
    producers: HashMap<String, (String, Vec<String>)>,
    /// Already quantized activations: (quantized, scale, zero point) names.
    activations: HashMap<String, [String; 3]>,
    /// Already quantized MatMul weights: (quantized, scale, zero point) names.
    weights: HashMap<String, [String; 3]>,
    /// Float weights some node now reads quantized: dropped once nothing else reads them.
    released: HashSet<String>,
    new_initializers: Vec<Tensor>,
    summary: QuantizeSummary,
}

impl<'a> Rewrite<'a> {
    fn new(
        graph: &'a [u8],
        dir: &Path,
        what: &'a str,
        options: QuantizeOptions,
    ) -> Result<Self, CompressError> {
        let malformed = |problem: String| CompressError::Malformed {
            what: what.to_string(),
            problem,
        };
        let fields = wire::fields(graph).map_err(&malformed)?;
        let mut rewrite = Rewrite {
            fields: Vec::new(),
            what,
            options,
            initializers: HashMap::new(),
            inlined: HashSet::new(),
            graph_inputs: HashSet::new(),
            taken: HashSet::new(),
            uses: HashMap::new(),
            has_subgraphs: false,
            producers: HashMap::new(),
            activations: HashMap::new(),
            weights: HashMap::new(),
            released: HashSet::new(),
            new_initializers: Vec::new(),
            summary: QuantizeSummary::default(),
        };
        for field in &fields {
            let payload = field.payload.unwrap_or_default();
            match field.tag {
                GRAPH_INITIALIZER => {
                    let mut tensor = Tensor::decode(payload)
                        .map_err(|e| malformed(format!("initializer: {e}")))?;
                    if tensor.segment.is_some() {
                        return Err(CompressError::Unsupported {
                            what: what.into(),
                            problem: format!("initializer {} is stored in segments", tensor.name),
                        });
                    }
                    if tensor.is_external() {
                        tensor.inline_external(dir, what)?;
                        rewrite.inlined.insert(tensor.name.clone());
                    }
                    rewrite.taken.insert(tensor.name.clone());
                    rewrite.initializers.insert(tensor.name.clone(), tensor);
                }
                GRAPH_NODE => {
                    let node =
                        NodeProto::decode(payload).map_err(|e| malformed(format!("node: {e}")))?;
                    rewrite.has_subgraphs |= node
                        .attribute
                        .iter()
                        .any(|a| matches!(a.r#type, ATTRIBUTE_GRAPH | ATTRIBUTE_GRAPHS));
                    for name in node.input.iter().chain(&node.output) {
                        rewrite.taken.insert(name.clone());
                    }
                    for name in &node.input {
                        *rewrite.uses.entry(name.clone()).or_default() += 1;
                    }
                    for name in &node.output {
                        rewrite
                            .producers
                            .insert(name.clone(), (node.op_type.clone(), node.input.clone()));
                    }
                    rewrite.taken.insert(node.name);
                }
                GRAPH_INPUT | GRAPH_OUTPUT => {
                    let value = ValueInfoProto::decode(payload)
                        .map_err(|e| malformed(format!("graph input/output: {e}")))?;
                    rewrite.taken.insert(value.name.clone());
                    if field.tag == GRAPH_INPUT {
                        rewrite.graph_inputs.insert(value.name);
                    } else {
                        *rewrite.uses.entry(value.name).or_default() += 1;
                    }
                }
                _ => {}
            }
        }
        rewrite.fields = fields;
        Ok(rewrite)
    }

    fn run(mut self) -> Result<(Vec<u8>, QuantizeSummary), CompressError> {
        let fields = std::mem::take(&mut self.fields);
        let mut nodes_out = Vec::new();
        for field in fields.iter().filter(|f| f.tag == GRAPH_NODE) {
            let node = NodeProto::decode(field.payload.unwrap_or_default()).map_err(|e| {
                CompressError::Malformed {
                    what: self.what.into(),
                    problem: format!("node: {e}"),
                }
            })?;
            match self.replace(&node) {
                Some(replacement) => nodes_out.push(Err(replacement)),
                None => nodes_out.push(Ok(field.raw)),
            }
        }
        let mut out = Vec::new();
        let mut nodes = nodes_out.into_iter();
        for field in &fields {
            match field.tag {
                GRAPH_NODE => match nodes.next().expect("one entry per node") {
                    Ok(raw) => out.extend_from_slice(raw),
                    Err(replacement) => {
                        for node in replacement {
                            put_bytes(&mut out, GRAPH_NODE, &node.encode_to_vec());
                        }
                    }
                },
                GRAPH_INITIALIZER => {
                    let tensor = Tensor::decode(field.payload.unwrap_or_default())
                        .expect("decoded once already");
                    if self.uses.get(&tensor.name).copied().unwrap_or(0) == 0
                        && self.released.contains(&tensor.name)
                        && !self.has_subgraphs
                    {
                        continue;
                    }
                    if self.inlined.contains(&tensor.name) {
                        let inline = &self.initializers[&tensor.name];
                        put_bytes(&mut out, GRAPH_INITIALIZER, &inline.encode_to_vec());
                    } else {
                        out.extend_from_slice(field.raw);
                    }
                }
                _ => out.extend_from_slice(field.raw),
            }
        }
        for tensor in &self.new_initializers {
            put_bytes(&mut out, GRAPH_INITIALIZER, &tensor.encode_to_vec());
        }
        Ok((out, self.summary))
    }

    /// The nodes replacing `node`, or `None` to keep it.
    fn replace(&mut self, node: &NodeProto) -> Option<Vec<NodeProto>> {
        let standard = node.domain.is_empty() || node.domain == "ai.onnx";
        let replaced = match node.op_type.as_str() {
            "MatMul" if standard => self.matmul(node),
            "Gemm" if standard => self.gemm(node),
            _ => return None,
        };
        if replaced.is_none() {
            self.summary.left_in_float += 1;
        }
        replaced
    }

    /// A 2-D float initializer that no graph input overrides: `(rows, cols, values)`.
    fn weight(&self, name: &str) -> Option<(usize, usize, Vec<f32>)> {
        if self.graph_inputs.contains(name) {
            return None;
        }
        let tensor = self.initializers.get(name)?;
        match tensor.dims[..] {
            [rows, cols] if rows > 0 && cols > 0 => {
                let values = tensor.floats()?;
                (values.len() == (rows * cols) as usize).then_some((
                    rows as usize,
                    cols as usize,
                    values,
                ))
            }
            _ => None,
        }
    }

    /// Whether `value` is computed from a GELU within `GELU_DEPTH` nodes.
    fn after_gelu(&self, value: &str) -> bool {
        let mut frontier = vec![value.to_string()];
        for _ in 0..GELU_DEPTH {
            let mut next = Vec::new();
            for name in &frontier {
                if let Some((op, inputs)) = self.producers.get(name) {
                    if matches!(op.as_str(), "Erf" | "Gelu" | "FastGelu" | "BiasGelu") {
                        return true;
                    }
                    next.extend(inputs.iter().cloned());
                }
            }
            frontier = next;
        }
        false
    }

    fn matmul(&mut self, node: &NodeProto) -> Option<Vec<NodeProto>> {
        let [a, b] = &node.input[..] else { return None };
        if !self.options.after_gelu && self.after_gelu(a) {
            return None;
        }
        let [y] = &node.output[..] else { return None };
        let weight_names = match self.weights.get(b) {
            Some(names) => names.clone(),
            None => {
                let (_, cols, values) = self.weight(b)?;
                let names = self.add_weight(b, &values, cols, 1.0);
                self.weights.insert(b.clone(), names.clone());
                names
            }
        };
        self.release(b);
        self.summary.matmuls_quantized += 1;
        Some(self.integer_matmul(node, a, &weight_names, y))
    }

    /// Gemm with `transA = 0`: `alpha · A·op(B) + beta · C` with `B` (transposed once here
    /// when `transB = 1`) quantized and `alpha` folded into its scale.
    fn gemm(&mut self, node: &NodeProto) -> Option<Vec<NodeProto>> {
        let attr = |name: &str| node.attribute.iter().find(|a| a.name == name);
        let int = |name: &str| attr(name).map_or(0, |a| a.i);
        let float = |name: &str| attr(name).map_or(1.0, |a| a.f);
        let (alpha, beta) = (float("alpha"), float("beta"));
        if int("transA") != 0 {
            return None;
        }
        let (a, b) = (node.input.first()?, node.input.get(1)?);
        if !self.options.after_gelu && self.after_gelu(a) {
            return None;
        }
        let c = node.input.get(2).filter(|c| !c.is_empty());
        let [y] = &node.output[..] else { return None };
        let (rows, cols, values) = self.weight(b)?;
        let (values, cols) = if int("transB") != 0 {
            (math::transpose(&values, rows, cols), rows)
        } else {
            (values, cols)
        };
        let bias = match c {
            None => None,
            Some(c) if beta == 1.0 => Some(c.clone()),
            Some(c) => {
                let scaled: Vec<f32> = self.initializers.get(c)?.floats()?;
                let scaled: Vec<f32> = scaled.iter().map(|v| v * beta).collect();
                let name = self.fresh(&format!("{c}_beta"));
                let dims = self.initializers[c].dims.clone();
                self.new_initializers
                    .push(Tensor::from_floats(&name, &dims, &scaled));
                Some(name)
            }
        };
        let base = format!("{}_{}", b, fresh_suffix(&node.name, y));
        let names = self.add_weight(&base, &values, cols, alpha);
        self.release(b);
        self.summary.gemms_quantized += 1;
        let Some(bias) = bias else {
            return Some(self.integer_matmul(node, a, &names, y));
        };
        let product = self.fresh(&format!("{y}_matmul"));
        let mut nodes = self.integer_matmul(node, a, &names, &product);
        nodes.push(plain(
            &format!("{}_bias_add", node.name),
            "Add",
            &[product.as_str(), bias.as_str()],
            y,
        ));
        Some(nodes)
    }

    /// One reader of initializer `name` fewer.
    fn release(&mut self, name: &str) {
        self.released.insert(name.to_string());
        if let Some(n) = self.uses.get_mut(name) {
            *n = n.saturating_sub(1);
        }
    }

    /// Adds the int8 weight, its scale (times `alpha`) and zero point; returns their names.
    fn add_weight(&mut self, base: &str, values: &[f32], cols: usize, alpha: f32) -> [String; 3] {
        let Quantized { values: q, scales } = if self.options.per_channel {
            math::per_column(values, cols)
        } else {
            math::per_tensor(values)
        };
        let names = [
            self.fresh(&format!("{base}_quantized")),
            self.fresh(&format!("{base}_scale")),
            self.fresh(&format!("{base}_zero_point")),
        ];
        let rows = (values.len() / cols) as i64;
        let vector_dims: &[i64] = if self.options.per_channel {
            &[cols as i64]
        } else {
            &[]
        };
        let scales: Vec<f32> = scales.iter().map(|s| s * alpha).collect();
        let zeros = vec![0u8; scales.len()];
        self.new_initializers.extend([
            Tensor::from_bytes(
                &names[0],
                INT8,
                &[rows, cols as i64],
                q.iter().map(|&v| v as u8).collect(),
            ),
            Tensor::from_floats(&names[1], vector_dims, &scales),
            Tensor::from_bytes(&names[2], INT8, vector_dims, zeros),
        ]);
        self.summary.weight_bytes_fp32 += (values.len() * 4) as u64;
        self.summary.weight_bytes_int8 += values.len() as u64;
        names
    }

    /// `DynamicQuantizeLinear(a)` (shared by every node reading `a`), `MatMulInteger`,
    /// `Cast` to float and `Mul` by `a_scale · w_scale`, writing `y`.
    fn integer_matmul(
        &mut self,
        node: &NodeProto,
        a: &str,
        w: &[String; 3],
        y: &str,
    ) -> Vec<NodeProto> {
        let mut nodes = Vec::new();
        let activation = match self.activations.get(a) {
            Some(names) => names.clone(),
            None => {
                let names = [
                    self.fresh(&format!("{a}_quantized")),
                    self.fresh(&format!("{a}_scale")),
                    self.fresh(&format!("{a}_zero_point")),
                ];
                let mut quantize = plain(
                    &self.fresh(&format!("{a}_QuantizeLinear")),
                    "DynamicQuantizeLinear",
                    &[a],
                    &names[0],
                );
                quantize.output = names.to_vec();
                nodes.push(quantize);
                self.activations.insert(a.to_string(), names.clone());
                names
            }
        };
        let [a_q, a_scale, a_zp] = activation.each_ref().map(String::as_str);
        let [w_q, w_scale, w_zp] = w.each_ref().map(String::as_str);
        let integer = self.fresh(&format!("{y}_output_quantized"));
        let cast = self.fresh(&format!("{y}_output_quantized_cast_output"));
        let scales = self.fresh(&format!("{}_quant_scales_mul:0", node.name));
        let name = |suffix: &str| format!("{}_{suffix}", node.name);
        nodes.push(plain(
            &name("quant_scales_mul"),
            "Mul",
            &[a_scale, w_scale],
            &scales,
        ));
        nodes.push(plain(
            &name("quant"),
            "MatMulInteger",
            &[a_q, w_q, a_zp, w_zp],
            &integer,
        ));
        let mut cast_node = plain(
            &name("output_quantized_cast"),
            "Cast",
            &[integer.as_str()],
            &cast,
        );
        cast_node.attribute.push(AttributeProto {
            name: "to".into(),
            i: i64::from(FLOAT),
            r#type: attribute_type::INT,
            ..Default::default()
        });
        nodes.push(cast_node);
        nodes.push(plain(
            &name("output_quantized_mul"),
            "Mul",
            &[cast.as_str(), scales.as_str()],
            y,
        ));
        nodes
    }

    /// `want`, or `want` with a number appended, not used anywhere in the graph yet.
    fn fresh(&mut self, want: &str) -> String {
        let mut name = want.to_string();
        let mut n = 1;
        while self.taken.contains(&name) {
            name = format!("{want}_{n}");
            n += 1;
        }
        self.taken.insert(name.clone());
        name
    }
}

/// Something unique to a Gemm node for naming its own weight copy.
fn fresh_suffix(node_name: &str, output: &str) -> String {
    if node_name.is_empty() {
        output.to_string()
    } else {
        node_name.to_string()
    }
}

fn plain(name: &str, op_type: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        name: name.to_string(),
        op_type: op_type.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        ..Default::default()
    }
}
