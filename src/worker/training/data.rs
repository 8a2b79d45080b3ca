//! A training job's data: the labelled rows embedded by the frozen encoder (through the
//! feature cache), labels mapped to the head's classes, and the evaluation part — a seeded
//! stratified split of the training rows, or separate objects.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use super::super::{TaskError, WorkerContext, plan};
use crate::engine::Embedder;
use crate::job::{JobSpec, TrainingSpec};
use crate::metrics;
use crate::storage::ObjectInfo;
use crate::train::features::{FeatureError, FeatureSet, LabeledTexts, load_or_embed_checked};
use crate::train::split::stratified_split;
use crate::train::trainer::Dataset;
use crate::uri::S3Uri;

/// The training and evaluation sets of a job, and how the features were obtained.
pub struct JobData {
    pub train: Dataset,
    pub eval: Dataset,
    /// True when every feature set came from the cache.
    pub cached: bool,
    pub seconds: f64,
}

impl From<FeatureError> for TaskError {
    fn from(err: FeatureError) -> Self {
        match err {
            FeatureError::Data(message) => TaskError::Permanent(message),
            FeatureError::Storage(e) => e.into(),
            FeatureError::Engine(e) => e.into(),
        }
    }
}

pub async fn load(
    ctx: &WorkerContext,
    job_id: &str,
    spec: &JobSpec,
    training: &TrainingSpec,
    embedder: &Embedder,
    stop: Arc<AtomicBool>,
) -> Result<JobData, TaskError> {
    let cache = S3Uri::parse(&ctx.settings.training.feature_cache)
        .map_err(|e| TaskError::permanent(format!("setting training.feature_cache: {e}")))?;
    let objects = match ctx.state.field(job_id, PINNED_INPUTS).await? {
        Some(json) => unpin_inputs(&json)?,
        // Planned before inputs were pinned.
        None => plan::job_inputs(ctx, spec).await?,
    };
    let label_field = spec.label_field();
    let known_labels = |rows: &LabeledTexts| {
        class_indices(&rows.labels, &rows.origins, &training.labels, label_field)
            .map(|_| ())
            .map_err(FeatureError::Data)
    };
    let read = |objects, format| {
        load_or_embed_checked(
            &ctx.storage,
            &cache,
            embedder,
            objects,
            format,
            &spec.input.text_field,
            label_field,
            &known_labels,
            stop.clone(),
        )
    };
    let (set, outcome) = read(&objects, spec.input.format).await?;
    count_cache(outcome.hit);
    let labels = class_indices(&set.labels, &set.origins, &training.labels, label_field)
        .map_err(TaskError::Permanent)?;
    let (mut cached, mut seconds) = (outcome.hit, outcome.seconds);
    let (train, eval) = match &training.eval.uri {
        Some(uri) => {
            let uri = S3Uri::parse(uri).expect("validated spec");
            let format = training.eval.format.unwrap_or(spec.input.format);
            let eval_objects = plan::list_inputs(
                ctx,
                &uri,
                uri.key.is_empty() || uri.key.ends_with('/'),
                None,
            )
            .await?;
            let (eval_set, eval_outcome) = read(&eval_objects, format).await?;
            count_cache(eval_outcome.hit);
            cached &= eval_outcome.hit;
            seconds += eval_outcome.seconds;
            let eval_labels = class_indices(
                &eval_set.labels,
                &eval_set.origins,
                &training.labels,
                label_field,
            )
            .map_err(TaskError::Permanent)?;
            let all_train: Vec<usize> = (0..labels.len()).collect();
            let all_eval: Vec<usize> = (0..eval_labels.len()).collect();
            (
                pick(&set, &labels, &all_train),
                pick(&eval_set, &eval_labels, &all_eval),
            )
        }
        None => {
            let (train_rows, eval_rows) =
                stratified_split(&labels, training.eval.fraction, training.seed);
            (
                pick(&set, &labels, &train_rows),
                pick(&set, &labels, &eval_rows),
            )
        }
    };
    if train.rows() == 0 {
        return Err(TaskError::permanent(format!(
            "input {}: no rows left to train on after holding out the evaluation part",
            spec.input.uri
        )));
    }
    if eval.rows() == 0 {
        return Err(TaskError::permanent(format!(
            "input {}: the evaluation part is empty (too few rows for training.eval.fraction = {}); add rows or give training.eval.uri",
            spec.input.uri, training.eval.fraction
        )));
    }
    Ok(JobData {
        train,
        eval,
        cached,
        seconds,
    })
}

/// Job field holding the training objects and their versions, as planned.
pub const PINNED_INPUTS: &str = "training_inputs";

#[derive(Serialize, Deserialize)]
struct PinnedObject {
    uri: String,
    size: u64,
    etag: String,
}

pub fn pin_inputs(objects: &[ObjectInfo]) -> String {
    let pinned: Vec<PinnedObject> = objects
        .iter()
        .map(|o| PinnedObject {
            uri: o.uri.to_string(),
            size: o.size,
            etag: o.etag.clone(),
        })
        .collect();
    serde_json::to_string(&pinned).expect("pinned inputs serialise")
}

fn unpin_inputs(json: &str) -> Result<Vec<ObjectInfo>, TaskError> {
    let pinned: Vec<PinnedObject> = serde_json::from_str(json)
        .map_err(|e| TaskError::permanent(format!("stored training inputs unreadable: {e}")))?;
    pinned
        .into_iter()
        .map(|p| {
            Ok(ObjectInfo {
                uri: S3Uri::parse(&p.uri).map_err(TaskError::Permanent)?,
                size: p.size,
                etag: p.etag,
            })
        })
        .collect()
}

fn count_cache(hit: bool) {
    metrics::FEATURE_CACHE
        .with_label_values(&[if hit { "hit" } else { "miss" }])
        .inc();
}

/// Maps each row's label to its class index; a label outside the spec's set fails the job,
/// naming the row and the labels that are allowed.
pub fn class_indices(
    labels: &[String],
    origins: &[String],
    classes: &[String],
    label_field: &str,
) -> Result<Vec<usize>, String> {
    labels
        .iter()
        .zip(origins)
        .map(|(label, origin)| {
            classes.iter().position(|c| c == label).ok_or_else(|| {
                format!(
                    "{origin}: label \"{label}\" (field \"{label_field}\") is not one of training.labels [{}]; fix the row or add the label",
                    classes.join(", ")
                )
            })
        })
        .collect()
}

fn pick(set: &FeatureSet, labels: &[usize], rows: &[usize]) -> Dataset {
    let dim = set.dim;
    Dataset {
        dim,
        features: rows
            .iter()
            .flat_map(|&r| set.features[r * dim..(r + 1) * dim].iter().copied())
            .collect(),
        labels: rows.iter().map(|&r| labels[r]).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_inputs_round_trip() {
        let objects = vec![ObjectInfo {
            uri: S3Uri::parse("s3://bkt/train/a.csv").unwrap(),
            size: 12,
            etag: "\"abc\"".into(),
        }];
        assert_eq!(unpin_inputs(&pin_inputs(&objects)).unwrap(), objects);
        assert!(unpin_inputs("not json").is_err());
    }

    #[test]
    fn unknown_labels_name_the_row_and_the_allowed_set() {
        let origins = vec![
            "s3://b/t.csv line 2".to_string(),
            "s3://b/t.csv line 3".to_string(),
        ];
        let labels = vec!["fresh".to_string(), "meh".to_string()];
        let classes = vec!["fresh".to_string(), "rotten".to_string()];
        let err = class_indices(&labels, &origins, &classes, "label").unwrap_err();
        assert!(
            err.contains("s3://b/t.csv line 3")
                && err.contains("\"meh\"")
                && err.contains("fresh, rotten"),
            "{err}"
        );
        let ok = vec!["rotten".to_string(), "fresh".to_string()];
        assert_eq!(
            class_indices(&ok, &origins, &classes, "label").unwrap(),
            vec![1, 0]
        );
    }
}
