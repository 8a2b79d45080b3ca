//! Reading a run's named outputs back one row at a time: tensors sliced by row (a scalar
//! or a flat list), a sequence of maps (scikit-learn's ZipMap) one map per row.

use ort::value::{DynMapValueType, DynValue};
use serde_json::{Map, Number, Value};

use super::{Element, Port, PortType};
use crate::engine::EngineError;

/// A classifier's label output and probabilities output, written as `label` and
/// `probabilities` like `task = "classify"` rows.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierOutputs {
    pub label: String,
    pub probabilities: String,
}

impl ClassifierOutputs {
    /// A `[batch]` int64 or string output beside a probabilities output (a sequence of maps,
    /// or a float `[batch, classes]` tensor whose name says probabilities).
    pub fn find(outputs: &[Port]) -> Option<Self> {
        let label = outputs.iter().find(|p| {
            matches!(&p.ty, PortType::Tensor { element: Element::Int64 | Element::String, shape } if shape.len() == 1)
        })?;
        let probabilities = outputs.iter().find(|p| match &p.ty {
            PortType::MapSequence { .. } => true,
            PortType::Tensor {
                element: Element::Float32,
                shape,
            } => shape.len() == 2 && p.name.to_ascii_lowercase().contains("prob"),
            _ => false,
        })?;
        Some(Self {
            label: label.name.clone(),
            probabilities: probabilities.name.clone(),
        })
    }
}

fn number(v: f64) -> Value {
    Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// Splits `values` (row-major) into `rows` JSON values: a scalar per row when each row has
/// one, else a list.
fn by_row<T>(values: &[T], rows: usize, json: impl Fn(&T) -> Value) -> Vec<Value> {
    let width = values.len().checked_div(rows).unwrap_or(0);
    (0..rows)
        .map(|r| {
            let row = &values[r * width..(r + 1) * width];
            if width == 1 {
                json(&row[0])
            } else {
                Value::Array(row.iter().map(&json).collect())
            }
        })
        .collect()
}

/// One JSON value per row of output `port`, or why it could not be read.
pub(super) fn read_output(
    port: &Port,
    value: &DynValue,
    rows: usize,
) -> Result<Vec<Value>, EngineError> {
    let bad = |e: ort::Error| {
        EngineError::Inference(format!(
            "reading output \"{}\" ({}): {e}",
            port.name, port.ty
        ))
    };
    let values = match &port.ty {
        PortType::Tensor { element, .. } => match element {
            Element::Float32 => {
                let (_, data) = value.try_extract_tensor::<f32>().map_err(bad)?;
                by_row(data, rows, |&v| number(f64::from(v)))
            }
            Element::Float64 => {
                let (_, data) = value.try_extract_tensor::<f64>().map_err(bad)?;
                by_row(data, rows, |&v| number(v))
            }
            Element::Int64 => {
                let (_, data) = value.try_extract_tensor::<i64>().map_err(bad)?;
                by_row(data, rows, |&v| Value::from(v))
            }
            Element::Int32 => {
                let (_, data) = value.try_extract_tensor::<i32>().map_err(bad)?;
                by_row(data, rows, |&v| Value::from(v))
            }
            Element::String => {
                let (_, data) = value.try_extract_strings().map_err(bad)?;
                by_row(&data, rows, |v| Value::String(v.clone()))
            }
            Element::Other(_) => {
                return Err(EngineError::Model(format!(
                    "output \"{}\" is {}, which sluice cannot write",
                    port.name, port.ty
                )));
            }
        },
        PortType::MapSequence { key, .. } => {
            let maps = value
                .try_extract_sequence::<DynMapValueType>()
                .map_err(bad)?;
            maps.iter()
                .map(|map| {
                    let entries: Vec<(String, f64)> = match key {
                        Element::String => map
                            .try_extract_key_values::<String, f32>()
                            .map_err(bad)?
                            .into_iter()
                            .map(|(k, v)| (k, f64::from(v)))
                            .collect(),
                        _ => map
                            .try_extract_key_values::<i64, f32>()
                            .map_err(bad)?
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), f64::from(v)))
                            .collect(),
                    };
                    let mut object = Map::new();
                    let mut entries = entries;
                    entries.sort_by(|a, b| natural(&a.0, &b.0));
                    for (k, v) in entries {
                        object.insert(k, number(v));
                    }
                    Ok(Value::Object(object))
                })
                .collect::<Result<Vec<_>, EngineError>>()?
        }
        PortType::Other(what) => {
            return Err(EngineError::Model(format!(
                "output \"{}\" is a {what}, which sluice cannot write",
                port.name
            )));
        }
    };
    if values.len() != rows {
        return Err(EngineError::Model(format!(
            "output \"{}\" has {} rows for a batch of {rows}",
            port.name,
            values.len()
        )));
    }
    Ok(values)
}

/// Class keys in numeric order when they are numbers (`2` before `10`), else by text.
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// A float `[batch, classes]` probabilities row as a map keyed by class index.
pub(super) fn indexed(row: Value) -> Value {
    match row {
        Value::Array(items) => Value::Object(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
        ),
        other => other,
    }
}
