//! The `task = "tensor"` part of a job spec: which input fields feed which of the model's
//! named inputs, and which of its outputs become output columns.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `[tensor]`: a model that is not a text encoder (a scikit-learn classifier exported with
/// skl2onnx, a model over numeric features) run on named inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    /// Model input name → the input field(s) feeding it, per row: one field holding a
    /// number, a list of numbers or a string (a numeric input also reads a number written as
    /// a string, as CSV cells are), or a list of fields whose numbers are laid side by side
    /// (`X = ["sepal_length", "sepal_width", …]` for a `[batch, 4]` input). Every model
    /// input needs one.
    pub inputs: BTreeMap<String, InputFields>,
    /// The model outputs written, each as a column named after it (default: all). A
    /// classifier's label and probabilities (a `[batch, classes]` tensor or the sequence of
    /// maps scikit-learn converters emit) are written as `label` and `probabilities`, like
    /// `task = "classify"` rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// Input fields that go through the package's `tokenizer.json` into token ids (and an
    /// `attention_mask` input, when the model has one that no field feeds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokenize: Vec<String>,
}

/// One field or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum InputFields {
    One(String),
    Many(Vec<String>),
}

impl InputFields {
    pub fn as_slice(&self) -> &[String] {
        match self {
            InputFields::One(one) => std::slice::from_ref(one),
            InputFields::Many(many) => many,
        }
    }
}

impl TensorSpec {
    /// Every input field the job reads, once each, in a stable order (model inputs by name,
    /// then the order listed).
    pub fn fields(&self) -> Vec<String> {
        let mut fields: Vec<String> = Vec::new();
        for field in self.inputs.values().flat_map(InputFields::as_slice) {
            if !fields.contains(field) {
                fields.push(field.clone());
            }
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_field_or_several() {
        let spec: TensorSpec = toml::from_str(
            r#"inputs = { X = ["a", "b"], extra = "c", again = ["b"] }
outputs = ["output_label"]"#,
        )
        .unwrap();
        assert_eq!(spec.inputs["extra"].as_slice(), ["c".to_string()]);
        assert_eq!(spec.fields(), ["a", "b", "c"]);
        assert!(toml::from_str::<TensorSpec>("inputs = {}\nbogus = 1").is_err());
    }
}
