//! The inference engine: a model on its own OS thread behind a cloneable async handle.
//! Tokenization runs on a tokenizer thread with a small pool of its own, one request ahead;
//! length-ordered batching, ONNX Runtime and pooling on the engine thread; never on tokio's.

mod batcher;
mod embed;
mod handle;
mod limits;
mod load;
mod ort_backend;
mod pooling;
mod prep;
mod probe;
mod request;
mod tensor;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
mod thread;
mod tokenize;

pub use batcher::{BatchPlan, Budget, length_order, next_batch, plan_batches};
pub use embed::pad_batch;
pub use handle::{Embedder, RowsReply};
pub use limits::{
    PositionLimit, check_max_length, external_data_files, position_limit_from_config,
    position_limit_from_onnx,
};
pub use load::{check_positions, load_tokenizer};
pub use ort_backend::{ModelSource, OrtBackend, OrtHead, init_runtime, open_session};
pub use probe::{PROBE_TEXT, graph_dimension, verify};
pub use tensor::{
    ClassifierOutputs, Element, InputPlan, Port, PortType, RowFeed, TensorEngine, TensorModel,
    TensorPlan, check_mapping, feed_row,
};

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error("model: {0}")]
    Model(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("inference failed: {0}")]
    Inference(String),
    /// The batch did not fit in (GPU or host) memory; a smaller one may.
    #[error("out of memory running a batch: {0}")]
    OutOfMemory(String),
    #[error("the engine thread has stopped")]
    Stopped,
    /// The caller raised its stop flag; the batches not yet run were skipped.
    #[error("stopped on request before all batches ran")]
    Cancelled,
    /// One text of an `embed` call had no embedding (`embed_rows` reports it per row).
    #[error("text {index} (counting from 0, in the order sent): {reason}")]
    Row { index: usize, reason: String },
    /// The engine thread panicked serving the request and has ended; the model cache
    /// loads the model again for the next try.
    #[error("the engine thread panicked: {0}")]
    Panicked(String),
}

impl EngineError {
    /// Setup problems (library, model, tokenizer) will not fix themselves; a failed run or a
    /// vanished thread may.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            EngineError::Inference(_)
                | EngineError::OutOfMemory(_)
                | EngineError::Stopped
                | EngineError::Panicked(_)
        )
    }
}

/// One text's answer from `Embedder::embed_rows`.
#[derive(Debug, Clone, PartialEq)]
pub struct RowOutput {
    /// The pooled embedding (or a classifier's probabilities), or why this one row failed:
    /// its text could not be tokenized, it is longer than max_length with truncation off
    /// ("412 tokens > max 256 (the package's max_length); ..."), or the model's output for it
    /// was not finite (NaN/inf).
    pub result: Result<Vec<f32>, String>,
    /// The text was cut to the model's max_length (only when truncation is on).
    pub truncated: bool,
}

/// One padded batch of token ids, row-major `[rows, seq]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    pub rows: usize,
    pub seq: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
}

/// What turns token batches into hidden states: ONNX Runtime, or a fake in tests.
pub trait InferenceBackend: Send {
    /// Hidden states `[rows, seq, dim]`, row-major.
    fn hidden_states(&mut self, batch: &TokenBatch) -> Result<Vec<f32>, EngineError>;
}

/// Statistics of one `embed` call, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbedStats {
    pub tokens: usize,
    pub padded_tokens: usize,
    pub batches: usize,
    /// Rows that reached the model, and those of them whose output was not finite.
    pub rows_run: usize,
    pub non_finite: usize,
}

/// Counts a panic of an engine thread (the engine or its tokenizer thread).
fn metrics_panic() {
    crate::metrics::ENGINE_PANICS.inc();
}
