//! The error every spec check returns: which field is at fault and why.

use serde::Serialize;

use crate::uri::abbreviated;

/// A spec that cannot be accepted, naming the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
#[error("job spec field `{field}`: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl SpecError {
    pub(crate) fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Builds the error from a serde failure, naming the exact field: for an unknown or
    /// missing field the path stops at the parent, and the message names the field.
    pub(super) fn from_serde(path: String, message: String) -> Self {
        let named = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|marker| message.split_once(marker))
            .and_then(|(_, rest)| rest.split_once('`'))
            .map(|(name, _)| name.to_string());
        let path = if path == "." { String::new() } else { path };
        let field = match (path.is_empty(), named) {
            (true, Some(name)) => name,
            // serde_path_to_error already ends the path with an unknown field's name.
            (false, Some(name)) if path.rsplit('.').next() == Some(name.as_str()) => path,
            (false, Some(name)) => format!("{path}.{name}"),
            (true, None) => "(document)".to_string(),
            (false, None) => path,
        };
        // serde_json appends "at line L column C": keep it, it helps find the spot. Both
        // are cut short: serde repeats offending values and unknown names in full.
        Self {
            field: abbreviated(&field, 200),
            message: abbreviated(&message, 1000),
        }
    }
}
