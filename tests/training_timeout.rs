//! A training job outlives the broker's delivery timeout: on a RabbitMQ node of its own with
//! `consumer_timeout` at 5 s (enforced at the broker's one-minute check), a control consumer
//! that holds a delivery is cut off, while a training job running well past that completes
//! once, with one owner, because its `train` delivery was acked as soon as the job's Redis
//! lease was taken.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use common::broker_node::BrokerNode;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;
use sluice::job::JobStatus;
use sluice::state::StateStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_job_longer_than_the_consumer_timeout_completes_once() {
    let node = BrokerNode::start("consumer_timeout = 5000").await;
    let mut cluster = Cluster::new(32 * 1024).await;
    cluster.settings.amqp.url = node.url.clone();
    cluster.start(false).await;
    let state = StateStore::connect(&cluster.settings.redis, &cluster.settings.prefix)
        .await
        .unwrap();
    let (jsonl, _) = common::rotten_tomatoes_jsonl(Some(800));
    cluster.put("train/reviews.jsonl", jsonl).await;
    let worker = cluster.spawn_worker();

    // Long enough to run past the broker's check, which comes a minute after the worker's
    // channel opened: 14,000 steps, about 85 s here.
    let spec = json!({
        "api_version": "sluice/v1",
        "kind": "training",
        "name": "long-training",
        "model": cluster.model_uri,
        "input": {"uri": cluster.uri("train/reviews.jsonl"), "format": "jsonl"},
        "output": {"uri": cluster.uri("models/long/")},
        "training": {
            "labels": ["fresh", "rotten"],
            "head": {"type": "mlp", "hidden": [512, 256], "dropout": 0.1},
            "batch_size": 32,
            "epochs": 700,
            "checkpoint_every": 500,
            "optimizer": {"lr": 0.0005}
        }
    });
    let id = cluster.submit(&spec).await;
    cluster
        .wait_until(&id, Duration::from_secs(120), |job| {
            job.training.as_ref().is_some_and(|t| t.step > 0)
        })
        .await;

    // The control: a consumer that holds one delivery unacknowledged is cut off.
    let connection = Connection::connect(&node.url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = format!("{}.control", cluster.settings.prefix);
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"held",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "control".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let held = consumer
        .next()
        .await
        .expect("a delivery")
        .expect("delivery");
    let holding = Instant::now();
    let cut_off = tokio::time::timeout(Duration::from_secs(150), async {
        while channel.status().connected() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    assert!(
        cut_off.is_ok(),
        "the broker never enforced its consumer timeout"
    );
    drop(held);
    eprintln!("control consumer cut off after {:.0?}", holding.elapsed());

    // The training job was running all along, and is still.
    let job = cluster.client().job(&id).await.unwrap();
    let step = job.training.as_ref().map_or(0, |t| t.step);
    assert_eq!(
        job.status,
        JobStatus::Running,
        "the job ended (at step {step}) before the broker's timeout check: make it longer"
    );
    eprintln!("training still running at step {step} when the control was cut off");
    let done = cluster.wait(&id, Duration::from_secs(400)).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    let progress = done.training.unwrap();
    eprintln!(
        "training ran {:.0} s; {} steps",
        done.timings.elapsed_seconds.unwrap(),
        progress.step
    );
    assert!(done.timings.elapsed_seconds.unwrap() > 65.0);
    // One owner from start to end: leased once, never resumed, never re-delivered.
    assert_eq!(state.job_lease_count(&id).await.unwrap(), 1);
    assert_eq!(progress.resumes, 0);
    let log = std::fs::read_to_string(cluster.role_log("worker", worker)).unwrap();
    for sign in ["owned by another worker", "reconnecting", "timed out"] {
        assert!(!log.contains(sign), "worker log shows {sign:?}:\n{log}");
    }
    cluster.stop().await;
    drop(node);
}
