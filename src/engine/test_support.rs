//! Fakes for engine tests: a tiny word-level tokenizer, a package manifest and backends
//! whose output shows what the engine did (or that yield NaN, or panic, on chosen rows).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokenizers::Tokenizer;

use super::{EngineError, InferenceBackend, TokenBatch};
use crate::job::{
    FileDigest, IoNames, MODEL_FILE, ModelManifest, ModelTask, Pooling, TOKENIZER_FILE,
};

/// Hidden state of every token = [token id, 1]: mean pooling then gives the mean id of
/// the row's real tokens, which shows rows are batched, padded and re-ordered right.
pub struct EchoBackend;

impl InferenceBackend for EchoBackend {
    fn hidden_states(&mut self, batch: &TokenBatch) -> Result<Vec<f32>, EngineError> {
        Ok(batch
            .input_ids
            .iter()
            .flat_map(|&id| [id as f32, 1.0])
            .collect())
    }
}

/// Like `EchoBackend`, but every token with id `nan_id` yields NaN, so a row holding that
/// word pools to a non-finite vector.
pub struct NanBackend {
    pub nan_id: i64,
}

impl InferenceBackend for NanBackend {
    fn hidden_states(&mut self, batch: &TokenBatch) -> Result<Vec<f32>, EngineError> {
        Ok(batch
            .input_ids
            .iter()
            .flat_map(|&id| {
                if id == self.nan_id {
                    [f32::NAN, 1.0]
                } else {
                    [id as f32, 1.0]
                }
            })
            .collect())
    }
}

/// Like `EchoBackend`, but panics on any batch holding token id `panic_id`.
pub struct PanicBackend {
    pub panic_id: i64,
}

impl InferenceBackend for PanicBackend {
    fn hidden_states(&mut self, batch: &TokenBatch) -> Result<Vec<f32>, EngineError> {
        if batch.input_ids.contains(&self.panic_id) {
            panic!("fake backend: token {} is poison", self.panic_id);
        }
        EchoBackend.hidden_states(batch)
    }
}

/// Like `EchoBackend`, and raises `dropped` when dropped: the engine thread owns its
/// backend, so the flag shows the thread has ended.
pub struct WatchedBackend {
    pub dropped: Arc<AtomicBool>,
}

impl InferenceBackend for WatchedBackend {
    fn hidden_states(&mut self, batch: &TokenBatch) -> Result<Vec<f32>, EngineError> {
        EchoBackend.hidden_states(batch)
    }
}

impl Drop for WatchedBackend {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::Release);
    }
}

/// Words `a`…`d` are ids 1…4; anything else is `[UNK]` (0). No special tokens.
pub fn word_level_tokenizer() -> Tokenizer {
    let json = serde_json::json!({
        "version": "1.0",
        "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1, "b": 2, "c": 3, "d": 4}, "unk_token": "[UNK]"},
        "pre_tokenizer": {"type": "Whitespace"}
    });
    Tokenizer::from_bytes(json.to_string().as_bytes()).unwrap()
}

/// An embedding package of dimension 2 (the fakes' output), mean pooling, max_length 8.
pub fn manifest() -> ModelManifest {
    let digest = FileDigest {
        sha256: "0123456789abcdef".repeat(4),
        size: 1,
    };
    ModelManifest {
        name: "echo".into(),
        task: ModelTask::Embed,
        precision: "fp32".into(),
        max_length: 8,
        pooling: Pooling::Mean,
        normalize: false,
        dimension: 2,
        pad_id: None,
        labels: Vec::new(),
        names: IoNames::default(),
        files: BTreeMap::from([
            (MODEL_FILE.to_string(), digest.clone()),
            (TOKENIZER_FILE.to_string(), digest),
        ]),
    }
}
