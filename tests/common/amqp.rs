//! AMQP helpers shared by the integration tests that talk to the broker as an upstream
//! system would: a confirming channel, the deployment's topology, publishing a submission,
//! draining a queue.

use lapin::message::BasicReturnMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use sluice::broker::Topology;
use sluice::state::StateStore;

use super::Cluster;

/// A channel with publisher confirms, and the connection that must outlive it.
pub async fn channel(cluster: &Cluster) -> (Connection, Channel) {
    let connection =
        Connection::connect(&cluster.settings.amqp.url, ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (connection, channel)
}

/// The cluster's queue and exchange names.
pub fn topology(cluster: &Cluster) -> Topology {
    Topology::new(
        &cluster.settings.prefix,
        &cluster.settings.amqp.retry_delays_ms,
    )
}

/// Publishes `body` on the submissions exchange (mandatory, with `properties`) as an upstream
/// system does, and waits for the broker's confirm, which must be an ack; returns the message
/// if the broker handed it back unrouted.
pub async fn publish_submission(
    channel: &Channel,
    cluster: &Cluster,
    body: &[u8],
    properties: BasicProperties,
) -> Option<BasicReturnMessage> {
    let confirm = channel
        .basic_publish(
            topology(cluster).submissions_exchange().as_str().into(),
            Topology::SUBMISSION_ROUTING_KEY.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "the broker refused a submission");
    confirm.take_message()
}

/// Takes every message currently in `queue` (acking them).
pub async fn drain(channel: &Channel, queue: &str) -> Vec<lapin::message::BasicGetMessage> {
    let mut out = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        message.ack(BasicAckOptions::default()).await.unwrap();
        out.push(message);
    }
    out
}

/// Jobs recorded under the cluster's prefix.
pub async fn job_count(state: &StateStore) -> usize {
    state.list(None, 5000).await.unwrap().len()
}
