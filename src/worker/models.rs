//! Model packages on the worker: fetched from S3 once, verified against their sha256, cached
//! on local disk by that hash, and kept loaded (a few at a time).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::Mutex;

use super::TaskError;
use crate::engine::Embedder;
use crate::job::{MANIFEST_FILE, ModelManifest, digest_file};
use crate::metrics;
use crate::settings::EngineSettings;
use crate::storage::{Storage, StorageError};
use crate::uri::S3Uri;

/// Loaded models kept at once; the least recently used is dropped beyond this.
const LOADED_MODELS: usize = 2;
/// How long an evicted engine's thread is waited for: shards still using it keep it running.
const RETIRE_WAIT: Duration = Duration::from_secs(600);

pub struct ModelCache {
    storage: Storage,
    dir: PathBuf,
    engine: EngineSettings,
    loaded: Mutex<Loaded>,
}

/// The loaded models by package key, least recently used first.
#[derive(Default)]
struct Loaded(Vec<(String, Embedder)>);

impl Loaded {
    /// The package's embedder if it is loaded and its engine thread still runs; a dead one
    /// (its thread panicked) is dropped, so the caller loads the model again.
    fn take_alive(&mut self, key: &str) -> Option<Embedder> {
        let position = self.0.iter().position(|(k, _)| k == key)?;
        let entry = self.0.remove(position);
        if !entry.1.is_alive() {
            tracing::warn!(package_key = %key, "dropping a model whose engine thread has ended; loading it again");
            retire(entry.1);
            return None;
        }
        let embedder = entry.1.clone();
        self.0.push(entry);
        Some(embedder)
    }

    fn insert(&mut self, key: String, embedder: Embedder) {
        self.0.retain(|(k, _)| *k != key);
        if self.0.len() >= LOADED_MODELS {
            retire(self.0.remove(0).1);
        }
        self.0.push((key, embedder));
    }
}

/// Joins an engine the cache let go of once its last user is done (in the background, so
/// the caller does not wait; outside a runtime the thread just ends on its own).
fn retire(embedder: Embedder) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let key = embedder.package_key().to_string();
            if !embedder.shutdown(RETIRE_WAIT).await {
                tracing::info!(package_key = %key, "an evicted model is still in use; its engine thread ends when the last user is done");
            }
        });
    }
}

impl ModelCache {
    pub fn new(storage: Storage, dir: PathBuf, engine: EngineSettings) -> Self {
        Self {
            storage,
            dir,
            engine,
            loaded: Mutex::new(Loaded::default()),
        }
    }

    /// Reads a package's manifest; a missing package is a permanent error naming it.
    pub async fn manifest(&self, package: &S3Uri) -> Result<ModelManifest, TaskError> {
        let uri = package.join(MANIFEST_FILE);
        let text = match self.storage.get_bytes(&uri).await {
            Ok(bytes) => bytes,
            Err(StorageError::NotFound { .. }) => {
                return Err(TaskError::permanent(format!(
                    "model package {package}: {} not found (push one with `sluice model push`)",
                    MANIFEST_FILE
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let text = String::from_utf8_lossy(&text);
        ModelManifest::parse(&text)
            .map_err(|e| TaskError::permanent(format!("model package {package}: {e}")))
    }

    /// The package's model, loaded and ready (loaded again if its engine thread died). A
    /// package that cannot work (a `max_length` beyond the model's positions) is a permanent
    /// error naming the package.
    pub async fn get(&self, package: &S3Uri) -> Result<Embedder, TaskError> {
        let manifest = self.manifest(package).await?;
        let sha = manifest.cache_key();
        let mut loaded = self.loaded.lock().await;
        if let Some(embedder) = loaded.take_alive(&sha) {
            metrics::MODEL_CACHE
                .with(metrics::ModelSource::Memory)
                .inc();
            return Ok(embedder);
        }
        let dir = self.fetch(package, &manifest).await?;
        let settings = self.engine.clone();
        let manifest_for_load = manifest.clone();
        let embedder = tokio::task::spawn_blocking(move || {
            Embedder::load(&dir, &manifest_for_load, &settings)
        })
        .await
        .map_err(|e| TaskError::Retryable(format!("model loading thread: {e}")))?
        .map_err(|e| match TaskError::from(e) {
            TaskError::Permanent(message) => {
                TaskError::Permanent(format!("model package {package}: {message}"))
            }
            TaskError::Retryable(message) => {
                TaskError::Retryable(format!("model package {package}: {message}"))
            }
            other => other,
        })?;
        tracing::info!(%package, sha256 = %sha, "model loaded");
        loaded.insert(sha, embedder.clone());
        Ok(embedder)
    }

    /// Serves `embedder` for `package` from now on, as if loaded from it (benches run the
    /// worker's path around an engine of their own this way). Fails like `get` when the
    /// package's manifest cannot be read.
    pub async fn preload(&self, package: &S3Uri, embedder: Embedder) -> Result<(), TaskError> {
        let manifest = self.manifest(package).await?;
        self.loaded
            .lock()
            .await
            .insert(manifest.cache_key(), embedder);
        Ok(())
    }

    /// Lets go of every loaded model and joins their engine threads, waiting at most `wait`
    /// (shards still running after the drain keep theirs). Returns how many did not end.
    pub async fn shutdown(&self, wait: Duration) -> usize {
        let loaded = std::mem::take(&mut self.loaded.lock().await.0);
        let ended =
            futures::future::join_all(loaded.into_iter().map(|(_, e)| e.shutdown(wait))).await;
        let running = ended.iter().filter(|&&ended| !ended).count();
        if running > 0 {
            tracing::warn!(
                running,
                ?wait,
                "engine threads still in use at shutdown; they end with the process"
            );
        }
        running
    }

    /// Downloads the package's files into `<cache>/<cache key>/` unless already there,
    /// checking every file's hash.
    async fn fetch(&self, package: &S3Uri, manifest: &ModelManifest) -> Result<PathBuf, TaskError> {
        let dir = self.dir.join(manifest.cache_key());
        if dir.join(".complete").exists() {
            metrics::MODEL_CACHE.with(metrics::ModelSource::Disk).inc();
            return Ok(dir);
        }
        metrics::MODEL_CACHE
            .with(metrics::ModelSource::Download)
            .inc();
        let staging = self.dir.join(format!(
            ".{}.{}",
            manifest.cache_key(),
            uuid::Uuid::new_v4()
        ));
        let io = |e: std::io::Error, path: &Path| {
            TaskError::Retryable(format!("model cache {}: {e}", path.display()))
        };
        tokio::fs::create_dir_all(&staging)
            .await
            .map_err(|e| io(e, &staging))?;
        if let Err(e) = self.download(package, manifest, &staging).await {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return Err(e);
        }
        tokio::fs::write(staging.join(".complete"), b"")
            .await
            .map_err(|e| io(e, &staging))?;
        match tokio::fs::rename(&staging, &dir).await {
            Ok(()) => {}
            // Another task finished the same download first: theirs is as good as ours.
            Err(_) if dir.join(".complete").exists() => {
                let _ = tokio::fs::remove_dir_all(&staging).await;
            }
            Err(e) => return Err(io(e, &dir)),
        }
        Ok(dir)
    }

    /// Downloads every file of the package into `staging`, checking each hash.
    async fn download(
        &self,
        package: &S3Uri,
        manifest: &ModelManifest,
        staging: &Path,
    ) -> Result<(), TaskError> {
        let io = |e: std::io::Error, path: &Path| {
            TaskError::Retryable(format!("model cache {}: {e}", path.display()))
        };
        for (name, expected) in &manifest.files {
            let target = staging.join(name);
            let uri = package.join(name);
            let mut reader = self.storage.read(&uri).await?;
            let mut file = tokio::fs::File::create(&target)
                .await
                .map_err(|e| io(e, &target))?;
            tokio::io::copy_buf(&mut reader, &mut file)
                .await
                .map_err(|e| TaskError::Retryable(format!("downloading {uri}: {e}")))?;
            tokio::io::AsyncWriteExt::flush(&mut file)
                .await
                .map_err(|e| io(e, &target))?;
            drop(file);
            let check = target.clone();
            let digest = tokio::task::spawn_blocking(move || digest_file(&check))
                .await
                .map_err(|e| TaskError::Retryable(format!("hashing thread: {e}")))?
                .map_err(|e| io(e, &target))?;
            if digest.sha256 != expected.sha256 {
                return Err(TaskError::permanent(format!(
                    "model package {package}: {name} has sha256 {}, the manifest says {}; push the package again",
                    digest.sha256, expected.sha256
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::engine::test_support::{EchoBackend, PanicBackend, manifest, word_level_tokenizer};

    fn start(backend: Box<dyn crate::engine::InferenceBackend>) -> Embedder {
        Embedder::start(
            backend,
            word_level_tokenizer(),
            &manifest(),
            &EngineSettings::default(),
        )
    }

    #[tokio::test]
    async fn a_dead_engine_is_dropped_and_a_live_one_kept() {
        let mut loaded = Loaded::default();
        let poisoned = start(Box::new(PanicBackend { panic_id: 4 }));
        loaded.insert("p".into(), poisoned.clone());
        loaded.insert("e".into(), start(Box::new(EchoBackend)));
        assert!(loaded.take_alive("p").is_some(), "alive before the panic");
        let err = poisoned
            .embed_rows(vec!["d".into()], Arc::new(AtomicBool::new(false)), true)
            .await
            .unwrap_err();
        assert!(
            matches!(err, crate::engine::EngineError::Panicked(_)),
            "{err:?}"
        );
        // The cache no longer hands it out: the caller loads a fresh one.
        assert!(loaded.take_alive("p").is_none());
        assert!(loaded.take_alive("p").is_none(), "dropped, not kept");
        let fresh = start(Box::new(EchoBackend));
        loaded.insert("p".into(), fresh);
        let again = loaded.take_alive("p").expect("the fresh engine");
        assert_eq!(
            again.embed(vec!["d".into()]).await.unwrap(),
            vec![vec![4.0, 1.0]]
        );
        // The other package was untouched.
        let echo = loaded.take_alive("e").expect("kept");
        assert_eq!(
            echo.embed(vec!["b".into()]).await.unwrap(),
            vec![vec![2.0, 1.0]]
        );
        // Least recently used goes first beyond the limit.
        loaded.insert("third".into(), start(Box::new(EchoBackend)));
        assert!(loaded.take_alive("p").is_none());
        assert!(loaded.take_alive("e").is_some());
    }

    /// A task error from a panic is retried, so the next try reaches `get` and a fresh engine.
    #[test]
    fn a_panic_is_retryable_and_an_impossible_package_permanent() {
        let panicked = TaskError::from(crate::engine::EngineError::Panicked("boom".into()));
        assert!(matches!(panicked, TaskError::Retryable(m) if m.contains("boom")));
        let model = TaskError::from(crate::engine::EngineError::Model("max_length".into()));
        assert!(matches!(model, TaskError::Permanent(_)));
    }
}
