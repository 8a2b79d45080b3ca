//! Tests of the engine through its handle: order, non-finite rows, truncation, panics.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokenizers::Tokenizer;

use super::embed::NOT_FINITE;
use super::test_support::{EchoBackend, manifest, word_level_tokenizer};
use super::*;
use crate::metrics;
use crate::settings::EngineSettings;

#[tokio::test]
async fn results_come_back_in_input_order_despite_length_sorting() {
    let settings = EngineSettings {
        max_batch_rows: 2,
        max_batch_tokens: 6,
        ..Default::default()
    };
    let embedder = Embedder::start(
        Box::new(EchoBackend),
        word_level_tokenizer(),
        &manifest(),
        &settings,
    );
    let texts = vec!["d d d d".to_string(), "a".into(), "b c".into(), "c".into()];
    let vectors = embedder.embed(texts).await.unwrap();
    let means: Vec<f32> = vectors.iter().map(|v| v[0]).collect();
    assert_eq!(means, vec![4.0, 1.0, 2.5, 3.0]);
    assert!(vectors.iter().all(|v| v[1] == 1.0));
}

fn texts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn go() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

#[tokio::test]
async fn a_non_finite_row_fails_alone_and_a_mostly_non_finite_request_fails_whole() {
    use super::test_support::NanBackend;
    // Word `c` (id 3) yields NaN: the rows holding it fail, the others embed.
    let embedder = Embedder::start(
        Box::new(NanBackend { nan_id: 3 }),
        word_level_tokenizer(),
        &manifest(),
        &EngineSettings::default(),
    );
    let rows = embedder
        .embed_rows(texts(&["a", "b c", "d d", "a b", "b"]), go(), true)
        .await
        .unwrap();
    let results: Vec<_> = rows.iter().map(|r| r.result.clone()).collect();
    assert_eq!(
        results,
        vec![
            Ok(vec![1.0, 1.0]),
            Err(NOT_FINITE.to_string()),
            Ok(vec![4.0, 1.0]),
            Ok(vec![1.5, 1.0]),
            Ok(vec![2.0, 1.0]),
        ]
    );
    assert!(rows.iter().all(|r| !r.truncated));
    // `embed` (training) never hands out a partial answer: the row is named.
    let err = embedder
        .embed(texts(&["a", "b c", "d d"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Row { index: 1, reason } if reason == NOT_FINITE),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    // Three of five non-finite: the model is broken, the request fails, permanently.
    let err = embedder
        .embed_rows(texts(&["c", "a c", "c d", "a", "b"]), go(), true)
        .await
        .unwrap_err();
    match &err {
        EngineError::Model(message) => assert!(
            message
                .starts_with("the model's output is not finite (NaN or infinity) for 3 of 5 rows"),
            "{message}"
        ),
        other => panic!("expected a model error, got {other:?}"),
    }
    assert!(!err.is_retryable());
    // Exactly half is still per row.
    let rows = embedder
        .embed_rows(texts(&["c", "a c", "a", "b"]), go(), true)
        .await
        .unwrap();
    assert_eq!(rows.iter().filter(|r| r.result.is_err()).count(), 2);
    assert!(embedder.is_alive());
}

#[tokio::test]
async fn over_long_texts_are_cut_and_flagged_or_refused_and_bad_texts_fail_alone() {
    let before = metrics::ROWS_TRUNCATED.get();
    let embedder = Embedder::start(
        Box::new(EchoBackend),
        word_level_tokenizer(),
        &manifest(),
        &EngineSettings::default(),
    );
    // max_length 8: ten words are cut to the first eight.
    let long = "a a a a a a a a d d";
    let rows = embedder
        .embed_rows(texts(&["b", long]), go(), true)
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            RowOutput {
                result: Ok(vec![2.0, 1.0]),
                truncated: false
            },
            RowOutput {
                result: Ok(vec![1.0, 1.0]),
                truncated: true
            },
        ]
    );
    assert!(metrics::ROWS_TRUNCATED.get() > before);
    let rows = embedder
        .embed_rows(texts(&["b", long, "c"]), go(), false)
        .await
        .unwrap();
    assert_eq!(rows[0].result, Ok(vec![2.0, 1.0]));
    assert_eq!(
        rows[1],
        RowOutput {
            result: Err(
                "10 tokens > max 8 (the package's max_length); shorten the text, \
                         or set truncate = true in the job spec to cut it"
                    .into()
            ),
            truncated: false
        }
    );
    assert_eq!(rows[2].result, Ok(vec![3.0, 1.0]));
    // Training truncates.
    assert_eq!(
        embedder.embed(texts(&[long])).await.unwrap(),
        vec![vec![1.0, 1.0]]
    );

    // A tokenizer that cannot encode unknown words fails only those rows.
    let json = serde_json::json!({
        "version": "1.0",
        "model": {"type": "WordLevel", "vocab": {"a": 1, "b": 2}, "unk_token": "[MISSING]"},
        "pre_tokenizer": {"type": "Whitespace"}
    });
    let strict = Tokenizer::from_bytes(json.to_string().as_bytes()).unwrap();
    let embedder = Embedder::start(
        Box::new(EchoBackend),
        strict,
        &manifest(),
        &EngineSettings::default(),
    );
    let rows = embedder
        .embed_rows(texts(&["a", "a zebra", "b b"]), go(), true)
        .await
        .unwrap();
    assert_eq!(rows[0].result, Ok(vec![1.0, 1.0]));
    assert_eq!(rows[2].result, Ok(vec![2.0, 1.0]));
    let reason = rows[1].result.clone().unwrap_err();
    assert!(
        reason.starts_with("the tokenizer cannot encode this text")
            && reason.contains("Missing [UNK] token"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_panic_fails_its_request_and_ends_the_engine() {
    use super::test_support::PanicBackend;
    let before = metrics::ENGINE_PANICS.get();
    // Word `d` (id 4) panics the backend; the warm-up never holds it.
    let embedder = Embedder::start(
        Box::new(PanicBackend { panic_id: 4 }),
        word_level_tokenizer(),
        &manifest(),
        &EngineSettings::default(),
    );
    assert_eq!(
        embedder.embed(texts(&["a b"])).await.unwrap(),
        vec![vec![1.5, 1.0]]
    );
    assert!(embedder.is_alive());
    let err = embedder
        .embed_rows(texts(&["a", "d"]), go(), true)
        .await
        .unwrap_err();
    match &err {
        EngineError::Panicked(message) => {
            assert_eq!(message, "fake backend: token 4 is poison")
        }
        other => panic!("expected a panic error, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert!(!embedder.is_alive());
    assert!(!embedder.clone().is_alive());
    assert!(metrics::ENGINE_PANICS.get() > before);
    // The thread is gone: later requests fail at once instead of waiting.
    let later = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        embedder.embed(texts(&["a"])),
    )
    .await
    .expect("answered at once");
    assert!(matches!(later, Err(EngineError::Stopped)), "{later:?}");
}

#[tokio::test]
async fn shutdown_joins_the_thread_once_the_last_handle_is_gone() {
    use super::test_support::{PanicBackend, WatchedBackend};
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let dropped = Arc::new(AtomicBool::new(false));
    let embedder = Embedder::start(
        Box::new(WatchedBackend {
            dropped: dropped.clone(),
        }),
        word_level_tokenizer(),
        &manifest(),
        &EngineSettings::default(),
    );
    let clone = embedder.clone();
    assert_eq!(
        clone.embed(texts(&["b"])).await.unwrap(),
        vec![vec![2.0, 1.0]]
    );
    // Another handle still holds the engine: it keeps running and answering.
    assert!(!clone.shutdown(Duration::from_millis(50)).await);
    assert!(!dropped.load(Ordering::Acquire));
    assert_eq!(
        embedder.embed(texts(&["c"])).await.unwrap(),
        vec![vec![3.0, 1.0]]
    );
    // The last one: the thread ends, has dropped its backend, and is joined.
    assert!(embedder.shutdown(Duration::from_secs(10)).await);
    assert!(
        dropped.load(Ordering::Acquire),
        "the engine thread has exited"
    );

    // A thread that ended in a panic is joined too, without waiting out the bound.
    let poisoned = Embedder::start(
        Box::new(PanicBackend { panic_id: 4 }),
        word_level_tokenizer(),
        &manifest(),
        &EngineSettings::default(),
    );
    let err = poisoned.embed(texts(&["d"])).await.unwrap_err();
    assert!(matches!(err, EngineError::Panicked(_)), "{err:?}");
    let joined = tokio::time::timeout(
        Duration::from_secs(5),
        poisoned.shutdown(Duration::from_secs(60)),
    )
    .await
    .expect("joined at once");
    assert!(joined);
}

/// Runs out of memory for any batch of more than two rows.
struct TwoRowBackend;

impl InferenceBackend for TwoRowBackend {
    fn hidden_states(&mut self, batch: &TokenBatch) -> Result<Vec<f32>, EngineError> {
        if batch.rows > 2 {
            return Err(EngineError::OutOfMemory(format!("{} rows", batch.rows)));
        }
        EchoBackend.hidden_states(batch)
    }
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn warnings_on_the_engine_thread_name_the_callers_span() {
    use tracing::Instrument;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let embedder = Embedder::start(
        Box::new(TwoRowBackend),
        word_level_tokenizer(),
        &manifest(),
        &EngineSettings::default(),
    );
    let halving_lines = || -> Vec<String> {
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter(|line| line.contains("halving the batch budget"))
            .map(str::to_string)
            .collect()
    };
    let four = || texts(&["a", "b", "c", "d"]);
    // Outside any span: the warning carries no job.
    let plain = embedder.embed(four()).await.unwrap();
    let outside = halving_lines();
    assert!(!outside.is_empty());
    assert!(
        outside.iter().all(|line| !line.contains("job_id")),
        "{outside:?}"
    );
    // The halved budget stays with its engine: a fresh one runs out of memory again.
    let embedder = Embedder::start(
        Box::new(TwoRowBackend),
        word_level_tokenizer(),
        &manifest(),
        &EngineSettings::default(),
    );
    let span = tracing::warn_span!("shard", job_id = %"job-42", shard = 7);
    let spanned = embedder.embed(four()).instrument(span).await.unwrap();
    assert_eq!(spanned, plain);
    let inside = halving_lines().split_off(outside.len());
    assert_eq!(inside.len(), outside.len(), "{inside:?}");
    for line in &inside {
        assert!(
            line.contains(
                "shard{job_id=job-42 shard=7}: sluice::engine::embed: batch ran out of memory"
            ),
            "{line}"
        );
    }
}
