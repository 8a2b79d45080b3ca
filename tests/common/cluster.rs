//! The `Cluster`: one test's namespace on the shared services, sluice's roles started in
//! this process or as processes of the real binary, and the clean-up that leaves nothing behind.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sluice::app::{self, Roles};
use sluice::cli::{Client, PushOptions};
use sluice::settings::Settings;
use sluice::storage::Storage;
use sluice::uri::S3Uri;
use tokio_util::sync::CancellationToken;

use super::assets;

/// One test's world: random prefix and bucket, the model pushed into it.
pub struct Cluster {
    pub settings: Settings,
    pub bucket: String,
    pub storage: Storage,
    pub model_uri: String,
    shutdown: CancellationToken,
    running: Option<app::Running>,
    pub client: Option<Client>,
    workers: Vec<tokio::process::Child>,
    /// Holds the settings files of the processes it starts; removed with the cluster.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Settings for a fresh namespace; `shard_bytes` sets how finely inputs are cut.
    pub async fn new(shard_bytes: u64) -> Self {
        let assets = assets();
        let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let mut settings = Settings {
            prefix: format!("test-{tag}"),
            ..Default::default()
        };
        settings.api.listen = "127.0.0.1:0".into();
        settings.engine.ort_dylib_path = assets.ort_dylib.clone();
        settings.planner.shard_bytes = shard_bytes;
        settings.amqp.retry_delays_ms = vec![200, 500, 1000];
        settings.worker.shutdown_grace_secs = 10;
        settings.worker.model_cache_dir = std::env::temp_dir().join("sluice-test-models");
        let bucket = format!("sluice-test-{tag}");
        settings.training.feature_cache = format!("s3://{bucket}/features/");
        // Short leases, so a dead trainer's job moves on within seconds.
        settings.training.lease_ttl_secs = 4;
        settings.training.heartbeat_secs = 1;
        let storage = Storage::connect(&settings.s3).await;
        storage
            .create_bucket(&bucket)
            .await
            .expect("create test bucket (is the S3 server up?)");
        let model_uri = format!("s3://{bucket}/models/minilm/");
        let options = PushOptions {
            name: Some("all-MiniLM-L6-v2".into()),
            max_length: Some(256),
            dimension: Some(384),
            precision: "int8".into(),
            engine: settings.engine.clone(),
            ..Default::default()
        };
        sluice::cli::push(
            &storage,
            &assets.model_dir,
            &S3Uri::parse(&model_uri).unwrap(),
            &options,
        )
        .await
        .expect("push the model package");
        Self {
            settings,
            bucket,
            storage,
            model_uri,
            shutdown: CancellationToken::new(),
            running: None,
            client: None,
            workers: Vec::new(),
            dir: tempfile::tempdir().expect("create the cluster's folder"),
        }
    }

    /// Starts the API (and, with `worker`, an in-process worker) in this process.
    pub async fn start(&mut self, worker: bool) -> &Client {
        let roles = Roles {
            api: true,
            worker,
            ingest: false,
        };
        let running = app::start(self.settings.clone(), roles, self.shutdown.clone())
            .await
            .expect("start sluice");
        let addr = running.api_addr.expect("api started");
        self.client = Some(Client::new(&format!("http://{addr}")));
        self.running = Some(running);
        self.client.as_ref().unwrap()
    }

    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("call start() first")
    }

    pub fn base_url(&self) -> String {
        // The client hides its base; rebuild it from the running API.
        format!(
            "http://{}",
            self.running.as_ref().unwrap().api_addr.unwrap()
        )
    }

    /// The settings a `sluice` process of this cluster runs with: the cluster's own, with a
    /// free port for its metrics (several processes share this host) and one engine thread.
    pub fn process_settings(&self) -> Settings {
        let mut settings = self.settings.clone();
        settings.metrics.listen = "127.0.0.1:0".into();
        settings.engine.intra_op_threads = 1;
        settings
    }

    /// Writes `process_settings()` to a new TOML file in the cluster's folder and returns its
    /// path. One file per process: a test may change `settings` between two starts.
    pub fn write_config(&self) -> PathBuf {
        let text = toml::to_string(&self.process_settings()).expect("settings as TOML");
        let file = tempfile::Builder::new()
            .prefix("settings-")
            .suffix(".toml")
            .tempfile_in(self.dir.path())
            .expect("create a settings file");
        std::fs::write(file.path(), text).expect("write the settings file");
        file.into_temp_path()
            .keep()
            .expect("keep the settings file")
    }

    /// The real `sluice` binary, with this cluster's settings (`--config`); `SLUICE__…`
    /// variables set on it override them.
    pub fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
        command.arg("--config").arg(self.write_config());
        command
    }

    /// Starts a `sluice worker` process; returns its index for `kill_worker`.
    pub fn spawn_worker(&mut self) -> usize {
        self.spawn_worker_with(&[])
    }

    /// Starts a `sluice worker` process with extra `SLUICE__…` settings (over the cluster's).
    pub fn spawn_worker_with(&mut self, extra: &[(&str, &str)]) -> usize {
        self.spawn_role("worker", extra)
    }

    /// Where the `index`-th process `spawn_role` started (as `role`) writes its log.
    pub fn role_log(&self, role: &str, index: usize) -> PathBuf {
        std::env::temp_dir().join(format!("{}-{role}-{index}.log", self.settings.prefix))
    }

    /// Starts a `sluice <role>` process (`worker`, `api`, `ingest`) with extra settings;
    /// returns its index for `kill_worker`/`terminate_worker`.
    pub fn spawn_role(&mut self, role: &str, extra: &[(&str, &str)]) -> usize {
        let log = self.role_log(role, self.workers.len());
        let child = self
            .command()
            .arg(role)
            .env("SLUICE_LOG", "info")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("worker log file"))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn sluice {role}: {e}"));
        self.workers.push(child);
        self.workers.len() - 1
    }

    /// SIGTERM, then waits for the worker to exit by itself; returns its exit status and how
    /// long it took.
    pub async fn terminate_worker(&mut self, index: usize) -> (std::process::ExitStatus, Duration) {
        let child = &mut self.workers[index];
        let pid = child.id().expect("worker still running");
        let sent = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .expect("worker exits after SIGTERM")
            .expect("reap worker");
        (exit, sent.elapsed())
    }

    /// Sends `signal` (`TERM`, `INT`, …) to a worker without waiting for it.
    pub fn signal_worker(&self, index: usize, signal: &str) {
        let pid = self.workers[index].id().expect("worker still running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for a worker to exit (at most a minute); its exit status.
    pub async fn wait_worker(&mut self, index: usize) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(60), self.workers[index].wait())
            .await
            .expect("worker exits")
            .expect("reap worker")
    }

    /// SIGKILL: the worker gets no chance to clean up.
    pub async fn kill_worker(&mut self, index: usize) {
        let child = &mut self.workers[index];
        child.start_kill().expect("kill worker");
        child.wait().await.expect("reap worker");
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), running.wait()).await;
        }
        for child in &mut self.workers {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        // Leave nothing behind on the shared services.
        let topology = sluice::broker::Topology::new(
            &self.settings.prefix,
            &self.settings.amqp.retry_delays_ms,
        );
        if let Ok(broker) = sluice::broker::Broker::connect(&self.settings.amqp, topology).await {
            let _ = broker.delete_topology().await;
        }
        let _ = super::state::wipe_prefix(&self.settings.redis, &self.settings.prefix).await;
    }
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
