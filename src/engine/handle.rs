//! `Embedder`: the cloneable async handle to a model's engine thread, and the requests it
//! sends there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokenizers::Tokenizer;
use tokio::sync::{mpsc, oneshot};

use super::load::truncate_at;
use super::request::{AliveGuard, EngineConfig, Request};
use super::thread::run;
use super::{EngineError, InferenceBackend, OrtHead, RowOutput};
use crate::job::ModelManifest;
use crate::settings::EngineSettings;

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
    /// The engine thread, joined by whichever handle's `shutdown` finds it ended. Declared
    /// after `requests`, so a handle lets go of its sender first.
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Embedder {
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
            pad_id: manifest.pad_id.map_or(0, i64::from),
            max_length: manifest.max_length,
        };
        // Capacity 1: one request waits while the tokenizer thread prepares the next and the
        // engine runs the current one, so the model never idles between requests and memory
        // stays bounded.
        let (requests, receiver) = mpsc::channel::<Request>(1);
        // A rendezvous: the tokenizer thread is at most one request ahead of the engine.
        let (ready, prepared) = std::sync::mpsc::sync_channel(0);
        let sha = &manifest.model_sha256()[..8.min(manifest.model_sha256().len())];
        let alive = Arc::new(AtomicBool::new(true));
        let guard = AliveGuard(alive.clone());
        let threads = settings.tokenize_threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("sluice-tokenize-{i}"))
            .build()
            .expect("starting the tokenizer pool");
        let prep_guard = AliveGuard(alive.clone());
        let prep_tokenizer = tokenizer.clone();
        let max_length = config.max_length;
        std::thread::Builder::new()
            .name(format!("sluice-prep-{sha}"))
            .spawn(move || {
                super::prep::run(
                    receiver,
                    ready,
                    prep_tokenizer,
                    max_length,
                    pool,
                    prep_guard,
                )
            })
            .expect("spawning the engine's tokenizer thread");
        let thread = std::thread::Builder::new()
            .name(format!("sluice-engine-{sha}"))
            .spawn(move || run(prepared, backend, head, tokenizer, config, guard))
            .expect("spawning the engine thread");
        Self {
            requests,
            dimension: manifest.dimension,
            model_sha256: manifest.model_sha256().into(),
            package_key: manifest.cache_key().into(),
            labels: manifest.labels.clone().into(),
            alive,
            thread: Arc::new(Mutex::new(Some(thread))),
        }
    }

    /// Lets go of this handle and waits up to `wait` for the engine thread to end, then
    /// joins it. The thread ends once every clone is gone (after the request it is
    /// running), so `false` means another clone is still in use or a request outlasted
    /// `wait`: the thread then ends on its own when the last clone is dropped. A thread
    /// that ended in a panic is joined the same way.
    pub async fn shutdown(self, wait: Duration) -> bool {
        let thread = self.thread.clone();
        drop(self);
        let deadline = Instant::now() + wait;
        let lock = || thread.lock().unwrap_or_else(PoisonError::into_inner);
        // Polled rather than joined: `join` blocks, and would wait on another clone forever.
        let mut pause = Duration::from_millis(1);
        while !lock().as_ref().is_none_or(JoinHandle::is_finished) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        let ended = lock().take();
        if let Some(ended) = ended
            && let Err(panic) = ended.join()
        {
            tracing::warn!(panic = %super::tokenize::panic_message(&*panic),
                "the engine thread had panicked");
        }
        true
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
        self.send_rows(texts, stop, truncate).await?.wait().await
    }

    /// The first half of `embed_rows`: queues the request (waiting while the engine's queue
    /// is full) and returns its reply to await later, so a caller can queue the next
    /// request while this one runs. Requests are served in the order sent.
    pub async fn send_rows(
        &self,
        texts: Vec<String>,
        stop: Arc<AtomicBool>,
        truncate: bool,
    ) -> Result<RowsReply, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request {
                texts,
                stop,
                truncate,
                reply,
                span: tracing::Span::current(),
                dispatch: tracing::dispatcher::get_default(tracing::Dispatch::clone),
            })
            .await
            .map_err(|_| EngineError::Stopped)?;
        Ok(RowsReply(answer))
    }
}

/// The answer to a queued `send_rows` request.
pub struct RowsReply(oneshot::Receiver<Result<Vec<RowOutput>, EngineError>>);

impl RowsReply {
    /// One `RowOutput` per text, in input order (see `Embedder::embed_rows`).
    pub async fn wait(self) -> Result<Vec<RowOutput>, EngineError> {
        self.0.await.map_err(|_| EngineError::Stopped)?
    }
}
