//! A RabbitMQ node of a test's own, for settings that would disturb the shared broker
//! (a short `consumer_timeout`): started from the installed server, on free ports, in a
//! temporary folder, and killed with its whole process group when dropped.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct BrokerNode {
    pub url: String,
    /// The plain AMQP port.
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl BrokerNode {
    /// Starts a node with `config` added to its `rabbitmq.conf`; waits until it accepts
    /// connections.
    pub async fn start(config: &str) -> Self {
        Self::start_with(config, None).await
    }

    /// Like `start`, with `advanced` (Erlang terms) as its `advanced.config`, for settings
    /// `rabbitmq.conf` does not know (`[{rabbit, [{channel_tick_interval, 1000}]}].` makes
    /// the broker check consumer timeouts every second instead of every minute).
    pub async fn start_with(config: &str, advanced: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if let Some(advanced) = advanced {
            std::fs::write(dir.path().join("advanced.config"), advanced).unwrap();
        }
        let (port, dist_port) = (super::free_port(), super::free_port());
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let node = format!("sluice-test-{tag}@localhost");
        std::fs::write(
            dir.path().join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n{config}\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").unwrap();
        // The machine's env file names the shared node; this one names ours.
        std::fs::write(dir.path().join("env.conf"), format!("NODENAME={node}\n")).unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let log = std::fs::File::create(dir.path().join("server.out")).unwrap();
        let mut command = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
        if advanced.is_some() {
            command.env("RABBITMQ_ADVANCED_CONFIG_FILE", path("advanced.config"));
        }
        let child = command
            .env("RABBITMQ_CONF_ENV_FILE", path("env.conf"))
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", path("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_PID_FILE", path("pid"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start a RabbitMQ node (is rabbitmq-server installed? scripts/services.sh installs it)");
        let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "RabbitMQ node {node} did not open port {port}; see {}",
                path("log")
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Self {
            url,
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for BrokerNode {
    fn drop(&mut self) {
        // The server script runs the Erlang VM as a child: kill the whole group.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}
