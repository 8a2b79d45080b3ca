//! Composition root: builds the clients from settings, runs the requested roles, and drains
//! them on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::submissions::SubmissionConsumer;
use crate::api::{self, ApiContext};
use crate::broker::{Broker, Topology};
use crate::ingest::DropFolder;
use crate::job::Allowance;
use crate::settings::Settings;
use crate::state::StateStore;
use crate::storage::Storage;
use crate::submit::Submitter;
use crate::worker::{self, WorkerContext};

/// Which roles one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub api: bool,
    pub worker: bool,
    pub ingest: bool,
}

impl Roles {
    pub const API: Roles = Roles {
        api: true,
        worker: false,
        ingest: false,
    };
    pub const WORKER: Roles = Roles {
        api: false,
        worker: true,
        ingest: false,
    };
    pub const INGEST: Roles = Roles {
        api: false,
        worker: false,
        ingest: true,
    };
    pub const SERVE: Roles = Roles {
        api: true,
        worker: true,
        ingest: true,
    };
}

/// The clients every role shares.
#[derive(Clone)]
pub struct Services {
    pub settings: Arc<Settings>,
    pub state: StateStore,
    pub broker: Broker,
    pub storage: Storage,
    /// The readiness registry the three clients report into (see `crate::health`).
    pub health: crate::health::Health,
}

/// How long to wait for RabbitMQ and Redis at start (they may still be booting).
const CONNECT_PATIENCE: Duration = Duration::from_secs(60);
/// How long a stopping worker waits for its engine threads once the drain is over.
const ENGINE_JOIN_WAIT: Duration = Duration::from_secs(10);

impl Services {
    pub async fn connect(settings: Arc<Settings>) -> anyhow::Result<Self> {
        let health = crate::health::Health::with_probe_timeout(Duration::from_millis(
            settings.metrics.probe_timeout_ms,
        ));
        let storage = Storage::connect_with_health(&settings.s3, health.clone()).await;
        let state = retry("redis", || {
            StateStore::connect_with_health(&settings.redis, &settings.prefix, health.clone())
        })
        .await?;
        let topology = Topology::new(&settings.prefix, &settings.amqp.retry_delays_ms);
        let broker = retry("rabbitmq", || {
            Broker::connect_with_health(&settings.amqp, topology.clone(), health.clone())
        })
        .await?;
        Ok(Self {
            settings,
            state,
            broker,
            storage,
            health,
        })
    }
}

async fn retry<T, E, F, Fut>(what: &str, mut connect: F) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    let mut delay = Duration::from_millis(250);
    loop {
        match connect().await {
            Ok(value) => return Ok(value),
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(service = what, error = %e, "not reachable yet; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("connecting to {what} (gave up after {CONNECT_PATIENCE:?})")
                });
            }
        }
    }
}

/// A started process: where its API listens, and a handle to wait for its end.
pub struct Running {
    pub api_addr: Option<SocketAddr>,
    tracker: TaskTracker,
}

impl Running {
    /// Resolves once every role has drained after shutdown.
    pub async fn wait(self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Chooses rustls's crypto provider for the whole process (ring). The HTTPS client and the
/// Redis and AMQP TLS stacks bring more than one, and rustls refuses to pick one itself, so
/// the first TLS connection would panic. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Connects and starts `roles`; they stop when `shutdown` is cancelled.
pub async fn start(
    settings: Settings,
    roles: Roles,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    install_crypto_provider();
    crate::metrics::init();
    let services = Services::connect(Arc::new(settings)).await?;
    // Checked before anything starts, so a bad template leaves nothing half-running. In
    // `serve` the drop folder is a bonus: without usable templates the rest still runs.
    let drop_folder = if roles.ingest {
        match DropFolder::new(
            services.settings.ingest.clone(),
            submitter(&services),
            services.state.clone(),
            services.storage.clone(),
        ) {
            Ok(watcher) => Some(watcher),
            Err(e) if roles.api || roles.worker => {
                tracing::warn!(error = %e, "the drop folder is not watched by this process");
                None
            }
            Err(e) => return Err(e).context("starting ingest"),
        }
    } else {
        None
    };
    let tracker = TaskTracker::new();
    let mut api_addr = None;
    // With `api.serve_metrics = false`, the API's own health, readiness (broker, Redis, S3)
    // and metrics routes, served on `metrics.listen` below.
    let mut api_ops = None;
    // The API keeps answering (readiness false) while the worker drains, then stops.
    let api_stop = CancellationToken::new();
    if roles.api {
        let listen = &services.settings.api.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the API to {listen} (api.listen)"))?;
        api_addr = Some(listener.local_addr()?);
        tracing::info!(addr = %api_addr.expect("bound"), "API listening");
        let tokens = api::auth::Tokens::load(&services.settings.api)
            .context("loading the API tokens (api.tokens, api.tokens_file)")?;
        if tokens.is_open() {
            tracing::warn!(
                "the HTTP API is open: no api.tokens configured, anyone who reaches it can submit and cancel jobs"
            );
        } else if services.settings.api.amqp_submissions
            && services.settings.api.amqp_allow.iter().any(|a| a == "*")
        {
            tracing::warn!(
                "API tokens limit where HTTP jobs may read and write, but AMQP submissions may use any location (api.amqp_allow = [\"*\"]): whoever can publish to the submissions exchange is not limited; list their prefixes in api.amqp_allow"
            );
        }
        let ctx = Arc::new(ApiContext {
            max_body_bytes: services.settings.api.max_body_bytes,
            tokens: Arc::new(tokens),
            submitter: submitter(&services),
            state: services.state.clone(),
            broker: services.broker.clone(),
            storage: services.storage.clone(),
            draining: shutdown.clone(),
            serve_metrics: services.settings.api.serve_metrics,
        });
        if !services.settings.api.serve_metrics {
            api_ops = Some(api::ops_router(ctx.clone()));
        }
        let max_body = services.settings.api.max_body_bytes;
        let stop = api_stop.clone();
        tracker.spawn(async move {
            if let Err(e) = api::serve(listener, ctx, max_body, stop).await {
                tracing::error!(error = %e, "API server failed");
            }
        });
        tracker.spawn(api::gauges::run(services.state.clone(), api_stop.clone()));
        if services.settings.api.amqp_submissions {
            let consumer = Arc::new(SubmissionConsumer {
                submitter: submitter(&services),
                broker: services.broker.clone(),
                state: services.state.clone(),
                max_body_bytes: max_body,
                concurrency: services.settings.api.submission_concurrency,
                allowance: Allowance::parse(
                    "AMQP submissions (api.amqp_allow)",
                    &services.settings.api.amqp_allow,
                )
                .map_err(anyhow::Error::msg)
                .context("api.amqp_allow")?,
                replies: reply_policy(&services),
                stall_after: Duration::from_secs(services.settings.amqp.consumer_stall_secs),
            });
            tracker.spawn(consumer.run(shutdown.clone()));
        }
    }
    // Roles without the API, and an API told to keep them off its port, serve metrics,
    // health and readiness on their own port.
    let metrics_listen = &services.settings.metrics.listen;
    if (!roles.api || !services.settings.api.serve_metrics) && !metrics_listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(metrics_listen)
            .await
            .with_context(|| {
                format!("binding the metrics endpoint to {metrics_listen} (metrics.listen; give each process on a host its own port, or empty to turn it off)")
            })?;
        tracing::info!(addr = %listener.local_addr()?, "metrics listening");
        let dependencies = crate::telemetry::Dependencies {
            broker: services.broker.clone(),
            state: services.state.clone(),
            storage: services.storage.clone(),
        };
        tracker.spawn(crate::telemetry::serve(
            listener,
            api_ops,
            Some(dependencies),
            shutdown.clone(),
            api_stop.clone(),
        ));
    }
    tracker.spawn(crate::telemetry::probe_redis(
        services.state.clone(),
        api_stop.clone(),
    ));
    // Queues or exchanges deleted under a running process come back within
    // `amqp.topology_check_secs`.
    tracker.spawn(services.broker.clone().maintain_topology(api_stop.clone()));
    if let Some(watcher) = drop_folder {
        tracker.spawn(watcher.run(shutdown.clone()));
    }
    let worker_done = CancellationToken::new();
    if roles.worker {
        let engine = services.settings.engine.clone();
        tokio::task::spawn_blocking(move || crate::engine::init_runtime(&engine))
            .await
            .context("ONNX Runtime loader thread")?
            .context("a worker needs ONNX Runtime")?;
        let provider = match services.settings.engine.execution_provider {
            crate::settings::ExecutionProvider::Auto => "auto",
            crate::settings::ExecutionProvider::Cpu => "cpu",
            crate::settings::ExecutionProvider::Cuda => "cuda",
        };
        crate::metrics::WORKER_INFO
            .with_label_values(&[services.settings.worker.pool.as_str(), provider])
            .set(1);
        let ctx = Arc::new(WorkerContext::new(
            services.settings.clone(),
            services.broker.clone(),
            services.state.clone(),
            services.storage.clone(),
        ));
        tracker.spawn(worker::sweep::run(ctx.clone(), shutdown.clone()));
        let shutdown = shutdown.clone();
        let done = worker_done.clone();
        tracker.spawn(async move {
            worker::run(ctx.clone(), shutdown).await;
            // The drain is over: every engine thread ends and is joined (bounded).
            ctx.models.shutdown(ENGINE_JOIN_WAIT).await;
            done.cancel();
        });
    } else {
        worker_done.cancel();
    }
    // Every role relays job events; the relay stops last, after the work that emits them.
    tracker.spawn(crate::events::run(
        services.state.clone(),
        services.broker.clone(),
        reply_policy(&services),
        api_stop.clone(),
    ));
    tracker.spawn(async move {
        shutdown.cancelled().await;
        worker_done.cancelled().await;
        api_stop.cancel();
    });
    Ok(Running { api_addr, tracker })
}

/// Which `reply_to` queues AMQP submitters are answered on (`api.reply_queue_patterns`).
fn reply_policy(services: &Services) -> crate::job::ReplyPolicy {
    crate::job::ReplyPolicy::new(
        &services.settings.prefix,
        &services.settings.api.reply_queue_patterns,
    )
}

fn submitter(services: &Services) -> Submitter {
    Submitter::new(
        services.state.clone(),
        services.broker.clone(),
        services.storage.clone(),
    )
}

/// A token cancelled on the first SIGINT/SIGTERM; a second signal exits at once (unacked
/// tasks return to the queue when the connection drops, so nothing is lost either way).
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        for count in 1.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if count == 1 {
                tracing::info!(
                    "shutting down: finishing in-flight work (signal again to exit now)"
                );
                trigger.cancel();
            } else {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
    token
}
