//! The model package a training job leaves: the frozen encoder's files, the trained head as
//! `head.onnx`, the labels, and the training report; bulk inference with
//! `task = "classify"` uses it as it is.

use sha2::{Digest, Sha256};

use crate::job::{
    FileDigest, HEAD_FILE, MANIFEST_FILE, MODEL_FILE, ModelManifest, ModelTask, TOKENIZER_FILE,
};
use crate::storage::{Storage, StorageError};
use crate::uri::S3Uri;

/// The report written beside the package (not part of what workers load).
pub const REPORT_FILE: &str = "training-report.json";

pub struct ClassifierPackage<'a> {
    pub name: &'a str,
    /// The encoder's package and manifest: its files are copied, not re-uploaded.
    pub encoder: &'a S3Uri,
    pub encoder_manifest: &'a ModelManifest,
    /// The exported head (`build_inference_graph`), serialised.
    pub head: Vec<u8>,
    /// Class names in the head's output order.
    pub labels: Vec<String>,
    pub report: serde_json::Value,
}

/// Writes the package under `target`; the manifest goes last, so a reader never sees a
/// package whose files are not all there.
pub async fn write_classifier_package(
    storage: &Storage,
    package: &ClassifierPackage<'_>,
    target: &S3Uri,
) -> Result<ModelManifest, StorageError> {
    let target = target.as_prefix();
    let encoder = package.encoder.as_prefix();
    for file in [MODEL_FILE, TOKENIZER_FILE] {
        storage
            .copy(&encoder.join(file), &target.join(file), None)
            .await?;
    }
    storage
        .put(
            &target.join(HEAD_FILE),
            package.head.clone(),
            "application/octet-stream",
        )
        .await?;
    let report = serde_json::to_vec_pretty(&package.report).expect("report serialises");
    storage
        .put(&target.join(REPORT_FILE), report, "application/json")
        .await?;
    let mut manifest = package.encoder_manifest.clone();
    manifest.name = package.name.to_string();
    manifest.task = ModelTask::Classify;
    manifest.labels = package.labels.clone();
    manifest
        .files
        .retain(|name, _| name == MODEL_FILE || name == TOKENIZER_FILE);
    manifest.files.insert(
        HEAD_FILE.to_string(),
        FileDigest {
            sha256: hex::encode(Sha256::digest(&package.head)),
            size: package.head.len() as u64,
        },
    );
    storage
        .put(
            &target.join(MANIFEST_FILE),
            manifest.to_toml().into_bytes(),
            "application/toml",
        )
        .await?;
    Ok(manifest)
}
