//! Training features against the real S3 server and ONNX Runtime: the encoder embeds each
//! labelled text once, the second request for the same data is served from the S3 cache,
//! and bad training data fails early naming the problem.

mod common;

use std::time::Instant;

use common::Cluster;
use sluice::job::InputFormat;
use sluice::train::features::{FeatureError, load_or_embed};
use sluice::uri::S3Uri;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_are_embedded_once_then_served_from_the_cache() {
    let cluster = Cluster::new(1 << 20).await;
    let storage = cluster.storage.clone();
    // 300 review snippets with their fresh/rotten label, as CSV.
    let reviews = common::rotten_tomatoes_reviews(Some(300));
    let expected: Vec<String> = reviews.iter().map(|(_, label)| label.clone()).collect();
    cluster
        .put("train/reviews.csv", common::reviews_csv(&reviews))
        .await;
    let (_models, embedder) = cluster.encoder().await;
    let started = Instant::now();
    let (first, outcome) = cluster
        .labelled_features(&embedder, "train/", "feature-cache/")
        .await;
    assert!(!outcome.hit);
    assert_eq!(first.labels, expected);
    assert_eq!(first.dim, 384);
    assert_eq!(first.features.len(), 300 * 384);
    let (second, cached) = cluster
        .labelled_features(&embedder, "train/", "feature-cache/")
        .await;
    assert!(cached.hit);
    assert_eq!(second, first);
    eprintln!(
        "300 texts: embedded in {:.2} s, from the cache in {:.3} s ({:.0}x faster); total {:.2} s",
        outcome.seconds,
        cached.seconds,
        outcome.seconds / cached.seconds.max(1e-6),
        started.elapsed().as_secs_f64()
    );
    assert!(cached.seconds < outcome.seconds);
    assert_eq!(cluster.keys("feature-cache/").await.len(), 1);
    let cache = S3Uri::parse(&cluster.uri("feature-cache/")).unwrap();

    // Bad training data fails early, naming the problem.
    let cases = [
        (
            "bad/no-label.csv",
            "text,sentiment\nnice,fresh\n",
            "column \"label\" missing",
        ),
        (
            "bad/row.jsonl",
            "{\"text\": \"ok\", \"label\": \"fresh\"}\n{\"text\": \"no label\"}\n",
            "line 2: field \"label\" missing",
        ),
        ("bad/empty.jsonl", "\n\n", "the data set is empty"),
    ];
    for (key, content, expected) in cases {
        cluster.put(key, content).await;
        let object = storage
            .head(&S3Uri::parse(&cluster.uri(key)).unwrap())
            .await
            .unwrap();
        let format = if key.ends_with(".csv") {
            InputFormat::Csv
        } else {
            InputFormat::Jsonl
        };
        let err = load_or_embed(
            &storage,
            &cache,
            &embedder,
            &[object],
            format,
            "text",
            "label",
        )
        .await
        .unwrap_err();
        assert!(matches!(err, FeatureError::Data(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(expected) && text.contains(key),
            "{key}: {text}"
        );
    }
    cluster.stop().await;
}
