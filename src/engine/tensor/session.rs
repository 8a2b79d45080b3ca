//! A tensor-task model in ONNX Runtime: its ports read from the session, and one batch of
//! rows fed to its named inputs and read back per row from its named outputs.

use std::borrow::Cow;
use std::path::Path;

use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType, ValueType};
use serde_json::Value;
use tokenizers::Tokenizer;

use super::outputs::{indexed, read_output};
use super::{Element, Port, PortType, RowFeed, TensorPlan};
use crate::engine::{EngineError, ModelSource, open_session};
use crate::settings::EngineSettings;

/// A loaded model and its declared inputs and outputs.
pub struct TensorModel {
    session: Session,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
}

fn element(ty: TensorElementType) -> Element {
    match ty {
        TensorElementType::Float32 => Element::Float32,
        TensorElementType::Float64 => Element::Float64,
        TensorElementType::Int64 => Element::Int64,
        TensorElementType::Int32 => Element::Int32,
        TensorElementType::String => Element::String,
        TensorElementType::Bool => Element::Other("bool"),
        TensorElementType::Float16 => Element::Other("float16"),
        TensorElementType::Uint8 => Element::Other("uint8"),
        TensorElementType::Int8 => Element::Other("int8"),
        _ => Element::Other("another element type"),
    }
}

fn port_type(ty: &ValueType) -> PortType {
    match ty {
        ValueType::Tensor { ty, shape, .. } => PortType::Tensor {
            element: element(*ty),
            shape: shape.to_vec(),
        },
        ValueType::Sequence(inner) => match &**inner {
            ValueType::Map { key, value } => PortType::MapSequence {
                key: element(*key),
                value: element(*value),
            },
            other => PortType::Other(format!("sequence of {other:?}")),
        },
        other => PortType::Other(format!("{other:?}")),
    }
}

impl TensorModel {
    /// Opens `model` (blocking) and reads its ports.
    pub fn load(model: &Path, settings: &EngineSettings) -> Result<Self, EngineError> {
        let (session, _) = open_session(ModelSource::File(model), settings)?;
        let ports = |list: Vec<(String, PortType)>| {
            list.into_iter()
                .map(|(name, ty)| Port { name, ty })
                .collect()
        };
        let inputs = ports(
            session
                .inputs()
                .iter()
                .map(|i| (i.name().to_string(), port_type(i.dtype())))
                .collect(),
        );
        let outputs = ports(
            session
                .outputs()
                .iter()
                .map(|o| (o.name().to_string(), port_type(o.dtype())))
                .collect(),
        );
        Ok(Self {
            session,
            inputs,
            outputs,
        })
    }

    /// Runs rows (each `feeds` entry one row's feed, in plan order) and returns, per row,
    /// each planned output's value (a classifier's as `label` and `probabilities`). A graph
    /// with a fixed batch size runs them in groups of it (the last one filled with copies).
    pub fn run(
        &mut self,
        plan: &TensorPlan,
        tokenizer: Option<&Tokenizer>,
        feeds: &[Vec<RowFeed>],
    ) -> Result<Vec<Vec<(String, Value)>>, EngineError> {
        let Some(group) = plan.fixed_batch else {
            return self.run_batch(plan, tokenizer, feeds);
        };
        let mut rows = Vec::with_capacity(feeds.len());
        for chunk in feeds.chunks(group) {
            let mut filled = chunk.to_vec();
            while filled.len() < group {
                filled.push(chunk[chunk.len() - 1].clone());
            }
            let mut answered = self.run_batch(plan, tokenizer, &filled)?;
            answered.truncate(chunk.len());
            rows.extend(answered);
        }
        Ok(rows)
    }

    fn run_batch(
        &mut self,
        plan: &TensorPlan,
        tokenizer: Option<&Tokenizer>,
        feeds: &[Vec<RowFeed>],
    ) -> Result<Vec<Vec<(String, Value)>>, EngineError> {
        let rows = feeds.len();
        let build = |e: ort::Error| EngineError::Inference(format!("building an input: {e}"));
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
        for (index, input) in plan.inputs.iter().enumerate() {
            let name: Cow<'_, str> = input.name.clone().into();
            if input.tokenized {
                let tokenizer = tokenizer.ok_or_else(|| {
                    EngineError::Model(format!(
                        "model input \"{}\" is tokenized, but the package has no tokenizer",
                        input.name
                    ))
                })?;
                let (ids, mask, seq) = tokenize(tokenizer, feeds, index)?;
                let shape = vec![rows as i64, seq as i64];
                inputs.push((name, integers(input.element, shape.clone(), ids)?));
                if let Some(mask_name) = &plan.mask {
                    inputs.push((
                        mask_name.clone().into(),
                        integers(Element::Int64, shape, mask)?,
                    ));
                }
                continue;
            }
            if input.element == Element::String {
                let texts: Vec<String> = feeds
                    .iter()
                    .map(|f| match &f[index] {
                        RowFeed::Text(t) => t.clone(),
                        RowFeed::Numbers(_) => String::new(),
                    })
                    .collect();
                let shape = if input.rank == 1 {
                    vec![rows]
                } else {
                    vec![rows, 1]
                };
                let tensor = Tensor::from_string_array((shape, &texts[..])).map_err(build)?;
                inputs.push((name, tensor.into()));
                continue;
            }
            let numbers: Vec<f64> = feeds
                .iter()
                .flat_map(|f| match &f[index] {
                    RowFeed::Numbers(n) => n.clone(),
                    RowFeed::Text(_) => Vec::new(),
                })
                .collect();
            let width = numbers.len().checked_div(rows).unwrap_or(0);
            if width * rows != numbers.len() {
                return Err(EngineError::Inference(format!(
                    "model input \"{}\": rows give different numbers of values; give every row the same",
                    input.name
                )));
            }
            let shape = if input.rank == 1 {
                vec![rows as i64]
            } else {
                vec![rows as i64, width as i64]
            };
            let value: SessionInputValue<'_> = match input.element {
                Element::Float32 => Tensor::from_array((
                    shape,
                    numbers.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                ))
                .map_err(build)?
                .into(),
                Element::Float64 => Tensor::from_array((shape, numbers)).map_err(build)?.into(),
                other => integers(other, shape, numbers.iter().map(|&v| v as i64).collect())?,
            };
            inputs.push((name, value));
        }
        let outputs = self
            .session
            .run(inputs)
            .map_err(|e| EngineError::Inference(format!("session run: {e}")))?;
        let mut per_row: Vec<Vec<(String, Value)>> = vec![Vec::new(); rows];
        for port in &plan.outputs {
            let values = read_output(port, &outputs[port.name.as_str()], rows)?;
            let key = match &plan.classifier {
                Some(c) if c.label == port.name => "label".to_string(),
                Some(c) if c.probabilities == port.name => "probabilities".to_string(),
                _ => port.name.clone(),
            };
            let index_keys = key == "probabilities" && matches!(port.ty, PortType::Tensor { .. });
            for (row, value) in per_row.iter_mut().zip(values) {
                let value = if index_keys { indexed(value) } else { value };
                row.push((key.clone(), value));
            }
        }
        Ok(per_row)
    }
}

fn integers(
    element: Element,
    shape: Vec<i64>,
    values: Vec<i64>,
) -> Result<SessionInputValue<'static>, EngineError> {
    let build = |e: ort::Error| EngineError::Inference(format!("building an input: {e}"));
    Ok(match element {
        Element::Int32 => Tensor::from_array((
            shape,
            values.into_iter().map(|v| v as i32).collect::<Vec<_>>(),
        ))
        .map_err(build)?
        .into(),
        _ => Tensor::from_array((shape, values)).map_err(build)?.into(),
    })
}

/// Token ids and attention mask `[rows, seq]` of input `index`'s texts, padded with 0.
fn tokenize(
    tokenizer: &Tokenizer,
    feeds: &[Vec<RowFeed>],
    index: usize,
) -> Result<(Vec<i64>, Vec<i64>, usize), EngineError> {
    let texts: Vec<&str> = feeds
        .iter()
        .map(|f| match &f[index] {
            RowFeed::Text(t) => t.as_str(),
            RowFeed::Numbers(_) => "",
        })
        .collect();
    let encodings = tokenizer
        .encode_batch(texts, true)
        .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
    let seq = encodings.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
    let mut ids = vec![0i64; feeds.len() * seq];
    let mut mask = vec![0i64; feeds.len() * seq];
    for (r, encoding) in encodings.iter().enumerate() {
        for (t, &id) in encoding.get_ids().iter().enumerate() {
            ids[r * seq + t] = i64::from(id);
            mask[r * seq + t] = 1;
        }
    }
    Ok((ids, mask, seq))
}
