//! `rediss://` against a redis-server with a TLS listener and a private CA.
#![cfg(feature = "tls")]

use leadership_core::{Checker, Claimer};
use leadership_redis::RedisStore;
use leadership_testkit::harness::{RedisServer, TestCa};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A throwaway CA and a `localhost`/`127.0.0.1` certificate it signed, made in-process
    // (issue 19.1: no openssl binary), shared with the testkit's TLS tests.
    let tls = TestCa::new("leadership test CA")
        .redis_tls(dir.path())
        .unwrap_or_else(|e| panic!("{e}"));
    let ca = std::fs::read(&tls.ca).expect("read CA");
    let server = RedisServer::builder()
        .tls(tls)
        .requirepass("tls-secret")
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let url = server.tls_url().expect("TLS listener");
    assert!(url.starts_with("rediss://localhost:"), "{url}");

    let store = RedisStore::builder(&url)
        .expect("valid redis URL")
        .password("tls-secret")
        .tls_root_cert_pem(ca)
        .namespace("tls")
        .connect()
        .await
        .expect("TLS connect with the private CA");
    let fence = store
        .claim_leadership("app", "app/0", std::time::Duration::from_secs(30))
        .await
        .expect("claim over TLS");
    assert_eq!(
        store
            .leadership_check("app", "app/0")
            .check()
            .await
            .expect("check"),
        fence
    );

    // The system roots do not know the private CA: the handshake must fail.
    let untrusted = RedisStore::builder(&url)
        .expect("valid redis URL")
        .password("tls-secret")
        .operation_timeout(std::time::Duration::from_secs(2))
        .connect()
        .await;
    assert!(untrusted.is_err(), "an unknown CA must not be trusted");
}
