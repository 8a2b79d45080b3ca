//! What can go wrong talking to RabbitMQ; every case is retryable once the broker is back.

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("RabbitMQ at {url}: {source}; {hint}")]
    Connect {
        url: String,
        #[source]
        source: lapin::Error,
        hint: &'static str,
    },
    #[error(
        "cannot read amqp.tls_ca_file {path}: {source}; point it at the PEM file of the CA that signed the broker's certificate, or leave it empty to trust the system's roots"
    )]
    TlsCa {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("RabbitMQ {op}: {source}; will retry")]
    Channel {
        op: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error(
        "RabbitMQ {op} on {target} got no answer within {after:?} (amqp.operation_timeout_ms); will retry"
    )]
    Timeout {
        op: &'static str,
        target: String,
        after: std::time::Duration,
    },
    #[error("RabbitMQ refused the message to {exchange}/{routing_key} (nack)")]
    Nacked {
        exchange: String,
        routing_key: String,
    },
    #[error(
        "RabbitMQ could not route the message to {exchange}/{routing_key}: no queue bound (was the topology declared?)"
    )]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
}

impl BrokerError {
    /// Every broker failure is worth retrying once the broker is back.
    pub fn is_retryable(&self) -> bool {
        true
    }
}

pub(crate) fn channel_err(op: &'static str) -> impl FnOnce(lapin::Error) -> BrokerError {
    move |source| BrokerError::Channel { op, source }
}
