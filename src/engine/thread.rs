//! The engine thread: warms the model up, then serves requests (tokenized already by the
//! tokenizer thread) one at a time until every handle is gone; a panic fails its request and
//! ends the thread.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Instant;

use tokenizers::Tokenizer;

use super::batcher::Budget;
use super::embed::{classify, embed_blocking, embed_tokenized, mostly_non_finite};
use super::prep::Prepared;
use super::request::{AliveGuard, EngineConfig, Request};
use super::tokenize::{self, Tokenized};
use super::{EngineError, InferenceBackend, OrtHead, RowOutput};
use crate::metrics;

/// The thread's whole life: warm up, then serve requests until the tokenizer thread ends
/// (every handle gone). `tokenizer` is only for the warm-up.
pub(super) fn run(
    receiver: Receiver<Prepared>,
    backend: Box<dyn InferenceBackend>,
    head: Option<OrtHead>,
    tokenizer: Tokenizer,
    config: EngineConfig,
    guard: AliveGuard,
) {
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
    while let Ok(Prepared { request, tokenized }) = receiver.recv() {
        let Request {
            texts,
            stop,
            truncate: _,
            reply,
            span,
            dispatch,
        } = request;
        let _logging = tracing::dispatcher::set_default(&dispatch);
        let _entered = span.enter();
        // A panic must not leave a handle to a dead thread that callers keep
        // waiting on: the request gets the panic as its error, the thread ends,
        // and `is_alive` tells the model cache to load the model again.
        let served = catch_unwind(AssertUnwindSafe(|| {
            serve(
                backend.as_mut(),
                head.as_mut(),
                &config,
                &mut budget,
                tokenized,
                &stop,
            )
        }));
        match served {
            // The caller may have gone (cancelled); nothing to do then.
            Ok(result) => drop(reply.send(result)),
            Err(panic) => {
                let message = tokenize::panic_message(&*panic);
                tracing::error!(panic = %message, rows = texts.len(),
                    "the engine thread panicked; it stops, and its model is loaded again for the next request");
                super::metrics_panic();
                guard.0.store(false, Ordering::Release);
                let _ = reply.send(Err(EngineError::Panicked(message)));
                break;
            }
        }
    }
}
/// Embeds (and with a head, classifies) one request's rows: every row answered, in order.
fn serve(
    backend: &mut dyn InferenceBackend,
    head: Option<&mut OrtHead>,
    config: &EngineConfig,
    budget: &mut Budget,
    tokenized: Tokenized,
    stop: &AtomicBool,
) -> Result<Vec<RowOutput>, EngineError> {
    let (mut rows, mut stats) = embed_tokenized(backend, config, budget, tokenized, stop)?;
    if let Some(head) = head {
        stats.non_finite += classify(head, &mut rows, config.dimension)?;
        mostly_non_finite(&stats, stats.rows_run)?;
    }
    let truncated = rows.iter().filter(|row| row.truncated).count();
    metrics::ROWS_TRUNCATED.inc_by(truncated as u64);
    Ok(rows)
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
