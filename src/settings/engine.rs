//! How the engine runs models: execution provider, threads, batching and memory.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Path of `libonnxruntime.so.1.31.x`; when unset, `ORT_DYLIB_PATH` is used. For CUDA,
    /// the `onnxruntime-gpu` build's library (with its provider libraries beside it).
    pub ort_dylib_path: String,
    /// `auto` (CUDA when the library has it and it starts, else CPU), `cpu` or `cuda`
    /// (CUDA or refuse to start).
    pub execution_provider: ExecutionProvider,
    /// Which GPU a CUDA worker uses (one worker, one GPU).
    pub gpu_device_id: i32,
    pub intra_op_threads: usize,
    pub inter_op_threads: usize,
    /// Most rows in one inference batch.
    pub max_batch_rows: usize,
    /// Most padded tokens (rows × longest row) in one inference batch.
    pub max_batch_tokens: usize,
    /// Threads of the engine's own tokenizer pool (never tokio's): the next request is
    /// tokenized there while the model runs the current one.
    pub tokenize_threads: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            ort_dylib_path: String::new(),
            execution_provider: ExecutionProvider::Auto,
            gpu_device_id: 0,
            intra_op_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            inter_op_threads: 1,
            max_batch_rows: 32,
            max_batch_tokens: 32 * 128,
            tokenize_threads: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .min(4),
        }
    }
}
