//! One request's rows through the model: tokenize, batch by length under the budget
//! (halving it when a batch runs out of memory), pad, run, pool, and (with a head) classify.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokenizers::Tokenizer;

use super::batcher::{BatchPlan, Budget, length_order, next_batch};
use super::request::EngineConfig;
use super::{EmbedStats, EngineError, InferenceBackend, OrtHead, RowOutput, TokenBatch};
use super::{pooling, tokenize};
use crate::metrics;

/// A row whose pooled vector has a NaN or an infinity.
pub(super) const NOT_FINITE: &str =
    "the model's output for this row is not finite (NaN or infinity)";
/// A row whose class probabilities have a NaN or an infinity.
const HEAD_NOT_FINITE: &str =
    "the classifier head's output for this row is not finite (NaN or infinity)";

/// A model whose output is NaN or infinite for most rows is broken, not its inputs: the
/// whole request fails (permanently) instead of turning every row into an error.
pub(super) fn mostly_non_finite(stats: &EmbedStats, rows: usize) -> Result<(), EngineError> {
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
pub(super) fn embed_blocking(
    backend: &mut dyn InferenceBackend,
    tokenizer: &Tokenizer,
    config: &EngineConfig,
    budget: &mut Budget,
    texts: &[String],
    stop: &AtomicBool,
    truncate: bool,
) -> Result<(Vec<RowOutput>, EmbedStats), EngineError> {
    let tokenized = tokenize_timed(tokenizer, texts, config.max_length, truncate);
    embed_tokenized(backend, config, budget, tokenized, stop)
}

/// `tokenize::tokenize`, timed under the `tokenize` stage.
pub(super) fn tokenize_timed(
    tokenizer: &Tokenizer,
    texts: &[String],
    max_length: usize,
    truncate: bool,
) -> tokenize::Tokenized {
    let tokenizing = Instant::now();
    let tokenized = tokenize::tokenize(tokenizer, texts, max_length, truncate);
    metrics::STAGE_SECONDS
        .with(metrics::Stage::Tokenize)
        .observe(tokenizing.elapsed().as_secs_f64());
    tokenized
}

/// `embed_blocking` for texts tokenized already (on the engine's tokenizer pool): batches
/// by length under the budget, runs, pools; results in input order.
pub(super) fn embed_tokenized(
    backend: &mut dyn InferenceBackend,
    config: &EngineConfig,
    budget: &mut Budget,
    tokenized: tokenize::Tokenized,
    stop: &AtomicBool,
) -> Result<(Vec<RowOutput>, EmbedStats), EngineError> {
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
        let mut batch = pad_batch(&plan, seq, encodings);
        if config.pad_id != 0 {
            for (id, &mask) in batch.input_ids.iter_mut().zip(&batch.attention_mask) {
                if mask == 0 {
                    *id = config.pad_id;
                }
            }
        }
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
            .with(metrics::Stage::Run)
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
            .with(metrics::Stage::Pool)
            .observe(pooling_started.elapsed().as_secs_f64());
        position += rows;
        stats.rows_run += rows;
        // Once most rows are certain to be non-finite, the rest need not run.
        mostly_non_finite(&stats, order.len())?;
    }
    metrics::INFERENCE_TOKENS
        .with(metrics::TokenKind::Real)
        .inc_by(stats.tokens as u64);
    metrics::INFERENCE_TOKENS
        .with(metrics::TokenKind::Padded)
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
pub(super) fn classify(
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
    use super::super::test_support::{EchoBackend, word_level_tokenizer};
    use super::*;
    use crate::job::Pooling;

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
            pad_id: 0,
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
            pad_id: 0,
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
}
