//! The inference engine: a model on its own OS thread behind a cloneable async handle.
//! Tokenization, length-ordered batching, ONNX Runtime and pooling all run on that thread,
//! never on tokio's.

mod batcher;
mod limits;
mod ort_backend;
mod pooling;
#[cfg(test)]
pub(crate) mod test_support;
mod tokenize;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokenizers::Tokenizer;
use tokio::sync::{mpsc, oneshot};

pub use batcher::{BatchPlan, Budget, length_order, next_batch, plan_batches};
pub use limits::{
    PositionLimit, check_max_length, position_limit_from_config, position_limit_from_onnx,
};
pub use ort_backend::{ModelSource, OrtBackend, OrtHead, init_runtime, open_session};

use crate::job::{
    HEAD_FILE, MANIFEST_FILE, MODEL_FILE, ModelManifest, ModelTask, Pooling, TOKENIZER_FILE,
};
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

/// A row whose pooled vector has a NaN or an infinity.
const NOT_FINITE: &str = "the model's output for this row is not finite (NaN or infinity)";
/// A row whose class probabilities have a NaN or an infinity.
const HEAD_NOT_FINITE: &str =
    "the classifier head's output for this row is not finite (NaN or infinity)";

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
    /// The package's `max_length`, named when a row is refused for it.
    max_length: usize,
}

struct Request {
    texts: Vec<String>,
    /// Checked before every batch, so a cancel or shutdown takes effect within one batch.
    stop: Arc<AtomicBool>,
    /// Cut over-long texts (and flag them) instead of failing their rows.
    truncate: bool,
    reply: oneshot::Sender<Result<Vec<RowOutput>, EngineError>>,
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
    /// Cleared when the engine thread ends (a panic): the handle is then useless.
    alive: Arc<AtomicBool>,
}

/// Clears the engine's `alive` flag however its thread ends.
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

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
        let backend = OrtBackend::load(
            &dir.join(MODEL_FILE),
            &manifest.names,
            manifest.dimension,
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
        // Truncation detection relies on the engine's own truncation settings, whatever
        // tokenizer it was handed.
        let mut tokenizer = tokenizer;
        if let Err(e) = truncate_at(&mut tokenizer, manifest.max_length) {
            tracing::warn!(error = %e, max_length = manifest.max_length,
                "could not set the tokenizer's truncation; long texts are refused by the model");
        }
        let config = EngineConfig {
            max_batch_rows: settings.max_batch_rows,
            max_batch_tokens: settings.max_batch_tokens,
            pooling: manifest.pooling,
            normalize: manifest.normalize,
            dimension: manifest.dimension,
            max_length: manifest.max_length,
        };
        // Capacity 1: one request waits while one runs, so the model never idles between
        // chunks and memory stays bounded.
        let (requests, mut receiver) = mpsc::channel::<Request>(1);
        let name = format!(
            "sluice-engine-{}",
            &manifest.model_sha256()[..8.min(manifest.model_sha256().len())]
        );
        let alive = Arc::new(AtomicBool::new(true));
        let guard = AliveGuard(alive.clone());
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let guard = guard;
                let mut backend = backend;
                let mut head = head;
                let mut budget = Budget::new(config.max_batch_rows, config.max_batch_tokens);
                let warming = catch_unwind(AssertUnwindSafe(|| {
                    warm_up(backend.as_mut(), &tokenizer, &config, &mut budget)
                }));
                if let Err(panic) = warming {
                    tracing::warn!(panic = %tokenize::panic_message(&*panic),
                        "engine warm-up panicked; the first request will tell");
                }
                while let Some(request) = receiver.blocking_recv() {
                    let Request {
                        texts,
                        stop,
                        truncate,
                        reply,
                    } = request;
                    // A panic must not leave a handle to a dead thread that callers keep
                    // waiting on: the request gets the panic as its error, the thread ends,
                    // and `is_alive` tells the model cache to load the model again.
                    let served = catch_unwind(AssertUnwindSafe(|| {
                        serve(
                            backend.as_mut(),
                            head.as_mut(),
                            &tokenizer,
                            &config,
                            &mut budget,
                            &texts,
                            &stop,
                            truncate,
                        )
                    }));
                    match served {
                        // The caller may have gone (cancelled); nothing to do then.
                        Ok(result) => drop(reply.send(result)),
                        Err(panic) => {
                            let message = tokenize::panic_message(&*panic);
                            tracing::error!(panic = %message, rows = texts.len(),
                                "the engine thread panicked; it stops, and its model is loaded again for the next request");
                            metrics::ENGINE_PANICS.inc();
                            guard.0.store(false, Ordering::Release);
                            let _ = reply.send(Err(EngineError::Panicked(message)));
                            break;
                        }
                    }
                }
            })
            .expect("spawning the engine thread");
        Self {
            requests,
            dimension: manifest.dimension,
            model_sha256: manifest.model_sha256().into(),
            package_key: manifest.cache_key().into(),
            labels: manifest.labels.clone().into(),
            alive,
        }
    }

    /// True while its engine thread is alive.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire) && !self.requests.is_closed()
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

    /// One embedding per text, in the same order; any text without one fails the call
    /// (`EngineError::Row`), so no caller silently embeds a bad row.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EngineError> {
        self.embed_until(texts, Arc::new(AtomicBool::new(false)))
            .await
    }

    /// Like `embed`, but gives up with `EngineError::Cancelled` before the next batch once
    /// `stop` is raised. Over-long texts are truncated.
    pub async fn embed_until(
        &self,
        texts: Vec<String>,
        stop: Arc<AtomicBool>,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        self.embed_rows(texts, stop, true)
            .await?
            .into_iter()
            .enumerate()
            .map(|(index, row)| {
                row.result
                    .map_err(|reason| EngineError::Row { index, reason })
            })
            .collect()
    }

    /// One `RowOutput` per text, in input order. `truncate = false` makes over-long texts row
    /// failures instead of cutting them. Errors (EngineError) are for the whole request only:
    /// cancelled, engine stopped, runtime failure, or a model that yields non-finite output
    /// for most rows of a batch (EngineError::Model naming the count; permanent).
    pub async fn embed_rows(
        &self,
        texts: Vec<String>,
        stop: Arc<AtomicBool>,
        truncate: bool,
    ) -> Result<Vec<RowOutput>, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request {
                texts,
                stop,
                truncate,
                reply,
            })
            .await
            .map_err(|_| EngineError::Stopped)?;
        answer.await.map_err(|_| EngineError::Stopped)?
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
fn truncate_at(tokenizer: &mut Tokenizer, max_length: usize) -> tokenizers::Result<()> {
    tokenizer.with_truncation(Some(tokenizers::TruncationParams {
        max_length,
        ..Default::default()
    }))?;
    Ok(())
}

/// Embeds (and with a head, classifies) one request's texts: every row answered, in order.
#[allow(clippy::too_many_arguments)]
fn serve(
    backend: &mut dyn InferenceBackend,
    head: Option<&mut OrtHead>,
    tokenizer: &Tokenizer,
    config: &EngineConfig,
    budget: &mut Budget,
    texts: &[String],
    stop: &AtomicBool,
    truncate: bool,
) -> Result<Vec<RowOutput>, EngineError> {
    let (mut rows, mut stats) =
        embed_blocking(backend, tokenizer, config, budget, texts, stop, truncate)?;
    if let Some(head) = head {
        stats.non_finite += classify(head, &mut rows, config.dimension)?;
        mostly_non_finite(&stats, stats.rows_run)?;
    }
    let truncated = rows.iter().filter(|row| row.truncated).count();
    metrics::ROWS_TRUNCATED.inc_by(truncated as u64);
    Ok(rows)
}

/// A model whose output is NaN or infinite for most rows is broken, not its inputs: the
/// whole request fails (permanently) instead of turning every row into an error.
fn mostly_non_finite(stats: &EmbedStats, rows: usize) -> Result<(), EngineError> {
    if stats.non_finite * 2 <= rows {
        return Ok(());
    }
    Err(EngineError::Model(format!(
        "the model's output is not finite (NaN or infinity) for {} of {} rows{}: \
         the package cannot serve these inputs",
        stats.non_finite,
        rows,
        if stats.rows_run < rows {
            format!(" (stopped after {} rows)", stats.rows_run)
        } else {
            String::new()
        }
    )))
}

/// Tokenizes, batches by length under the token budget, runs and pools; results come back in
/// input order. A batch that runs out of memory halves the budget and is cut again. Texts
/// that cannot be tokenized, are too long with `truncate` off, or pool to a non-finite
/// vector fail their own rows only.
fn embed_blocking(
    backend: &mut dyn InferenceBackend,
    tokenizer: &Tokenizer,
    config: &EngineConfig,
    budget: &mut Budget,
    texts: &[String],
    stop: &AtomicBool,
    truncate: bool,
) -> Result<(Vec<RowOutput>, EmbedStats), EngineError> {
    let tokenizing = Instant::now();
    let tokenized = tokenize::tokenize(tokenizer, texts, config.max_length, truncate);
    metrics::STAGE_SECONDS
        .with_label_values(&["tokenize"])
        .observe(tokenizing.elapsed().as_secs_f64());
    let encodings = &tokenized.encodings;
    let lengths: Vec<usize> = encodings.iter().map(tokenizers::Encoding::len).collect();
    let order: Vec<usize> = length_order(&lengths)
        .into_iter()
        .filter(|&index| tokenized.failures[index].is_none())
        .collect();
    let mut results: Vec<Result<Vec<f32>, String>> = tokenized
        .failures
        .iter()
        .map(|failure| failure.clone().map_or(Ok(Vec::new()), Err))
        .collect();
    let mut stats = EmbedStats {
        tokens: order.iter().map(|&index| lengths[index]).sum(),
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
        let batch = pad_batch(&plan, seq, encodings);
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
            results[*index] = if vector.iter().all(|v| v.is_finite()) {
                Ok(vector)
            } else {
                stats.non_finite += 1;
                Err(NOT_FINITE.to_string())
            };
        }
        metrics::STAGE_SECONDS
            .with_label_values(&["pool"])
            .observe(pooling_started.elapsed().as_secs_f64());
        position += rows;
        stats.rows_run += rows;
        // Once most rows are certain to be non-finite, the rest need not run.
        mostly_non_finite(&stats, order.len())?;
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
    let rows = results
        .into_iter()
        .zip(tokenized.truncated)
        .map(|(result, truncated)| RowOutput { result, truncated })
        .collect();
    Ok((rows, stats))
}

/// Replaces each embedded row's vector by its class probabilities; says how many rows the
/// head answered with a NaN or an infinity (those rows fail).
fn classify(
    head: &mut OrtHead,
    rows: &mut [RowOutput],
    dimension: usize,
) -> Result<usize, EngineError> {
    let ready: Vec<usize> = (0..rows.len())
        .filter(|&index| rows[index].result.is_ok())
        .collect();
    if ready.is_empty() {
        return Ok(0);
    }
    let mut flat = Vec::with_capacity(ready.len() * dimension);
    for &index in &ready {
        flat.extend_from_slice(rows[index].result.as_deref().unwrap_or_default());
    }
    let probabilities = head.probabilities(&flat, ready.len(), dimension)?;
    let classes = probabilities.len() / ready.len();
    let mut non_finite = 0;
    for (&index, row) in ready.iter().zip(probabilities.chunks(classes)) {
        rows[index].result = if row.iter().all(|p| p.is_finite()) {
            Ok(row.to_vec())
        } else {
            non_finite += 1;
            Err(HEAD_NOT_FINITE.to_string())
        };
    }
    Ok(non_finite)
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
        true,
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
    use super::test_support::{EchoBackend, manifest, word_level_tokenizer};
    use super::*;

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
            max_length: 8,
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
            true,
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
            true,
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
            max_length: 8,
        };
        let mut backend = SmallMemoryBackend {
            limit: 12,
            refused: 0,
        };
        let mut budget = Budget::new(16, 64);
        let go = AtomicBool::new(false);
        let (rows, stats) = embed_blocking(
            &mut backend,
            &word_level_tokenizer(),
            &config,
            &mut budget,
            &texts,
            &go,
            true,
        )
        .unwrap();
        assert!(backend.refused > 0, "the small backend refused big batches");
        assert!(budget.tokens < 64, "budget shrank: {budget:?}");
        assert_eq!(rows.len(), 40);
        for (i, row) in rows.iter().enumerate() {
            let vector = row.result.as_ref().unwrap();
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
            true,
        )
        .unwrap_err();
        assert!(matches!(err, EngineError::OutOfMemory(_)));
    }

    fn texts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn go() -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(false))
    }

    #[tokio::test]
    async fn a_non_finite_row_fails_alone_and_a_mostly_non_finite_request_fails_whole() {
        use super::test_support::NanBackend;
        // Word `c` (id 3) yields NaN: the rows holding it fail, the others embed.
        let embedder = Embedder::start(
            Box::new(NanBackend { nan_id: 3 }),
            word_level_tokenizer(),
            &manifest(),
            &EngineSettings::default(),
        );
        let rows = embedder
            .embed_rows(texts(&["a", "b c", "d d", "a b", "b"]), go(), true)
            .await
            .unwrap();
        let results: Vec<_> = rows.iter().map(|r| r.result.clone()).collect();
        assert_eq!(
            results,
            vec![
                Ok(vec![1.0, 1.0]),
                Err(NOT_FINITE.to_string()),
                Ok(vec![4.0, 1.0]),
                Ok(vec![1.5, 1.0]),
                Ok(vec![2.0, 1.0]),
            ]
        );
        assert!(rows.iter().all(|r| !r.truncated));
        // `embed` (training) never hands out a partial answer: the row is named.
        let err = embedder
            .embed(texts(&["a", "b c", "d d"]))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, EngineError::Row { index: 1, reason } if reason == NOT_FINITE),
            "{err:?}"
        );
        assert!(!err.is_retryable());
        // Three of five non-finite: the model is broken, the request fails, permanently.
        let err = embedder
            .embed_rows(texts(&["c", "a c", "c d", "a", "b"]), go(), true)
            .await
            .unwrap_err();
        match &err {
            EngineError::Model(message) => assert!(
                message.starts_with(
                    "the model's output is not finite (NaN or infinity) for 3 of 5 rows"
                ),
                "{message}"
            ),
            other => panic!("expected a model error, got {other:?}"),
        }
        assert!(!err.is_retryable());
        // Exactly half is still per row.
        let rows = embedder
            .embed_rows(texts(&["c", "a c", "a", "b"]), go(), true)
            .await
            .unwrap();
        assert_eq!(rows.iter().filter(|r| r.result.is_err()).count(), 2);
        assert!(embedder.is_alive());
    }

    #[tokio::test]
    async fn over_long_texts_are_cut_and_flagged_or_refused_and_bad_texts_fail_alone() {
        let before = metrics::ROWS_TRUNCATED.get();
        let embedder = Embedder::start(
            Box::new(EchoBackend),
            word_level_tokenizer(),
            &manifest(),
            &EngineSettings::default(),
        );
        // max_length 8: ten words are cut to the first eight.
        let long = "a a a a a a a a d d";
        let rows = embedder
            .embed_rows(texts(&["b", long]), go(), true)
            .await
            .unwrap();
        assert_eq!(
            rows,
            vec![
                RowOutput {
                    result: Ok(vec![2.0, 1.0]),
                    truncated: false
                },
                RowOutput {
                    result: Ok(vec![1.0, 1.0]),
                    truncated: true
                },
            ]
        );
        assert!(metrics::ROWS_TRUNCATED.get() > before);
        let rows = embedder
            .embed_rows(texts(&["b", long, "c"]), go(), false)
            .await
            .unwrap();
        assert_eq!(rows[0].result, Ok(vec![2.0, 1.0]));
        assert_eq!(
            rows[1],
            RowOutput {
                result: Err(
                    "10 tokens > max 8 (the package's max_length); shorten the text, \
                             or set truncate = true in the job spec to cut it"
                        .into()
                ),
                truncated: false
            }
        );
        assert_eq!(rows[2].result, Ok(vec![3.0, 1.0]));
        // Training truncates.
        assert_eq!(
            embedder.embed(texts(&[long])).await.unwrap(),
            vec![vec![1.0, 1.0]]
        );

        // A tokenizer that cannot encode unknown words fails only those rows.
        let json = serde_json::json!({
            "version": "1.0",
            "model": {"type": "WordLevel", "vocab": {"a": 1, "b": 2}, "unk_token": "[MISSING]"},
            "pre_tokenizer": {"type": "Whitespace"}
        });
        let strict = Tokenizer::from_bytes(json.to_string().as_bytes()).unwrap();
        let embedder = Embedder::start(
            Box::new(EchoBackend),
            strict,
            &manifest(),
            &EngineSettings::default(),
        );
        let rows = embedder
            .embed_rows(texts(&["a", "a zebra", "b b"]), go(), true)
            .await
            .unwrap();
        assert_eq!(rows[0].result, Ok(vec![1.0, 1.0]));
        assert_eq!(rows[2].result, Ok(vec![2.0, 1.0]));
        let reason = rows[1].result.clone().unwrap_err();
        assert!(
            reason.starts_with("the tokenizer cannot encode this text")
                && reason.contains("Missing [UNK] token"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn a_panic_fails_its_request_and_ends_the_engine() {
        use super::test_support::PanicBackend;
        let before = metrics::ENGINE_PANICS.get();
        // Word `d` (id 4) panics the backend; the warm-up never holds it.
        let embedder = Embedder::start(
            Box::new(PanicBackend { panic_id: 4 }),
            word_level_tokenizer(),
            &manifest(),
            &EngineSettings::default(),
        );
        assert_eq!(
            embedder.embed(texts(&["a b"])).await.unwrap(),
            vec![vec![1.5, 1.0]]
        );
        assert!(embedder.is_alive());
        let err = embedder
            .embed_rows(texts(&["a", "d"]), go(), true)
            .await
            .unwrap_err();
        match &err {
            EngineError::Panicked(message) => {
                assert_eq!(message, "fake backend: token 4 is poison")
            }
            other => panic!("expected a panic error, got {other:?}"),
        }
        assert!(err.is_retryable());
        assert!(!embedder.is_alive());
        assert!(!embedder.clone().is_alive());
        assert!(metrics::ENGINE_PANICS.get() > before);
        // The thread is gone: later requests fail at once instead of waiting.
        let later = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            embedder.embed(texts(&["a"])),
        )
        .await
        .expect("answered at once");
        assert!(matches!(later, Err(EngineError::Stopped)), "{later:?}");
    }

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
