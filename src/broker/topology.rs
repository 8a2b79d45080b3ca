//! Names and idempotent declaration of every exchange and queue sluice uses.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use super::{BrokerError, channel_err};
use crate::job::Pool;

/// Highest task priority (job specs use 0-9).
const MAX_PRIORITY: u8 = 9;

/// The broker layout under one prefix:
/// - `{p}.tasks` (direct) → one durable queue per (kind, pool): `{p}.inference.cpu|gpu`;
/// - `{p}.retry.{n}` (fanout) → queue `{p}.retry.{n}` whose TTL dead-letters back to
///   `{p}.tasks` with the original routing key: the back-off ladder;
/// - `{p}.dead` (fanout) → queue `{p}.dead`: tasks that failed for good, with the reason;
/// - `{p}.submissions` (direct, routing key `submit`) → queue `{p}.submissions`: job specs
///   from upstream systems, consumed by the `api` role;
/// - `{p}.rejected` (fanout) → queue `{p}.rejected`: submissions that could not be accepted,
///   kept with the reason;
/// - `{p}.events` (topic): job events, routing key `job.<state>`; subscribers bind their own
///   queues.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    retry_delays_ms: Vec<u64>,
}

impl Topology {
    pub fn new(prefix: &str, retry_delays_ms: &[u64]) -> Self {
        Self {
            prefix: prefix.to_string(),
            retry_delays_ms: retry_delays_ms.to_vec(),
        }
    }

    pub fn tasks_exchange(&self) -> String {
        format!("{}.tasks", self.prefix)
    }

    pub fn task_routing_key(pool: Pool) -> String {
        format!("inference.{}", pool.as_str())
    }

    pub fn task_queue(&self, pool: Pool) -> String {
        format!("{}.inference.{}", self.prefix, pool.as_str())
    }

    pub fn retry_levels(&self) -> usize {
        self.retry_delays_ms.len()
    }

    pub fn retry_exchange(&self, level: usize) -> String {
        format!("{}.retry.{level}", self.prefix)
    }

    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn submissions_exchange(&self) -> String {
        format!("{}.submissions", self.prefix)
    }

    pub const SUBMISSION_ROUTING_KEY: &'static str = "submit";

    pub fn submissions_queue(&self) -> String {
        format!("{}.submissions", self.prefix)
    }

    pub fn rejected_exchange(&self) -> String {
        format!("{}.rejected", self.prefix)
    }

    pub fn rejected_queue(&self) -> String {
        format!("{}.rejected", self.prefix)
    }

    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    pub(super) async fn declare(&self, channel: &Channel) -> Result<(), BrokerError> {
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let tasks = self.tasks_exchange();
        channel
            .exchange_declare(
                tasks.as_str().into(),
                ExchangeKind::Direct,
                durable_exchange,
                FieldTable::default(),
            )
            .await
            .map_err(channel_err("declare tasks exchange"))?;
        for pool in [Pool::Cpu, Pool::Gpu] {
            let mut args = FieldTable::default();
            args.insert(
                "x-max-priority".into(),
                AMQPValue::ShortShortUInt(MAX_PRIORITY),
            );
            let queue = self.task_queue(pool);
            channel
                .queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args)
                .await
                .map_err(channel_err("declare task queue"))?;
            channel
                .queue_bind(
                    queue.as_str().into(),
                    tasks.as_str().into(),
                    Self::task_routing_key(pool).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(channel_err("bind task queue"))?;
        }
        for (level, delay) in self.retry_delays_ms.iter().enumerate() {
            let name = self.retry_exchange(level);
            channel
                .exchange_declare(
                    name.as_str().into(),
                    ExchangeKind::Fanout,
                    durable_exchange,
                    FieldTable::default(),
                )
                .await
                .map_err(channel_err("declare retry exchange"))?;
            let mut args = FieldTable::default();
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(*delay as i64),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(tasks.as_str().into()),
            );
            channel
                .queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), args)
                .await
                .map_err(channel_err("declare retry queue"))?;
            channel
                .queue_bind(
                    name.as_str().into(),
                    name.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(channel_err("bind retry queue"))?;
        }
        let dead = self.dead_exchange();
        channel
            .exchange_declare(
                dead.as_str().into(),
                ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            )
            .await
            .map_err(channel_err("declare dead-letter exchange"))?;
        channel
            .queue_declare(
                self.dead_queue().as_str().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .map_err(channel_err("declare dead-letter queue"))?;
        channel
            .queue_bind(
                self.dead_queue().as_str().into(),
                dead.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(channel_err("bind dead-letter queue"))?;
        declare_bound_queue(
            channel,
            &self.submissions_exchange(),
            ExchangeKind::Direct,
            &self.submissions_queue(),
            Self::SUBMISSION_ROUTING_KEY,
        )
        .await?;
        declare_bound_queue(
            channel,
            &self.rejected_exchange(),
            ExchangeKind::Fanout,
            &self.rejected_queue(),
            "",
        )
        .await?;
        channel
            .exchange_declare(
                self.events_exchange().as_str().into(),
                ExchangeKind::Topic,
                durable_exchange,
                FieldTable::default(),
            )
            .await
            .map_err(channel_err("declare events exchange"))?;
        Ok(())
    }

    /// Every queue this prefix declares.
    fn queues(&self) -> Vec<String> {
        let mut queues = vec![
            self.task_queue(Pool::Cpu),
            self.task_queue(Pool::Gpu),
            self.dead_queue(),
            self.submissions_queue(),
            self.rejected_queue(),
        ];
        queues.extend((0..self.retry_levels()).map(|level| self.retry_exchange(level)));
        queues
    }

    /// Every exchange this prefix declares.
    fn exchanges(&self) -> Vec<String> {
        let mut exchanges = vec![
            self.tasks_exchange(),
            self.dead_exchange(),
            self.submissions_exchange(),
            self.rejected_exchange(),
            self.events_exchange(),
        ];
        exchanges.extend((0..self.retry_levels()).map(|level| self.retry_exchange(level)));
        exchanges
    }

    /// The first queue or exchange of this prefix that the broker does not have (passive
    /// declares, which change nothing), or `None` when all are there. A missing one closes
    /// `channel` (the broker answers 404 by closing it): use a channel of its own.
    pub(super) async fn find_missing(
        &self,
        channel: &Channel,
    ) -> Result<Option<String>, BrokerError> {
        let passive_exchange = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        for exchange in self.exchanges() {
            let found = channel
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Direct,
                    passive_exchange,
                    FieldTable::default(),
                )
                .await;
            match found {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => return Ok(Some(format!("exchange {exchange}"))),
                Err(e) => return Err(channel_err("check exchange (passive declare)")(e)),
            }
        }
        let passive_queue = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        for queue in self.queues() {
            let found = channel
                .queue_declare(queue.as_str().into(), passive_queue, FieldTable::default())
                .await;
            match found {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => return Ok(Some(format!("queue {queue}"))),
                Err(e) => return Err(channel_err("check queue (passive declare)")(e)),
            }
        }
        Ok(None)
    }

    /// Removes every queue and exchange of this prefix, messages included: for tearing
    /// down a test namespace or a retired deployment.
    pub(super) async fn delete(&self, channel: &Channel) -> Result<(), BrokerError> {
        let (queues, exchanges) = (self.queues(), self.exchanges());
        for queue in queues {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(channel_err("delete queue"))?;
        }
        for exchange in exchanges {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await
                .map_err(channel_err("delete exchange"))?;
        }
        Ok(())
    }
}

/// The broker's 404 NOT_FOUND: the queue or exchange does not exist.
pub(super) fn is_not_found(error: &lapin::Error) -> bool {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(e) => e.get_id() == 404,
        _ => error.to_string().contains("NOT_FOUND"),
    }
}

/// A durable exchange with one durable queue bound to it.
async fn declare_bound_queue(
    channel: &Channel,
    exchange: &str,
    kind: ExchangeKind,
    queue: &str,
    routing_key: &str,
) -> Result<(), BrokerError> {
    channel
        .exchange_declare(
            exchange.into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(channel_err("declare exchange"))?;
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .map_err(channel_err("declare queue"))?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(channel_err("bind queue"))?;
    Ok(())
}
