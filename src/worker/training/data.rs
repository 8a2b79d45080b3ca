//! A training job's data: the labelled rows embedded by the frozen encoder (through the
//! feature cache), labels mapped to the head's classes (after Unicode NFC) and counted per
//! part, and the evaluation part — a seeded stratified split of the training rows, or
//! separate objects.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::super::{TaskError, WorkerContext, inputs};
use super::plan::{PINNED_INPUTS, unpin_inputs};
use crate::engine::Embedder;
use crate::job::{ClassRows, JobSpec, TrainingSpec, normalize_label};
use crate::metrics;
use crate::train::features::{FeatureError, FeatureSet, Pending, lookup_or_read};
use crate::train::split::stratified_split;
use crate::train::trainer::Dataset;
use crate::uri::S3Uri;

/// The training and evaluation sets of a job, and how the features were obtained.
pub struct JobData {
    pub train: Dataset,
    pub eval: Dataset,
    /// Rows per declared label in each part, in label order.
    pub classes: Vec<ClassRows>,
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

/// Reads the rows (or finds their features cached), checks every label against the spec —
/// each row's label is declared, each declared label has enough rows in both parts — and
/// only then embeds what the cache lacks.
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
        None => inputs::job_inputs(ctx, spec).await?,
    };
    let label_field = spec.label_field();
    let lookup = |objects, format| {
        lookup_or_read(
            &ctx.storage,
            &cache,
            embedder.package_key(),
            objects,
            format,
            &spec.input.text_field,
            label_field,
        )
    };
    let indices = |pending: &Pending| {
        class_indices(
            pending.labels(),
            pending.origins(),
            &training.labels,
            label_field,
        )
        .map_err(TaskError::Permanent)
    };
    let train_data = lookup(&objects, spec.input.format).await?;
    let labels = indices(&train_data)?;
    let (eval_data, eval_labels, train_rows, eval_rows, place) = match &training.eval.uri {
        Some(uri) => {
            let uri = S3Uri::parse(uri).map_err(|e| {
                TaskError::permanent(format!("training.eval.uri of the job's spec: {e}"))
            })?;
            let format = training.eval.format.unwrap_or(spec.input.format);
            let eval_objects = inputs::list_inputs(
                ctx,
                &uri,
                uri.key.is_empty() || uri.key.ends_with('/'),
                None,
            )
            .await?;
            let eval_data = lookup(&eval_objects, format).await?;
            let eval_labels = indices(&eval_data)?;
            let all_eval: Vec<usize> = (0..eval_labels.len()).collect();
            let place = format!("training data {}, evaluation data {uri}", spec.input.uri);
            (
                Some(eval_data),
                eval_labels,
                (0..labels.len()).collect(),
                all_eval,
                place,
            )
        }
        None => {
            let (train_rows, eval_rows) =
                stratified_split(&labels, training.eval.fraction, training.seed);
            let place = format!(
                "{}, with training.eval.fraction = {} of each label's rows held out for evaluation",
                spec.input.uri, training.eval.fraction
            );
            (None, Vec::new(), train_rows, eval_rows, place)
        }
    };
    let eval_indices = if eval_data.is_some() {
        &eval_labels
    } else {
        &labels
    };
    let classes = class_rows(
        &training.labels,
        &labels,
        &train_rows,
        eval_indices,
        &eval_rows,
    );
    check_class_rows(&classes, training.min_rows_per_label, &place)
        .map_err(TaskError::Permanent)?;

    // Only now does the encoder run.
    let (set, outcome) = train_data
        .embed(&ctx.storage, embedder, stop.clone())
        .await?;
    count_cache(outcome.hit);
    let (mut cached, mut seconds) = (outcome.hit, outcome.seconds);
    let train = pick(&set, &labels, &train_rows);
    let eval = match eval_data {
        Some(eval_data) => {
            let (eval_set, eval_outcome) = eval_data.embed(&ctx.storage, embedder, stop).await?;
            count_cache(eval_outcome.hit);
            cached &= eval_outcome.hit;
            seconds += eval_outcome.seconds;
            pick(&eval_set, &eval_labels, &eval_rows)
        }
        None => pick(&set, &labels, &eval_rows),
    };
    Ok(JobData {
        train,
        eval,
        classes,
        cached,
        seconds,
    })
}

/// Rows of each declared label among `train_rows` of `train_labels` and `eval_rows` of
/// `eval_labels` (class indices per row).
pub fn class_rows(
    declared: &[String],
    train_labels: &[usize],
    train_rows: &[usize],
    eval_labels: &[usize],
    eval_rows: &[usize],
) -> Vec<ClassRows> {
    let mut classes: Vec<ClassRows> = declared
        .iter()
        .map(|label| ClassRows {
            label: label.clone(),
            train_rows: 0,
            eval_rows: 0,
        })
        .collect();
    for &r in train_rows {
        classes[train_labels[r]].train_rows += 1;
    }
    for &r in eval_rows {
        classes[eval_labels[r]].eval_rows += 1;
    }
    classes
}

/// Every declared label needs `min` rows in the training part and in the evaluation part: a
/// class without training rows gives a head that never predicts it, one without evaluation
/// rows is never measured. Names each label short of rows, with its counts.
pub fn check_class_rows(classes: &[ClassRows], min: u64, place: &str) -> Result<(), String> {
    let short: Vec<String> = classes
        .iter()
        .filter(|c| c.train_rows < min || c.eval_rows < min)
        .map(|c| {
            format!(
                "label \"{}\" has {} training and {} evaluation rows",
                c.label, c.train_rows, c.eval_rows
            )
        })
        .collect();
    if short.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{}; training.min_rows_per_label = {min} wants at least {min} of each label in both parts ({place}): add rows with {} or remove {} from training.labels",
        short.join("; "),
        if short.len() == 1 {
            "that label"
        } else {
            "those labels"
        },
        if short.len() == 1 { "it" } else { "them" },
    ))
}

fn count_cache(hit: bool) {
    metrics::FEATURE_CACHE
        .with(if hit {
            metrics::CacheResult::Hit
        } else {
            metrics::CacheResult::Miss
        })
        .inc();
}

/// Maps each row's label to its class index, comparing labels after Unicode NFC
/// normalisation; a label outside the spec's set fails the job, naming the row and the
/// labels that are allowed.
pub fn class_indices(
    labels: &[String],
    origins: &[String],
    classes: &[String],
    label_field: &str,
) -> Result<Vec<usize>, String> {
    let index: HashMap<Cow<'_, str>, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (normalize_label(c), i))
        .collect();
    labels
        .iter()
        .zip(origins)
        .map(|(label, origin)| {
            index.get(normalize_label(label).as_ref()).copied().ok_or_else(|| {
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
    fn labels_that_are_equal_after_nfc_are_one_class() {
        let classes = vec!["caf\u{e9}".to_string(), "th\u{e9}".to_string()];
        let labels = vec![
            "caf\u{e9}".to_string(),
            "cafe\u{301}".to_string(),
            "the\u{301}".to_string(),
        ];
        let origins = vec!["a line 1".to_string(); 3];
        assert_eq!(
            class_indices(&labels, &origins, &classes, "label").unwrap(),
            vec![0, 0, 1]
        );
        // Declared decomposed, written composed: the same.
        let classes = vec!["cafe\u{301}".to_string(), "tea".to_string()];
        assert_eq!(
            class_indices(&labels[..2], &origins[..2], &classes, "label").unwrap(),
            vec![0, 0]
        );
    }

    #[test]
    fn rows_are_counted_per_label_and_part() {
        let declared: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let labels = vec![0, 1, 0, 1, 0];
        let classes = class_rows(&declared, &labels, &[0, 1, 2], &labels, &[3, 4]);
        let counts: Vec<(u64, u64)> = classes
            .iter()
            .map(|c| (c.train_rows, c.eval_rows))
            .collect();
        assert_eq!(counts, vec![(2, 1), (1, 1), (0, 0)]);
        assert_eq!(classes[2].label, "c");
    }

    #[test]
    fn a_label_short_of_rows_is_named_with_its_counts() {
        let row = |label: &str, train_rows, eval_rows| ClassRows {
            label: label.into(),
            train_rows,
            eval_rows,
        };
        let enough = vec![row("a", 5, 2), row("b", 3, 1)];
        assert!(check_class_rows(&enough, 1, "s3://b/t.jsonl").is_ok());
        let err = check_class_rows(&enough, 2, "s3://b/t.jsonl").unwrap_err();
        assert!(
            err.contains("label \"b\" has 3 training and 1 evaluation rows")
                && !err.contains("\"a\"")
                && err.contains("training.min_rows_per_label = 2")
                && err.contains("s3://b/t.jsonl"),
            "{err}"
        );
        let missing = vec![row("a", 5, 2), row("b", 3, 1), row("c", 0, 0)];
        let err = check_class_rows(&missing, 1, "s3://b/t.jsonl").unwrap_err();
        assert!(
            err.starts_with("label \"c\" has 0 training and 0 evaluation rows"),
            "{err}"
        );
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
