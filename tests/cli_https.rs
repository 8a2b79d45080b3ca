//! The CLI speaks HTTPS: an API behind a TLS proxy whose certificate a private CA signed is
//! reached with `api.ca_cert`, and refused without it (the system roots do not know it).

mod common;

use std::sync::Arc;

use common::Cluster;
use common::tls::TestCa;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};

/// Terminates TLS on a free port and passes each connection on to `upstream`; returns the
/// port.
async fn tls_proxy(ca: &TestCa, upstream: std::net::SocketAddr) -> u16 {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca.path("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(ca.path("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to pass on.
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut api = TcpStream::connect(upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut api).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn the_cli_reaches_an_https_api_signed_by_a_private_ca() {
    let mut cluster = Cluster::new(1 << 20).await;
    cluster.start(false).await;
    let upstream: std::net::SocketAddr = cluster
        .base_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let ca = TestCa::new();
    let port = tls_proxy(&ca, upstream).await;
    let url = format!("https://localhost:{port}");
    let jobs = |ca_cert: Option<std::path::PathBuf>| {
        let mut command = cluster.command();
        command
            .args(["jobs", "--json"])
            .env("SLUICE__API__URL", &url);
        if let Some(path) = ca_cert {
            command.env("SLUICE__API__CA_CERT", path);
        }
        async move { command.output().await }
    };

    let trusted = jobs(Some(ca.path("ca.pem"))).await.unwrap();
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&trusted.stdout).unwrap();
    assert_eq!(list["jobs"], serde_json::json!([]));

    let untrusted = jobs(None).await.unwrap();
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.contains("cannot reach the sluice API"), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    let bad = ca.path("server.csr");
    let unreadable = jobs(Some(bad)).await.unwrap();
    assert!(!unreadable.status.success());
    let stderr = String::from_utf8_lossy(&unreadable.stderr);
    assert!(stderr.contains("api.ca_cert"), "{stderr}");
    cluster.stop().await;
}
