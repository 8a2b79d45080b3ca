//! Training data and training numbers that must never slip through: a declared label without
//! rows fails the job before anything is embedded, labels compare after Unicode NFC, a run
//! whose loss or parameters turn NaN fails at that step, and job records with odd values
//! never take the job list down.

mod common;

use std::time::Duration;

use common::Cluster;
use prost::Message;
use serde_json::{Value, json};
use sluice::job::JobStatus;
use sluice::train::builder::GraphBuilder;
use sluice::train::onnx::Dim;
use sluice::train::step::{FEATURES, LOSS, LR, STEP, TARGETS};

/// `labels.len()` review texts as JSONL rows, the i-th labelled `labels[i]`.
fn rows(labels: &[&str]) -> String {
    let reviews = common::rotten_tomatoes_reviews(Some(labels.len()));
    reviews
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(i, ((text, _), label))| {
            json!({"id": format!("r{i}"), "text": text, "label": label}).to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn spec(cluster: &Cluster, name: &str, input: &str, labels: &[&str]) -> Value {
    json!({
        "api_version": "sluice/v1",
        "kind": "training",
        "name": name,
        "model": cluster.model_uri,
        "input": {"uri": cluster.uri(input), "format": "jsonl", "text_field": "text", "label_field": "label"},
        "output": {"uri": cluster.uri(&format!("out/{name}/"))},
        "training": {
            "labels": labels,
            "head": {"type": "linear"},
            "batch_size": 8,
            "epochs": 3,
            "checkpoint_every": 0,
            "eval": {"fraction": 0.2}
        }
    })
}

async fn report(cluster: &Cluster, name: &str) -> Value {
    let text = cluster
        .get_text(&format!("out/{name}/training-report.json"))
        .await
        .expect("training report");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_declared_label_needs_rows_and_labels_compare_after_nfc() {
    let mut cluster = Cluster::new(32 * 1024).await;
    cluster.start(true).await;
    let two: Vec<&str> = (0..40)
        .map(|i| if i % 2 == 0 { "fresh" } else { "rotten" })
        .collect();
    cluster.put("data/two-labels.jsonl", rows(&two)).await;

    // "meh" is declared but no row has it: failed before the encoder ran (nothing cached).
    let missing = cluster
        .submit(&spec(
            &cluster,
            "missing",
            "data/two-labels.jsonl",
            &["fresh", "rotten", "meh"],
        ))
        .await;
    let job = cluster.wait(&missing, Duration::from_secs(120)).await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    let error = job.error.unwrap();
    assert!(
        error.contains("label \"meh\" has 0 training and 0 evaluation rows")
            && error.contains("training.min_rows_per_label = 1")
            && error.contains("data/two-labels.jsonl")
            && !error.contains("\"fresh\""),
        "{error}"
    );
    assert!(
        cluster.keys("features/").await.is_empty(),
        "the encoder ran before the labels were checked"
    );

    // Enough in training, too few in the separate evaluation data.
    cluster
        .put(
            "data/eval-fresh-only.jsonl",
            rows(&["fresh", "fresh", "fresh"]),
        )
        .await;
    let mut eval_short = spec(
        &cluster,
        "eval-short",
        "data/two-labels.jsonl",
        &["fresh", "rotten"],
    );
    eval_short["training"]["eval"] = json!({"uri": cluster.uri("data/eval-fresh-only.jsonl")});
    eval_short["training"]["min_rows_per_label"] = 2.into();
    let eval_short = cluster.submit(&eval_short).await;
    let job = cluster.wait(&eval_short, Duration::from_secs(120)).await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    let error = job.error.unwrap();
    assert!(
        error.contains("label \"rotten\" has 20 training and 0 evaluation rows")
            && error.contains("training.min_rows_per_label = 2")
            && error.contains("data/eval-fresh-only.jsonl"),
        "{error}"
    );
    assert!(cluster.keys("features/").await.is_empty());

    // "café" written precomposed and with a combining accent is one class; the report and
    // the job's progress count each label's rows per part.
    let composed = "caf\u{e9}";
    let decomposed = "cafe\u{301}";
    let mixed: Vec<&str> = (0..40)
        .map(|i| match i % 4 {
            0 => composed,
            1 => decomposed,
            _ => "th\u{e9}",
        })
        .collect();
    cluster.put("data/cafe.jsonl", rows(&mixed)).await;
    let nfc = cluster
        .submit(&spec(
            &cluster,
            "nfc",
            "data/cafe.jsonl",
            &[decomposed, "th\u{e9}"],
        ))
        .await;
    let job = cluster.wait(&nfc, Duration::from_secs(300)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let training = job.training.unwrap();
    let counts: Vec<(u64, u64)> = training
        .classes
        .iter()
        .map(|c| (c.train_rows, c.eval_rows))
        .collect();
    // 20 rows per class; 20% of each held out.
    assert_eq!(counts, vec![(16, 4), (16, 4)], "{:?}", training.classes);
    let report = report(&cluster, "nfc").await;
    assert_eq!(
        report["data"]["classes"],
        json!([
            {"label": decomposed, "train_rows": 16, "eval_rows": 4},
            {"label": "th\u{e9}", "train_rows": 16, "eval_rows": 4},
        ])
    );

    // Two declared labels that normalise alike: refused at submission, both named.
    let (status, body) = cluster
        .post_spec(
            &spec(
                &cluster,
                "twins",
                "data/cafe.jsonl",
                &[composed, "th\u{e9}", decomposed],
            ),
            None,
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "training.labels");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("caf\\u{e9}") && message.contains("cafe\\u{301}"),
        "{message}"
    );
    cluster.stop().await;
}

/// A step graph under the contract for the 384→2 linear head whose loss is
/// `sqrt(5.5 - step)`: finite for steps 1-5, NaN from step 6. Parameters pass through.
fn nan_at_step_6() -> Vec<u8> {
    let mut b = GraphBuilder::new("nan_at_step_6");
    let weight = b.input("param.head.weight", &[Dim::Fixed(384), Dim::Fixed(2)]);
    let bias = b.input("param.head.bias", &[Dim::Fixed(2)]);
    b.input(FEATURES, &[Dim::Named("batch"), Dim::Fixed(384)]);
    b.input(TARGETS, &[Dim::Named("batch"), Dim::Fixed(2)]);
    let step = b.input(STEP, &[]);
    b.input(LR, &[]);
    let limit = b.scalar(5.5);
    let left = b.sub(&limit, &step);
    let loss = b.op("Sqrt", &[&left], vec![]);
    b.output(&loss, LOSS, &[]);
    b.output(
        &weight,
        "new.param.head.weight",
        &[Dim::Fixed(384), Dim::Fixed(2)],
    );
    b.output(&bias, "new.param.head.bias", &[Dim::Fixed(2)]);
    b.finish("test: loss turns NaN at step 6", &[])
        .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverging_run_fails_at_that_step_and_odd_records_never_break_the_list() {
    let mut cluster = Cluster::new(32 * 1024).await;
    cluster.start(true).await;
    let two: Vec<&str> = (0..40)
        .map(|i| if i % 2 == 0 { "fresh" } else { "rotten" })
        .collect();
    cluster.put("data/reviews.jsonl", rows(&two)).await;
    cluster.put("graphs/nan.onnx", nan_at_step_6()).await;
    let dir = tempfile::tempdir().unwrap();
    let momentum_nan = dir.path().join("momentum-nan.onnx");
    common::custom_step_graph(
        &momentum_nan,
        384,
        2,
        &["--head-names", "--momentum", "nan"],
    );
    cluster
        .put(
            "graphs/momentum-nan.onnx",
            std::fs::read(&momentum_nan).unwrap(),
        )
        .await;

    // 32 training rows in batches of 8: 4 steps an epoch, so step 6 is in epoch 2.
    let mut nan_loss = spec(
        &cluster,
        "nan-loss",
        "data/reviews.jsonl",
        &["fresh", "rotten"],
    );
    nan_loss["training"]["step_graph"] = cluster.uri("graphs/nan.onnx").into();
    let nan_loss = cluster.submit(&nan_loss).await;
    // SGD whose momentum is NaN: the parameters are NaN after the first step, while that
    // step's loss (computed before the update) is still finite.
    let mut nan_params = spec(
        &cluster,
        "nan-params",
        "data/reviews.jsonl",
        &["fresh", "rotten"],
    );
    nan_params["training"]["step_graph"] = cluster.uri("graphs/momentum-nan.onnx").into();
    let nan_params = cluster.submit(&nan_params).await;

    let job = cluster.wait(&nan_loss, Duration::from_secs(300)).await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    let error = job.error.clone().unwrap();
    assert!(
        error.contains("training loss became NaN at step 6 (epoch 2)")
            && error.contains("lower the learning rate"),
        "{error}"
    );
    // What was recorded before is finite and readable: epoch 1 was evaluated.
    let progress = job.training.clone().expect("training progress");
    assert!(progress.loss.is_some_and(f64::is_finite), "{progress:?}");
    assert_eq!(progress.eval.map(|e| e.step), Some(4), "{progress:?}");
    assert!(
        cluster
            .keys("out/nan-loss/sluice-model.toml")
            .await
            .is_empty(),
        "a diverged run left a package"
    );

    let job = cluster.wait(&nan_params, Duration::from_secs(300)).await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    let error = job.error.unwrap();
    assert!(
        error.contains("training parameter head.")
            && error.contains("became NaN at step 1 (epoch 1)"),
        "{error}"
    );

    let list = |query: &'static str| {
        let url = format!("{}/v1/jobs{query}", cluster.base_url());
        async move {
            let response = reqwest::get(url).await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = list("").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jobs"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(body["unreadable"], json!([]));

    // Odd values by hand, as an older version or another writer could leave them.
    let state =
        sluice::state::StateStore::connect(&cluster.settings.redis, &cluster.settings.prefix)
            .await
            .unwrap();
    state
        .set_fields(
            &nan_params,
            &[(
                "training",
                r#"{"step": 3, "total_steps": 12, "loss": null, "eta_seconds": "soon",
                    "eval": {"epoch": 1, "step": 4, "loss": null, "accuracy": 0.5, "macro_f1": 0.5}}"#
                    .to_string(),
            )],
        )
        .await
        .unwrap();
    state
        .set_fields(&nan_loss, &[("spec", "{\"api_version\": ".to_string())])
        .await
        .unwrap();

    // The odd numbers read as absent; the record without a spec is named, not fatal.
    let (status, body) = list("").await;
    assert_eq!(status, 200, "{body}");
    let jobs = body["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{body}");
    assert_eq!(jobs[0]["id"], nan_params.as_str());
    assert_eq!(jobs[0]["training"]["step"], 3);
    assert_eq!(jobs[0]["training"]["loss"], Value::Null);
    assert_eq!(jobs[0]["training"]["eval"], Value::Null);
    let unreadable = body["unreadable"].as_array().unwrap();
    assert_eq!(unreadable.len(), 1, "{body}");
    assert_eq!(unreadable[0]["id"], nan_loss.as_str());
    assert!(
        unreadable[0]["reason"].as_str().unwrap().contains("spec"),
        "{body}"
    );
    // Filtered by status: the unreadable record's status (failed) still reads.
    let (status, body) = list("?status=succeeded").await;
    assert_eq!(
        (status, body["unreadable"].clone()),
        (200, json!([])),
        "{body}"
    );
    let (status, body) = list("?status=failed").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unreadable"].as_array().unwrap().len(), 1, "{body}");

    // One job: the readable one shows, the unreadable one says why (not "unavailable").
    let shown = cluster.client().job(&nan_params).await.unwrap();
    assert_eq!(shown.training.unwrap().loss, None);
    let response = reqwest::get(format!("{}/v1/jobs/{nan_loss}", cluster.base_url()))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 500);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unreadable_record", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(nan_loss.as_str()),
        "{body}"
    );

    // The command line lists the readable job and names the other.
    let output = cluster
        .command()
        .arg("jobs")
        .env("SLUICE__API__URL", cluster.base_url())
        .output()
        .await
        .expect("run sluice jobs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&nan_params), "{stdout}");
    assert!(
        stderr.contains(&format!("unreadable job record {nan_loss}")),
        "{stderr}"
    );
    cluster.stop().await;
}
