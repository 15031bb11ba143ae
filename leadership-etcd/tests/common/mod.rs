//! One private etcd member per test binary, and fresh store handles on it.

#![allow(dead_code)]

use std::sync::OnceLock;

use leadership_etcd::{EtcdStore, EtcdStoreBuilder};
use leadership_testkit::harness::EtcdServer;

static SERVER: OnceLock<EtcdServer> = OnceLock::new();

/// The shared server of this test binary, started on first use.
pub fn server() -> &'static EtcdServer {
    SERVER.get_or_init(|| match EtcdServer::start() {
        Ok(server) => server,
        Err(err) => panic!("cannot start etcd for the tests: {err}"),
    })
}

static SERVER_35: OnceLock<EtcdServer> = OnceLock::new();

/// The shared etcd 3.5.1 server of this test binary, started on first use.
pub fn server_35() -> &'static EtcdServer {
    SERVER_35.get_or_init(|| match EtcdServer::start_35() {
        Ok(server) => server,
        Err(err) => panic!("cannot start etcd 3.5.1 for the tests: {err}"),
    })
}

/// A new handle on the shared server in a namespace no other test uses.
pub async fn store(case: &str) -> EtcdStore {
    let namespace = leadership_core::conformance::unique_namespace(case);
    connect(
        EtcdStore::builder(&server().url())
            .expect("a valid etcd URL")
            .namespace(namespace),
    )
    .await
}

pub mod factory;
pub mod proxy;

/// Connects or fails the test with the error.
pub async fn connect(config: EtcdStoreBuilder) -> EtcdStore {
    match config.connect().await {
        Ok(store) => store,
        Err(err) => panic!(
            "cannot connect to the test etcd: {err} ({:?})",
            std::error::Error::source(&err).map(ToString::to_string)
        ),
    }
}

/// The value of the unlabelled metric `name` on the etcd member at `endpoint` (`host:port`),
/// read from its `/metrics`.
pub async fn metric(endpoint: &str, name: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut connection = tokio::net::TcpStream::connect(endpoint)
        .await
        .unwrap_or_else(|err| panic!("cannot reach {endpoint} for its metrics: {err}"));
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {endpoint}\r\n\r\n");
    connection
        .write_all(request.as_bytes())
        .await
        .expect("send the metrics request");
    let mut body = String::new();
    connection
        .read_to_string(&mut body)
        .await
        .expect("read the metrics");
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{endpoint} reports no metric {name}"))
}
