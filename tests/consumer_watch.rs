//! Readiness names a consumer the broker stopped feeding: messages wait in its queue, a slot
//! is free, and nothing arrives.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Cluster;
use sluice::broker::watch::{ConsumerWatch, judge};
use sluice::job::Pool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_consumer_with_work_waiting_and_nothing_delivered_fails_readiness() {
    let cluster = Cluster::new(1 << 20).await;
    let broker = cluster.broker().await;
    let queue = broker.topology().task_queue(Pool::Cpu);
    let watch = Arc::new(ConsumerWatch::default());
    let permits = Arc::new(Semaphore::new(2));
    let stop = CancellationToken::new();
    let judging = tokio::spawn(judge(
        "task_consumer",
        broker.clone(),
        queue.clone(),
        watch.clone(),
        permits.clone(),
        Duration::from_secs(2),
        stop.clone(),
    ));
    let failing =
        |broker: &sluice::broker::Broker| broker.health().failing().get("task_consumer").cloned();

    // Nothing waits: however quiet, the consumer is fine.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(failing(&broker), None);

    // Work waits and nothing is delivered: within a few judging rounds it is reported.
    for _ in 0..3 {
        broker.publish_task(Pool::Cpu, 0, b"{}").await.unwrap();
    }
    let started = Instant::now();
    let reason = loop {
        if let Some(reason) = failing(&broker) {
            break reason;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never reported"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        reason.contains("messages wait") && reason.contains("2 slots are free"),
        "{reason}"
    );

    // Every slot busy: waiting work is expected, not a stall.
    let held = permits.clone().acquire_many_owned(2).await.unwrap();
    wait_clear(&broker, &failing).await;
    // ...unless one of them is the consumer's own, held while it waits for a delivery.
    watch.set_listening(true);
    let started = Instant::now();
    while failing(&broker).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a listening slot is free"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    watch.set_listening(false);
    wait_clear(&broker, &failing).await;
    drop(held);

    // A delivery clears it; stopping the judge leaves no stale report behind.
    watch.progressed();
    wait_clear(&broker, &failing).await;
    stop.cancel();
    judging.await.unwrap();
    assert_eq!(failing(&broker), None);
    broker.purge(&queue).await.unwrap();
    cluster.stop().await;
}

async fn wait_clear(
    broker: &sluice::broker::Broker,
    failing: &impl Fn(&sluice::broker::Broker) -> Option<String>,
) {
    let started = Instant::now();
    while failing(broker).is_some() {
        assert!(started.elapsed() < Duration::from_secs(10), "never cleared");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
