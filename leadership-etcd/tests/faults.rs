//! Faults on a single member: wrong credentials, nothing listening, a frozen server, a
//! restart under a blocked waiter. Each test owns its server.

use std::error::Error as _;
use std::time::{Duration, Instant};

use leadership_core::{CancellationToken, Claimer, Error, Revoker};
use leadership_etcd::EtcdStore;
use leadership_testkit::harness::{EtcdServer, free_port};

const LONG: Duration = Duration::from_secs(30);

fn server() -> EtcdServer {
    match EtcdServer::start() {
        Ok(server) => server,
        Err(err) => panic!("cannot start etcd: {err}"),
    }
}

/// The error's whole chain, for asserting on what a user would read.
fn chain(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_clearly() {
    let server = server();
    let mut admin = etcd_client::Client::connect(server.endpoints(), None)
        .await
        .unwrap();
    admin.user_add("root", "s3cret", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();

    let config = |password: &str| {
        EtcdStore::builder(&server.url())
            .expect("a valid etcd URL")
            .namespace("auth")
            .credentials("root", password)
    };
    let err = config("wrong").connect().await.unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let text = chain(&err);
    assert!(text.contains("refused user \"root\""), "{text}");
    assert!(
        !text.contains("wrong\""),
        "the password never shows: {text}"
    );

    let err = EtcdStore::connect(&server.url()).await.unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{}", chain(&err));

    let store = config("s3cret").connect().await.unwrap();
    store.claim_leadership("app", "app/0", LONG).await.unwrap();
    store.revoke_leadership("app", "app/0").await.unwrap();
    assert!(!format!("{store:?}").contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_unavailable_within_the_timeout() {
    let port = free_port().unwrap();
    let timeout = Duration::from_secs(1);
    let config = EtcdStore::builder(&format!("etcd://127.0.0.1:{port}"))
        .expect("a valid etcd URL")
        .operation_timeout(timeout);
    let started = Instant::now();
    let err = config.connect().await.unwrap_err();
    assert!(started.elapsed() < timeout + Duration::from_millis(500));
    assert!(err.is_retryable(), "{err:?}");
    let text = chain(&err);
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");

    // A frozen server accepts connections and says nothing.
    let server = server();
    server.pause().unwrap();
    let started = Instant::now();
    let frozen = EtcdStore::builder(&server.url())
        .expect("a valid etcd URL")
        .operation_timeout(timeout)
        .connect()
        .await;
    server.resume().unwrap();
    let err = frozen.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(started.elapsed() < timeout + Duration::from_millis(500));
    assert!(chain(&err).contains("answered within"), "{}", chain(&err));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_survives_a_restart_and_fences_survive_it_too() {
    let mut server = server();
    let config = EtcdStore::builder(&server.url())
        .expect("a valid etcd URL")
        .namespace("restart");
    let store = config.clone().connect().await.unwrap();
    let waiting = config.connect().await.unwrap();
    let fence = store.claim_leadership("app", "app/0", LONG).await.unwrap();
    let waiter = tokio::spawn(async move {
        waiting
            .block_until_leadership_released("app", CancellationToken::new())
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill9().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "an outage is not a release (B5)");
    server.start_again().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "the term survived the restart");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.revoke_leadership("app", "app/0").await {
            Ok(()) => break,
            Err(err) if err.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("revoke after restart: {err}"),
        }
    }
    let outcome = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("released after the revoke")
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    let next = store.claim_leadership("app", "app/1", LONG).await.unwrap();
    assert!(next > fence, "F1 across a restart: {next} > {fence}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_against_a_dead_server_is_unavailable_within_the_timeout() {
    let mut server = server();
    let timeout = Duration::from_secs(1);
    let config = EtcdStore::builder(&server.url())
        .expect("a valid etcd URL")
        .operation_timeout(timeout);
    let store = config.connect().await.unwrap();
    store.claim_leadership("app", "app/0", LONG).await.unwrap();
    server.kill9().unwrap();
    let started = Instant::now();
    let err = store
        .claim_leadership("app", "app/0", LONG)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(started.elapsed() < timeout + Duration::from_millis(500));
    let started = Instant::now();
    let blocked = store.block_until_leadership_released("app", CancellationToken::new());
    // A block never returns Ok because of an error: it keeps waiting.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), blocked)
            .await
            .is_err()
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
}

/// Issue 19.5: what a user reads (the CLI joins the error and its causes with ": ") names
/// the store, the operation and the endpoints, then one short line of cause; the gRPC status
/// is still reachable through `source()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_reads_as_one_short_line() {
    let started = Instant::now();
    let err = EtcdStore::connect("etcd://127.0.0.1:1").await.unwrap_err();
    let took = started.elapsed();
    let text = chain(&err);
    eprintln!("{text}");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(
        took < leadership_core::DEFAULT_TIMEOUT + Duration::from_millis(500),
        "{took:?}"
    );
    assert!(
        text.starts_with(
            "etcd store unavailable during connect: cannot reach etcd at 127.0.0.1:1: \
             unavailable: tcp connect error: "
        ),
        "{text}"
    );
    // Core's one_line stops at the crate's Cause: one short line, no tonic internals.
    assert_eq!(
        err.one_line(),
        "etcd store unavailable during connect: cannot reach etcd at 127.0.0.1:1: \
         unavailable: tcp connect error"
    );
    let mut causes = Vec::new();
    let mut source = err.source();
    while let Some(cause) = source {
        causes.push(cause);
        source = cause.source();
    }
    assert!(
        causes.iter().any(|c| matches!(
            c.downcast_ref::<etcd_client::Error>(),
            Some(etcd_client::Error::GRpcStatus(_))
        )),
        "{causes:?}"
    );
}
