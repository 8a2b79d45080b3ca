//! Where a training job stands: step, epoch, loss, evaluation and ETA, as stored with the
//! job and shown by the API, `sluice status --follow` and the training report.

use serde::{Deserialize, Serialize};

/// Every field has a default, so records written by an older or newer version still read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct TrainingProgress {
    /// Optimisation steps taken, out of `total_steps`.
    pub step: u64,
    pub total_steps: u64,
    /// Epochs completed, out of `epochs`.
    pub epoch: u64,
    pub epochs: u64,
    pub train_rows: u64,
    pub eval_rows: u64,
    /// Mean cross-entropy of the last step's batch.
    pub loss: Option<f64>,
    pub learning_rate: Option<f64>,
    /// Of the latest evaluation (each epoch end).
    pub eval: Option<EvalPoint>,
    /// Every evaluation so far, in order.
    #[serde(default)]
    pub eval_history: Vec<EvalPoint>,
    /// Step of the latest committed checkpoint.
    pub checkpoint_step: Option<u64>,
    /// Step of the best evaluation so far by `training.eval.metric` (tracked when the job
    /// selects the best or stops early): the weights `select = "best"` packages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_step: Option<u64>,
    /// Set when the run ended before its last epoch because `training.early_stopping`'s
    /// patience ran out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped_early: bool,
    /// Steps per second of the worker now running it.
    pub steps_per_second: Option<f64>,
    pub eta_seconds: Option<f64>,
    /// Whether the encoder features came from the cache, and how long getting them took.
    pub features_cached: Option<bool>,
    pub features_seconds: Option<f64>,
    /// How many times the job was resumed from a checkpoint (another worker, a restart).
    #[serde(default)]
    pub resumes: u64,
    /// Rows per declared label in the training and evaluation parts, in label order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<ClassRows>,
}

/// One declared label's rows in each part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClassRows {
    pub label: String,
    pub train_rows: u64,
    pub eval_rows: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EvalPoint {
    pub epoch: u64,
    pub step: u64,
    pub loss: f64,
    pub accuracy: f64,
    pub macro_f1: f64,
}

impl TrainingProgress {
    /// Reads stored progress field by field: a field that does not parse (a `null` where a
    /// number belongs, as serde_json writes NaN; a number out of range; a wrong type) reads
    /// as absent, and a list keeps the entries that parse. Returns the progress and the
    /// fields left out. Only text that is not a JSON object at all is an error.
    pub fn read_lenient(json: &str) -> Result<(Self, Vec<String>), String> {
        if let Ok(progress) = serde_json::from_str(json) {
            return Ok((progress, Vec::new()));
        }
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let serde_json::Value::Object(fields) = value else {
            return Err("not a JSON object".into());
        };
        let reads = |key: &str, value: serde_json::Value| {
            let one = serde_json::Value::Object([(key.to_string(), value)].into_iter().collect());
            serde_json::from_value::<Self>(one).is_ok()
        };
        let mut kept = serde_json::Map::new();
        let mut left_out = Vec::new();
        for (key, value) in fields {
            if reads(&key, value.clone()) {
                kept.insert(key, value);
                continue;
            }
            match value {
                serde_json::Value::Array(items) => {
                    let total = items.len();
                    let good: Vec<_> = items
                        .into_iter()
                        .filter(|item| reads(&key, serde_json::Value::Array(vec![item.clone()])))
                        .collect();
                    left_out.push(format!("{key} ({} of {total} entries)", total - good.len()));
                    kept.insert(key, serde_json::Value::Array(good));
                }
                _ => left_out.push(key),
            }
        }
        let progress = serde_json::from_value(serde_json::Value::Object(kept))
            .map_err(|e| format!("after leaving out {}: {e}", left_out.join(", ")))?;
        Ok((progress, left_out))
    }

    /// 0 to 1.
    pub fn fraction(&self) -> f64 {
        if self.total_steps == 0 {
            0.0
        } else {
            (self.step as f64 / self.total_steps as f64).min(1.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_values_read_as_absent_field_by_field() {
        let good = EvalPoint {
            epoch: 1,
            step: 10,
            loss: 0.5,
            accuracy: 0.8,
            macro_f1: 0.75,
        };
        let progress = TrainingProgress {
            step: 37,
            total_steps: 100,
            loss: Some(f64::NAN),
            eval: Some(EvalPoint {
                loss: f64::INFINITY,
                ..good
            }),
            eval_history: vec![
                good,
                EvalPoint {
                    loss: f64::NAN,
                    ..good
                },
            ],
            eta_seconds: Some(12.0),
            ..Default::default()
        };
        // What serde_json writes for NaN and infinity: null, which an f64 cannot read.
        let json = serde_json::to_string(&progress).unwrap();
        assert!(serde_json::from_str::<TrainingProgress>(&json).is_err());
        let (read, left_out) = TrainingProgress::read_lenient(&json).unwrap();
        assert_eq!(read.step, 37);
        assert_eq!(read.total_steps, 100);
        assert_eq!(read.loss, None);
        assert_eq!(read.eval, None);
        assert_eq!(read.eval_history, vec![good]);
        assert_eq!(read.eta_seconds, Some(12.0));
        assert_eq!(left_out, vec!["eval", "eval_history (1 of 2 entries)"]);

        let (read, left_out) =
            TrainingProgress::read_lenient(r#"{"step": "many", "loss": "high", "epoch": 2}"#)
                .unwrap();
        assert_eq!((read.step, read.epoch, read.loss), (0, 2, None));
        assert_eq!(left_out.len(), 2, "{left_out:?}");
        assert!(TrainingProgress::read_lenient(r#""text""#).is_err());
        // Out of f64's range: not JSON serde_json reads at all.
        assert!(TrainingProgress::read_lenient(r#"{"loss": 1e999}"#).is_err());
        assert!(TrainingProgress::read_lenient("{not json").is_err());
    }
}
