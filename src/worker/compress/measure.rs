//! The evidence: both models run on the same sample in the same process — embedding cosine
//! between them, a classifier's accuracy on the sample's labels, and rows per second in
//! alternating timed passes so both see the same machine load.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::Serialize;

use super::super::TaskError;
use crate::engine::Embedder;
use crate::job::{ModelManifest, ModelTask, normalize_label};
use crate::settings::EngineSettings;

/// One model of the pair, loaded twice when it is a classifier: its encoder alone (for the
/// embedding cosine) and the package as it serves.
pub struct Loaded {
    pub encoder: Embedder,
    pub package: Option<Embedder>,
}

impl Loaded {
    /// What serves the package's task (timed for the speed figures).
    fn serving(&self) -> &Embedder {
        self.package.as_ref().unwrap_or(&self.encoder)
    }

    async fn shutdown(self) {
        let wait = std::time::Duration::from_secs(30);
        self.encoder.shutdown(wait).await;
        if let Some(package) = self.package {
            package.shutdown(wait).await;
        }
    }
}

/// Loads a package's models from `dir` on a blocking thread.
pub async fn load(
    dir: &Path,
    manifest: &ModelManifest,
    settings: &EngineSettings,
) -> Result<Loaded, TaskError> {
    let (dir, manifest, settings): (PathBuf, _, _) =
        (dir.to_path_buf(), manifest.clone(), settings.clone());
    tokio::task::spawn_blocking(move || {
        let mut encoder_only = manifest.clone();
        encoder_only.task = ModelTask::Embed;
        encoder_only.labels.clear();
        let encoder = Embedder::load(&dir, &encoder_only, &settings)?;
        let package = match manifest.task {
            ModelTask::Embed => None,
            ModelTask::Classify => Some(Embedder::load(&dir, &manifest, &settings)?),
        };
        Ok::<_, crate::engine::EngineError>(Loaded { encoder, package })
    })
    .await
    .map_err(|e| TaskError::Retryable(format!("model loading thread: {e}")))?
    .map_err(TaskError::from)
}

/// One model's figures on the sample.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelFigures {
    /// Median rows per second over the timed passes (the package's own task).
    pub rows_per_second: f64,
    /// Every timed pass, in order.
    pub passes_rows_per_second: Vec<f64>,
    /// Classifier packages: share of the sample's rows labelled right, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_percent: Option<f64>,
}

/// Cosine between the two models' embeddings of each sample row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Agreement {
    pub mean_cosine: f64,
    pub min_cosine: f64,
    /// The 5th percentile: how the worst rows fare.
    pub p05_cosine: f64,
    /// Classifier packages: rows whose predicted label differs between the two.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_changes: Option<usize>,
}

pub struct Measured {
    pub source: ModelFigures,
    pub int8: ModelFigures,
    pub agreement: Agreement,
}

/// Runs the sample through both pairs; `labels` are the sample's labels for a classifier.
pub async fn measure(
    source: Loaded,
    int8: Loaded,
    texts: &[String],
    labels: Option<&[String]>,
    rounds: usize,
    stop: Arc<AtomicBool>,
) -> Result<Measured, TaskError> {
    let result = run(&source, &int8, texts, labels, rounds, stop).await;
    source.shutdown().await;
    int8.shutdown().await;
    result
}

async fn run(
    source: &Loaded,
    int8: &Loaded,
    texts: &[String],
    labels: Option<&[String]>,
    rounds: usize,
    stop: Arc<AtomicBool>,
) -> Result<Measured, TaskError> {
    // The first passes also warm both models up before anything is timed.
    let a = source
        .encoder
        .embed_until(texts.to_vec(), stop.clone())
        .await?;
    let b = int8
        .encoder
        .embed_until(texts.to_vec(), stop.clone())
        .await?;
    let mut cosines: Vec<f64> = a.iter().zip(&b).map(|(x, y)| cosine(x, y)).collect();
    let mean_cosine = cosines.iter().sum::<f64>() / cosines.len().max(1) as f64;
    cosines.sort_by(f64::total_cmp);
    let mut agreement = Agreement {
        mean_cosine,
        min_cosine: cosines.first().copied().unwrap_or(1.0),
        p05_cosine: cosines.get(cosines.len() / 20).copied().unwrap_or(1.0),
        label_changes: None,
    };
    let mut passes = [Vec::new(), Vec::new()];
    let mut predictions: [Vec<Vec<f32>>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        // Alternate who goes first, so neither always runs on a warmer (or busier) machine.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let model = [source, int8][which].serving();
            let began = Instant::now();
            let out = model.embed_until(texts.to_vec(), stop.clone()).await?;
            passes[which].push(texts.len() as f64 / began.elapsed().as_secs_f64());
            predictions[which] = out;
        }
    }
    let accuracy = |which: usize| {
        labels.map(|labels| accuracy(&predictions[which], labels, source.serving().labels()))
    };
    if labels.is_some() {
        let changes = predictions[0]
            .iter()
            .zip(&predictions[1])
            .filter(|(p, q)| argmax(p) != argmax(q))
            .count();
        agreement.label_changes = Some(changes);
    }
    let figures = |which: usize, passes: &[f64]| ModelFigures {
        rows_per_second: median(passes),
        passes_rows_per_second: passes.to_vec(),
        accuracy_percent: accuracy(which),
    };
    Ok(Measured {
        source: figures(0, &passes[0]),
        int8: figures(1, &passes[1]),
        agreement,
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return if na == nb { 1.0 } else { 0.0 };
    }
    dot / (na.sqrt() * nb.sqrt())
}

fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// Percent of rows whose most probable class is their label (compared after NFC).
fn accuracy(probabilities: &[Vec<f32>], labels: &[String], classes: &[String]) -> f64 {
    let right = probabilities
        .iter()
        .zip(labels)
        .filter(|(p, label)| {
            classes
                .get(argmax(p))
                .is_some_and(|c| normalize_label(c) == normalize_label(label))
        })
        .count();
    100.0 * right as f64 / labels.len().max(1) as f64
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_parallel_and_orthogonal_vectors() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
        assert!(cosine(&[1.0, 0.0], &[0.0, 3.0]).abs() < 1e-12);
    }

    #[test]
    fn accuracy_counts_the_most_probable_class() {
        let classes = ["neg".to_string(), "pos".to_string()];
        let probabilities = vec![vec![0.9, 0.1], vec![0.2, 0.8], vec![0.6, 0.4]];
        let labels = ["neg", "pos", "pos"].map(String::from);
        let percent = accuracy(&probabilities, &labels, &classes);
        assert!((percent - 200.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
