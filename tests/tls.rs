//! TLS to the broker and to Redis: with `amqps://` and `rediss://` URLs and a private CA in
//! `amqp.tls_ca_file` / `redis.tls_ca_file`, a job runs end to end through a worker process
//! (Redis has no plain port at all); without the CA the connection is refused for the
//! certificate, and a CA file that cannot be read is named.

mod common;

use std::time::Duration;

use common::Cluster;
use common::broker_node::BrokerNode;
use common::redis_node::RedisNode;
use common::tls::TestCa;
use sluice::broker::{Broker, Topology};
use sluice::job::JobStatus;
use sluice::settings::{AmqpSettings, RedisSettings};
use sluice::state::StateStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_over_tls_to_the_broker_and_redis() {
    let ca = TestCa::new();
    let tls_port = common::free_port();
    let _node = BrokerNode::start(&ca.rabbitmq_listener(tls_port)).await;
    common::wait_for(
        "the broker's TLS listener",
        Duration::from_secs(30),
        async || std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok(),
    )
    .await;
    let redis = RedisNode::start(Some(&ca), None).await;
    let amqps = format!("amqps://guest:guest@localhost:{tls_port}/%2f");

    // Without the private CA, both refuse the server's certificate, and say so.
    let untrusted = AmqpSettings {
        url: amqps.clone(),
        ..Default::default()
    };
    let err = Broker::connect(&untrusted, Topology::new("tls-untrusted", &[1000]))
        .await
        .err()
        .expect("an unknown CA is refused")
        .to_string();
    assert!(
        err.contains("localhost") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    assert!(!err.contains("guest:guest"), "the password leaked: {err}");
    eprintln!("amqps without the CA: {err}");
    let untrusted = RedisSettings {
        url: redis.url.clone(),
        ..Default::default()
    };
    let err = StateStore::connect(&untrusted, "tls-untrusted")
        .await
        .err()
        .expect("an unknown CA is refused")
        .to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    eprintln!("rediss without the CA: {err}");
    let missing = RedisSettings {
        url: redis.url.clone(),
        tls_ca_file: "/nonexistent/ca.pem".into(),
        ..Default::default()
    };
    let err = StateStore::connect(&missing, "tls-missing")
        .await
        .err()
        .expect("a missing CA file is refused")
        .to_string();
    assert!(
        err.contains("redis.tls_ca_file /nonexistent/ca.pem"),
        "{err}"
    );
    eprintln!("unreadable CA file: {err}");

    // With it: the API in this process, a worker process, and a job through both.
    let mut cluster = Cluster::new(8 * 1024).await;
    cluster.settings.amqp.url = amqps;
    cluster.settings.amqp.tls_ca_file = ca.ca_file();
    cluster.settings.redis.url = redis.url.clone();
    cluster.settings.redis.tls_ca_file = ca.ca_file();
    cluster.start(false).await;
    let worker = cluster.spawn_worker();
    let (body, expected) = common::rotten_tomatoes_jsonl(Some(300));
    let ids: Vec<String> = expected.into_iter().map(|(id, _)| id).collect();
    cluster.put("in.jsonl", body).await;
    let id = cluster
        .submit(&cluster.spec("over-tls", "in.jsonl", "jsonl", "out/"))
        .await;
    let job = cluster.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert!(job.progress.shards_total >= 2, "{job:?}");
    let rows = cluster.output_rows("out/").await;
    common::assert_exactly_once(&rows, &ids);
    assert_eq!(rows[0]["embedding"].as_array().unwrap().len(), 384);

    // The job's record is in the TLS Redis (the shared plain one never saw it).
    let state = StateStore::connect(&cluster.settings.redis, &cluster.settings.prefix)
        .await
        .unwrap();
    assert_eq!(state.get(&id).await.unwrap().status, JobStatus::Succeeded);
    let (exit, _) = cluster.terminate_worker(worker).await;
    assert!(exit.success(), "{exit:?}");
    cluster.stop().await;
}
