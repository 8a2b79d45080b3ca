//! The generic tensor task's model side: a model's named inputs and outputs as its graph
//! declares them, a job's field mapping checked against them before any shard runs, and
//! rows run through ONNX Runtime on the tensor engine's own thread.

mod feed;
mod handle;
mod outputs;
mod session;

use std::fmt;

pub use feed::{RowFeed, feed_row};
pub use handle::TensorEngine;
pub use outputs::ClassifierOutputs;
pub use session::TensorModel;

use crate::job::TensorSpec;

/// Element types of the tensors sluice feeds and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    Float32,
    Float64,
    Int64,
    Int32,
    String,
    /// Any other (bool, float16, uint8, …): named, not fed.
    Other(&'static str),
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Element::Float32 => "float32",
            Element::Float64 => "float64",
            Element::Int64 => "int64",
            Element::Int32 => "int32",
            Element::String => "string",
            Element::Other(name) => name,
        })
    }
}

/// A graph input's or output's type.
#[derive(Debug, Clone, PartialEq)]
pub enum PortType {
    /// `shape` with -1 for a symbolic dimension.
    Tensor {
        element: Element,
        shape: Vec<i64>,
    },
    /// A sequence of maps, one per row (scikit-learn's ZipMap probabilities).
    MapSequence {
        key: Element,
        value: Element,
    },
    Other(String),
}

impl fmt::Display for PortType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortType::Tensor { element, shape } => {
                let dims: Vec<String> = shape
                    .iter()
                    .map(|&d| if d < 0 { "?".into() } else { d.to_string() })
                    .collect();
                write!(f, "{element} [{}]", dims.join(", "))
            }
            PortType::MapSequence { key, value } => write!(f, "sequence of map({key} → {value})"),
            PortType::Other(what) => f.write_str(what),
        }
    }
}

/// One named input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    pub name: String,
    pub ty: PortType,
}

/// How one model input is fed, as checked at planning.
#[derive(Debug, Clone, PartialEq)]
pub struct InputPlan {
    pub name: String,
    pub element: Element,
    /// The fields feeding it, in order.
    pub fields: Vec<String>,
    /// Values per row: the graph's fixed last dimension; `None` when symbolic (every row of
    /// a batch must then give the same number).
    pub width: Option<usize>,
    /// `[batch]` (one value per row) rather than `[batch, width]`.
    pub rank: usize,
    /// Token ids of a `tokenize` field (and, with `mask`, the attention-mask input fed too).
    pub tokenized: bool,
}

/// The checked mapping: what each model input gets and which outputs are written.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorPlan {
    pub inputs: Vec<InputPlan>,
    /// An `attention_mask` input no field feeds, filled from a tokenized input.
    pub mask: Option<String>,
    pub outputs: Vec<Port>,
    /// The graph's fixed batch size, when it has one (rows then run in groups of it).
    pub fixed_batch: Option<usize>,
    /// A label output and a probabilities output, written as classify rows.
    pub classifier: Option<ClassifierOutputs>,
}

/// Checks a job's `[tensor]` mapping against the model's inputs and outputs. Errors name
/// what is wrong: a model input no field maps to, a mapped name the model has no input of,
/// an input element type sluice cannot feed or one that does not match how it is fed
/// (several fields into a string input, a tokenized field into a float input), a row width
/// the graph does not take, an output name that does not exist.
pub fn check_mapping(
    inputs: &[Port],
    outputs: &[Port],
    spec: &TensorSpec,
) -> Result<TensorPlan, String> {
    let names = |ports: &[Port]| {
        ports
            .iter()
            .map(|p| format!("{} ({})", p.name, p.ty))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for name in spec.inputs.keys() {
        if !inputs.iter().any(|p| &p.name == name) {
            return Err(format!(
                "tensor.inputs names \"{name}\", which the model has no input of; its inputs: {}",
                names(inputs)
            ));
        }
    }
    let mut plans = Vec::new();
    let mut mask = None;
    let mut fixed_batch = None;
    let tokenizes = inputs.iter().any(|p| {
        spec.inputs
            .get(&p.name)
            .is_some_and(|fields| fields.as_slice().iter().any(|f| spec.tokenize.contains(f)))
    });
    for port in inputs {
        let PortType::Tensor { element, shape } = &port.ty else {
            return Err(format!(
                "model input \"{}\" is a {}; the tensor task feeds tensors only",
                port.name, port.ty
            ));
        };
        let Some(fields) = spec.inputs.get(&port.name) else {
            if tokenizes && port.name == "attention_mask" {
                mask = Some(port.name.clone());
                continue;
            }
            return Err(format!(
                "model input \"{}\" ({}) has no field mapped to it; add it to tensor.inputs (\"{}\" = [\"field\", …]); the model's inputs: {}",
                port.name,
                port.ty,
                port.name,
                names(inputs)
            ));
        };
        let fields = fields.as_slice().to_vec();
        let tokenized = fields.iter().any(|f| spec.tokenize.contains(f));
        match element {
            Element::Float32 | Element::Float64 | Element::Int32 | Element::Int64 => {}
            Element::String => {}
            Element::Other(_) => {
                return Err(format!(
                    "model input \"{}\" is {}: a dtype the tensor task cannot feed (it feeds float32, float64, int32, int64 and string)",
                    port.name, port.ty
                ));
            }
        }
        if *element == Element::String && (fields.len() != 1 || tokenized) {
            return Err(format!(
                "model input \"{}\" is {}: it takes one text field as is, but tensor.inputs maps {} field(s){} to it",
                port.name,
                port.ty,
                fields.len(),
                if tokenized {
                    " through the tokenizer"
                } else {
                    ""
                }
            ));
        }
        if tokenized && !matches!(element, Element::Int64 | Element::Int32) {
            return Err(format!(
                "model input \"{}\" is {}: a tokenized field gives integer token ids, which it does not take (dtype mismatch)",
                port.name, port.ty
            ));
        }
        if tokenized && fields.len() != 1 {
            return Err(format!(
                "model input \"{}\": a tokenized input takes one field, tensor.inputs maps {}",
                port.name,
                fields.len()
            ));
        }
        if shape.is_empty() || shape.len() > 2 {
            return Err(format!(
                "model input \"{}\" is {}: the tensor task feeds [batch] or [batch, values] inputs",
                port.name, port.ty
            ));
        }
        if shape[0] > 0 {
            let batch = shape[0] as usize;
            if fixed_batch.is_some_and(|b| b != batch) {
                return Err(format!(
                    "model inputs fix different batch sizes ({} and {batch}); sluice cannot feed them together",
                    fixed_batch.unwrap_or(0)
                ));
            }
            fixed_batch = Some(batch);
        }
        let graph_width = (shape.len() == 2 && shape[1] > 0).then(|| shape[1] as usize);
        if shape.len() == 1 && fields.len() != 1 {
            return Err(format!(
                "model input \"{}\" is {}: one value per row, but tensor.inputs maps {} fields to it",
                port.name,
                port.ty,
                fields.len()
            ));
        }
        // Fewer fields than values is fine (a field may hold a list): rows are checked.
        if let Some(width) = graph_width
            && fields.len() > width
            && !tokenized
        {
            return Err(format!(
                "model input \"{}\" is {}: {width} values per row, but tensor.inputs maps {} fields to it",
                port.name,
                port.ty,
                fields.len()
            ));
        }
        plans.push(InputPlan {
            name: port.name.clone(),
            element: *element,
            fields,
            width: if tokenized { None } else { graph_width },
            rank: shape.len(),
            tokenized,
        });
    }
    let chosen: Vec<Port> = if spec.outputs.is_empty() {
        outputs.to_vec()
    } else {
        spec.outputs
            .iter()
            .map(|name| {
                outputs.iter().find(|p| &p.name == name).cloned().ok_or_else(|| {
                    format!(
                        "tensor.outputs names \"{name}\", which the model has no output of; its outputs: {}",
                        names(outputs)
                    )
                })
            })
            .collect::<Result<_, _>>()?
    };
    for port in &chosen {
        if let PortType::Other(what) = &port.ty {
            return Err(format!(
                "model output \"{}\" is a {what}, which sluice cannot write; leave it out of tensor.outputs",
                port.name
            ));
        }
    }
    let classifier = ClassifierOutputs::find(&chosen);
    Ok(TensorPlan {
        inputs: plans,
        mask,
        outputs: chosen,
        fixed_batch,
        classifier,
    })
}

#[cfg(test)]
mod tests;
