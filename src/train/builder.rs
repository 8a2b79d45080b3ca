//! A small builder for ONNX graphs: named inputs and outputs, constants, and nodes whose
//! output names are generated, so graph code reads like the math it encodes.

use super::onnx::{
    AttributeProto, Dim, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, ValueInfoProto, attribute_type, data_type,
};

/// The ONNX opset sluice's graphs use (ReduceSum takes axes as an input, ReduceMean as an
/// attribute, Shape has start/end).
pub const OPSET: i64 = 17;
/// IR version 8: what opset 17 pairs with.
pub const IR_VERSION: i64 = 8;

#[derive(Debug, Default)]
pub struct GraphBuilder {
    name: String,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    counter: usize,
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            ..Default::default()
        }
    }

    fn fresh(&mut self, stem: &str) -> String {
        self.counter += 1;
        format!("{stem}_{}", self.counter)
    }

    /// Declares a float graph input; returns its name.
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> String {
        self.inputs
            .push(ValueInfoProto::tensor(name, data_type::FLOAT, dims));
        name.to_string()
    }

    /// Exposes `value` as the float graph output `name`.
    pub fn output(&mut self, value: &str, name: &str, dims: &[Dim]) {
        if value != name {
            self.nodes.push(NodeProto {
                input: vec![value.to_string()],
                output: vec![name.to_string()],
                name: format!("expose_{name}"),
                op_type: "Identity".into(),
                ..Default::default()
            });
        }
        self.outputs
            .push(ValueInfoProto::tensor(name, data_type::FLOAT, dims));
    }

    /// A named float constant (an initializer), e.g. exported parameters.
    pub fn named_constant(&mut self, name: &str, dims: &[i64], values: &[f32]) -> String {
        self.initializers
            .push(TensorProto::float(name, dims, values));
        name.to_string()
    }

    /// A float scalar constant.
    pub fn scalar(&mut self, value: f32) -> String {
        let name = self.fresh("const");
        self.initializers
            .push(TensorProto::float(&name, &[], &[value]));
        name
    }

    /// A 1-D int64 constant (axes, shapes).
    pub fn ints(&mut self, values: &[i64]) -> String {
        let name = self.fresh("ints");
        self.initializers
            .push(TensorProto::int64(&name, &[values.len() as i64], values));
        name
    }

    /// One node with one output; returns the output's generated name.
    pub fn op(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> String {
        let output = self.fresh(&op_type.to_ascii_lowercase());
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            name: format!("node_{output}"),
            op_type: op_type.to_string(),
            attribute: attributes,
            ..Default::default()
        });
        output
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
    pub fn matmul(&mut self, a: &str, b: &str) -> String {
        self.op("MatMul", &[a, b], vec![])
    }
    pub fn transpose(&mut self, a: &str) -> String {
        self.op("Transpose", &[a], vec![ints("perm", &[1, 0])])
    }
    /// Sum over `axes`, dropping them.
    pub fn reduce_sum(&mut self, a: &str, axes: &[i64]) -> String {
        let axes = self.ints(axes);
        self.op("ReduceSum", &[a, &axes], vec![int("keepdims", 0)])
    }

    pub fn finish(self, doc: &str, metadata: &[(&str, String)]) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            producer_name: "sluice".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.to_string(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: self.name,
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
            }),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            metadata_props: metadata
                .iter()
                .map(|(key, value)| StringStringEntryProto {
                    key: key.to_string(),
                    value: value.clone(),
                })
                .collect(),
        }
    }
}

pub fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: value,
        r#type: attribute_type::INT,
        ..Default::default()
    }
}

pub fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: values.to_vec(),
        r#type: attribute_type::INTS,
        ..Default::default()
    }
}
