//! The `[compress]` section of a compression job's spec: how the int8 model is made, how
//! much of the input is measured, and the gate it must pass before its package is written.

use serde::{Deserialize, Serialize};

use super::error::SpecError;

/// How to compress and what the result must keep. Everything has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompressSpec {
    /// Quantize each weight column on its own scale (`true`) or each weight on one scale
    /// (`false`, onnxruntime's default). Per column keeps closer to the float model.
    #[serde(default)]
    pub per_channel: bool,
    /// Also quantize the MatMuls that read a GELU's output (a transformer's feed-forward
    /// down-projection). Off by default: their long-tailed inputs lose the most precision.
    #[serde(default)]
    pub quantize_after_gelu: bool,
    /// Rows of the input (the first ones, in object and line order) embedded by both
    /// models for the gate and the speed figures.
    #[serde(default = "default_sample_rows")]
    #[schemars(range(min = 16, max = 100000))]
    pub sample_rows: usize,
    /// Timed passes over the sample, alternating between the float and the int8 model so
    /// both see the same machine load; the rows/s figures are their medians.
    #[serde(default = "default_speed_rounds")]
    #[schemars(range(min = 1, max = 20))]
    pub speed_rounds: usize,
    #[serde(default)]
    pub gate: GateSpec,
}

/// What the int8 model must keep, measured on the sample in the same job; the package is
/// written only when every check holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    /// Least mean cosine between the float and the int8 model's embeddings (the encoder's
    /// pooled output) over the sample.
    #[serde(default = "default_min_cosine")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_cosine: f64,
    /// Classifier packages: most accuracy (in percentage points) the int8 classifier may
    /// lose against the float one on the sample's labels (`input.label_field`).
    #[serde(default = "default_max_accuracy_drop")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub max_accuracy_drop: f64,
}

fn default_sample_rows() -> usize {
    1000
}
fn default_speed_rounds() -> usize {
    3
}
fn default_min_cosine() -> f64 {
    0.99
}
fn default_max_accuracy_drop() -> f64 {
    0.5
}

impl Default for GateSpec {
    fn default() -> Self {
        Self {
            min_cosine: default_min_cosine(),
            max_accuracy_drop: default_max_accuracy_drop(),
        }
    }
}

impl Default for CompressSpec {
    fn default() -> Self {
        Self {
            per_channel: false,
            quantize_after_gelu: false,
            sample_rows: default_sample_rows(),
            speed_rounds: default_speed_rounds(),
            gate: GateSpec::default(),
        }
    }
}

impl CompressSpec {
    /// Checks what types alone cannot; field names are given from the spec's root.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(16..=100_000).contains(&self.sample_rows) {
            return Err(SpecError::new(
                "compress.sample_rows",
                format!("{} is out of range 16-100000", self.sample_rows),
            ));
        }
        if !(1..=20).contains(&self.speed_rounds) {
            return Err(SpecError::new(
                "compress.speed_rounds",
                format!("{} is out of range 1-20", self.speed_rounds),
            ));
        }
        if !(0.0..=1.0).contains(&self.gate.min_cosine) {
            return Err(SpecError::new(
                "compress.gate.min_cosine",
                format!("{} is out of range 0-1", self.gate.min_cosine),
            ));
        }
        if !(0.0..=100.0).contains(&self.gate.max_accuracy_drop) {
            return Err(SpecError::new(
                "compress.gate.max_accuracy_drop",
                format!(
                    "{} is out of range 0-100 (percentage points)",
                    self.gate.max_accuracy_drop
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_documented_gate() {
        let spec: CompressSpec = toml::from_str("").unwrap();
        assert_eq!(spec, CompressSpec::default());
        assert_eq!(spec.gate.min_cosine, 0.99);
        assert_eq!(spec.gate.max_accuracy_drop, 0.5);
        spec.validate().unwrap();
    }

    #[test]
    fn out_of_range_settings_name_their_field() {
        let spec: CompressSpec = toml::from_str("[gate]\nmin_cosine = 1.5").unwrap();
        let err = spec.validate().unwrap_err();
        assert_eq!(err.field, "compress.gate.min_cosine");
        let spec: CompressSpec = toml::from_str("sample_rows = 3").unwrap();
        assert_eq!(spec.validate().unwrap_err().field, "compress.sample_rows");
        assert!(toml::from_str::<CompressSpec>("gate = { min_cosin = 0.9 }").is_err());
    }

    fn compress_json() -> serde_json::Value {
        serde_json::json!({
            "api_version": "sluice/v1",
            "kind": "compress",
            "name": "l3 int8",
            "model": "s3://models/l3/",
            "input": {"uri": "s3://data/sample.jsonl", "format": "jsonl"},
            "output": {"uri": "s3://models/l3-int8/"},
        })
    }

    fn field_of(value: serde_json::Value) -> String {
        crate::job::parse_json_spec(value.to_string().as_bytes())
            .unwrap_err()
            .field
    }

    #[test]
    fn a_compress_job_needs_no_section_and_gets_the_defaults() {
        let spec = crate::job::parse_json_spec(compress_json().to_string().as_bytes()).unwrap();
        assert_eq!(spec.kind, crate::job::JobKind::Compress);
        assert!(spec.kind.writes_package());
        assert_eq!(spec.compress.unwrap_or_default(), CompressSpec::default());
    }

    #[test]
    fn compress_specs_that_cannot_work_name_their_field() {
        let mut v = compress_json();
        v["output"]["uri"] = "s3://models/l3/int8/".into();
        assert_eq!(field_of(v), "output.uri");
        let mut v = compress_json();
        v["task"] = "classify".into();
        assert_eq!(field_of(v), "task");
        let mut v = compress_json();
        v["compress"] = serde_json::json!({"gate": {"max_accuracy_drop": 101.0}});
        assert_eq!(field_of(v), "compress.gate.max_accuracy_drop");
        let mut v = compress_json();
        v["input"]["format"] = "parquet".into();
        assert_eq!(field_of(v), "input.format");
        let mut v = compress_json();
        v["kind"] = "inference".into();
        v["compress"] = serde_json::json!({});
        assert_eq!(field_of(v), "compress");
        let mut v = compress_json();
        v["output"]["format"] = "parquet".into();
        assert_eq!(field_of(v), "output.format");
    }
}
