//! Model packages: the `sluice-model.toml` manifest that sits beside `model.onnx` and
//! `tokenizer.json`, with the sha256 of each file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MANIFEST_FILE: &str = "sluice-model.toml";
pub const MODEL_FILE: &str = "model.onnx";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// A classifier package's head: `features` → `probabilities` (exported by a training job).
pub const HEAD_FILE: &str = "head.onnx";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    pub name: String,
    pub task: ModelTask,
    /// Weights as stored: `fp32`, `fp16` or `int8`.
    #[serde(default = "default_precision")]
    pub precision: String,
    /// Rows are truncated to this many tokens.
    pub max_length: usize,
    #[serde(default)]
    pub pooling: Pooling,
    /// L2-normalise embeddings.
    #[serde(default = "yes")]
    pub normalize: bool,
    /// Embedding size, checked against the model's output.
    pub dimension: usize,
    /// Token id that pads a batch's shorter rows (the tokenizer's pad token); 0 when absent.
    /// Padded positions are masked, so it matters only to models that read them anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_id: Option<u32>,
    /// Class names of a classifier package, in the head's output order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Graph input/output names; left out, they are read from the model by convention
    /// (`input_ids`, `attention_mask`, `token_type_ids`, first output).
    #[serde(default)]
    pub names: IoNames,
    /// sha256 and size of every file in the package.
    pub files: BTreeMap<String, FileDigest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelTask {
    /// Sentence embeddings.
    Embed,
    /// The encoder followed by a trained head: a label and class probabilities per text.
    Classify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean of the token vectors under the attention mask (sentence-transformers' default).
    #[default]
    Mean,
    /// The first token's vector.
    Cls,
    /// The last token under the attention mask (decoder-style embedders such as Qwen or
    /// e5-mistral; rows are padded on the right).
    LastToken,
    /// The model's output already is one vector per row (`[rows, dimension]`): taken as is.
    None,
}

impl Pooling {
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::LastToken => "last_token",
            Pooling::None => "none",
        }
    }
}

impl std::str::FromStr for Pooling {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "last_token" => Ok(Pooling::LastToken),
            "none" => Ok(Pooling::None),
            other => Err(format!(
                "unknown pooling `{other}` (expected mean, cls, last_token or none)"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IoNames {
    pub input_ids: Option<String>,
    pub attention_mask: Option<String>,
    pub token_type_ids: Option<String>,
    pub output: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigest {
    pub sha256: String,
    pub size: u64,
}

fn default_precision() -> String {
    "fp32".into()
}

fn yes() -> bool {
    true
}

impl ModelManifest {
    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: ModelManifest =
            toml::from_str(text).map_err(|e| format!("{MANIFEST_FILE}: {e}"))?;
        // Names become paths in every worker's model cache: plain file names only, so a
        // package can never write outside its own folder there.
        for name in manifest.files.keys() {
            let plain = !name.is_empty()
                && name != "."
                && name != ".."
                && !name.contains(['/', '\\', '\0']);
            if !plain {
                return Err(format!(
                    "{MANIFEST_FILE}: [files] entry {name:?} is not a plain file name (no folders, `..` or absolute paths)"
                ));
            }
        }
        for required in [MODEL_FILE, TOKENIZER_FILE] {
            if !manifest.files.contains_key(required) {
                return Err(format!(
                    "{MANIFEST_FILE}: [files] has no entry for {required}"
                ));
            }
        }
        if manifest.task == ModelTask::Classify {
            if !manifest.files.contains_key(HEAD_FILE) {
                return Err(format!(
                    "{MANIFEST_FILE}: a classify package needs [files] entry {HEAD_FILE}"
                ));
            }
            if manifest.labels.len() < 2 {
                return Err(format!(
                    "{MANIFEST_FILE}: a classify package needs at least two labels"
                ));
            }
        }
        if manifest.max_length == 0 || manifest.dimension == 0 {
            return Err(format!(
                "{MANIFEST_FILE}: max_length and dimension must be positive"
            ));
        }
        Ok(manifest)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("manifest serialises")
    }

    /// Names everything a worker caches for this package (every file's hash and every
    /// setting that shapes its output), so two packages that share a model file but differ
    /// in tokenizer, head, pooling or labels never share a cache entry.
    pub fn cache_key(&self) -> String {
        hex::encode(Sha256::digest(self.to_toml().as_bytes()))
    }

    /// What identifies the package's behaviour: the model file's sha256, or for a
    /// classifier the sha256 of the model's and the head's hashes together (the same
    /// encoder with another head is another model).
    pub fn model_sha256(&self) -> String {
        let model = &self.files[MODEL_FILE].sha256;
        match self.files.get(HEAD_FILE) {
            Some(head) if self.task == ModelTask::Classify => {
                hex::encode(Sha256::digest(format!("{model}:{}", head.sha256)))
            }
            _ => model.clone(),
        }
    }
}

/// sha256 (hex) and size of a local file, streamed.
pub fn digest_file(path: &Path) -> std::io::Result<FileDigest> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buffer[..n]);
    }
    Ok(FileDigest {
        sha256: hex::encode(hasher.finalize()),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_requires_files() {
        let mut files = BTreeMap::new();
        for f in [MODEL_FILE, TOKENIZER_FILE] {
            files.insert(
                f.to_string(),
                FileDigest {
                    sha256: "ab".repeat(32),
                    size: 1,
                },
            );
        }
        let manifest = ModelManifest {
            name: "m".into(),
            task: ModelTask::Embed,
            precision: "int8".into(),
            max_length: 256,
            pooling: Pooling::Mean,
            normalize: true,
            dimension: 384,
            pad_id: None,
            labels: Vec::new(),
            names: IoNames::default(),
            files,
        };
        let text = manifest.to_toml();
        assert_eq!(ModelManifest::parse(&text).unwrap(), manifest);
        let without_tokenizer = text.replace("[files.\"tokenizer.json\"]", "[files.\"other\"]");
        // Only the name is wrong: an extra entry that would land outside the cache folder.
        for name in ["../../etc/x", "/etc/x", "sub/x", ".."] {
            let mut escaping = manifest.clone();
            escaping
                .files
                .insert(name.into(), manifest.files[MODEL_FILE].clone());
            let err = ModelManifest::parse(&escaping.to_toml()).unwrap_err();
            assert!(err.contains("not a plain file name"), "{name}: {err}");
        }
        let mut other_tokenizer = manifest.clone();
        other_tokenizer
            .files
            .get_mut(TOKENIZER_FILE)
            .unwrap()
            .sha256 = "0".repeat(64);
        assert_eq!(other_tokenizer.model_sha256(), manifest.model_sha256());
        assert_ne!(other_tokenizer.cache_key(), manifest.cache_key());
        assert!(
            ModelManifest::parse(&without_tokenizer)
                .unwrap_err()
                .contains("tokenizer.json")
        );
    }

    #[test]
    fn digests_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let digest = digest_file(&path).unwrap();
        assert_eq!(digest.size, 3);
        assert_eq!(
            digest.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
