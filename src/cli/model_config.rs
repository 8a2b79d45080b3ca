//! What a Hugging Face / sentence-transformers model folder says about its model: pooling
//! and normalisation (`modules.json`, `1_Pooling/config.json`), hidden size and positions
//! (`config.json`), and the tokenizer's special tokens and pad id.

use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::job::Pooling;

/// A value the folder states, and the file that says it (for warnings and errors).
#[derive(Debug, Clone, PartialEq)]
pub struct Said<T> {
    pub value: T,
    pub source: String,
}

fn said<T>(value: T, source: impl Into<String>) -> Said<T> {
    Said {
        value,
        source: source.into(),
    }
}

/// Everything read from the folder; `None` where no file says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FolderConfig {
    pub pooling: Option<Said<Pooling>>,
    pub normalize: Option<Said<bool>>,
    /// The encoder's hidden size: the embedding dimension unless a Dense module follows.
    pub hidden_size: Option<Said<usize>>,
    /// The tokenizer's own longest input (`model_max_length`), when it is a real limit.
    pub tokenizer_max_length: Option<Said<usize>>,
    pub pad_id: Option<Said<u32>>,
    /// Role (`cls_token`, `sep_token`, `pad_token`, …) and token, as the tokenizer files list them.
    pub special_tokens: Vec<(String, String)>,
    /// A sentence-transformers Dense module follows pooling (it changes the dimension).
    pub dense: Option<String>,
}

#[derive(Deserialize)]
struct Module {
    #[serde(default)]
    path: String,
    #[serde(rename = "type", default)]
    kind: String,
}

fn read_json(path: &Path) -> anyhow::Result<Option<serde_json::Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Reads `dir`'s configuration files. Errors name the file that could not be read or says
/// something sluice cannot do (a pooling mode it does not have).
pub fn read_folder(dir: &Path) -> anyhow::Result<FolderConfig> {
    let mut config = FolderConfig::default();
    let mut pooling_files = Vec::new();
    if let Some(modules) = read_json(&dir.join("modules.json"))? {
        let modules: Vec<Module> =
            serde_json::from_value(modules).context("modules.json: not a list of modules")?;
        let is = |module: &Module, kind: &str| module.kind.ends_with(&format!(".{kind}"));
        config.normalize = Some(said(
            modules.iter().any(|m| is(m, "Normalize")),
            "modules.json (a Normalize module or none)",
        ));
        if let Some(pooling) = modules.iter().find(|m| is(m, "Pooling")) {
            pooling_files.push(format!("{}/config.json", pooling.path));
        }
        config.dense = modules
            .iter()
            .find(|m| is(m, "Dense"))
            .map(|m| m.path.clone());
    }
    pooling_files.extend(["1_Pooling/config.json".into(), "pooling_config.json".into()]);
    for name in &pooling_files {
        if let Some(pooling) = read_json(&dir.join(name))? {
            config.pooling = Some(said(pooling_mode(&pooling, name)?, name.clone()));
            if let Some(d) = pooling
                .get("word_embedding_dimension")
                .and_then(|v| v.as_u64())
            {
                config.hidden_size =
                    Some(said(d as usize, format!("{name} word_embedding_dimension")));
            }
            break;
        }
    }
    if let Some(model) = read_json(&dir.join("config.json"))? {
        for key in ["hidden_size", "d_model", "dim", "n_embd"] {
            if let Some(size) = model.get(key).and_then(|v| v.as_u64()) {
                config.hidden_size = Some(said(size as usize, format!("config.json {key}")));
                break;
            }
        }
    }
    read_tokenizer_files(dir, &mut config)?;
    Ok(config)
}

/// The pooling a sentence-transformers pooling config turns on.
fn pooling_mode(config: &serde_json::Value, file: &str) -> anyhow::Result<Pooling> {
    let on = |name: &str| config.get(name).and_then(|v| v.as_bool()).unwrap_or(false);
    if on("pooling_mode_mean_tokens") {
        return Ok(Pooling::Mean);
    }
    if on("pooling_mode_cls_token") {
        return Ok(Pooling::Cls);
    }
    if on("pooling_mode_lasttoken") {
        return Ok(Pooling::LastToken);
    }
    let other = [
        "pooling_mode_max_tokens",
        "pooling_mode_mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens",
    ]
    .into_iter()
    .find(|name| on(name));
    match other {
        Some(mode) => bail!(
            "{file}: {mode} is not a pooling sluice has (mean, cls, last_token, none); export the model with its pooling in the graph and push it with --pooling none"
        ),
        None => bail!("{file}: no pooling mode is turned on"),
    }
}

/// The special tokens of `tokenizer_config.json` / `special_tokens_map.json` (a token is a
/// string or `{"content": …}`), the tokenizer's `model_max_length`, and the pad id: the
/// padding `tokenizer.json` declares, else the pad token's id in its vocabulary.
fn read_tokenizer_files(dir: &Path, config: &mut FolderConfig) -> anyhow::Result<()> {
    const ROLES: [&str; 7] = [
        "bos_token",
        "eos_token",
        "cls_token",
        "sep_token",
        "pad_token",
        "unk_token",
        "mask_token",
    ];
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        let Some(file) = read_json(&dir.join(name))? else {
            continue;
        };
        for role in ROLES {
            let token = match file.get(role) {
                Some(serde_json::Value::String(token)) => Some(token.clone()),
                Some(value) => value
                    .get("content")
                    .and_then(|c| c.as_str())
                    .map(String::from),
                None => None,
            };
            if let Some(token) = token
                && !config.special_tokens.iter().any(|(r, _)| r == role)
            {
                config.special_tokens.push((role.to_string(), token));
            }
        }
        // Tokenizers without a limit say 1e30; only a real one counts.
        if let Some(length) = file.get("model_max_length").and_then(|v| v.as_f64())
            && (1.0..=1_000_000.0).contains(&length)
            && config.tokenizer_max_length.is_none()
        {
            config.tokenizer_max_length =
                Some(said(length as usize, format!("{name} model_max_length")));
        }
    }
    let path = dir.join(crate::job::TOKENIZER_FILE);
    let tokenizer = tokenizers::Tokenizer::from_file(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if let Some(padding) = tokenizer.get_padding() {
        config.pad_id = Some(said(padding.pad_id, "tokenizer.json padding.pad_id"));
    } else if let Some((_, token)) = config.special_tokens.iter().find(|(r, _)| r == "pad_token") {
        match tokenizer.token_to_id(token) {
            Some(id) => config.pad_id = Some(said(id, format!("pad_token {token:?}"))),
            None => bail!(
                "{}: the pad token {token:?} the tokenizer files name is not in its vocabulary; fix tokenizer_config.json or special_tokens_map.json",
                path.display()
            ),
        }
    }
    for (role, token) in &config.special_tokens {
        if tokenizer.token_to_id(token).is_none() {
            bail!(
                "{}: the {role} {token:?} the tokenizer files name is not in its vocabulary; the tokenizer files do not belong together",
                path.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn tokenizer(dir: &Path) {
        let tokenizer = crate::engine::test_support::word_level_tokenizer();
        tokenizer
            .save(dir.join(crate::job::TOKENIZER_FILE), false)
            .unwrap();
    }

    #[test]
    fn reads_a_sentence_transformers_folder() {
        let dir = tempfile::tempdir().unwrap();
        tokenizer(dir.path());
        write(
            dir.path(),
            "modules.json",
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"name":"1","path":"1_Pool","type":"sentence_transformers.models.Pooling"},
                {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
        );
        write(
            dir.path(),
            "1_Pool/config.json",
            r#"{"word_embedding_dimension": 768, "pooling_mode_cls_token": true}"#,
        );
        write(dir.path(), "config.json", r#"{"hidden_size": 1024}"#);
        write(
            dir.path(),
            "tokenizer_config.json",
            r#"{"pad_token": {"content": "[UNK]"}, "model_max_length": 1000000000000000019884624838656}"#,
        );
        let config = read_folder(dir.path()).unwrap();
        assert_eq!(config.pooling.unwrap().value, Pooling::Cls);
        assert!(config.normalize.unwrap().value);
        let hidden = config.hidden_size.unwrap();
        assert_eq!(
            (hidden.value, hidden.source.as_str()),
            (1024, "config.json hidden_size")
        );
        assert_eq!(config.tokenizer_max_length, None);
        assert_eq!(config.pad_id.unwrap().value, 0);
        assert_eq!(
            config.special_tokens,
            vec![("pad_token".to_string(), "[UNK]".to_string())]
        );
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        let dir = tempfile::tempdir().unwrap();
        tokenizer(dir.path());
        assert_eq!(read_folder(dir.path()).unwrap(), FolderConfig::default());
        write(
            dir.path(),
            "1_Pooling/config.json",
            r#"{"pooling_mode_max_tokens": true}"#,
        );
        let err = read_folder(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("pooling_mode_max_tokens") && err.contains("--pooling none"),
            "{err}"
        );
        write(
            dir.path(),
            "1_Pooling/config.json",
            r#"{"pooling_mode_lasttoken": true}"#,
        );
        write(
            dir.path(),
            "special_tokens_map.json",
            r#"{"eos_token": "</s>"}"#,
        );
        let err = read_folder(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("eos_token") && err.contains("not in its vocabulary"),
            "{err}"
        );
    }
}
