//! Evaluation of a head on held-out features: loss, accuracy and macro-F1, computed with the
//! exported inference graph (what bulk inference will run), in batches.

use ort::value::Tensor as OrtTensor;
use prost::Message;

use super::error::TrainError;
use super::head::{HeadLayout, Tensors};
use super::step::{LOGITS, build_inference_graph};
use super::trainer::Dataset;
use crate::engine::{ModelSource, open_session};
use crate::settings::EngineSettings;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalMetrics {
    pub rows: usize,
    pub loss: f64,
    pub accuracy: f64,
    /// Mean of the per-class F1 scores (a class never predicted nor present counts 0).
    pub macro_f1: f64,
}

/// Rows evaluated per run of the head.
const EVAL_BATCH: usize = 1024;

pub fn evaluate(
    layout: &HeadLayout,
    params: &Tensors,
    data: &Dataset,
    settings: &EngineSettings,
) -> Result<EvalMetrics, TrainError> {
    let run_error = |message: String| TrainError::Run {
        graph: "evaluation head".into(),
        message,
    };
    let model = build_inference_graph(layout, params).encode_to_vec();
    let (mut session, _) = open_session(
        ModelSource::Memory {
            name: "evaluation head",
            bytes: &model,
        },
        settings,
    )?;
    let classes = layout.classes;
    let mut predictions = Vec::with_capacity(data.rows());
    let mut loss = 0.0;
    for start in (0..data.rows()).step_by(EVAL_BATCH) {
        let end = (start + EVAL_BATCH).min(data.rows());
        let features = data.features[start * data.dim..end * data.dim].to_vec();
        let input = OrtTensor::from_array((vec![(end - start) as i64, data.dim as i64], features))
            .map_err(|e| run_error(format!("input tensor: {e}")))?;
        let outputs = session
            .run(ort::inputs!["features" => input])
            .map_err(|e| run_error(format!("run: {e}")))?;
        let (_, logits) = outputs[LOGITS]
            .try_extract_tensor::<f32>()
            .map_err(|e| run_error(format!("logits: {e}")))?;
        for (row, label) in logits.chunks(classes).zip(&data.labels[start..end]) {
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            loss -= row[*label] as f64 - max - sum.ln();
            let best = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i);
            predictions.push(best);
        }
    }
    Ok(metrics(&predictions, &data.labels, classes, loss))
}

/// Accuracy and macro-F1 of `predictions` against `labels`; `loss` is the summed loss.
pub fn metrics(predictions: &[usize], labels: &[usize], classes: usize, loss: f64) -> EvalMetrics {
    let rows = labels.len();
    let mut true_pos = vec![0usize; classes];
    let mut predicted = vec![0usize; classes];
    let mut actual = vec![0usize; classes];
    for (&p, &l) in predictions.iter().zip(labels) {
        predicted[p] += 1;
        actual[l] += 1;
        if p == l {
            true_pos[p] += 1;
        }
    }
    let f1: f64 = (0..classes)
        .map(|c| {
            let denominator = predicted[c] + actual[c];
            if denominator == 0 {
                0.0
            } else {
                2.0 * true_pos[c] as f64 / denominator as f64
            }
        })
        .sum::<f64>()
        / classes.max(1) as f64;
    EvalMetrics {
        rows,
        loss: if rows == 0 { 0.0 } else { loss / rows as f64 },
        accuracy: if rows == 0 {
            0.0
        } else {
            true_pos.iter().sum::<usize>() as f64 / rows as f64
        },
        macro_f1: f1,
    }
}

#[cfg(test)]
mod tests {
    use super::metrics;

    #[test]
    fn accuracy_and_macro_f1_by_hand() {
        // Class 0: tp 2, predicted 3, actual 2 → F1 0.8; class 1: tp 1, predicted 1,
        // actual 2 → F1 2/3.
        let m = metrics(&[0, 0, 0, 1], &[0, 0, 1, 1], 2, 2.0);
        assert_eq!(m.accuracy, 0.75);
        assert!((m.macro_f1 - (0.8 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert_eq!(m.loss, 0.5);
    }
}
