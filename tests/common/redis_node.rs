//! A Redis server of a test's own, for settings the shared one must not get (TLS only, a
//! password): on a free port, in a temporary folder, killed when dropped.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tls::TestCa;

pub struct RedisNode {
    /// `redis://` or `rediss://`, with the password when there is one.
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RedisNode {
    /// With `tls`, the plain port is closed and TLS (this CA's `localhost` certificate) is on
    /// a free one; with `password`, clients must give it.
    pub async fn start(tls: Option<&TestCa>, password: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port().to_string();
        let file = |p: &Path| p.display().to_string();
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &file(dir.path())]);
        match tls {
            Some(ca) => {
                command
                    .args(["--port", "0", "--tls-port", &port])
                    .args(["--tls-cert-file", &file(&ca.path("server.pem"))])
                    .args(["--tls-key-file", &file(&ca.path("server.key"))])
                    .args(["--tls-ca-cert-file", &file(&ca.path("ca.pem"))])
                    .args(["--tls-auth-clients", "no"]);
            }
            None => {
                command.args(["--port", &port]);
            }
        }
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start redis-server (scripts/services.sh installs it)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "redis-server did not open port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let credentials = password.map(|p| format!(":{p}@")).unwrap_or_default();
        let url = match tls {
            Some(_) => format!("rediss://{credentials}localhost:{port}/"),
            None => format!("redis://{credentials}127.0.0.1:{port}/"),
        };
        Self {
            url,
            child,
            _dir: dir,
        }
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
