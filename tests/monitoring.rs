//! The dashboards and rules against a real Prometheus: a workload (an inference job, a
//! training job, a rejected submission, a dead-lettered task) runs while a Prometheus of the
//! test's own scrapes the API, a worker, RabbitMQ and the Redis exporter; then every panel
//! query of every dashboard must return data (drawn by `dashboards/preview.py`, whose PNGs
//! land in `$SLUICE_PREVIEW_DIR` when set) and every recording rule must have a value.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use common::prometheus_node::PrometheusNode;
use lapin::BasicProperties;
use serde_json::json;
use sluice::broker::Topology;
use sluice::job::{JobStatus, Pool};

/// Runs the preview tool in check mode; returns its exit status and what it printed.
fn preview(
    prometheus: &str,
    dashboard: &std::path::Path,
    out: &std::path::Path,
    minutes: f64,
) -> (bool, String) {
    let run = std::process::Command::new(common::assets().reference_python)
        .arg("dashboards/preview.py")
        .arg(dashboard)
        .arg(out)
        .args(["--prometheus", prometheus, "--check"])
        .args(["--minutes", &format!("{minutes:.2}")])
        .output()
        .expect("run dashboards/preview.py");
    (
        run.status.success(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_and_recording_rule_has_data_after_a_real_workload() {
    let mut cluster = Cluster::new(16 * 1024).await;
    cluster.start(false).await;
    let worker_port = common::free_port();
    cluster.spawn_worker_with(&[(
        "SLUICE__METRICS__LISTEN",
        &format!("127.0.0.1:{worker_port}"),
    )]);
    let api = cluster.base_url().trim_start_matches("http://").to_string();
    let prometheus = PrometheusNode::start(&[
        ("sluice-api", vec![api]),
        ("sluice-worker", vec![format!("127.0.0.1:{worker_port}")]),
        ("rabbitmq", vec!["127.0.0.1:15692".into()]),
        ("redis", vec!["127.0.0.1:9121".into()]),
    ])
    .await;
    let watching = Instant::now();

    // The workload.
    let (jsonl, _) = common::rotten_tomatoes_jsonl(Some(1500));
    cluster.put("in/reviews.jsonl", jsonl).await;
    let broker = cluster.broker().await;
    let topology = Topology::new(
        &cluster.settings.prefix,
        &cluster.settings.amqp.retry_delays_ms,
    );
    broker
        .publish(
            &topology.submissions_exchange(),
            Topology::SUBMISSION_ROUTING_KEY,
            b"{ not json",
            BasicProperties::default().with_message_id("junk-1".into()),
        )
        .await
        .unwrap();
    // The poison task goes before the jobs: a worker busy training would otherwise hold it
    // in its prefetch for as long as the training runs.
    broker
        .publish_task(Pool::Cpu, 5, b"this is not a task")
        .await
        .unwrap();
    cluster.wait_dead_letters(1).await;
    let inference = cluster
        .submit(&cluster.spec("embed", "in/reviews.jsonl", "jsonl", "out/embed/"))
        .await;
    let training = cluster
        .submit(&json!({
            "api_version": "sluice/v1",
            "kind": "training",
            "name": "monitored-training",
            "model": cluster.model_uri,
            "input": {"uri": cluster.uri("in/reviews.jsonl"), "format": "jsonl"},
            "output": {"uri": cluster.uri("models/monitored/")},
            "training": {"labels": ["fresh", "rotten"], "epochs": 150, "batch_size": 32, "checkpoint_every": 100,
                         "head": {"type": "mlp", "hidden": [128], "dropout": 0.1}}
        }))
        .await;
    for id in [&inference, &training] {
        let job = cluster.wait(id, Duration::from_secs(300)).await;
        assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    }
    // A little more scraping and rule evaluation after the work, so rates have points.
    tokio::time::sleep(Duration::from_secs(20)).await;

    // Every panel of every dashboard, then every recording rule, until all have data (the
    // scrapes and rule evaluations catch up within seconds).
    let out_dir = std::env::var_os("SLUICE_PREVIEW_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("{}-previews", cluster.settings.prefix))
        });
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut dashboards: Vec<_> = std::fs::read_dir("dashboards/grafana")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    dashboards.sort();
    assert_eq!(dashboards.len(), 4, "{dashboards:?}");
    let rules = std::fs::read_to_string("dashboards/prometheus/rules.yml").unwrap();
    let recorded: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .collect();
    assert!(recorded.len() >= 5, "{recorded:?}");
    let started = Instant::now();
    loop {
        let mut missing = Vec::new();
        for dashboard in &dashboards {
            let name = dashboard
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let png = out_dir.join(format!("{name}.png"));
            // The whole time Prometheus watched, and a little before.
            let minutes = watching.elapsed().as_secs_f64() / 60.0 + 0.1;
            let (ok, report) = preview(&prometheus.url, dashboard, &png, minutes);
            if !ok {
                missing.push(format!("{name}:\n{report}"));
                continue;
            }
            let bytes = std::fs::read(&png).unwrap();
            assert!(
                bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
                "{}",
                png.display()
            );
        }
        for record in &recorded {
            if prometheus
                .query(&format!("last_over_time({record}[5m])"))
                .await
                .is_empty()
            {
                missing.push(format!("recording rule {record}"));
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no data after 2 minutes:\n{}",
            missing.join("\n")
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    eprintln!(
        "every panel of {} dashboards and {} recording rules have data; previews in {}",
        dashboards.len(),
        recorded.len(),
        out_dir.display()
    );

    // The alert on dead letters is pending or firing: the rules run against real data.
    let alerts = prometheus
        .query("ALERTS{alertname=\"SluiceDeadLetters\"}")
        .await;
    assert!(!alerts.is_empty(), "SluiceDeadLetters never became pending");
    cluster.stop().await;
}
