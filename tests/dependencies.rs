//! Dependencies that go missing or stall: a task queue and the tasks exchange deleted while
//! idle (on a RabbitMQ node of the test's own) turn readiness off until the topology is
//! declared again, publishes heal it on their own, and jobs then finish; an S3 that stops
//! answering (a proxy of the test's own that stops forwarding) makes calls time out within
//! their deadline, logged and counted, shows in the worker's readiness, and once S3 answers
//! again the job finishes with every row exactly once.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Cluster;
use common::broker_node::BrokerNode;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;
use sluice::job::{JobStatus, Pool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

async fn readyz(base: &str) -> (u16, Value) {
    let answer = reqwest::get(format!("{base}/readyz"))
        .await
        .expect("GET /readyz");
    let status = answer.status().as_u16();
    (status, answer.json().await.expect("readiness answers JSON"))
}

/// The value of one series in a Prometheus text page (0 when absent).
fn series(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metrics_page(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap()
}

/// Deletes queues and exchanges behind sluice's back, as an operator (or a lost node) would.
async fn delete(url: &str, queues: &[String], exchanges: &[String]) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect to the test's broker");
    let channel = connection.create_channel().await.unwrap();
    for queue in queues {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .expect("delete queue");
    }
    for exchange in exchanges {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .expect("delete exchange");
    }
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test]
async fn a_deleted_queue_and_exchange_come_back_and_readiness_says_so_meanwhile() {
    let node = BrokerNode::start("").await;
    let mut cluster = Cluster::new(64 * 1024).await;
    cluster.settings.amqp.url = node.url.clone();
    cluster.settings.amqp.topology_check_secs = 3;
    cluster.settings.metrics.probe_timeout_ms = 1_000;
    cluster.start(false).await;
    let base = cluster.base_url();
    let (status, body) = readyz(&base).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["topology"], "ok", "{body}");

    let topology = sluice::broker::Topology::new(
        &cluster.settings.prefix,
        &cluster.settings.amqp.retry_delays_ms,
    );
    let (queue, exchange) = (topology.task_queue(Pool::Cpu), topology.tasks_exchange());
    delete(
        &node.url,
        std::slice::from_ref(&queue),
        std::slice::from_ref(&exchange),
    )
    .await;
    let deleted = Instant::now();
    // Readiness fails while the topology is incomplete, naming what is missing…
    let (status, body) = readyz(&base).await;
    assert_eq!(status, 503, "{body}");
    let reason = body["failing"]["topology"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&exchange) || reason.contains(&queue),
        "the reason names the missing exchange or queue: {body}"
    );
    // …until the periodic check (every 3 s here) declares it again.
    common::wait_for(
        "readiness after the heal",
        Duration::from_secs(10),
        async || readyz(&base).await.0 == 200,
    )
    .await;
    let healed_after = deleted.elapsed();
    assert!(healed_after < Duration::from_secs(8), "{healed_after:?}");
    let page = metrics_page(&base).await;
    assert!(
        series(&page, "sluice_topology_redeclared_total{trigger=\"check\"}") >= 1.0,
        "{page}"
    );

    // A publish that finds the queue (then the exchange) gone declares it again and
    // retries: the submissions are accepted at once, not refused until someone notices.
    let (body, rows) = common::rotten_tomatoes_jsonl(Some(60));
    cluster.put("in.jsonl", body).await;
    let mut ids = Vec::new();
    let before = series(
        &metrics_page(&base).await,
        "sluice_topology_redeclared_total{trigger=\"publish\"}",
    );
    for (round, (queues, exchanges)) in [
        (vec![queue.clone()], vec![]),
        (vec![], vec![exchange.clone()]),
    ]
    .into_iter()
    .enumerate()
    {
        delete(&node.url, &queues, &exchanges).await;
        let output = format!("out-{round}/");
        let (status, answer) = cluster
            .post_spec(
                &cluster.spec("healed-by-publish", "in.jsonl", "jsonl", &output),
                None,
            )
            .await;
        assert_eq!(status, 201, "round {round}: {answer}");
        ids.push(answer["id"].as_str().unwrap().to_string());
    }
    let after = series(
        &metrics_page(&base).await,
        "sluice_topology_redeclared_total{trigger=\"publish\"}",
    );
    assert_eq!(after - before, 2.0, "each publish healed the topology once");
    ids.push(
        cluster
            .submit(&cluster.spec("after-the-heals", "in.jsonl", "jsonl", "out-2/"))
            .await,
    );

    cluster.spawn_worker();
    let expected: Vec<String> = rows.into_iter().map(|(id, _)| id).collect();
    for (n, id) in ids.iter().enumerate() {
        let job = cluster.wait(id, Duration::from_secs(120)).await;
        assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
        common::assert_exactly_once(&cluster.output_rows(&format!("out-{n}/")).await, &expected);
    }
    cluster.stop().await;
    drop(node);
}

/// A TCP proxy to the S3 server that, while frozen, accepts and reads but forwards nothing:
/// to its clients S3 has stopped answering.
async fn freezable_proxy(upstream: &'static str) -> (u16, watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (frozen, watcher) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(client_read, server_write, watcher.clone()));
            tokio::spawn(pump(server_read, client_write, watcher.clone()));
        }
    });
    (port, frozen)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_frozen_s3_times_out_is_logged_counted_and_seen_then_work_completes_once() {
    let (proxy, frozen) = freezable_proxy("127.0.0.1:9000").await;
    let frozen = Arc::new(frozen);
    let mut cluster = Cluster::new(64 * 1024).await;
    // A longer retry ladder than the harness's: each try of a frozen S3 now ends in ~2 s.
    let ladder = "200,500,1000,2000,4000";
    cluster.settings.amqp.retry_delays_ms = vec![200, 500, 1000, 2000, 4000];
    cluster.start(false).await;
    let metrics_port = common::free_port();
    let endpoint = format!("http://127.0.0.1:{proxy}");
    let listen = format!("127.0.0.1:{metrics_port}");
    let worker = cluster.spawn_worker_with(&[
        ("SLUICE__S3__ENDPOINT", endpoint.as_str()),
        ("SLUICE__S3__CONNECT_TIMEOUT_MS", "1000"),
        ("SLUICE__S3__READ_TIMEOUT_MS", "1000"),
        ("SLUICE__S3__OPERATION_ATTEMPT_TIMEOUT_MS", "1000"),
        ("SLUICE__S3__OPERATION_TIMEOUT_MS", "3000"),
        ("SLUICE__S3__STALL_GRACE_MS", "2000"),
        ("SLUICE__S3__MAX_ATTEMPTS", "2"),
        ("SLUICE__S3__INITIAL_BACKOFF_MS", "100"),
        ("SLUICE__S3__MAX_BACKOFF_MS", "200"),
        ("SLUICE__METRICS__PROBE_TIMEOUT_MS", "500"),
        ("SLUICE__METRICS__LISTEN", listen.as_str()),
        ("SLUICE__AMQP__RETRY_DELAYS_MS", ladder),
        ("SLUICE_LOG_FORMAT", "json"),
    ]);
    let worker_base = format!("http://{listen}");
    common::wait_for(
        "the worker's readiness",
        Duration::from_secs(60),
        async || {
            reqwest::get(format!("{worker_base}/readyz"))
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    let (body, rows) = common::rotten_tomatoes_jsonl(Some(300));
    cluster.put("in.jsonl", body).await;

    frozen.send_replace(true);
    let frozen_at = Instant::now();
    let id = cluster
        .submit(&cluster.spec("frozen-s3", "in.jsonl", "jsonl", "out/"))
        .await;
    let log = cluster.role_log("worker", worker);
    // The planner's first S3 call gives up on its try after 1 s and says so (a warn line
    // naming the operation and its target).
    let timeouts = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["level"] == "WARN" && l["fields"]["dependency"] == "s3")
            .filter(|l| l["fields"]["timed_out"] == true)
            .collect::<Vec<_>>()
    };
    common::wait_for(
        "the S3 timeout in the worker's log",
        Duration::from_secs(10),
        async || !timeouts().is_empty(),
    )
    .await;
    let noticed = frozen_at.elapsed();
    assert!(
        noticed >= Duration::from_millis(900) && noticed < Duration::from_secs(5),
        "the try's deadline is 1 s; noticed after {noticed:?}"
    );
    let line = &timeouts()[0]["fields"];
    assert!(
        line["target"].as_str().unwrap().contains(&cluster.bucket),
        "the target names the bucket: {line}"
    );
    assert!(!line["op"].as_str().unwrap().is_empty(), "{line}");
    let page = metrics_page(&worker_base).await;
    assert!(
        series(
            &page,
            "sluice_dependency_errors_total{dependency=\"s3\",kind=\"timeout\"}"
        ) >= 1.0,
        "{page}"
    );
    let (status, body) = readyz(&worker_base).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["failing"]["s3"].is_string(), "{body}");
    assert_eq!(body["checks"]["redis"], "ok", "{body}");
    let waiting = cluster.client().job(&id).await.unwrap();
    assert!(!waiting.status.is_terminal(), "{waiting:?}");

    // Frozen for ~4 s in all; then S3 answers again and the job completes, rows once each.
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(frozen_at.elapsed())).await;
    frozen.send_replace(false);
    let job = cluster.wait(&id, Duration::from_secs(120)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert_eq!(job.progress.rows_done, 300);
    let expected: Vec<String> = rows.into_iter().map(|(id, _)| id).collect();
    common::assert_exactly_once(&cluster.output_rows("out/").await, &expected);
    let (status, body) = readyz(&worker_base).await;
    assert_eq!(status, 200, "{body}");
    cluster.stop().await;
}
