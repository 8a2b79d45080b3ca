//! `sluice model push DIR s3://…`: checks a local model folder, writes its manifest with the
//! sha256 of every file, and uploads it (manifest last, so a half-pushed package is never
//! seen as complete).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, anyhow, bail};

use crate::engine::{check_max_length, position_limit_from_config, position_limit_from_onnx};
use crate::job::{
    FileDigest, HEAD_FILE, IoNames, MANIFEST_FILE, MODEL_FILE, ModelManifest, ModelTask, Pooling,
    TOKENIZER_FILE, digest_file,
};
use crate::storage::Storage;
use crate::uri::S3Uri;

/// Options for a folder that has no `sluice-model.toml` of its own.
#[derive(Debug, Clone)]
pub struct PushOptions {
    pub name: Option<String>,
    pub max_length: usize,
    pub dimension: usize,
    pub precision: String,
}

pub async fn push(
    storage: &Storage,
    dir: &Path,
    target: &S3Uri,
    options: &PushOptions,
) -> anyhow::Result<ModelManifest> {
    let manifest = manifest_for_dir(dir, options)?;
    let text = manifest.to_toml();
    let target = target.as_prefix();
    let mut names = vec![MODEL_FILE, TOKENIZER_FILE];
    if manifest.task == ModelTask::Classify {
        names.push(HEAD_FILE);
    }
    for name in names {
        storage
            .put_file(&target.join(name), &dir.join(name))
            .await
            .with_context(|| format!("uploading {name}"))?;
    }
    storage
        .put(
            &target.join(MANIFEST_FILE),
            text.into_bytes(),
            "application/toml",
        )
        .await
        .context("uploading the manifest")?;
    Ok(manifest)
}

/// The manifest a local model folder gets: its own `sluice-model.toml` (task, pooling,
/// names) or `options`, with every file's digest computed afresh and the tokenizer checked.
pub fn manifest_for_dir(dir: &Path, options: &PushOptions) -> anyhow::Result<ModelManifest> {
    for required in [MODEL_FILE, TOKENIZER_FILE] {
        if !dir.join(required).is_file() {
            bail!(
                "{}: no {required} in the folder (a model package needs {MODEL_FILE} and {TOKENIZER_FILE})",
                dir.display()
            );
        }
    }
    let mut manifest = match std::fs::read_to_string(dir.join(MANIFEST_FILE)) {
        Ok(text) => {
            // An existing manifest supplies task, pooling and names; digests are recomputed.
            let mut value: toml::Value = toml::from_str(&text)
                .with_context(|| format!("{}/{MANIFEST_FILE}", dir.display()))?;
            if let Some(table) = value.as_table_mut() {
                table.remove("files");
            }
            let mut with_files = value.as_table().cloned().unwrap_or_default();
            with_files.insert("files".into(), toml::Value::Table(Default::default()));
            toml::Value::Table(with_files)
                .try_into::<ModelManifest>()
                .with_context(|| format!("{}/{MANIFEST_FILE}", dir.display()))?
        }
        Err(_) => ModelManifest {
            name: options.name.clone().unwrap_or_else(|| {
                dir.file_name()
                    .map_or("model".into(), |n| n.to_string_lossy().into_owned())
            }),
            task: ModelTask::Embed,
            precision: options.precision.clone(),
            max_length: options.max_length,
            pooling: pooling_from_sentence_transformers(dir)?,
            normalize: true,
            dimension: options.dimension,
            labels: Vec::new(),
            names: IoNames::default(),
            files: BTreeMap::new(),
        },
    };
    let mut files: BTreeMap<String, FileDigest> = BTreeMap::new();
    let mut names = vec![MODEL_FILE, TOKENIZER_FILE];
    if manifest.task == ModelTask::Classify {
        names.push(HEAD_FILE);
    }
    for name in names {
        let digest = digest_file(&dir.join(name))
            .with_context(|| format!("reading {}/{name}", dir.display()))?;
        files.insert(name.to_string(), digest);
    }
    // Check the tokenizer loads, and the model takes inputs that long, before anyone else
    // tries.
    package_check_tokenizer(dir, manifest.max_length)?;
    check_positions(dir, manifest.max_length)?;
    manifest.files = files;
    ModelManifest::parse(&manifest.to_toml()).map_err(anyhow::Error::msg)?;
    Ok(manifest)
}

fn package_check_tokenizer(dir: &Path, max_length: usize) -> anyhow::Result<()> {
    crate::engine::load_tokenizer(&dir.join(TOKENIZER_FILE), max_length)?;
    Ok(())
}

/// Refuses a `max_length` beyond the model's positions: the tighter of its graph's
/// position-embedding table and a `config.json`'s `max_position_embeddings`.
fn check_positions(dir: &Path, max_length: usize) -> anyhow::Result<()> {
    let model = dir.join(MODEL_FILE);
    let graph =
        position_limit_from_onnx(&model).with_context(|| format!("reading {}", model.display()))?;
    let config =
        position_limit_from_config(&dir.join("config.json")).map_err(anyhow::Error::msg)?;
    let limit = match graph {
        Some(graph) => Some(graph.tighter(config)),
        None => config,
    };
    let Some(limit) = limit else {
        tracing::warn!(model = %model.display(),
            "no position limit found in the model (or a config.json): max_length is not checked");
        return Ok(());
    };
    check_max_length(max_length, &limit).map_err(|e| {
        anyhow!(
            "{}: {e} (max_length comes from --max-length or the folder's {MANIFEST_FILE})",
            dir.display()
        )
    })
}

/// sentence-transformers folders say their pooling in `1_Pooling/config.json` (or the
/// `pooling_config.json` our asset script copies out): honour it.
fn pooling_from_sentence_transformers(dir: &Path) -> anyhow::Result<Pooling> {
    for candidate in ["pooling_config.json", "1_Pooling/config.json"] {
        let path = dir.join(candidate);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let config: serde_json::Value =
                serde_json::from_str(&text).with_context(|| path.display().to_string())?;
            let flag = |name: &str| config.get(name).and_then(|v| v.as_bool()).unwrap_or(false);
            if flag("pooling_mode_mean_tokens") {
                return Ok(Pooling::Mean);
            }
            if flag("pooling_mode_cls_token") {
                return Ok(Pooling::Cls);
            }
            bail!(
                "{}: only mean and CLS pooling are supported",
                path.display()
            );
        }
    }
    Ok(Pooling::Mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(max_length: usize) -> PushOptions {
        PushOptions {
            name: None,
            max_length,
            dimension: 384,
            precision: "int8".into(),
        }
    }

    /// The real model folder (when the suite exports it): 512 positions.
    #[test]
    fn a_max_length_beyond_the_positions_is_refused_at_push() {
        let Ok(model_dir) = std::env::var("SLUICE_TEST_MODEL_DIR") else {
            return;
        };
        let model_dir = Path::new(&model_dir);
        let dir = tempfile::tempdir().unwrap();
        for name in [MODEL_FILE, TOKENIZER_FILE] {
            std::os::unix::fs::symlink(model_dir.join(name), dir.path().join(name)).unwrap();
        }
        assert_eq!(
            manifest_for_dir(dir.path(), &options(512))
                .unwrap()
                .max_length,
            512
        );
        let err = manifest_for_dir(dir.path(), &options(1024))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_length = 1024 is larger than the model's 512 token positions")
                && err.contains("use max_length = 512 or less"),
            "{err}"
        );
        // A config.json that says less binds too.
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"model_type": "bert", "max_position_embeddings": 256}"#,
        )
        .unwrap();
        let err = manifest_for_dir(dir.path(), &options(512))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "the model's 256 token positions (max_position_embeddings in config.json)"
            ),
            "{err}"
        );
    }
}
