//! `rediss://` against a redis-server with a TLS listener and a private CA.
#![cfg(feature = "tls")]

use leadership_core::{Checker, Claimer};
use leadership_redis::RedisStore;
use leadership_testkit::harness::{RedisCluster, RedisSentinel, RedisServer, TestCa};

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

/// Claims, checks, and a waiter woken by a revoke (its subscriber over TLS too), through
/// `url` with the private CA; the same URL without it must fail the handshake.
async fn over_tls(url: &str, ca: &[u8]) -> RedisStore {
    use leadership_core::{CancellationToken, Revoker};
    use std::time::Duration;
    let store = RedisStore::builder(url)
        .expect("valid redis URL")
        .tls_root_cert_pem(ca.to_vec())
        .namespace("tls")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("TLS connect to {url} with the private CA: {e:?}"));
    let fence = store
        .claim_leadership("app", "app/0", Duration::from_secs(30))
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
    let waiter = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .block_until_leadership_released("app", CancellationToken::new())
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter waits while the lease is held"
    );
    store
        .revoke_leadership("app", "app/0")
        .await
        .expect("revoke over TLS");
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the revoke's notification reached the waiter over TLS")
        .expect("task")
        .expect("released");

    let untrusted = RedisStore::builder(url)
        .expect("valid redis URL")
        .operation_timeout(Duration::from_secs(2))
        .connect()
        .await;
    assert!(
        untrusted.is_err(),
        "an unknown CA must not be trusted: {url}"
    );
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_cluster_with_a_private_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tls = TestCa::new("leadership test CA")
        .redis_tls(dir.path())
        .unwrap_or_else(|e| panic!("{e}"));
    let ca = std::fs::read(&tls.ca).expect("read CA");
    let cluster = RedisCluster::start_tls(3, 0, tls).unwrap_or_else(|e| panic!("{e:?}"));
    let url = cluster.tls_url().expect("TLS listeners");
    assert!(url.starts_with("rediss+cluster://localhost:"), "{url}");
    over_tls(&url, &ca).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_sentinel_with_a_private_ca_follows_a_failover() {
    use std::time::Duration;
    let dir = tempfile::tempdir().expect("temp dir");
    let tls = TestCa::new("leadership test CA")
        .redis_tls(dir.path())
        .unwrap_or_else(|e| panic!("{e}"));
    let ca = std::fs::read(&tls.ca).expect("read CA");
    let setup = RedisSentinel::start_tls("tls", tls).unwrap_or_else(|e| panic!("{e:?}"));
    let url = setup.tls_url().expect("TLS listeners");
    assert!(url.starts_with("rediss+sentinel://localhost:"), "{url}");
    let store = over_tls(&url, &ca).await;

    // After a failover the sentinels name the new primary's TLS port, and the store
    // reaches it over TLS.
    let fence = store
        .claim_leadership("app", "app/0", Duration::from_secs(30))
        .await
        .expect("claim");
    let before = setup.primary().expect("a primary");
    let setup = tokio::task::spawn_blocking(move || setup.failover().map(|()| setup))
        .await
        .expect("task")
        .expect("SENTINEL FAILOVER");
    assert_ne!(setup.primary(), Some(before), "the primary moved");
    assert_eq!(
        store
            .claim_leadership("app", "app/0", Duration::from_secs(30))
            .await
            .expect("renewal on the new primary over TLS"),
        fence
    );
}
