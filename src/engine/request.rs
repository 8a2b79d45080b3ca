//! What the handle and the engine thread pass each other: the engine's knobs, one request
//! with its reply channel, and the guard that marks the engine dead when its thread ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::oneshot;

use super::{EngineError, RowOutput};
use crate::job::Pooling;

/// Engine-wide knobs the thread needs.
#[derive(Debug, Clone)]
pub(super) struct EngineConfig {
    pub(super) max_batch_rows: usize,
    pub(super) max_batch_tokens: usize,
    pub(super) pooling: Pooling,
    pub(super) normalize: bool,
    pub(super) dimension: usize,
    /// Id written at padded positions (the package's `pad_id`, else 0).
    pub(super) pad_id: i64,
    /// The package's `max_length`, named when a row is refused for it.
    pub(super) max_length: usize,
}

/// One call of `Embedder::embed`, served on the engine thread.
pub(super) struct Request {
    pub(super) texts: Vec<String>,
    /// Checked before every batch, so a cancel or shutdown takes effect within one batch.
    pub(super) stop: Arc<AtomicBool>,
    /// Cut over-long texts (and flag them) instead of failing their rows.
    pub(super) truncate: bool,
    pub(super) reply: oneshot::Sender<Result<Vec<RowOutput>, EngineError>>,
    /// The caller's span, entered on the engine thread while serving, so what the engine
    /// logs there (an out-of-memory halving, a panic) names the caller's job and shard.
    pub(super) span: tracing::Span,
    /// The caller's subscriber: the engine thread logs where the caller would (the global
    /// one in the service; a test's own in tests).
    pub(super) dispatch: tracing::Dispatch,
}

/// Clears the engine's `alive` flag however its thread ends.
pub(super) struct AliveGuard(pub(super) Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
