//! The packages on local disk: the source's files fetched and checked against their
//! sha256, the int8 files written beside them, and the int8 package uploaded (manifest last).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::super::{TaskError, WorkerContext};
use crate::compress::{QuantizeOptions, QuantizeSummary, quantize_model};
use crate::job::{FileDigest, HEAD_FILE, MANIFEST_FILE, MODEL_FILE, ModelManifest, ModelTask};
use crate::uri::S3Uri;

/// A scratch folder removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(job_id: &str) -> Result<Self, TaskError> {
        let dir =
            std::env::temp_dir().join(format!("sluice-compress-{job_id}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("source"))
            .and_then(|()| std::fs::create_dir_all(dir.join("int8")))
            .map_err(|e| TaskError::Retryable(format!("scratch folder {}: {e}", dir.display())))?;
        Ok(Self(dir))
    }

    pub fn source(&self) -> PathBuf {
        self.0.join("source")
    }

    pub fn int8(&self) -> PathBuf {
        self.0.join("int8")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Downloads every file the manifest lists into `dir`, checking each one's sha256.
pub async fn fetch(
    ctx: &WorkerContext,
    package: &S3Uri,
    manifest: &ModelManifest,
    dir: &Path,
) -> Result<(), TaskError> {
    for (name, digest) in &manifest.files {
        let bytes = ctx.storage.get_bytes(&package.join(name)).await?;
        let sha = hex::encode(Sha256::digest(&bytes));
        if sha != digest.sha256 {
            return Err(TaskError::permanent(format!(
                "model package {package}: {name} has sha256 {sha}, its manifest says {}; push the package again",
                digest.sha256
            )));
        }
        let path = dir.join(name);
        tokio::fs::write(&path, bytes)
            .await
            .map_err(|e| TaskError::Retryable(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// The graphs the rewrite quantizes: the encoder, and a classifier's head.
pub fn graphs(manifest: &ModelManifest) -> Vec<&'static str> {
    match manifest.task {
        ModelTask::Embed => vec![MODEL_FILE],
        ModelTask::Classify => vec![MODEL_FILE, HEAD_FILE],
    }
}

/// Quantizes the package's graphs from `source` into `int8` (blocking: CPU-heavy) and
/// returns the int8 package's manifest and what each rewrite did.
pub fn quantize(
    manifest: &ModelManifest,
    name: &str,
    source: &Path,
    int8: &Path,
    options: QuantizeOptions,
) -> Result<(ModelManifest, Vec<(String, QuantizeSummary)>), TaskError> {
    let mut out = manifest.clone();
    out.name = name.to_string();
    out.precision = "int8".into();
    // External data is brought inline by the rewrite: the int8 package needs none.
    out.files
        .retain(|file, _| !file.ends_with(".onnx_data") && !file.ends_with(".data"));
    let mut summaries = Vec::new();
    for file in graphs(manifest) {
        let path = source.join(file);
        let bytes = std::fs::read(&path)
            .map_err(|e| TaskError::Retryable(format!("{}: {e}", path.display())))?;
        let (quantized, summary) = quantize_model(&bytes, source, file, options)
            .map_err(|e| TaskError::permanent(format!("model package: {e}")))?;
        let target = int8.join(file);
        std::fs::write(&target, &quantized)
            .map_err(|e| TaskError::Retryable(format!("{}: {e}", target.display())))?;
        out.files.insert(
            file.to_string(),
            FileDigest {
                sha256: hex::encode(Sha256::digest(&quantized)),
                size: quantized.len() as u64,
            },
        );
        summaries.push((file.to_string(), summary));
    }
    for file in out.files.keys() {
        if !int8.join(file).exists() {
            let (from, to) = (source.join(file), int8.join(file));
            std::fs::copy(&from, &to)
                .map_err(|e| TaskError::Retryable(format!("{}: {e}", to.display())))?;
        }
    }
    Ok((out, summaries))
}

/// Uploads the int8 package from `int8` to `target`: its files, the report, and the
/// manifest last, so a reader never sees a package whose files are not all there.
pub async fn upload(
    ctx: &WorkerContext,
    int8: &Path,
    manifest: &ModelManifest,
    report: &serde_json::Value,
    target: &S3Uri,
) -> Result<(), TaskError> {
    let target = target.as_prefix();
    for file in manifest.files.keys() {
        let path = int8.join(file);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| TaskError::Retryable(format!("{}: {e}", path.display())))?;
        ctx.storage
            .put(&target.join(file), bytes, "application/octet-stream")
            .await?;
    }
    let report = serde_json::to_vec_pretty(report).expect("report serialises");
    ctx.storage
        .put(&target.join(super::REPORT_FILE), report, "application/json")
        .await?;
    ctx.storage
        .put(
            &target.join(MANIFEST_FILE),
            manifest.to_toml().into_bytes(),
            "application/toml",
        )
        .await?;
    Ok(())
}
