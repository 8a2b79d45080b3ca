//! Writes the nodes gradient rules need: fresh value names, constants in the graph's float
//! type, and the shape helpers every rule shares (summing a broadcast gradient back to its
//! operand's shape, swapping the last two axes of a tensor of any rank).

use std::collections::HashMap;

use super::super::onnx::{AttributeProto, NodeProto, TensorProto, attribute_type, data_type};

/// Collects the nodes and constants of a gradient (or of a test's forward graph).
#[derive(Debug)]
pub struct Emitter {
    /// `data_type::FLOAT` or `data_type::DOUBLE`: the type of every float constant written.
    pub dtype: i32,
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    /// Ranks known without running the graph (declared inputs, initializers), so a rule can
    /// use a static permutation instead of a shape computation.
    pub ranks: HashMap<String, usize>,
    prefix: String,
    counter: usize,
}

impl Emitter {
    /// Values get names `<prefix><n>_<op>`; `prefix` must not start any existing name.
    pub fn new(dtype: i32, prefix: &str) -> Self {
        Self {
            dtype,
            nodes: Vec::new(),
            initializers: Vec::new(),
            ranks: HashMap::new(),
            prefix: prefix.to_string(),
            counter: 0,
        }
    }

    fn fresh(&mut self, stem: &str) -> String {
        self.counter += 1;
        format!("{}{}_{stem}", self.prefix, self.counter)
    }

    /// One node with one output; returns the output's name.
    pub fn op(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> String {
        self.op_n(op_type, inputs, attributes, 1).remove(0)
    }

    /// One node with `outputs` outputs.
    pub fn op_n(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
        outputs: usize,
    ) -> Vec<String> {
        let stem = op_type.to_ascii_lowercase();
        let output: Vec<String> = (0..outputs).map(|_| self.fresh(&stem)).collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: output.clone(),
            name: format!("node_{}", output[0]),
            op_type: op_type.to_string(),
            attribute,
            ..Default::default()
        });
        output
    }

    /// A float constant of the emitter's type.
    pub fn constant(&mut self, dims: &[i64], values: &[f64]) -> String {
        let name = self.fresh("const");
        self.initializers
            .push(float_tensor(self.dtype, &name, dims, values));
        self.ranks.insert(name.clone(), dims.len());
        name
    }

    pub fn scalar(&mut self, value: f64) -> String {
        self.constant(&[], &[value])
    }

    /// A 1-D int64 constant (axes, shapes).
    pub fn ints(&mut self, values: &[i64]) -> String {
        let name = self.fresh("ints");
        self.initializers
            .push(TensorProto::int64(&name, &[values.len() as i64], values));
        self.ranks.insert(name.clone(), 1);
        name
    }

    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.op("Add", &[a, b], vec![])
    }
    pub fn sub(&mut self, a: &str, b: &str) -> String {
        self.op("Sub", &[a, b], vec![])
    }
    pub fn mul(&mut self, a: &str, b: &str) -> String {
        self.op("Mul", &[a, b], vec![])
    }
    pub fn div(&mut self, a: &str, b: &str) -> String {
        self.op("Div", &[a, b], vec![])
    }
    pub fn neg(&mut self, a: &str) -> String {
        self.op("Neg", &[a], vec![])
    }

    /// `Shape(x)[start..end]` as a 1-D int64 tensor.
    pub fn shape(&mut self, x: &str, start: Option<i64>, end: Option<i64>) -> String {
        let mut attrs = Vec::new();
        if let Some(start) = start {
            attrs.push(int("start", start));
        }
        if let Some(end) = end {
            attrs.push(int("end", end));
        }
        self.op("Shape", &[x], attrs)
    }

    /// Zeros of `x`'s shape, in the emitter's float type.
    pub fn zeros_like(&mut self, x: &str) -> String {
        let shape = self.shape(x, None, None);
        let zero = float_tensor(self.dtype, "", &[1], &[0.0]);
        self.op("ConstantOfShape", &[&shape], vec![tensor("value", zero)])
    }

    /// `g` (the gradient of a broadcast result) summed back to the shape of the operand `x`:
    /// over the leading axes `x` lacks and the axes where `x` has size 1. Computed from the
    /// runtime shapes, so it holds for symbolic batch and sequence sizes.
    pub fn reduce_to(&mut self, g: &str, x: &str) -> String {
        let x_shape = self.shape(x, None, None);
        let g_shape = self.shape(g, None, None);
        let x_rank = self.op("Shape", &[&x_shape], vec![]);
        let g_rank = self.op("Shape", &[&g_shape], vec![]);
        let missing = self.sub(&g_rank, &x_rank);
        let one = TensorProto::int64("", &[1], &[1]);
        let ones = self.op("ConstantOfShape", &[&missing], vec![tensor("value", one)]);
        let padded = self.op("Concat", &[&ones, &x_shape], vec![int("axis", 0)]);
        let one = self.ints(&[1]);
        let is_one = self.op("Equal", &[&padded, &one], vec![]);
        let where_one = self.op("NonZero", &[&is_one], vec![]);
        let flat = self.ints(&[-1]);
        let axes = self.op("Reshape", &[&where_one, &flat], vec![]);
        let summed = self.op(
            "ReduceSum",
            &[g, &axes],
            vec![int("keepdims", 1), int("noop_with_empty_axes", 1)],
        );
        self.op("Reshape", &[&summed, &x_shape], vec![])
    }

    /// `x` with its last two axes swapped (rank ≥ 2): a static Transpose when the rank is
    /// known, else a reshape to 3-D and back.
    pub fn swap_last2(&mut self, x: &str) -> String {
        if let Some(&rank) = self.ranks.get(x) {
            let mut perm: Vec<i64> = (0..rank as i64).collect();
            perm.swap(rank - 1, rank - 2);
            return self.op("Transpose", &[x], vec![ints("perm", &perm)]);
        }
        let lead = self.shape(x, None, Some(-2));
        let rows = self.shape(x, Some(-2), Some(-1));
        let cols = self.shape(x, Some(-1), None);
        let any = self.ints(&[-1]);
        let three = self.op("Concat", &[&any, &rows, &cols], vec![int("axis", 0)]);
        let x3 = self.op("Reshape", &[x, &three], vec![]);
        let t3 = self.op("Transpose", &[&x3], vec![ints("perm", &[0, 2, 1])]);
        let back = self.op("Concat", &[&lead, &cols, &rows], vec![int("axis", 0)]);
        self.op("Reshape", &[&t3, &back], vec![])
    }

    /// `Cast(x)` to the emitter's float type.
    pub fn to_float(&mut self, x: &str) -> String {
        self.op("Cast", &[x], vec![int("to", self.dtype as i64)])
    }
}

/// A float (f32) or double tensor, stored as little-endian raw bytes.
pub fn float_tensor(dtype: i32, name: &str, dims: &[i64], values: &[f64]) -> TensorProto {
    let raw_data = if dtype == data_type::DOUBLE {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    } else {
        values
            .iter()
            .flat_map(|&v| (v as f32).to_le_bytes())
            .collect()
    };
    TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: dtype,
        raw_data,
        ..Default::default()
    }
}

pub fn int(name: &str, value: i64) -> AttributeProto {
    super::super::builder::int(name, value)
}

pub fn ints(name: &str, values: &[i64]) -> AttributeProto {
    super::super::builder::ints(name, values)
}

pub fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f: value,
        r#type: attribute_type::FLOAT,
        ..Default::default()
    }
}

pub fn string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        s: value.as_bytes().to_vec(),
        r#type: attribute_type::STRING,
        ..Default::default()
    }
}

pub fn tensor(name: &str, value: TensorProto) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        t: Some(value),
        r#type: attribute_type::TENSOR,
        ..Default::default()
    }
}

/// Attribute readers with ONNX's defaults.
pub fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

pub fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

pub fn attr_float(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}

pub fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

/// Input `i` of `node`, or `None` when absent (past the end or an empty name).
pub fn input(node: &NodeProto, i: usize) -> Option<&str> {
    node.input
        .get(i)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}
