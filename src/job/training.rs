//! The `[training]` section of a training job's spec: labels, head, evaluation data,
//! optimiser, schedule and checkpointing, with defaults and validation.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use unicode_normalization::{UnicodeNormalization, is_nfc};

use super::error::SpecError;
use super::format::InputFormat;
use crate::uri::S3Uri;

/// What to train and how. Everything but `labels` has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingSpec {
    /// Class names, in the order the head outputs them. Every row's label must be one of
    /// them; labels are compared after Unicode NFC normalisation.
    pub labels: Vec<String>,
    /// Rows each label needs in the training part and in the evaluation part, or the job
    /// fails before embedding, naming the label.
    #[serde(default = "default_min_rows_per_label")]
    #[schemars(range(min = 1, max = 1000000))]
    pub min_rows_per_label: u64,
    #[serde(default)]
    pub head: HeadSpec,
    /// A user-supplied step graph (`s3://…/step.onnx`) following the step-graph contract,
    /// used instead of the one sluice builds. Its `param.*` inputs must be the head's
    /// parameters (same names and shapes), which is what the package exports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_graph: Option<String>,
    #[serde(default)]
    pub eval: EvalSpec,
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    #[serde(default)]
    pub schedule: ScheduleSpec,
    /// Rows per optimisation step.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 65536))]
    pub batch_size: usize,
    #[serde(default = "default_epochs")]
    #[schemars(range(min = 1, max = 10000))]
    pub epochs: u64,
    /// Seeds the initial weights, the evaluation split, each epoch's order and dropout: the
    /// same job trains the same weights.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// A checkpoint every this many steps (and at each epoch end); 0 for epoch ends only.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Checkpoints kept in S3 (older ones are deleted).
    #[serde(default = "default_keep_checkpoints")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep_checkpoints: usize,
    /// Which weights the package keeps: the best evaluated epoch end (by `eval.metric`) or
    /// the last step's.
    #[serde(default)]
    pub select: Select,
    /// Stop before `epochs` when `eval.metric` has not improved for `patience` evaluations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStopping>,
    /// Per-class loss weights: `"balanced"` (n_rows / (n_classes · n_rows_of_class), as
    /// scikit-learn's `compute_class_weight`), or a table of label → weight (unlisted labels
    /// weigh 1). Left out: every row weighs 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_weights: Option<ClassWeights>,
}

/// Which weights a training job's package keeps.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Select {
    /// The epoch end whose evaluation scored best on `eval.metric` (the earliest on ties).
    #[default]
    Best,
    /// The last step's weights.
    Last,
}

/// The evaluation figure that picks the best epoch and drives early stopping.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EvalMetric {
    /// Mean of the per-class F1 scores: not fooled by a majority class.
    #[default]
    MacroF1,
    Accuracy,
    /// Mean cross-entropy on the evaluation data (lower is better).
    Loss,
}

impl EvalMetric {
    pub fn name(self) -> &'static str {
        match self {
            EvalMetric::MacroF1 => "macro_f1",
            EvalMetric::Accuracy => "accuracy",
            EvalMetric::Loss => "loss",
        }
    }

    /// Whether a larger value is better.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, EvalMetric::Loss)
    }
}

/// Early stopping: evaluations (one per epoch) without an improvement larger than
/// `min_delta` before the run ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    #[schemars(range(min = 1, max = 10000))]
    pub patience: u64,
    /// The smallest change of `eval.metric` that counts as an improvement (absolute, in the
    /// metric's own units: 0.001 is a tenth of a point of accuracy).
    #[serde(default)]
    pub min_delta: f64,
}

/// Per-class loss weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ClassWeights {
    /// `"balanced"`.
    Rule(ClassWeightRule),
    /// Label → weight; unlisted labels weigh 1.
    Table(std::collections::BTreeMap<String, f64>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeightRule {
    Balanced,
}

impl ClassWeights {
    /// One weight per class of `labels`, given each class's row count in the training part.
    /// Balanced weights average 1 over the training rows, so the loss keeps its scale.
    pub fn resolve(&self, labels: &[String], counts: &[u64]) -> Vec<f32> {
        match self {
            ClassWeights::Rule(ClassWeightRule::Balanced) => {
                let rows: u64 = counts.iter().sum();
                let present = counts.iter().filter(|&&n| n > 0).count().max(1);
                counts
                    .iter()
                    .map(|&n| {
                        if n == 0 {
                            1.0
                        } else {
                            (rows as f64 / (present as f64 * n as f64)) as f32
                        }
                    })
                    .collect()
            }
            ClassWeights::Table(table) => labels
                .iter()
                .map(|label| {
                    table
                        .iter()
                        .find(|(k, _)| normalize_label(k) == normalize_label(label))
                        .map_or(1.0, |(_, &w)| w as f32)
                })
                .collect(),
        }
    }
}

fn default_min_rows_per_label() -> u64 {
    1
}
fn default_batch_size() -> usize {
    64
}
fn default_epochs() -> u64 {
    10
}
fn default_seed() -> u64 {
    42
}
fn default_checkpoint_every() -> u64 {
    200
}
fn default_keep_checkpoints() -> usize {
    3
}

/// The head trained on top of the frozen encoder's pooled embedding.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum HeadSpec {
    /// Softmax regression: one dense layer.
    #[default]
    Linear,
    /// Dense ReLU layers of the given widths, each followed by dropout, then the output layer.
    Mlp {
        hidden: Vec<usize>,
        #[serde(default)]
        dropout: f64,
    },
}

impl HeadSpec {
    pub fn hidden(&self) -> &[usize] {
        match self {
            HeadSpec::Linear => &[],
            HeadSpec::Mlp { hidden, .. } => hidden,
        }
    }

    pub fn dropout(&self) -> f32 {
        match self {
            HeadSpec::Linear => 0.0,
            HeadSpec::Mlp { dropout, .. } => *dropout as f32,
        }
    }
}

/// Held-out data for evaluation: a fraction of the training rows (stratified by label,
/// seeded), or separate objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// Share of the training rows held out (when `uri` is not given).
    #[serde(default = "default_eval_fraction")]
    #[schemars(range(min = 0.01, max = 0.9))]
    pub fraction: f64,
    /// Separate evaluation data (one object or a folder), read with the input's fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Format of `uri` (the input's format when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<InputFormat>,
    /// The figure that picks the best epoch (`select = "best"`) and drives early stopping.
    #[serde(default)]
    pub metric: EvalMetric,
}

fn default_eval_fraction() -> f64 {
    0.2
}

impl Default for EvalSpec {
    fn default() -> Self {
        Self {
            fraction: default_eval_fraction(),
            uri: None,
            format: None,
            metric: EvalMetric::default(),
        }
    }
}

/// AdamW with decoupled weight decay (applied to weights, not biases).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSpec {
    /// Peak learning rate (reached at the end of the warm-up).
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    #[serde(default = "default_eps")]
    pub eps: f64,
}

fn default_lr() -> f64 {
    1e-3
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn default_weight_decay() -> f64 {
    0.01
}
fn default_eps() -> f64 {
    1e-8
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        Self {
            lr: default_lr(),
            betas: default_betas(),
            weight_decay: default_weight_decay(),
            eps: default_eps(),
        }
    }
}

/// Linear warm-up from 0 to the peak learning rate, then a decay to 0 at the last step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    #[serde(default)]
    pub warmup_steps: u64,
    #[serde(default)]
    pub decay: DecaySpec,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DecaySpec {
    Constant,
    Linear,
    #[default]
    Cosine,
}

/// A label as compared with others: Unicode NFC, so "café" written with a combining accent
/// and with the precomposed letter are one class.
pub fn normalize_label(label: &str) -> Cow<'_, str> {
    if is_nfc(label) {
        Cow::Borrowed(label)
    } else {
        Cow::Owned(label.nfc().collect())
    }
}

/// Non-ASCII characters as `\u{…}`, so two labels that look alike can be told apart.
pub fn spelled(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                c.escape_unicode().to_string()
            }
        })
        .collect()
}

impl TrainingSpec {
    /// Checks what types alone cannot; field names are given from the spec's root.
    pub fn validate(&self) -> Result<(), SpecError> {
        let err = |field: &str, message: String| Err(SpecError::new(field, message));
        if self.labels.len() < 2 {
            return err(
                "training.labels",
                format!("needs at least 2 classes, found {}", self.labels.len()),
            );
        }
        for (i, label) in self.labels.iter().enumerate() {
            if label.trim().is_empty() {
                return err("training.labels", format!("label {i} is empty"));
            }
            let normal = normalize_label(label);
            if let Some(j) = self.labels[..i]
                .iter()
                .position(|l| normalize_label(l) == normal)
            {
                let earlier = &self.labels[j];
                let message = if earlier == label {
                    format!("\"{label}\" appears twice (labels {j} and {i})")
                } else {
                    format!(
                        "labels {j} \"{earlier}\" ({}) and {i} \"{label}\" ({}) are the same text after Unicode NFC normalisation; keep one",
                        spelled(earlier),
                        spelled(label)
                    )
                };
                return err("training.labels", message);
            }
        }
        if !(1..=1_000_000).contains(&self.min_rows_per_label) {
            return err(
                "training.min_rows_per_label",
                format!("{} is out of range 1-1000000", self.min_rows_per_label),
            );
        }
        if let HeadSpec::Mlp { hidden, dropout } = &self.head {
            if hidden.is_empty() || hidden.iter().any(|&w| w == 0 || w > 65536) {
                return err(
                    "training.head.hidden",
                    format!(
                        "needs one or more widths of 1-65536, found {hidden:?} (or use type = \"linear\")"
                    ),
                );
            }
            if !(0.0..0.95).contains(dropout) {
                return err(
                    "training.head.dropout",
                    format!("{dropout} is out of range 0-0.95"),
                );
            }
        }
        if let Some(graph) = &self.step_graph {
            let uri = S3Uri::parse(graph).map_err(|e| SpecError::new("training.step_graph", e))?;
            if uri.key.is_empty() || graph.ends_with('/') {
                return err(
                    "training.step_graph",
                    "must name one .onnx object, not a folder".into(),
                );
            }
        }
        match &self.eval.uri {
            Some(uri) => {
                S3Uri::parse(uri).map_err(|e| SpecError::new("training.eval.uri", e))?;
            }
            None if !(0.01..=0.9).contains(&self.eval.fraction) => {
                return err(
                    "training.eval.fraction",
                    format!(
                        "{} is out of range 0.01-0.9 (or give training.eval.uri)",
                        self.eval.fraction
                    ),
                );
            }
            None if self.eval.format.is_some() => {
                return err(
                    "training.eval.format",
                    "only applies with training.eval.uri".into(),
                );
            }
            None => {}
        }
        let o = &self.optimizer;
        if !(o.lr.is_finite() && o.lr > 0.0 && o.lr <= 10.0) {
            return err(
                "training.optimizer.lr",
                format!("{} is out of range (0, 10]", o.lr),
            );
        }
        if o.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return err(
                "training.optimizer.betas",
                format!("{:?}: each must be in [0, 1)", o.betas),
            );
        }
        if !(0.0..=1.0).contains(&o.weight_decay) {
            return err(
                "training.optimizer.weight_decay",
                format!("{} is out of range 0-1", o.weight_decay),
            );
        }
        // The step runs in 32-bit floats: a smaller eps rounds to 0 and divides 0 by 0.
        if !(o.eps >= 1e-30 && o.eps < 1.0) {
            return err(
                "training.optimizer.eps",
                format!(
                    "{} is out of range [1e-30, 1) (the step computes in 32-bit floats)",
                    o.eps
                ),
            );
        }
        if self.batch_size == 0 || self.batch_size > 65536 {
            return err(
                "training.batch_size",
                format!("{} is out of range 1-65536", self.batch_size),
            );
        }
        if self.epochs == 0 || self.epochs > 10_000 {
            return err(
                "training.epochs",
                format!("{} is out of range 1-10000", self.epochs),
            );
        }
        if let Some(stop) = &self.early_stopping {
            if !(1..=10_000).contains(&stop.patience) {
                return err(
                    "training.early_stopping.patience",
                    format!(
                        "{} is out of range 1-10000 (evaluations, one per epoch)",
                        stop.patience
                    ),
                );
            }
            if !(stop.min_delta.is_finite() && stop.min_delta >= 0.0) {
                return err(
                    "training.early_stopping.min_delta",
                    format!("{} must be a finite number >= 0", stop.min_delta),
                );
            }
        }
        if let Some(weights) = &self.class_weights {
            if self.step_graph.is_some() {
                return err(
                    "training.class_weights",
                    "needs the built-in step graph (a custom training.step_graph takes one-hot targets); leave one of them out".into(),
                );
            }
            if let ClassWeights::Table(table) = weights {
                for (label, &weight) in table {
                    if !self
                        .labels
                        .iter()
                        .any(|l| normalize_label(l) == normalize_label(label))
                    {
                        return err(
                            "training.class_weights",
                            format!(
                                "\"{label}\" is not one of training.labels {:?}",
                                self.labels
                            ),
                        );
                    }
                    if !(weight.is_finite() && weight > 0.0 && weight <= 1e6) {
                        return err(
                            "training.class_weights",
                            format!("weight of \"{label}\" is {weight}; it must be in (0, 1e6]"),
                        );
                    }
                }
            }
        }
        if self.keep_checkpoints == 0 || self.keep_checkpoints > 1000 {
            return err(
                "training.keep_checkpoints",
                format!("{} is out of range 1-1000", self.keep_checkpoints),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobKind, parse_json_spec};

    fn training_json() -> serde_json::Value {
        serde_json::json!({
            "api_version": "sluice/v1",
            "kind": "training",
            "name": "sentiment",
            "model": "s3://models/minilm/",
            "input": {"uri": "s3://data/train.csv", "format": "csv", "label_field": "category"},
            "output": {"uri": "s3://models/sentiment/"},
            "training": {
                "labels": ["fresh", "rotten"],
                "head": {"type": "mlp", "hidden": [64], "dropout": 0.1},
                "optimizer": {"lr": 0.0005}
            }
        })
    }

    fn field_of(value: serde_json::Value) -> String {
        parse_json_spec(value.to_string().as_bytes())
            .unwrap_err()
            .field
    }

    #[test]
    fn a_training_spec_gets_its_defaults() {
        let spec = parse_json_spec(training_json().to_string().as_bytes()).unwrap();
        assert_eq!(spec.kind, JobKind::Training);
        assert_eq!(spec.label_field(), "category");
        let training = spec.training.unwrap();
        assert_eq!(training.batch_size, 64);
        assert_eq!(training.eval.fraction, 0.2);
        assert_eq!(training.optimizer.betas, [0.9, 0.999]);
        assert_eq!(training.head.hidden(), &[64]);
    }

    #[test]
    fn bad_training_fields_are_named() {
        let mut v = training_json();
        v["training"]["labels"] = serde_json::json!(["fresh"]);
        assert_eq!(field_of(v), "training.labels");
        let mut v = training_json();
        v["training"]["labels"] = serde_json::json!(["fresh", "fresh"]);
        assert_eq!(field_of(v), "training.labels");
        let mut v = training_json();
        v["training"]["head"] = serde_json::json!({"type": "mlp", "hidden": []});
        assert_eq!(field_of(v), "training.head.hidden");
        let mut v = training_json();
        v["training"]["head"] = serde_json::json!({"type": "tree"});
        assert_eq!(field_of(v), "training.head.type");
        let mut v = training_json();
        v["training"]["eval"] = serde_json::json!({"fraction": 0.0});
        assert_eq!(field_of(v), "training.eval.fraction");
        let mut v = training_json();
        v["training"]["optimizer"]["lr"] = (-1.0).into();
        assert_eq!(field_of(v), "training.optimizer.lr");
        let mut v = training_json();
        v["training"]["optimizer"]["momentum"] = 0.9.into();
        assert_eq!(field_of(v), "training.optimizer.momentum");
        let mut v = training_json();
        v["training"]["step_graph"] = "s3://graphs/".into();
        assert_eq!(field_of(v), "training.step_graph");
    }

    #[test]
    fn labels_that_normalise_alike_are_refused_naming_both() {
        let mut v = training_json();
        v["training"]["labels"] = serde_json::json!(["caf\u{e9}", "rotten", "cafe\u{301}"]);
        let err = parse_json_spec(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.field, "training.labels");
        let message = err.to_string();
        assert!(
            message.contains("labels 0") && message.contains("and 2"),
            "{message}"
        );
        assert!(
            message.contains("caf\\u{e9}") && message.contains("cafe\\u{301}"),
            "{message}"
        );
        assert!(message.contains("NFC"), "{message}");
    }

    #[test]
    fn min_rows_per_label_defaults_to_one_and_is_checked() {
        let spec = parse_json_spec(training_json().to_string().as_bytes()).unwrap();
        assert_eq!(spec.training.unwrap().min_rows_per_label, 1);
        let mut v = training_json();
        v["training"]["min_rows_per_label"] = 0.into();
        assert_eq!(field_of(v), "training.min_rows_per_label");
        let mut v = training_json();
        v["training"]["min_rows_per_label"] = 5.into();
        let spec = parse_json_spec(v.to_string().as_bytes()).unwrap();
        assert_eq!(spec.training.unwrap().min_rows_per_label, 5);
    }

    #[test]
    fn an_eps_that_is_zero_in_32_bit_floats_is_refused() {
        let mut v = training_json();
        v["training"]["optimizer"]["eps"] = 1e-50.into();
        assert_eq!(field_of(v), "training.optimizer.eps");
        assert_eq!(1e-50f64 as f32, 0.0);
    }

    #[test]
    fn selection_early_stopping_and_class_weights_are_read_and_checked() {
        let spec = parse_json_spec(training_json().to_string().as_bytes()).unwrap();
        let training = spec.training.unwrap();
        assert_eq!(training.select, Select::Best);
        assert_eq!(training.eval.metric, EvalMetric::MacroF1);
        assert_eq!(training.early_stopping, None);
        assert_eq!(training.class_weights, None);

        let mut v = training_json();
        v["training"]["select"] = "last".into();
        v["training"]["eval"] = serde_json::json!({"metric": "loss"});
        v["training"]["early_stopping"] = serde_json::json!({"patience": 2, "min_delta": 0.001});
        v["training"]["class_weights"] = "balanced".into();
        let training = parse_json_spec(v.to_string().as_bytes())
            .unwrap()
            .training
            .unwrap();
        assert_eq!(training.select, Select::Last);
        assert_eq!(training.eval.metric, EvalMetric::Loss);
        assert_eq!(training.early_stopping.unwrap().patience, 2);
        assert_eq!(
            training.class_weights,
            Some(ClassWeights::Rule(ClassWeightRule::Balanced))
        );

        let mut v = training_json();
        v["training"]["class_weights"] = serde_json::json!({"rotten": 3.0});
        let training = parse_json_spec(v.to_string().as_bytes())
            .unwrap()
            .training
            .unwrap();
        let labels = training.labels.clone();
        assert_eq!(
            training.class_weights.unwrap().resolve(&labels, &[10, 10]),
            vec![1.0, 3.0]
        );

        for (field, value) in [
            ("early_stopping", serde_json::json!({"patience": 0})),
            (
                "early_stopping",
                serde_json::json!({"patience": 2, "min_delta": -1.0}),
            ),
            ("class_weights", serde_json::json!({"stale": 2.0})),
            ("class_weights", serde_json::json!({"fresh": 0.0})),
            ("class_weights", serde_json::json!("uniform")),
            ("select", serde_json::json!("first")),
        ] {
            let mut v = training_json();
            v["training"][field] = value;
            let f = field_of(v);
            assert!(f.starts_with(&format!("training.{field}")), "{field}: {f}");
        }
        let mut v = training_json();
        v["training"]["class_weights"] = "balanced".into();
        v["training"]["step_graph"] = "s3://graphs/step.onnx".into();
        assert_eq!(field_of(v), "training.class_weights");
    }

    #[test]
    fn balanced_weights_follow_scikit_learn_and_average_one() {
        // compute_class_weight("balanced", classes=[0, 1, 2], y) with counts 60, 30, 10.
        let labels: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let w = ClassWeights::Rule(ClassWeightRule::Balanced).resolve(&labels, &[60, 30, 10]);
        let expected = [100.0 / 180.0, 100.0 / 90.0, 100.0 / 30.0];
        for (got, want) in w.iter().zip(expected) {
            assert!((*got as f64 - want).abs() < 1e-6, "{w:?}");
        }
        let mean = (60.0 * w[0] + 30.0 * w[1] + 10.0 * w[2]) / 100.0;
        assert!((mean - 1.0).abs() < 1e-6);
    }

    #[test]
    fn labels_compare_after_nfc() {
        assert_eq!(normalize_label("cafe\u{301}"), "caf\u{e9}");
        assert!(matches!(normalize_label("fresh"), Cow::Borrowed(_)));
        assert_eq!(spelled("caf\u{e9}"), "caf\\u{e9}");
    }

    #[test]
    fn kind_and_training_section_must_agree() {
        let mut v = training_json();
        v.as_object_mut().unwrap().remove("training");
        assert_eq!(field_of(v), "training");
        let mut v = training_json();
        v["kind"] = "inference".into();
        assert_eq!(field_of(v), "training");
        let mut v = training_json();
        v["kind"] = "inference".into();
        v.as_object_mut().unwrap().remove("training");
        assert_eq!(field_of(v), "input.label_field");
        let mut v = training_json();
        v["task"] = "classify".into();
        assert_eq!(field_of(v), "task");
    }
}
