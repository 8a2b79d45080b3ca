//! Training helpers: a CPU engine, the pushed encoder and features of labelled data, and a
//! step graph built outside sluice.

use sluice::uri::S3Uri;

use super::{Cluster, assets};

/// ONNX Runtime on the CPU with one thread: for step graphs and heads in tests.
pub fn cpu_engine() -> sluice::settings::EngineSettings {
    sluice::settings::EngineSettings {
        ort_dylib_path: assets().ort_dylib,
        execution_provider: sluice::settings::ExecutionProvider::Cpu,
        intra_op_threads: 1,
        ..Default::default()
    }
}

impl Cluster {
    /// A model cache on this cluster's storage, and the pushed encoder loaded from it.
    pub async fn encoder(&self) -> (sluice::worker::ModelCache, sluice::engine::Embedder) {
        let models = sluice::worker::ModelCache::new(
            self.storage.clone(),
            self.settings.worker.model_cache_dir.clone(),
            self.settings.engine.clone(),
        );
        let embedder = models
            .get(&S3Uri::parse(&self.model_uri).unwrap())
            .await
            .expect("load the encoder");
        (models, embedder)
    }

    /// Features of the `text,label` CSV objects under `folder`, through the cache under
    /// `cache`.
    pub async fn labelled_features(
        &self,
        embedder: &sluice::engine::Embedder,
        folder: &str,
        cache: &str,
    ) -> (
        sluice::train::features::FeatureSet,
        sluice::train::features::CacheOutcome,
    ) {
        let objects = self
            .storage
            .list(&S3Uri::parse(&self.uri(folder)).unwrap())
            .await
            .expect("list training data");
        sluice::train::features::load_or_embed(
            &self.storage,
            &S3Uri::parse(&self.uri(cache)).unwrap(),
            embedder,
            &objects,
            sluice::job::InputFormat::Csv,
            "text",
            "label",
        )
        .await
        .expect("features")
    }
}

/// Writes `docs/examples/custom_step_graph.py`'s graph (softmax regression, SGD with
/// momentum, built with the `onnx` package, not by sluice) to `path`.
pub fn custom_step_graph(path: &std::path::Path, features: usize, classes: usize, extra: &[&str]) {
    let built = std::process::Command::new(assets().reference_python)
        .arg("docs/examples/custom_step_graph.py")
        .arg(path)
        .args([
            "--features",
            &features.to_string(),
            "--classes",
            &classes.to_string(),
        ])
        .args(extra)
        .output()
        .expect("run docs/examples/custom_step_graph.py");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
}
