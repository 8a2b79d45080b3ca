//! One row's field values turned into what each model input gets: numbers laid side by
//! side, or one text (as is, or for the tokenizer). Errors are the row's, naming the field.

use serde_json::Value;
use serde_json::value::RawValue;

use super::{Element, TensorPlan};
use crate::uri::abbreviated;

/// What one row gives one model input.
#[derive(Debug, Clone, PartialEq)]
pub enum RowFeed {
    Numbers(Vec<f64>),
    Text(String),
}

/// The row's feed for every planned input, in plan order. `fields` names `values` (the
/// job's `TensorSpec::fields()` order).
pub fn feed_row(
    plan: &TensorPlan,
    fields: &[String],
    values: &[Box<RawValue>],
) -> Result<Vec<RowFeed>, String> {
    let value_of = |field: &str| -> Result<&RawValue, String> {
        fields
            .iter()
            .position(|f| f == field)
            .and_then(|i| values.get(i))
            .map(|v| &**v)
            .ok_or_else(|| format!("field \"{field}\" missing"))
    };
    let mut feeds = Vec::with_capacity(plan.inputs.len());
    for input in &plan.inputs {
        if input.element == Element::String || input.tokenized {
            let field = &input.fields[0];
            let raw = value_of(field)?;
            let text = serde_json::from_str::<String>(raw.get()).map_err(|_| {
                format!(
                    "field \"{field}\" is {}, but model input \"{}\" takes a string",
                    abbreviated(raw.get(), 60),
                    input.name
                )
            })?;
            feeds.push(RowFeed::Text(text));
            continue;
        }
        let mut numbers = Vec::with_capacity(input.width.unwrap_or(input.fields.len()));
        for field in &input.fields {
            let raw = value_of(field)?;
            numbers_of(raw, &mut numbers).map_err(|what| {
                format!(
                    "field \"{field}\" is {what}, but model input \"{}\" takes {} numbers",
                    input.name, input.element
                )
            })?;
        }
        if matches!(input.element, Element::Int64 | Element::Int32)
            && let Some(bad) = numbers.iter().find(|n| n.fract() != 0.0)
        {
            return Err(format!(
                "model input \"{}\" takes {} values, but its fields give {bad}",
                input.name, input.element
            ));
        }
        let expected = match input.rank {
            1 => Some(1),
            _ => input.width,
        };
        if let Some(expected) = expected
            && numbers.len() != expected
        {
            return Err(format!(
                "model input \"{}\" takes {expected} values per row, but fields {:?} give {}",
                input.name,
                input.fields,
                numbers.len()
            ));
        }
        feeds.push(RowFeed::Numbers(numbers));
    }
    Ok(feeds)
}

/// Appends a number, a list of numbers, or a number written as a string (a CSV cell);
/// anything else is described for the error.
fn numbers_of(raw: &RawValue, out: &mut Vec<f64>) -> Result<(), String> {
    let text = raw.get().trim();
    let describe = || abbreviated(text, 60);
    match serde_json::from_str::<Value>(text).map_err(|_| describe())? {
        Value::Number(n) => out.push(n.as_f64().ok_or_else(describe)?),
        Value::String(s) => out.push(s.trim().parse::<f64>().map_err(|_| describe())?),
        Value::Array(items) => {
            for item in items {
                out.push(item.as_f64().ok_or_else(describe)?);
            }
        }
        _ => return Err(describe()),
    }
    Ok(())
}
