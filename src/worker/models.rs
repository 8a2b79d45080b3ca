//! Model packages on the worker: fetched from S3 once, verified against their sha256, cached
//! on local disk by that hash, and kept loaded (a few at a time).

use std::path::{Path, PathBuf};

use tokio::sync::Mutex;

use super::TaskError;
use crate::engine::Embedder;
use crate::engine::package::{self, ModelManifest, digest_file};
use crate::metrics;
use crate::settings::EngineSettings;
use crate::storage::{Storage, StorageError};
use crate::uri::S3Uri;

/// Loaded models kept at once; the least recently used is dropped beyond this.
const LOADED_MODELS: usize = 2;

pub struct ModelCache {
    storage: Storage,
    dir: PathBuf,
    engine: EngineSettings,
    loaded: Mutex<Vec<(String, Embedder)>>,
}

impl ModelCache {
    pub fn new(storage: Storage, dir: PathBuf, engine: EngineSettings) -> Self {
        Self {
            storage,
            dir,
            engine,
            loaded: Mutex::new(Vec::new()),
        }
    }

    /// Reads a package's manifest; a missing package is a permanent error naming it.
    pub async fn manifest(&self, package: &S3Uri) -> Result<ModelManifest, TaskError> {
        let uri = package.join(package::MANIFEST_FILE);
        let text = match self.storage.get_bytes(&uri).await {
            Ok(bytes) => bytes,
            Err(StorageError::NotFound { .. }) => {
                return Err(TaskError::permanent(format!(
                    "model package {package}: {} not found (push one with `sluice model push`)",
                    package::MANIFEST_FILE
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let text = String::from_utf8_lossy(&text);
        ModelManifest::parse(&text)
            .map_err(|e| TaskError::permanent(format!("model package {package}: {e}")))
    }

    /// The package's model, loaded and ready.
    pub async fn get(&self, package: &S3Uri) -> Result<Embedder, TaskError> {
        let manifest = self.manifest(package).await?;
        let sha = manifest.cache_key();
        let mut loaded = self.loaded.lock().await;
        if let Some(position) = loaded.iter().position(|(s, _)| *s == sha) {
            let entry = loaded.remove(position);
            let embedder = entry.1.clone();
            loaded.push(entry);
            metrics::MODEL_CACHE.with_label_values(&["memory"]).inc();
            return Ok(embedder);
        }
        let dir = self.fetch(package, &manifest).await?;
        let settings = self.engine.clone();
        let manifest_for_load = manifest.clone();
        let embedder = tokio::task::spawn_blocking(move || {
            Embedder::load(&dir, &manifest_for_load, &settings)
        })
        .await
        .map_err(|e| TaskError::Retryable(format!("model loading thread: {e}")))??;
        tracing::info!(%package, sha256 = %sha, "model loaded");
        if loaded.len() >= LOADED_MODELS {
            loaded.remove(0);
        }
        loaded.push((sha, embedder.clone()));
        Ok(embedder)
    }

    /// Downloads the package's files into `<cache>/<cache key>/` unless already there,
    /// checking every file's hash.
    async fn fetch(&self, package: &S3Uri, manifest: &ModelManifest) -> Result<PathBuf, TaskError> {
        let dir = self.dir.join(manifest.cache_key());
        if dir.join(".complete").exists() {
            metrics::MODEL_CACHE.with_label_values(&["disk"]).inc();
            return Ok(dir);
        }
        metrics::MODEL_CACHE.with_label_values(&["download"]).inc();
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
