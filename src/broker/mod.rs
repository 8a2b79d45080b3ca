//! RabbitMQ adapter (lapin): topology, publishing with confirms, consuming with bounded
//! prefetch, and the retry (TTL back-off) and dead-letter paths.

mod consume;
mod delivery;
mod error;
mod heal;
mod topology;
pub mod watch;

use std::sync::Arc;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, DefaultConnectionBuilder};
use tokio::sync::Mutex;

pub use consume::Subscription;
pub use delivery::Delivery;
pub use error::BrokerError;
pub(crate) use error::channel_err;
pub use topology::Topology;

use crate::health::Health;
use crate::job::Pool;
use crate::settings::AmqpSettings;

/// A connection with one publishing channel (publisher confirms on). Reconnects on demand:
/// after a broker restart the next publish opens a fresh connection.
#[derive(Clone)]
pub struct Broker {
    url: String,
    /// PEM of a private CA trusted beside the system's roots (`amqps://` only).
    tls_ca_pem: Option<String>,
    topology: Topology,
    inner: Arc<Mutex<Option<Live>>>,
    limits: heal::Limits,
    health: Health,
    /// Held while the topology is checked or re-declared: one at a time per process.
    healing: Arc<Mutex<()>>,
}

struct Live {
    connection: Connection,
    publisher: Channel,
    /// The publisher stopped answering (a confirm timed out): replace it before next use.
    stale: bool,
}

impl Broker {
    /// Connects and declares the topology (idempotent). An `amqps://` URL connects over
    /// TLS, verifying the broker against the system's roots and `amqp.tls_ca_file`.
    pub async fn connect(settings: &AmqpSettings, topology: Topology) -> Result<Self, BrokerError> {
        Self::connect_with_health(settings, topology, Health::new()).await
    }

    /// Like `connect`, with every operation under `amqp.operation_timeout_ms`, failures
    /// logged and counted, and the broker's and the topology's state reported into
    /// `health` (checks `broker`, `topology`).
    pub async fn connect_with_health(
        settings: &AmqpSettings,
        topology: Topology,
        health: Health,
    ) -> Result<Self, BrokerError> {
        let tls_ca_pem = match settings.tls_ca_file.as_str() {
            "" => None,
            path => Some(
                std::fs::read_to_string(path).map_err(|source| BrokerError::TlsCa {
                    path: path.to_string(),
                    source,
                })?,
            ),
        };
        let broker = Self {
            url: settings.url.clone(),
            tls_ca_pem,
            topology,
            inner: Arc::new(Mutex::new(None)),
            limits: heal::Limits::from(settings),
            health,
            healing: Arc::new(Mutex::new(())),
        };
        broker.publisher().await?;
        Ok(broker)
    }

    /// The readiness registry this broker reports into.
    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    async fn open(&self) -> Result<Live, BrokerError> {
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("sluice-{}", std::process::id()).into());
        let connect_err = |source: lapin::Error| BrokerError::Connect {
            url: redact(&self.url),
            hint: match source.to_string() {
                text if text.contains("certificate") => {
                    "the broker's TLS certificate was not trusted: if a private CA signed it, set amqp.tls_ca_file to that CA's PEM file"
                }
                text if text.contains("ACCESS_REFUSED") => {
                    "the broker refused the user or password in amqp.url (or the user may not use that virtual host)"
                }
                _ => "is the broker running and the URL (amqp.url) right?",
            },
            source,
        };
        let tls = OwnedTLSConfig {
            identity: None,
            cert_chain: self.tls_ca_pem.clone(),
        };
        let target = redact(&self.url);
        let connection = self
            .timed("connect", &target, async {
                DefaultConnectionBuilder::new()
                    .map_err(connect_err)?
                    .with_uri_str(self.url.clone())
                    .with_properties(properties)
                    .with_tls_config(tls)
                    .connect()
                    .await
                    .map_err(connect_err)
            })
            .await?;
        let publisher = self.open_publisher(&connection, true).await?;
        Ok(Live {
            connection,
            publisher,
            stale: false,
        })
    }

    /// A channel in confirm mode on `connection`; with `declare`, the topology is declared
    /// on it first (at connect).
    async fn open_publisher(
        &self,
        connection: &Connection,
        declare: bool,
    ) -> Result<Channel, BrokerError> {
        let target = redact(&self.url);
        let publisher = self
            .timed("open channel", &target, async {
                connection
                    .create_channel()
                    .await
                    .map_err(channel_err("open channel"))
            })
            .await?;
        if declare {
            self.timed(
                "declare topology",
                &target,
                self.topology.declare(&publisher),
            )
            .await?;
        }
        self.timed("confirm select", &target, async {
            publisher
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(channel_err("confirm select"))
        })
        .await?;
        Ok(publisher)
    }

    /// The publishing channel, reconnecting when the old one is gone.
    async fn publisher(&self) -> Result<Channel, BrokerError> {
        self.channel(false).await
    }

    /// With `fresh`, a new channel on the shared connection; else the publishing channel.
    async fn channel(&self, fresh: bool) -> Result<Channel, BrokerError> {
        let mut inner = self.inner.lock().await;
        let connected = inner
            .as_ref()
            .is_some_and(|live| live.connection.status().connected());
        if !connected {
            *inner = Some(self.open().await?);
        }
        let live = inner.as_mut().expect("connection opened above");
        if fresh {
            let target = redact(&self.url);
            return self
                .timed("open channel", &target, async {
                    live.connection
                        .create_channel()
                        .await
                        .map_err(channel_err("open channel"))
                })
                .await;
        }
        if live.stale || !live.publisher.status().connected() {
            // The broker closed it (a publish to a missing exchange) or it stopped
            // answering: a new channel on the same connection, not a reconnect.
            let fresh = self.open_publisher(&live.connection, false).await?;
            let old = std::mem::replace(&mut live.publisher, fresh);
            live.stale = false;
            self.close_later(old);
        }
        Ok(live.publisher.clone())
    }

    /// Whether the broker answers (opens a connection when none is up).
    pub async fn ping(&self) -> Result<(), BrokerError> {
        self.publisher().await.map(|_| ())
    }

    /// Publishes durably and waits for the broker's confirm; a nack or an unroutable message
    /// is an error.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        self.publish_confirmed(exchange, routing_key, body, properties, true)
            .await
    }

    /// `mandatory`: a message no queue takes is an error (tasks), rather than dropped by
    /// design (events nobody subscribed to).
    async fn publish_once(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), BrokerError> {
        let channel = self.publisher().await?;
        let properties = properties
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/json"));
        let target = format!("{exchange}/{routing_key}");
        let confirmed = self
            .timed("publish", &target, async {
                channel
                    .basic_publish(
                        exchange.into(),
                        routing_key.into(),
                        BasicPublishOptions {
                            mandatory,
                            ..Default::default()
                        },
                        body,
                        properties,
                    )
                    .await
                    .map_err(channel_err("publish"))?
                    .await
                    .map_err(channel_err("publish confirm"))
            })
            .await;
        if let Err(BrokerError::Timeout { .. }) = confirmed {
            self.mark_stale(&channel).await;
        }
        let confirm = confirmed?;
        if confirm.is_nack() {
            return Err(BrokerError::Nacked {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
            });
        }
        if confirm.take_message().is_some() {
            return Err(BrokerError::Unroutable {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
            });
        }
        Ok(())
    }

    /// Publishes a task for `pool` with the job's priority.
    pub async fn publish_task(
        &self,
        pool: Pool,
        priority: u8,
        body: &[u8],
    ) -> Result<(), BrokerError> {
        let properties = BasicProperties::default().with_priority(priority);
        self.publish(
            &self.topology.tasks_exchange(),
            &Topology::task_routing_key(pool),
            body,
            properties,
        )
        .await
    }

    /// Publishes one job event to the events exchange (routing key `job.<state>`). With no
    /// subscriber bound the broker drops it, by design; `message_id` is `<job_id>:<seq>`.
    pub async fn publish_event(
        &self,
        routing_key: &str,
        message_id: &str,
        body: &[u8],
    ) -> Result<(), BrokerError> {
        let properties = BasicProperties::default()
            .with_message_id(message_id.into())
            .with_timestamp(unix_secs());
        self.publish_confirmed(
            &self.topology.events_exchange(),
            routing_key,
            body,
            properties,
            false,
        )
        .await
    }

    /// Sends a reply to a submitter's `reply_to` queue (default exchange). A queue that is
    /// gone is not an error of ours: the reply is dropped and `Ok(false)` says so.
    pub async fn reply(
        &self,
        reply_to: &str,
        correlation_id: Option<&str>,
        body: &[u8],
    ) -> Result<bool, BrokerError> {
        let mut properties = BasicProperties::default().with_timestamp(unix_secs());
        if let Some(id) = correlation_id {
            properties = properties.with_correlation_id(id.into());
        }
        match self.publish("", reply_to, body, properties).await {
            Ok(()) => Ok(true),
            Err(BrokerError::Unroutable { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Drops every ready message of a queue (operators clearing a backlog; failure tests).
    pub async fn purge(&self, queue: &str) -> Result<u32, BrokerError> {
        let channel = self.publisher().await?;
        channel
            .queue_purge(queue.into(), lapin::options::QueuePurgeOptions::default())
            .await
            .map_err(channel_err("purge queue"))
    }

    /// Deletes this prefix's whole topology (see `Topology::delete`).
    pub async fn delete_topology(&self) -> Result<(), BrokerError> {
        let channel = self.channel(true).await?;
        self.topology.delete(&channel).await
    }

    /// Exact number of ready messages in a queue (a passive declare, not the lagging
    /// management API).
    pub async fn queue_depth(&self, queue: &str) -> Result<u32, BrokerError> {
        let channel = self.publisher().await?;
        let queue = self
            .timed("queue declare (passive)", queue, async {
                channel
                    .queue_declare(
                        queue.into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .map_err(channel_err("queue declare (passive)"))
            })
            .await?;
        Ok(queue.message_count())
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The URL without its password, for errors and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}
