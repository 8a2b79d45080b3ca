//! Checking a model folder before it becomes a package: the embedding size its graph
//! declares, and one text run through it the way the engine will run every row.

use std::path::Path;

use ort::value::ValueType;

use super::batcher::BatchPlan;
use super::embed::pad_batch;
use super::load::{check_positions, load_tokenizer};
use super::pooling::pool;
use super::{EngineError, InferenceBackend, ModelSource, OrtBackend, open_session};
use crate::job::{IoNames, MODEL_FILE, ModelManifest, Pooling, TOKENIZER_FILE};
use crate::settings::EngineSettings;

/// The text `verify` runs.
pub const PROBE_TEXT: &str = "sluice checks this model by running one sentence through it.";

/// The embedding size the graph declares: the last dimension of the output the engine would
/// read (`names.output`, else the first `[batch, seq, d]` output, or `[batch, d]` one with
/// `Pooling::None`). `None` when that dimension is symbolic or no output fits. Blocking.
pub fn graph_dimension(
    model: &Path,
    names: &IoNames,
    pooling: Pooling,
    settings: &EngineSettings,
) -> Result<Option<usize>, EngineError> {
    let (session, _) = open_session(ModelSource::File(model), settings)?;
    let rank = if pooling == Pooling::None { 2 } else { 3 };
    let shapes = session.outputs().iter().filter_map(|o| match o.dtype() {
        ValueType::Tensor { shape, .. } => Some((o.name().to_string(), shape.to_vec())),
        _ => None,
    });
    let found = shapes
        .filter(|(name, shape)| match &names.output {
            Some(wanted) => name == wanted,
            None => shape.len() == rank && shape[rank - 1] > 0,
        })
        .map(|(_, shape)| shape.last().copied().unwrap_or(-1))
        .next();
    Ok(found.filter(|&d| d > 0).map(|d| d as usize))
}

/// Runs `PROBE_TEXT` through the folder's model as `manifest` describes it (positions,
/// tokenizer, output shape `[1, seq, dimension]`, pooling, normalisation) and returns the
/// embedding. `EngineError::Model` when the output's shape is not the manifest's dimension
/// or a value is not finite. Blocking: call from `spawn_blocking`.
pub fn verify(
    dir: &Path,
    manifest: &ModelManifest,
    settings: &EngineSettings,
) -> Result<Vec<f32>, EngineError> {
    let model = dir.join(MODEL_FILE);
    check_positions(&model, manifest.max_length)?;
    let tokenizer = load_tokenizer(&dir.join(TOKENIZER_FILE), manifest.max_length)?;
    let mut backend = OrtBackend::load_for(
        &model,
        &manifest.names,
        manifest.dimension,
        manifest.pooling,
        settings,
    )?;
    let encoding = tokenizer
        .encode(PROBE_TEXT, true)
        .map_err(|e| EngineError::Tokenizer(format!("encoding the probe text: {e}")))?;
    let seq = encoding.len().max(1);
    let plan = BatchPlan {
        rows: vec![0],
        seq_len: seq,
    };
    let mut batch = pad_batch(&plan, seq, &[encoding]);
    if let Some(pad) = manifest.pad_id {
        for (id, &mask) in batch.input_ids.iter_mut().zip(&batch.attention_mask) {
            if mask == 0 {
                *id = i64::from(pad);
            }
        }
    }
    let hidden = backend.hidden_states(&batch)?;
    let vector = pool(
        &hidden,
        &batch.attention_mask,
        1,
        seq,
        manifest.dimension,
        manifest.pooling,
        manifest.normalize,
    )
    .remove(0);
    if let Some(bad) = vector.iter().position(|v| !v.is_finite()) {
        return Err(EngineError::Model(format!(
            "{}: running one text gave a non-finite value ({} at position {bad} of {}); the export is broken or needs another precision",
            model.display(),
            vector[bad],
            vector.len()
        )));
    }
    Ok(vector)
}
