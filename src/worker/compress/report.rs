//! The compression report: both models' quality and speed side by side, what the rewrite
//! did, and the gate's verdict with its numbers.

use serde_json::{Value, json};

use super::measure::Measured;
use crate::compress::QuantizeSummary;
use crate::job::{CompressSpec, ModelManifest, ModelTask};

/// The gate's verdict: `Err` lists every check that failed, with its numbers.
pub fn verdict(measured: &Measured, spec: &CompressSpec) -> Result<(), Vec<String>> {
    let gate = &spec.gate;
    let mut failed = Vec::new();
    let cosine = measured.agreement.mean_cosine;
    if cosine < gate.min_cosine {
        failed.push(format!(
            "mean cosine to the float model {cosine:.5} < gate.min_cosine {} (lowest row {:.5})",
            gate.min_cosine, measured.agreement.min_cosine
        ));
    }
    if let (Some(float), Some(int8)) = (
        measured.source.accuracy_percent,
        measured.int8.accuracy_percent,
    ) {
        let drop = float - int8;
        if drop > gate.max_accuracy_drop {
            failed.push(format!(
                "accuracy {int8:.2}% against the float model's {float:.2}%: a drop of {drop:.2} points > gate.max_accuracy_drop {}",
                gate.max_accuracy_drop
            ));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed)
    }
}

pub struct Inputs<'a> {
    pub source_uri: &'a str,
    pub target_uri: &'a str,
    pub source: &'a ModelManifest,
    pub int8: &'a ModelManifest,
    pub spec: &'a CompressSpec,
    pub sample_rows: usize,
    pub sample_uri: &'a str,
    pub graphs: &'a [(String, QuantizeSummary)],
    pub measured: &'a Measured,
    pub verdict: &'a Result<(), Vec<String>>,
    pub seconds: f64,
}

pub fn build(inputs: &Inputs<'_>) -> Value {
    let m = inputs.measured;
    let size = |manifest: &ModelManifest| -> u64 { manifest.files.values().map(|f| f.size).sum() };
    let speedup = m.int8.rows_per_second / m.source.rows_per_second.max(f64::MIN_POSITIVE);
    let accuracy_drop = match (m.source.accuracy_percent, m.int8.accuracy_percent) {
        (Some(a), Some(b)) => Some(a - b),
        _ => None,
    };
    json!({
        "format": "sluice.compression-report.v1",
        "source": inputs.source_uri,
        "package": inputs.target_uri,
        "task": match inputs.source.task { ModelTask::Embed => "embed", ModelTask::Classify => "classify" },
        "method": {
            "quantization": "dynamic int8 (MatMul/Gemm weights symmetric int8, activations through DynamicQuantizeLinear, MatMulInteger)",
            "per_channel": inputs.spec.per_channel,
            "quantize_after_gelu": inputs.spec.quantize_after_gelu,
            "graphs": inputs.graphs.iter().map(|(file, s)| json!({"file": file, "rewrite": s})).collect::<Vec<_>>(),
        },
        "sample": {"uri": inputs.sample_uri, "rows": inputs.sample_rows, "speed_rounds": inputs.spec.speed_rounds},
        "float": {
            "bytes": size(inputs.source),
            "figures": m.source,
        },
        "int8": {
            "bytes": size(inputs.int8),
            "figures": m.int8,
        },
        "agreement": m.agreement,
        "speedup": speedup,
        "accuracy_drop_points": accuracy_drop,
        "gate": {
            "min_cosine": inputs.spec.gate.min_cosine,
            "max_accuracy_drop": inputs.spec.gate.max_accuracy_drop,
            "passed": inputs.verdict.is_ok(),
            "failed": inputs.verdict.as_ref().err().cloned().unwrap_or_default(),
        },
        "seconds": inputs.seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::GateSpec;
    use crate::worker::compress::measure::{Agreement, ModelFigures};

    fn measured(cosine: f64, float: Option<f64>, int8: Option<f64>) -> Measured {
        let figures = |accuracy_percent| ModelFigures {
            rows_per_second: 100.0,
            passes_rows_per_second: vec![100.0],
            accuracy_percent,
        };
        Measured {
            source: figures(float),
            int8: figures(int8),
            agreement: Agreement {
                mean_cosine: cosine,
                min_cosine: cosine - 0.01,
                p05_cosine: cosine,
                label_changes: None,
            },
        }
    }

    #[test]
    fn the_gate_names_every_failed_check_with_its_numbers() {
        let spec = CompressSpec {
            gate: GateSpec {
                min_cosine: 0.99,
                max_accuracy_drop: 0.5,
            },
            ..Default::default()
        };
        assert!(verdict(&measured(0.995, Some(85.0), Some(84.8)), &spec).is_ok());
        let failed = verdict(&measured(0.98, Some(85.0), Some(84.0)), &spec).unwrap_err();
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert!(
            failed[0].contains("0.98000 < gate.min_cosine 0.99"),
            "{failed:?}"
        );
        assert!(
            failed[1].contains("drop of 1.00 points > gate.max_accuracy_drop 0.5"),
            "{failed:?}"
        );
    }
}
