//! `sluice model push DIR s3://…`: checks a local model folder, writes its manifest with the
//! sha256 of every file, and uploads it (manifest last, so a half-pushed package is never
//! seen as complete).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, anyhow, bail};

use super::model_config::{FolderConfig, Said, read_folder};
use crate::engine::{
    PositionLimit, check_max_length, external_data_files, graph_dimension,
    position_limit_from_config, position_limit_from_onnx,
};
use crate::job::{
    FileDigest, HEAD_FILE, IoNames, MANIFEST_FILE, MODEL_FILE, ModelManifest, ModelTask, Pooling,
    TOKENIZER_FILE, digest_file,
};
use crate::settings::EngineSettings;
use crate::storage::Storage;
use crate::uri::S3Uri;

/// The `max_length` of a model that states no limit anywhere.
const UNSTATED_MAX_LENGTH: usize = 512;

/// Options for a folder that has no `sluice-model.toml` of its own; each one left out is
/// read from the model's own configuration, and one that disagrees with it wins with a
/// warning.
#[derive(Debug, Clone)]
pub struct PushOptions {
    pub name: Option<String>,
    pub max_length: Option<usize>,
    pub dimension: Option<usize>,
    pub pooling: Option<Pooling>,
    pub normalize: Option<bool>,
    pub precision: String,
    /// The ONNX Runtime the model is verified with before upload (`ort_dylib_path` set).
    pub engine: EngineSettings,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            name: None,
            max_length: None,
            dimension: None,
            pooling: None,
            normalize: None,
            precision: "fp32".into(),
            engine: EngineSettings::default(),
        }
    }
}

/// A package as pushed (or about to be), and what the user should know about it.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub manifest: ModelManifest,
    /// Flags that overrode what the model says, settings nothing stated, and the like.
    pub warnings: Vec<String>,
}

pub async fn push(
    storage: &Storage,
    dir: &Path,
    target: &S3Uri,
    options: &PushOptions,
) -> anyhow::Result<Pushed> {
    let (folder, chosen) = (dir.to_path_buf(), options.clone());
    // Reading the graph and running it once are blocking.
    let pushed = tokio::task::spawn_blocking(move || manifest_for_dir(&folder, &chosen))
        .await
        .context("the model checking thread")??;
    let text = pushed.manifest.to_toml();
    let target = target.as_prefix();
    for name in pushed.manifest.files.keys() {
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
    Ok(pushed)
}

/// The manifest a local model folder gets: its own `sluice-model.toml` (task, pooling,
/// names), or what the model's configuration files say overridden by `options`; every
/// file's digest (external-data files included) computed afresh; and the model verified by
/// running one text through it. Blocking.
pub fn manifest_for_dir(dir: &Path, options: &PushOptions) -> anyhow::Result<Pushed> {
    for required in [MODEL_FILE, TOKENIZER_FILE] {
        if !dir.join(required).is_file() {
            bail!(
                "{}: no {required} in the folder (a model package needs {MODEL_FILE} and {TOKENIZER_FILE})",
                dir.display()
            );
        }
    }
    let mut warnings = Vec::new();
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
        Err(_) => from_config(dir, options, &mut warnings)?,
    };
    let mut files: BTreeMap<String, FileDigest> = BTreeMap::new();
    for name in package_files(dir, &manifest)? {
        let digest = digest_file(&dir.join(&name))
            .with_context(|| format!("reading {}/{name}", dir.display()))?;
        files.insert(name, digest);
    }
    // Check the tokenizer loads, and the model takes inputs that long, before anyone else
    // tries.
    package_check_tokenizer(dir, manifest.max_length)?;
    check_positions(dir, manifest.max_length)?;
    manifest.files = files;
    ModelManifest::parse(&manifest.to_toml()).map_err(anyhow::Error::msg)?;
    verify(dir, &manifest, &options.engine)?;
    for warning in &warnings {
        tracing::warn!(model = %dir.display(), "{warning}");
    }
    Ok(Pushed { manifest, warnings })
}

/// The files a package uploads: the model, its tokenizer, a classifier's head, and every
/// external-data file the graph reads its weights from (plus a `model.onnx_data` beside it).
fn package_files(dir: &Path, manifest: &ModelManifest) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = vec![MODEL_FILE.into(), TOKENIZER_FILE.into()];
    if manifest.task == ModelTask::Classify {
        names.push(HEAD_FILE.into());
    }
    let model = dir.join(MODEL_FILE);
    let mut external =
        external_data_files(&model).with_context(|| format!("reading {}", model.display()))?;
    if dir.join("model.onnx_data").is_file() && !external.iter().any(|f| f == "model.onnx_data") {
        external.push("model.onnx_data".into());
    }
    for name in external {
        let plain = !name.is_empty() && !name.contains(['/', '\\']) && name != "..";
        if !plain {
            bail!(
                "{}: its weights are in {name:?}, not a file beside it; a package is one flat folder: save the model with its external data as a plain file name (onnx.save(m, path, save_as_external_data=True, location=\"model.onnx_data\"))",
                model.display()
            );
        }
        if !dir.join(&name).is_file() {
            bail!(
                "{}: its weights are in {name}, which is not in the folder; copy it beside {MODEL_FILE}",
                model.display()
            );
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// Runs one text through the model as the manifest describes it, before anything is uploaded.
fn verify(dir: &Path, manifest: &ModelManifest, engine: &EngineSettings) -> anyhow::Result<()> {
    if engine.ort_dylib_path.is_empty() {
        bail!(
            "model push runs the model once before uploading it: set ORT_DYLIB_PATH (or engine.ort_dylib_path) to libonnxruntime.so.1.31.1"
        );
    }
    crate::engine::verify(dir, manifest, engine).map_err(|e| {
        anyhow!(
            "{}: running one text through the model as the package describes it (dimension {}, pooling {}) failed: {e}; fix the folder's config or pass --dimension / --pooling",
            dir.display(),
            manifest.dimension,
            manifest.pooling.as_str()
        )
    })?;
    Ok(())
}

/// A flag, else what the folder says; a flag that disagrees wins with a warning.
fn settle<T: PartialEq + std::fmt::Debug + Copy>(
    flag: (&str, Option<T>),
    said: Option<&Said<T>>,
    warnings: &mut Vec<String>,
) -> Option<T> {
    let (name, flag) = flag;
    if let (Some(flag), Some(said)) = (flag, said)
        && flag != said.value
    {
        warnings.push(format!(
            "--{name} {flag:?} overrides {:?} from {}; the model says otherwise, so check the flag is what you mean",
            said.value, said.source
        ));
    }
    flag.or(said.map(|s| s.value))
}

/// The manifest of a folder without `sluice-model.toml`: its config files and the flags.
fn from_config(
    dir: &Path,
    options: &PushOptions,
    warnings: &mut Vec<String>,
) -> anyhow::Result<ModelManifest> {
    let config: FolderConfig = read_folder(dir)?;
    let limit = position_limit(dir)?.map(|limit| match &config.tokenizer_max_length {
        Some(t) if t.value < limit.positions => PositionLimit {
            positions: t.value,
            source: t.source.clone(),
        },
        _ => limit,
    });
    let stated = limit.as_ref().map(|l| Said {
        value: l.positions,
        source: l.source.clone(),
    });
    let max_length = settle(("max-length", options.max_length), stated.as_ref(), warnings)
        .unwrap_or_else(|| {
            warnings.push(format!(
                "the model states no position limit; max_length = {UNSTATED_MAX_LENGTH} (pass --max-length to choose)"
            ));
            UNSTATED_MAX_LENGTH
        });
    let pooling = settle(
        ("pooling", options.pooling),
        config.pooling.as_ref(),
        warnings,
    )
    .unwrap_or_default();
    let normalize = settle(
        ("normalize", options.normalize),
        config.normalize.as_ref(),
        warnings,
    )
    .unwrap_or(true);
    if let Some(dense) = &config.dense {
        warnings.push(format!(
            "modules.json has a Dense module ({dense}) after pooling, which sluice does not apply to the token output; export the model with its sentence_embedding output and push it with --pooling none if the dense layer matters"
        ));
    }
    let mut dimension = settle(
        ("dimension", options.dimension),
        config.hidden_size.as_ref(),
        warnings,
    );
    if dimension.is_none() && !options.engine.ort_dylib_path.is_empty() {
        dimension = graph_dimension(
            &dir.join(MODEL_FILE),
            &IoNames::default(),
            pooling,
            &options.engine,
        )
        .map_err(|e| anyhow!("{}: reading the model's outputs: {e}", dir.display()))?;
    }
    let Some(dimension) = dimension else {
        bail!(
            "{}: the embedding size is stated nowhere (no config.json hidden_size, no fixed output dimension in the graph); pass --dimension",
            dir.display()
        );
    };
    Ok(ModelManifest {
        name: options.name.clone().unwrap_or_else(|| {
            dir.file_name()
                .map_or("model".into(), |n| n.to_string_lossy().into_owned())
        }),
        task: ModelTask::Embed,
        precision: options.precision.clone(),
        max_length,
        pooling,
        normalize,
        dimension,
        pad_id: config.pad_id.map(|p| p.value),
        labels: Vec::new(),
        names: IoNames::default(),
        files: BTreeMap::new(),
    })
}

fn package_check_tokenizer(dir: &Path, max_length: usize) -> anyhow::Result<()> {
    crate::engine::load_tokenizer(&dir.join(TOKENIZER_FILE), max_length)?;
    Ok(())
}

/// The model's positions: the tighter of its graph's position-embedding table and a
/// `config.json`'s `max_position_embeddings`; `None` when neither says.
fn position_limit(dir: &Path) -> anyhow::Result<Option<PositionLimit>> {
    let model = dir.join(MODEL_FILE);
    let graph =
        position_limit_from_onnx(&model).with_context(|| format!("reading {}", model.display()))?;
    let config =
        position_limit_from_config(&dir.join("config.json")).map_err(anyhow::Error::msg)?;
    Ok(match graph {
        Some(graph) => Some(graph.tighter(config)),
        None => config,
    })
}

/// Refuses a `max_length` beyond the model's positions.
fn check_positions(dir: &Path, max_length: usize) -> anyhow::Result<()> {
    let Some(limit) = position_limit(dir)? else {
        tracing::warn!(model = %dir.display(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn options(max_length: usize, ort: &str) -> PushOptions {
        let mut options = PushOptions {
            max_length: Some(max_length),
            dimension: Some(384),
            precision: "int8".into(),
            ..Default::default()
        };
        options.engine.ort_dylib_path = ort.into();
        options
    }

    /// The real model folder (when the suite exports it): 512 positions.
    #[test]
    fn a_max_length_beyond_the_positions_is_refused_at_push() {
        let (Ok(model_dir), Ok(ort)) = (
            std::env::var("SLUICE_TEST_MODEL_DIR"),
            std::env::var("SLUICE_TEST_ORT_DYLIB"),
        ) else {
            return;
        };
        let options = |max_length| options(max_length, &ort);
        let model_dir = Path::new(&model_dir);
        let dir = tempfile::tempdir().unwrap();
        for name in [MODEL_FILE, TOKENIZER_FILE] {
            std::os::unix::fs::symlink(model_dir.join(name), dir.path().join(name)).unwrap();
        }
        assert_eq!(
            manifest_for_dir(dir.path(), &options(512))
                .unwrap()
                .manifest
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
