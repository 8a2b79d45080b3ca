//! The inference engine: a model on its own OS thread behind a cloneable async handle.
//! Tokenization, length-ordered batching, ONNX Runtime and pooling all run on that thread,
//! never on tokio's.

mod batcher;
mod ort_backend;
pub mod package;
mod pooling;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokenizers::Tokenizer;
use tokio::sync::{mpsc, oneshot};

pub use batcher::{BatchPlan, Budget, length_order, next_batch, plan_batches};
pub use ort_backend::{ModelSource, OrtBackend, OrtHead, init_runtime, open_session};
pub use package::{ModelManifest, Pooling};

use crate::metrics;
use crate::settings::EngineSettings;

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
}

impl EngineError {
    /// Setup problems (library, model, tokenizer) will not fix themselves; a failed run or a
    /// vanished thread may.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            EngineError::Inference(_) | EngineError::OutOfMemory(_) | EngineError::Stopped
        )
    }
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

/// Engine-wide knobs the thread needs.
#[derive(Debug, Clone)]
struct EngineConfig {
    max_batch_rows: usize,
    max_batch_tokens: usize,
    pooling: Pooling,
    normalize: bool,
    dimension: usize,
}

struct Request {
    texts: Vec<String>,
    /// Checked before every batch, so a cancel or shutdown takes effect within one batch.
    stop: Arc<AtomicBool>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, EngineError>>,
}

/// Statistics of one `embed` call, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbedStats {
    pub tokens: usize,
    pub padded_tokens: usize,
    pub batches: usize,
}

/// A cloneable handle to a model running on its own thread.
#[derive(Clone)]
pub struct Embedder {
    requests: mpsc::Sender<Request>,
    dimension: usize,
    model_sha256: Arc<str>,
    /// Every file and setting of the package (`ModelManifest::cache_key`).
    package_key: Arc<str>,
    /// A classifier's class names; empty for an embedding model.
    labels: Arc<[String]>,
}

impl Embedder {
    /// Loads the model with ONNX Runtime (blocking: call from `spawn_blocking` or a plain
    /// thread) and starts its thread.
    pub fn load(
        dir: &Path,
        manifest: &ModelManifest,
        settings: &EngineSettings,
    ) -> Result<Self, EngineError> {
        let backend = OrtBackend::load(
            &dir.join(package::MODEL_FILE),
            &manifest.names,
            manifest.dimension,
            settings,
        )?;
        let tokenizer = load_tokenizer(&dir.join(package::TOKENIZER_FILE), manifest.max_length)?;
        let head = match manifest.task {
            package::ModelTask::Embed => None,
            package::ModelTask::Classify => Some(OrtHead::load(
                &dir.join(package::HEAD_FILE),
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

    /// Starts the engine thread around any backend.
    pub fn start(
        backend: Box<dyn InferenceBackend>,
        tokenizer: Tokenizer,
        manifest: &ModelManifest,
        settings: &EngineSettings,
    ) -> Self {
        Self::start_with_head(backend, tokenizer, None, manifest, settings)
    }

    /// Starts the engine thread; with a head, each text's answer is its class
    /// probabilities instead of its embedding.
    pub fn start_with_head(
        backend: Box<dyn InferenceBackend>,
        tokenizer: Tokenizer,
        head: Option<OrtHead>,
        manifest: &ModelManifest,
        settings: &EngineSettings,
    ) -> Self {
        let config = EngineConfig {
            max_batch_rows: settings.max_batch_rows,
            max_batch_tokens: settings.max_batch_tokens,
            pooling: manifest.pooling,
            normalize: manifest.normalize,
            dimension: manifest.dimension,
        };
        // Capacity 1: one request waits while one runs, so the model never idles between
        // chunks and memory stays bounded.
        let (requests, mut receiver) = mpsc::channel::<Request>(1);
        let name = format!(
            "sluice-engine-{}",
            &manifest.model_sha256()[..8.min(manifest.model_sha256().len())]
        );
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let mut backend = backend;
                let mut head = head;
                let mut budget = Budget::new(config.max_batch_rows, config.max_batch_tokens);
                warm_up(backend.as_mut(), &tokenizer, &config, &mut budget);
                while let Some(request) = receiver.blocking_recv() {
                    let result = embed_blocking(
                        backend.as_mut(),
                        &tokenizer,
                        &config,
                        &mut budget,
                        &request.texts,
                        &request.stop,
                    )
                    .and_then(|(vectors, _)| match head.as_mut() {
                        None => Ok(vectors),
                        Some(head) => classify(head, vectors, config.dimension),
                    });
                    // The caller may have gone (cancelled); nothing to do then.
                    let _ = request.reply.send(result);
                }
            })
            .expect("spawning the engine thread");
        Self {
            requests,
            dimension: manifest.dimension,
            model_sha256: manifest.model_sha256().into(),
            package_key: manifest.cache_key().into(),
            labels: manifest.labels.clone().into(),
        }
    }

    /// A classifier's class names (the order of its probabilities); empty for an
    /// embedding model.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    pub fn model_sha256(&self) -> &str {
        &self.model_sha256
    }

    /// Changes when any file or setting of the package changes (a re-pushed tokenizer too).
    pub fn package_key(&self) -> &str {
        &self.package_key
    }

    /// One embedding per text, in the same order.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EngineError> {
        self.embed_until(texts, Arc::new(AtomicBool::new(false)))
            .await
    }

    /// Like `embed`, but gives up with `EngineError::Cancelled` before the next batch once
    /// `stop` is raised.
    pub async fn embed_until(
        &self,
        texts: Vec<String>,
        stop: Arc<AtomicBool>,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { texts, stop, reply })
            .await
            .map_err(|_| EngineError::Stopped)?;
        answer.await.map_err(|_| EngineError::Stopped)?
    }
}

/// Loads a tokenizer for batching by the engine: the file's own padding is dropped (the
/// engine pads each batch to its longest row) and truncation set to the model's limit.
pub fn load_tokenizer(path: &Path, max_length: usize) -> Result<Tokenizer, EngineError> {
    let mut tokenizer = Tokenizer::from_file(path)
        .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", path.display())))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(tokenizers::TruncationParams {
            max_length,
            ..Default::default()
        }))
        .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", path.display())))?;
    Ok(tokenizer)
}

/// Tokenizes, batches by length under the token budget, runs and pools; results come back in
/// input order. A batch that runs out of memory halves the budget and is cut again.
fn embed_blocking(
    backend: &mut dyn InferenceBackend,
    tokenizer: &Tokenizer,
    config: &EngineConfig,
    budget: &mut Budget,
    texts: &[String],
    stop: &AtomicBool,
) -> Result<(Vec<Vec<f32>>, EmbedStats), EngineError> {
    let tokenizing = Instant::now();
    let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let encodings = tokenizer
        .encode_batch(inputs, true)
        .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
    metrics::STAGE_SECONDS
        .with_label_values(&["tokenize"])
        .observe(tokenizing.elapsed().as_secs_f64());
    let lengths: Vec<usize> = encodings.iter().map(|e| e.len()).collect();
    let order = length_order(&lengths);
    let mut results: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
    let mut stats = EmbedStats {
        tokens: lengths.iter().sum(),
        ..Default::default()
    };
    let mut position = 0;
    while position < order.len() {
        if stop.load(Ordering::Relaxed) {
            return Err(EngineError::Cancelled);
        }
        let plan = next_batch(&order, position, &lengths, budget.rows, budget.tokens);
        let rows = plan.rows.len();
        let seq = plan.seq_len.max(1);
        let batch = pad_batch(&plan, seq, &encodings);
        let started = Instant::now();
        let hidden = match backend.hidden_states(&batch) {
            Ok(hidden) => hidden,
            Err(EngineError::OutOfMemory(message)) if rows > 1 => {
                budget.shrink();
                metrics::INFERENCE_OOM.inc();
                tracing::warn!(rows, seq, %message, new_budget_rows = budget.rows,
                    new_budget_tokens = budget.tokens, "batch ran out of memory; halving the batch budget");
                continue;
            }
            Err(e) => return Err(e),
        };
        budget.succeeded();
        let run_seconds = started.elapsed().as_secs_f64();
        metrics::INFERENCE_BATCH_SECONDS.observe(run_seconds);
        metrics::STAGE_SECONDS
            .with_label_values(&["run"])
            .observe(run_seconds);
        metrics::INFERENCE_BATCH_ROWS.observe(rows as f64);
        stats.padded_tokens += rows * seq;
        stats.batches += 1;
        let pooling_started = Instant::now();
        let pooled = pooling::pool(
            &hidden,
            &batch.attention_mask,
            rows,
            seq,
            config.dimension,
            config.pooling,
            config.normalize,
        );
        for (index, vector) in plan.rows.iter().zip(pooled) {
            results[*index] = vector;
        }
        metrics::STAGE_SECONDS
            .with_label_values(&["pool"])
            .observe(pooling_started.elapsed().as_secs_f64());
        position += rows;
    }
    metrics::INFERENCE_TOKENS
        .with_label_values(&["real"])
        .inc_by(stats.tokens as u64);
    metrics::INFERENCE_TOKENS
        .with_label_values(&["padded"])
        .inc_by(stats.padded_tokens as u64);
    if stats.padded_tokens > 0 {
        metrics::PADDING_RATIO.observe(1.0 - stats.tokens as f64 / stats.padded_tokens as f64);
    }
    Ok((results, stats))
}

/// Class probabilities for pooled embeddings, one vector per row.
fn classify(
    head: &mut OrtHead,
    vectors: Vec<Vec<f32>>,
    dimension: usize,
) -> Result<Vec<Vec<f32>>, EngineError> {
    if vectors.is_empty() {
        return Ok(vectors);
    }
    let rows = vectors.len();
    let flat: Vec<f32> = vectors.into_iter().flatten().collect();
    let probabilities = head.probabilities(&flat, rows, dimension)?;
    let classes = probabilities.len() / rows;
    Ok(probabilities.chunks(classes).map(<[f32]>::to_vec).collect())
}

/// Runs a short and a long row once before the first request, so the first shard does not
/// pay for the runtime's first-run set-up.
fn warm_up(
    backend: &mut dyn InferenceBackend,
    tokenizer: &Tokenizer,
    config: &EngineConfig,
    budget: &mut Budget,
) {
    let texts = [
        "warm up".to_string(),
        "a longer sentence, so that the first real batch finds its buffers already sized "
            .repeat(4),
    ];
    let started = Instant::now();
    match embed_blocking(
        backend,
        tokenizer,
        config,
        budget,
        &texts,
        &AtomicBool::new(false),
    ) {
        Ok(_) => tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            "engine warmed up"
        ),
        Err(e) => tracing::warn!(error = %e, "engine warm-up failed; the first batch will tell"),
    }
}

/// Lays the plan's rows out as one `[rows, seq]` batch, padded with zeros.
pub fn pad_batch(plan: &BatchPlan, seq: usize, encodings: &[tokenizers::Encoding]) -> TokenBatch {
    let rows = plan.rows.len();
    let mut batch = TokenBatch {
        rows,
        seq,
        input_ids: vec![0; rows * seq],
        attention_mask: vec![0; rows * seq],
        token_type_ids: vec![0; rows * seq],
    };
    for (slot, &index) in plan.rows.iter().enumerate() {
        let encoding = &encodings[index];
        let base = slot * seq;
        for (t, ((&id, &mask), &kind)) in encoding
            .get_ids()
            .iter()
            .zip(encoding.get_attention_mask())
            .zip(encoding.get_type_ids())
            .enumerate()
        {
            batch.input_ids[base + t] = id as i64;
            batch.attention_mask[base + t] = mask as i64;
            batch.token_type_ids[base + t] = kind as i64;
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::package::{FileDigest, IoNames, ModelTask};
    use super::*;

    /// Hidden state of every token = [token id, 1]: mean pooling then gives the mean id of
    /// the row's real tokens, which shows rows are batched, padded and re-ordered right.
    struct EchoBackend;

    impl InferenceBackend for EchoBackend {
        fn hidden_states(&mut self, batch: &TokenBatch) -> Result<Vec<f32>, EngineError> {
            Ok(batch
                .input_ids
                .iter()
                .flat_map(|&id| [id as f32, 1.0])
                .collect())
        }
    }

    fn word_level_tokenizer() -> Tokenizer {
        let json = serde_json::json!({
            "version": "1.0",
            "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1, "b": 2, "c": 3, "d": 4}, "unk_token": "[UNK]"},
            "pre_tokenizer": {"type": "Whitespace"}
        });
        Tokenizer::from_bytes(json.to_string().as_bytes()).unwrap()
    }

    fn manifest() -> ModelManifest {
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
            labels: Vec::new(),
            names: IoNames::default(),
            files: BTreeMap::from([
                (package::MODEL_FILE.to_string(), digest.clone()),
                (package::TOKENIZER_FILE.to_string(), digest),
            ]),
        }
    }

    #[tokio::test]
    async fn results_come_back_in_input_order_despite_length_sorting() {
        let settings = EngineSettings {
            max_batch_rows: 2,
            max_batch_tokens: 6,
            ..Default::default()
        };
        let embedder = Embedder::start(
            Box::new(EchoBackend),
            word_level_tokenizer(),
            &manifest(),
            &settings,
        );
        let texts = vec!["d d d d".to_string(), "a".into(), "b c".into(), "c".into()];
        let vectors = embedder.embed(texts).await.unwrap();
        let means: Vec<f32> = vectors.iter().map(|v| v[0]).collect();
        assert_eq!(means, vec![4.0, 1.0, 2.5, 3.0]);
        assert!(vectors.iter().all(|v| v[1] == 1.0));
    }

    #[test]
    fn padding_is_counted_and_bounded_by_sorting() {
        let texts: Vec<String> = ["a", "a b c d", "b", "c d"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let config = EngineConfig {
            max_batch_rows: 2,
            max_batch_tokens: 100,
            pooling: Pooling::Mean,
            normalize: false,
            dimension: 2,
        };
        let go = AtomicBool::new(false);
        let mut budget = Budget::new(config.max_batch_rows, config.max_batch_tokens);
        let (_, stats) = embed_blocking(
            &mut EchoBackend,
            &word_level_tokenizer(),
            &config,
            &mut budget,
            &texts,
            &go,
        )
        .unwrap();
        assert_eq!(stats.tokens, 8);
        // Sorted: [a, b] pads to 1, [c d, a b c d] pads to 4 → 2 + 8.
        assert_eq!(stats.padded_tokens, 10);
        assert_eq!(stats.batches, 2);
        let stop = AtomicBool::new(true);
        let stopped = embed_blocking(
            &mut EchoBackend,
            &word_level_tokenizer(),
            &config,
            &mut budget,
            &texts,
            &stop,
        );
        assert!(matches!(stopped, Err(EngineError::Cancelled)));
    }

    /// Runs out of memory for any batch above `limit` padded tokens, like a small GPU.
    struct SmallMemoryBackend {
        limit: usize,
        refused: usize,
    }

    impl InferenceBackend for SmallMemoryBackend {
        fn hidden_states(&mut self, batch: &TokenBatch) -> Result<Vec<f32>, EngineError> {
            if batch.rows * batch.seq > self.limit {
                self.refused += 1;
                return Err(EngineError::OutOfMemory(format!(
                    "Failed to allocate memory for {} tokens",
                    batch.rows * batch.seq
                )));
            }
            EchoBackend.hidden_states(batch)
        }
    }

    #[test]
    fn out_of_memory_halves_the_budget_and_still_embeds_every_row_in_order() {
        let words = ["a", "b", "c", "d"];
        let texts: Vec<String> = (0..40)
            .map(|i| vec![words[i % 4]; 1 + i % 3].join(" "))
            .collect();
        let config = EngineConfig {
            max_batch_rows: 16,
            max_batch_tokens: 64,
            pooling: Pooling::Mean,
            normalize: false,
            dimension: 2,
        };
        let mut backend = SmallMemoryBackend {
            limit: 12,
            refused: 0,
        };
        let mut budget = Budget::new(16, 64);
        let go = AtomicBool::new(false);
        let (vectors, stats) = embed_blocking(
            &mut backend,
            &word_level_tokenizer(),
            &config,
            &mut budget,
            &texts,
            &go,
        )
        .unwrap();
        assert!(backend.refused > 0, "the small backend refused big batches");
        assert!(budget.tokens < 64, "budget shrank: {budget:?}");
        assert_eq!(vectors.len(), 40);
        for (i, vector) in vectors.iter().enumerate() {
            // Every word of row i is words[i % 4], whose id is i % 4 + 1.
            assert_eq!(vector[0], (i % 4 + 1) as f32, "row {i}");
        }
        assert!(stats.batches >= 40 * 2 / 12);
        // A single row that does not fit is an error, not an endless halving.
        let mut tiny = SmallMemoryBackend {
            limit: 1,
            refused: 0,
        };
        let err = embed_blocking(
            &mut tiny,
            &word_level_tokenizer(),
            &config,
            &mut Budget::new(16, 64),
            &["a b c".to_string()],
            &go,
        )
        .unwrap_err();
        assert!(matches!(err, EngineError::OutOfMemory(_)));
    }
}
