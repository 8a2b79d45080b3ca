//! Loading a package from its folder: the position-limit check, the tokenizer set up for
//! the engine's batching, and the ONNX Runtime sessions.

use std::path::Path;

use tokenizers::Tokenizer;

use super::limits::{check_max_length, position_limit_from_onnx};
use super::{Embedder, EngineError, OrtBackend, OrtHead};
use crate::job::{HEAD_FILE, MANIFEST_FILE, MODEL_FILE, ModelManifest, ModelTask, TOKENIZER_FILE};
use crate::settings::EngineSettings;

impl Embedder {
    /// Loads the model with ONNX Runtime (blocking: call from `spawn_blocking` or a plain
    /// thread) and starts its thread. A package whose `max_length` exceeds the model's
    /// positions is refused first (`EngineError::Model`, which is permanent).
    pub fn load(
        dir: &Path,
        manifest: &ModelManifest,
        settings: &EngineSettings,
    ) -> Result<Self, EngineError> {
        check_positions(&dir.join(MODEL_FILE), manifest.max_length)?;
        let backend = OrtBackend::load_for(
            &dir.join(MODEL_FILE),
            &manifest.names,
            manifest.dimension,
            manifest.pooling,
            settings,
        )?;
        let tokenizer = load_tokenizer(&dir.join(TOKENIZER_FILE), manifest.max_length)?;
        let head = match manifest.task {
            ModelTask::Embed => None,
            ModelTask::Classify => Some(OrtHead::load(
                &dir.join(HEAD_FILE),
                manifest.labels.len(),
                settings,
            )?),
        };
        Ok(Self::start_with_head(
            Box::new(backend),
            tokenizer,
            head,
            manifest,
            settings,
        ))
    }
}

/// Refuses a package whose `max_length` is longer than its model's position embeddings
/// (`EngineError::Model`: permanent, so jobs fail at once). A graph the scan cannot read
/// is left to ONNX Runtime to judge.
pub fn check_positions(model: &Path, max_length: usize) -> Result<(), EngineError> {
    match position_limit_from_onnx(model) {
        Ok(Some(limit)) => check_max_length(max_length, &limit)
            .map_err(|e| EngineError::Model(format!("{}: {e}", MANIFEST_FILE))),
        Ok(None) => Ok(()),
        Err(e) => {
            tracing::warn!(model = %model.display(), error = %e,
                "could not read the model's position limit; max_length is not checked");
            Ok(())
        }
    }
}

/// Loads a tokenizer for batching by the engine: the file's own padding is dropped (the
/// engine pads each batch to its longest row) and truncation set to the model's limit.
pub fn load_tokenizer(path: &Path, max_length: usize) -> Result<Tokenizer, EngineError> {
    let mut tokenizer = Tokenizer::from_file(path)
        .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", path.display())))?;
    tokenizer.with_padding(None);
    let specials = tokenizer
        .get_post_processor()
        .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, false));
    if max_length <= specials {
        return Err(EngineError::Tokenizer(format!(
            "{}: max_length = {max_length} leaves no room for text after the tokenizer's {specials} special tokens",
            path.display()
        )));
    }
    truncate_at(&mut tokenizer, max_length)
        .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", path.display())))?;
    Ok(tokenizer)
}

/// Cuts encodings at `max_length`, from the right and without stride: the setting under
/// which `tokenize` tells cut texts from whole ones.
pub(super) fn truncate_at(tokenizer: &mut Tokenizer, max_length: usize) -> tokenizers::Result<()> {
    tokenizer.with_truncation(Some(tokenizers::TruncationParams {
        max_length,
        ..Default::default()
    }))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::manifest;
    use super::*;

    #[test]
    fn positions_are_checked_at_load_as_a_permanent_model_error() {
        use crate::train::onnx::{GraphProto, ModelProto, TensorProto};
        use prost::Message;
        let dir = tempfile::tempdir().unwrap();
        let model = ModelProto {
            ir_version: 8,
            graph: Some(GraphProto {
                initializer: vec![TensorProto {
                    dims: vec![512, 4],
                    name: "embeddings.position_embeddings.weight".into(),
                    raw_data: vec![0; 512 * 4 * 4],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let path = dir.path().join(MODEL_FILE);
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        assert!(check_positions(&path, 512).is_ok());
        let err = check_positions(&path, 1024).unwrap_err();
        assert!(!err.is_retryable());
        assert_eq!(
            err.to_string(),
            "model: sluice-model.toml: max_length = 1024 is larger than the model's 512 token \
             positions (initializer `embeddings.position_embeddings.weight` [512, 4] of \
             model.onnx): inputs that long cannot run; use max_length = 512 or less"
        );
        // Through `load`, before any runtime is needed.
        let mut manifest = manifest();
        manifest.max_length = 1024;
        let Err(err) = Embedder::load(dir.path(), &manifest, &EngineSettings::default()) else {
            panic!("a package with max_length 1024 loaded");
        };
        assert!(
            matches!(&err, EngineError::Model(m) if m.contains("max_length = 1024")),
            "{err}"
        );
    }
}
