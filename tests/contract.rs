//! The API contract and bad-input handling on the real services: validation, idempotency,
//! missing inputs, bad rows and the error budget, cancellation, CSV folders, dead letters.

mod common;

use std::time::Duration;

use common::Cluster;
use serde_json::{Value, json};
use sluice::job::JobStatus;

const MINUTE: Duration = Duration::from_secs(60);

fn jsonl(rows: &[(&str, &str)]) -> String {
    rows.iter()
        .map(|(id, text)| json!({"id": id, "text": text}).to_string() + "\n")
        .collect()
}

#[tokio::test]
async fn invalid_specs_are_refused_naming_the_field_and_create_nothing() {
    let mut cluster = Cluster::new(1 << 20).await;
    cluster.start(false).await;
    let good = cluster.spec("ok", "in.jsonl", "jsonl", "out/");

    let mut unknown = good.clone();
    unknown["input"]["colour"] = json!("red");
    let mut wrong_type = good.clone();
    wrong_type["priority"] = json!("high");
    let mut missing_model = good.clone();
    missing_model["model"] = json!(cluster.uri("models/nothing-here/"));
    let mut bad_enum = good.clone();
    bad_enum["input"]["format"] = json!("xml");

    for (spec, field, words) in [
        (unknown, "input.colour", "unknown field"),
        (wrong_type, "priority", "invalid type"),
        (missing_model, "model", "no model package"),
        (bad_enum, "input.format", "unknown variant"),
    ] {
        let (status, body) = cluster.post_spec(&spec, None).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{message}");
        assert!(
            message.contains(field.rsplit('.').next().unwrap()),
            "{message}"
        );
    }
    let (status, body) = cluster.post_spec(&json!("not a spec"), None).await;
    assert_eq!(status, 422, "{body}");

    let jobs = cluster.client().jobs(None, 100).await.unwrap().jobs;
    assert!(
        jobs.is_empty(),
        "refused submissions created jobs: {jobs:?}"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn same_idempotency_key_gives_one_job() {
    let mut cluster = Cluster::new(1 << 20).await;
    cluster.start(false).await;
    cluster.put("in.jsonl", jsonl(&[("a", "hello")])).await;
    let spec = cluster.spec("idem", "in.jsonl", "jsonl", "out/");
    let (first_status, first) = cluster.post_spec(&spec, Some("order-42")).await;
    let (second_status, second) = cluster.post_spec(&spec, Some("order-42")).await;
    assert_eq!(first_status, 201, "{first}");
    assert_eq!(second_status, 200, "{second}");
    assert_eq!(first["id"], second["id"]);
    assert_eq!(second["created"], false);
    // The first job has not ended (no worker here): a second job may not share its output.
    let (conflict_status, conflict) = cluster.post_spec(&spec, Some("order-43")).await;
    assert_eq!(conflict_status, 409, "{conflict}");
    assert!(
        conflict["error"]["message"]
            .as_str()
            .unwrap()
            .contains("output.uri")
    );
    let mut elsewhere = spec.clone();
    elsewhere["output"]["uri"] = json!(cluster.uri("out-2/"));
    let (_, other) = cluster.post_spec(&elsewhere, Some("order-43")).await;
    assert_ne!(other["id"], first["id"]);
    let jobs = cluster.client().jobs(None, 100).await.unwrap().jobs;
    assert_eq!(jobs.len(), 2);
    // Newest first.
    assert_eq!(Value::from(jobs[0].id.clone()), other["id"]);
    cluster.stop().await;
}

#[tokio::test]
async fn missing_input_fails_the_job_naming_the_object() {
    let mut cluster = Cluster::new(1 << 20).await;
    cluster.start(true).await;
    let id = cluster
        .submit(&cluster.spec("missing", "no/such/object.jsonl", "jsonl", "out/"))
        .await;
    let job = cluster.wait(&id, MINUTE).await;
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap();
    assert!(
        error.contains(&cluster.uri("no/such/object.jsonl")),
        "{error}"
    );
    assert!(cluster.keys("out/").await.is_empty());
    // The failed task is not retried forever: it sits in the dead-letter queue.
    cluster.wait_dead_letters(1).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_pinned_to_another_version_fails_instead_of_reading_it() {
    let mut cluster = Cluster::new(1 << 20).await;
    cluster.start(true).await;
    cluster
        .put("in.jsonl", "{\"id\": \"a\", \"text\": \"new content\"}\n")
        .await;
    let mut spec = cluster.spec("pinned", "in.jsonl", "jsonl", "out/");
    spec["input"]["etag"] = "\"0123456789abcdef0123456789abcdef\"".into();
    let id = cluster.submit(&spec).await;
    let job = cluster.wait(&id, MINUTE).await;
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap();
    assert!(
        error.contains("changed after the job was submitted"),
        "{error}"
    );
    assert!(cluster.keys("out/").await.is_empty());
    cluster.stop().await;
}

fn rows_with_bad_lines() -> (String, Vec<String>) {
    let mut body = String::new();
    let mut good = Vec::new();
    for i in 1..=40 {
        match i {
            7 => body.push_str("{\"id\": \"r7\", \"text\": \"broken\n"),
            20 => body.push_str("{\"id\": \"r20\", \"txt\": \"no text field\"}\n"),
            33 => body.push('\n'), // blank lines are skipped, not errors
            _ => {
                body.push_str(
                    &json!({"id": format!("r{i}"), "text": format!("review number {i} was fine")})
                        .to_string(),
                );
                body.push('\n');
                good.push(format!("r{i}"));
            }
        }
    }
    (body, good)
}

#[tokio::test]
async fn bad_rows_are_reported_with_line_numbers_while_good_rows_succeed() {
    let mut cluster = Cluster::new(1 << 20).await;
    cluster.start(true).await;
    let (body, good) = rows_with_bad_lines();
    cluster.put("in.jsonl", body).await;
    let mut spec = cluster.spec("bad-rows", "in.jsonl", "jsonl", "out/");
    spec["max_error_rate"] = json!(0.1);
    let id = cluster.submit(&spec).await;
    let job = cluster.wait(&id, MINUTE).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert_eq!(job.progress.rows_done, 37);
    assert_eq!(job.progress.rows_failed, 2);
    common::assert_exactly_once(&cluster.output_rows("out/").await, &good);
    let errors = cluster
        .get_text("out/errors/part-00000.jsonl")
        .await
        .expect("errors part");
    let errors: Vec<Value> = errors
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["line"], 7);
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    assert_eq!(errors[1]["line"], 20);
    assert_eq!(errors[1]["error"], "field \"text\" missing");
    assert!(cluster.get_text("out/_SUCCESS").await.is_some());
    cluster.stop().await;
}

#[tokio::test]
async fn exceeding_the_error_budget_fails_the_job() {
    let mut cluster = Cluster::new(1 << 20).await;
    cluster.start(true).await;
    let (body, _) = rows_with_bad_lines();
    cluster.put("in.jsonl", body).await;
    let mut spec = cluster.spec("too-many-bad", "in.jsonl", "jsonl", "out/");
    spec["max_error_rate"] = json!(0.01);
    let id = cluster.submit(&spec).await;
    let job = cluster.wait(&id, MINUTE).await;
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap();
    assert!(
        error.contains("2 of 39 rows failed") && error.contains("max_error_rate"),
        "{error}"
    );
    assert!(cluster.get_text("out/_SUCCESS").await.is_none());
    assert!(cluster.get_text("out/_manifest.json").await.is_some());
    cluster.stop().await;
}

#[tokio::test]
async fn cancel_stops_the_job_and_no_further_parts_appear() {
    let mut cluster = Cluster::new(4 * 1024).await;
    cluster.settings.worker.chunk_rows = 16;
    cluster.start(true).await;
    let (body, _) = common::rotten_tomatoes_jsonl(Some(1500));
    cluster.put("in.jsonl", body).await;
    let id = cluster
        .submit(&cluster.spec("to-cancel", "in.jsonl", "jsonl", "out/"))
        .await;
    cluster
        .wait_until(&id, MINUTE, |job| job.progress.shards_done >= 1)
        .await;
    let cancelled = cluster.client().cancel(&id).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    let parts_at_cancel = cluster.keys("out/").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let job = cluster.client().job(&id).await.unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(
        job.progress.shards_done < job.progress.shards_total,
        "{job:?}"
    );
    // At most the one shard that was committing as the cancel arrived may land.
    let parts_later = cluster.keys("out/").await;
    assert!(
        parts_later.len() <= parts_at_cancel.len() + 1,
        "{parts_at_cancel:?} -> {parts_later:?}"
    );
    assert!(!parts_later.iter().any(|k| k.ends_with("_SUCCESS")));
    // Cancelling twice is fine; a finished job cannot be cancelled.
    assert_eq!(
        cluster.client().cancel(&id).await.unwrap().status,
        JobStatus::Cancelled
    );
    cluster.stop().await;
}

#[tokio::test]
async fn csv_folder_of_small_files_is_grouped_and_quoted_newlines_survive() {
    let mut cluster = Cluster::new(300).await;
    cluster.start(true).await;
    let mut expected = Vec::new();
    for file in 0..5 {
        let mut body = String::from("id,text,extra\n");
        for row in 0..4 {
            let id = format!("f{file}-r{row}");
            let text = if row == 1 {
                format!("\"a review that spans\ntwo lines, with \"\"quotes\"\" ({file})\"")
            } else {
                format!("plain review {file} {row}")
            };
            body.push_str(&format!("{id},{text},x\n"));
            expected.push(id);
        }
        cluster.put(&format!("csv/part-{file}.csv"), body).await;
    }
    let id = cluster
        .submit(&cluster.spec("csv", "csv/", "csv", "out/"))
        .await;
    let job = cluster.wait(&id, MINUTE).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert!(
        job.progress.shards_total >= 2 && job.progress.shards_total < 5,
        "small files are grouped: {job:?}"
    );
    assert_eq!(job.progress.rows_total, 20);
    common::assert_exactly_once(&cluster.output_rows("out/").await, &expected);
    cluster.stop().await;
}

#[tokio::test]
async fn a_task_that_cannot_be_read_is_dead_lettered() {
    let mut cluster = Cluster::new(1 << 20).await;
    cluster.start(true).await;
    let topology = sluice::broker::Topology::new(&cluster.settings.prefix, &[]);
    let broker = sluice::broker::Broker::connect(&cluster.settings.amqp, topology.clone())
        .await
        .unwrap();
    broker
        .publish_task(sluice::job::Pool::Cpu, 5, b"{\"type\": \"mystery\"}")
        .await
        .unwrap();
    cluster.wait_dead_letters(1).await;
    cluster.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let mut cluster = Cluster::new(1 << 20).await;
    cluster.start(false).await;
    let http = reqwest::Client::new();
    let base = cluster.base_url();
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["redis"], "ok");
    assert_eq!(ready["checks"]["broker"], "ok");
    assert_eq!(ready["checks"]["s3"], "ok");
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("sluice_jobs_submitted_total"), "{metrics}");
    let unknown = http
        .get(format!("{base}/v1/jobs/not-a-job"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    cluster.stop().await;
}

#[tokio::test]
async fn retryable_failures_back_off_through_the_retry_queues_then_dead_letter() {
    let mut cluster = Cluster::new(1 << 20).await;
    cluster.start(true).await;
    // A job stuck in `planning` makes its shard tasks fail with a retryable error.
    let state =
        sluice::state::StateStore::connect(&cluster.settings.redis, &cluster.settings.prefix)
            .await
            .unwrap();
    let spec = cluster.spec("stuck", "in.jsonl", "jsonl", "out/");
    let id = sluice::job::new_job_id();
    state
        .create_job(sluice::state::NewJob {
            id: &id,
            kind: "inference",
            name: "stuck",
            spec_json: &spec.to_string(),
            pool: "cpu",
            source: "test",
            output: "s3://unused/out/",
            idempotency_key: None,
            reply_to: None,
            correlation_id: None,
        })
        .await
        .unwrap();
    state.move_to(&id, JobStatus::Planning, &[]).await.unwrap();
    let task = sluice::job::TaskMessage::Shard(sluice::job::ShardTask {
        job_id: id.clone(),
        shard: 0,
        pieces: vec![],
        max_record_bytes: 1 << 20,
        max_record_lines: 100,
        columns: None,
    });
    let topology = sluice::broker::Topology::new(&cluster.settings.prefix, &[]);
    let broker = sluice::broker::Broker::connect(&cluster.settings.amqp, topology)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    broker
        .publish_task(
            sluice::job::Pool::Cpu,
            5,
            &serde_json::to_vec(&task).unwrap(),
        )
        .await
        .unwrap();
    cluster.wait_dead_letters(1).await;
    // Three retries of 200, 500 and 1000 ms came first.
    assert!(
        started.elapsed() >= Duration::from_millis(1700),
        "{:?}",
        started.elapsed()
    );
    let job = cluster.client().job(&id).await.unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert!(job.error.unwrap().contains("shard arrived early"));
    cluster.stop().await;
}
