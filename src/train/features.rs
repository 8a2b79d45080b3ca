//! Training features: the frozen encoder embeds each labelled text once; the result is
//! cached in S3 as safetensors under a key made of the encoder's sha256 and the data
//! objects' ETags (and the fields read), so later epochs, resumed runs and later jobs on the
//! same data skip the encoder.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use sha2::{Digest, Sha256};

use crate::engine::{Embedder, EngineError};
use crate::job::InputFormat;
use crate::storage::decode::decoded;
use crate::storage::records::{RecordReader, RowFields, RowFormat, parse_csv_header, parse_record};
use crate::storage::{ObjectInfo, Storage, StorageError};
use crate::uri::S3Uri;

const FORMAT: &str = "sluice.features.v1";

#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// The data itself is wrong (a bad row, an empty set): permanent.
    #[error("{0}")]
    Data(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Labelled texts read from the data objects, in object and line order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabeledTexts {
    pub texts: Vec<String>,
    /// The label of each text, as written in the data (a JSON number becomes its text).
    pub labels: Vec<String>,
    /// Where each text came from: `uri line N`, for messages.
    pub origins: Vec<String>,
}

/// Embeddings of labelled texts: `features` is `[labels.len(), dim]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSet {
    pub dim: usize,
    pub features: Vec<f32>,
    pub labels: Vec<String>,
    pub origins: Vec<String>,
}

/// What the cache did for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheOutcome {
    pub hit: bool,
    pub seconds: f64,
}

/// Reads every row; a row without a text or label fails the whole read, naming its line.
pub async fn read_labeled(
    storage: &Storage,
    objects: &[ObjectInfo],
    format: InputFormat,
    text_field: &str,
    label_field: &str,
) -> Result<LabeledTexts, FeatureError> {
    let mut out = LabeledTexts::default();
    for object in objects {
        let uri = &object.uri;
        let (raw, encoding) = storage.open_range(uri, 0, 0, Some(&object.etag)).await?;
        let (reader, _) = decoded(raw, encoding.as_deref())
            .await
            .map_err(|e| FeatureError::Data(format!("{uri}: reading failed: {e}")))?;
        let csv = format.has_header();
        let delimiter = if format == InputFormat::Tsv {
            b'\t'
        } else {
            b','
        };
        let mut records = RecordReader::new(reader, csv, 0, 1).with_delimiter(delimiter);
        let mut row_format = if csv { None } else { Some(RowFormat::Jsonl) };
        while let Some(record) = records
            .next_record()
            .await
            .map_err(|e| FeatureError::Data(format!("{uri}: reading failed: {e}")))?
        {
            if record.is_blank() {
                continue;
            }
            let Some(row_format) = &row_format else {
                let header = parse_csv_header(&record.bytes, delimiter).map_err(|e| {
                    FeatureError::Data(format!("{uri} line {}: header: {e}", record.line))
                })?;
                for field in [text_field, label_field] {
                    if !header.iter().any(|h| h == field) {
                        return Err(FeatureError::Data(format!(
                            "{uri}: column \"{field}\" missing (the header has {})",
                            header.join(", ")
                        )));
                    }
                }
                row_format = Some(RowFormat::Csv { header, delimiter });
                continue;
            };
            let row = parse_record(
                row_format,
                &record,
                &RowFields::new(text_field, Some(label_field)),
            )
            .map_err(|e| FeatureError::Data(format!("{uri} line {}: {e}", record.line)))?;
            let label = row.id_text().unwrap_or_default();
            out.texts.push(row.text);
            out.labels.push(label);
            out.origins.push(format!("{uri} line {}", record.line));
        }
    }
    if out.texts.is_empty() {
        let uris: Vec<String> = objects.iter().map(|o| o.uri.to_string()).collect();
        return Err(FeatureError::Data(format!(
            "no rows in {}: the data set is empty",
            uris.join(", ")
        )));
    }
    Ok(out)
}

/// The cache key: the encoder and exactly which data, read how.
pub fn cache_key(
    encoder_sha256: &str,
    objects: &[ObjectInfo],
    format: InputFormat,
    text_field: &str,
    label_field: &str,
) -> String {
    let mut hash = Sha256::new();
    hash.update(FORMAT);
    hash.update(encoder_sha256);
    hash.update(format!("{format:?}\0{text_field}\0{label_field}"));
    for object in objects {
        hash.update(format!(
            "\0{}\0{}",
            object.uri,
            object.etag.trim_matches('"')
        ));
    }
    hex::encode(hash.finalize())
}

pub fn encode(set: &FeatureSet) -> Result<Vec<u8>, FeatureError> {
    let bytes: Vec<u8> = set.features.iter().flat_map(|v| v.to_le_bytes()).collect();
    let rows = set.labels.len();
    let view = TensorView::new(Dtype::F32, vec![rows, set.dim], &bytes)
        .map_err(|e| FeatureError::Data(format!("features: {e}")))?;
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        (
            "labels".to_string(),
            serde_json::to_string(&set.labels).expect("labels serialise"),
        ),
        (
            "origins".to_string(),
            serde_json::to_string(&set.origins).expect("origins serialise"),
        ),
    ]);
    safetensors::serialize([("features", view)], Some(metadata))
        .map_err(|e| FeatureError::Data(format!("features: {e}")))
}

pub fn decode(what: &str, bytes: &[u8]) -> Result<FeatureSet, FeatureError> {
    let bad = |reason: String| FeatureError::Data(format!("feature cache {what}: {reason}"));
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad("not a sluice feature file".into()));
    }
    let list = |key: &str| -> Result<Vec<String>, FeatureError> {
        meta.get(key)
            .and_then(|v| serde_json::from_str(v).ok())
            .ok_or_else(|| bad(format!("metadata `{key}` missing")))
    };
    let labels = list("labels")?;
    let origins = list("origins")?;
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let view = tensors.tensor("features").map_err(|e| bad(e.to_string()))?;
    let shape = view.shape().to_vec();
    if shape.len() != 2 || shape[0] != labels.len() {
        return Err(bad(format!(
            "shape {shape:?} does not match {} labels",
            labels.len()
        )));
    }
    Ok(FeatureSet {
        dim: shape[1],
        features: view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        labels,
        origins,
    })
}

/// The features of `objects`: from the cache under `cache_root` when the same encoder has
/// embedded the same data before, else embedded now and cached.
pub async fn load_or_embed(
    storage: &Storage,
    cache_root: &S3Uri,
    embedder: &Embedder,
    objects: &[ObjectInfo],
    format: InputFormat,
    text_field: &str,
    label_field: &str,
) -> Result<(FeatureSet, CacheOutcome), FeatureError> {
    lookup_or_read(
        storage,
        cache_root,
        embedder.package_key(),
        objects,
        format,
        text_field,
        label_field,
    )
    .await?
    .embed(storage, embedder, Arc::new(AtomicBool::new(false)))
    .await
}

/// Data whose features are in the cache, or read and still to be embedded: its labels are
/// known either way, so they can be checked before the encoder spends time on them.
#[derive(Debug)]
pub enum Pending {
    Cached {
        set: FeatureSet,
        outcome: CacheOutcome,
    },
    ToEmbed {
        data: LabeledTexts,
        /// Where the features will be cached.
        cache: S3Uri,
        started: Instant,
    },
}

impl Pending {
    /// The label of each row, as written in the data.
    pub fn labels(&self) -> &[String] {
        match self {
            Pending::Cached { set, .. } => &set.labels,
            Pending::ToEmbed { data, .. } => &data.labels,
        }
    }

    /// Where each row came from (`uri line N`).
    pub fn origins(&self) -> &[String] {
        match self {
            Pending::Cached { set, .. } => &set.origins,
            Pending::ToEmbed { data, .. } => &data.origins,
        }
    }

    /// The features: the cached ones, or the rows embedded now (until `stop`) and cached.
    pub async fn embed(
        self,
        storage: &Storage,
        embedder: &Embedder,
        stop: Arc<AtomicBool>,
    ) -> Result<(FeatureSet, CacheOutcome), FeatureError> {
        let (data, cache, started) = match self {
            Pending::Cached { set, outcome } => return Ok((set, outcome)),
            Pending::ToEmbed {
                data,
                cache,
                started,
            } => (data, cache, started),
        };
        let vectors = embedder.embed_until(data.texts, stop).await?;
        let set = FeatureSet {
            dim: embedder.dimension(),
            features: vectors.into_iter().flatten().collect(),
            labels: data.labels,
            origins: data.origins,
        };
        store(storage, &cache, encode(&set)?).await;
        Ok((
            set,
            CacheOutcome {
                hit: false,
                seconds: started.elapsed().as_secs_f64(),
            },
        ))
    }
}

/// Stores features in the cache, creating its bucket when missing. The cache only saves
/// time, so a write that fails (no permission to create the bucket, S3 trouble) is logged
/// and the job goes on with the features it has; returns whether they were stored.
async fn store(storage: &Storage, cache: &S3Uri, bytes: Vec<u8>) -> bool {
    const TYPE: &str = "application/octet-stream";
    let result = match storage.put(cache, bytes.clone(), TYPE).await {
        Err(StorageError::NoSuchBucket { bucket, .. }) => {
            tracing::info!(cache = %cache, %bucket, "creating the feature cache bucket");
            match storage.create_bucket(&bucket).await {
                Ok(()) => storage.put(cache, bytes, TYPE).await,
                Err(e) => Err(e),
            }
        }
        other => other,
    };
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(cache = %cache, error = %e, "features not cached; the job goes on, and the next job with this data embeds it again");
            false
        }
    }
}

/// Looks `objects` up in the feature cache under `cache_root` for the encoder package
/// `package_key`; on a miss reads their rows (nothing is embedded yet).
pub async fn lookup_or_read(
    storage: &Storage,
    cache_root: &S3Uri,
    package_key: &str,
    objects: &[ObjectInfo],
    format: InputFormat,
    text_field: &str,
    label_field: &str,
) -> Result<Pending, FeatureError> {
    let started = Instant::now();
    // The whole encoder package: another tokenizer or pooling gives other features.
    let key = cache_key(package_key, objects, format, text_field, label_field);
    let uri = cache_root.as_prefix().join(&format!("{key}.safetensors"));
    match storage.get_bytes(&uri).await {
        Ok(bytes) => match decode(&uri.to_string(), &bytes) {
            Ok(set) => {
                let outcome = CacheOutcome {
                    hit: true,
                    seconds: started.elapsed().as_secs_f64(),
                };
                return Ok(Pending::Cached { set, outcome });
            }
            // A damaged cache entry is rebuilt, not fatal.
            Err(e) => {
                tracing::warn!(cache = %uri, error = %e, "feature cache unreadable; embedding again")
            }
        },
        Err(StorageError::NotFound { .. }) => {}
        // Created on the first write: a missing cache bucket is an empty cache.
        Err(StorageError::NoSuchBucket { bucket, .. }) => {
            tracing::info!(cache = %uri, %bucket, "feature cache bucket does not exist yet; it is created when the features are stored")
        }
        Err(e) => return Err(e.into()),
    }
    let data = read_labeled(storage, objects, format, text_field, label_field).await?;
    Ok(Pending::ToEmbed {
        data,
        cache: uri,
        started,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_files_round_trip() {
        let set = FeatureSet {
            dim: 2,
            features: vec![0.5, -1.0, 2.0, 0.25],
            labels: vec!["fresh".into(), "rotten".into()],
            origins: vec!["s3://b/k:2".into(), "s3://b/k:3".into()],
        };
        assert_eq!(decode("mem", &encode(&set).unwrap()).unwrap(), set);
    }

    #[test]
    fn the_key_changes_with_the_encoder_the_data_version_and_the_fields() {
        let object = |etag: &str| ObjectInfo {
            uri: S3Uri::new("b", "train.csv"),
            size: 10,
            etag: etag.into(),
        };
        let key = |sha: &str, etag: &str, label: &str| {
            cache_key(sha, &[object(etag)], InputFormat::Csv, "text", label)
        };
        let base = key("enc1", "\"e1\"", "label");
        assert_eq!(base, key("enc1", "e1", "label"));
        assert_ne!(base, key("enc2", "e1", "label"));
        assert_ne!(base, key("enc1", "e2", "label"));
        assert_ne!(base, key("enc1", "e1", "sentiment"));
    }
}
