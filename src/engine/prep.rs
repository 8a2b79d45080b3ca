//! The engine's tokenizer thread: tokenizes the next request on a small pool of its own
//! while the engine thread runs the current one, and hands it over ready to batch.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;

use tokenizers::Tokenizer;
use tokio::sync::mpsc;

use super::embed::tokenize_timed;
use super::request::{AliveGuard, Request};
use super::tokenize::{self, Tokenized};
use super::{EngineError, metrics_panic};

/// A request with its texts tokenized, on its way to the engine thread.
pub(super) struct Prepared {
    pub(super) request: Request,
    pub(super) tokenized: Tokenized,
}

/// The tokenizer thread's whole life: tokenize each request (in `pool`), pass it on; ends
/// when every handle is gone or the engine thread has ended.
pub(super) fn run(
    mut receiver: mpsc::Receiver<Request>,
    ready: SyncSender<Prepared>,
    tokenizer: Tokenizer,
    max_length: usize,
    pool: rayon::ThreadPool,
    guard: AliveGuard,
) {
    while let Some(request) = receiver.blocking_recv() {
        let tokenized = {
            let _logging = tracing::dispatcher::set_default(&request.dispatch);
            let _entered = request.span.enter();
            catch_unwind(AssertUnwindSafe(|| {
                // `encode_batch` spreads over the current rayon pool: this one, not the
                // global pool and never a tokio thread.
                pool.install(|| {
                    tokenize_timed(&tokenizer, &request.texts, max_length, request.truncate)
                })
            }))
        };
        let tokenized = match tokenized {
            Ok(tokenized) => tokenized,
            Err(panic) => {
                let message = tokenize::panic_message(&*panic);
                tracing::error!(panic = %message, rows = request.texts.len(),
                    "the engine's tokenizer thread panicked; the model is loaded again for the next request");
                metrics_panic();
                guard.0.store(false, Ordering::Release);
                let _ = request.reply.send(Err(EngineError::Panicked(message)));
                break;
            }
        };
        if let Err(gone) = ready.send(Prepared { request, tokenized }) {
            // The engine thread has ended (a panic): this request cannot run.
            let _ = gone.0.request.reply.send(Err(EngineError::Stopped));
            break;
        }
    }
}
