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

/// E2 for revokes: a holder's revoke whose reply was lost after etcd applied it ended the
/// term, but the handle never heard so. Its next claim must not "renew" the ended term
/// through the cached lease (which a revoke keeps alive for the handle's next term): the
/// claim either starts a new term that the store really holds, or fails. Before the fix the
/// claim returned the old fence while the application was vacant, so another unit could
/// claim it within the promised duration (C4), and both believed they led.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2_a_revoke_whose_reply_was_lost_leaves_no_phantom_term() {
    use leadership_core::Checker;
    use leadership_testkit::harness::ReplyDropProxy;

    let server = server();
    let upstream = server.endpoints().remove(0);
    let proxy = ReplyDropProxy::start(upstream.as_str()).expect("proxy");
    let open = |url: String| async move {
        match EtcdStore::builder(&url)
            .expect("a valid etcd URL")
            .namespace("lost-revoke")
            .operation_timeout(Duration::from_secs(2))
            .connect()
            .await
        {
            Ok(store) => store,
            Err(err) => panic!("cannot connect: {err}"),
        }
    };
    let holder = open(format!("etcd://{}", proxy.addr())).await;
    let direct = open(server.url()).await;
    let leads = |store: &EtcdStore, unit: &str| {
        let token = store.leadership_check("app", unit);
        async move { token.check().await.ok() }
    };
    let minute = Duration::from_secs(60);

    let first = holder
        .claim_leadership("app", "app/0", minute)
        .await
        .unwrap();
    assert_eq!(leads(&direct, "app/0").await, Some(first));
    proxy.drop_replies(true);
    let revoked = holder.revoke_leadership("app", "app/0").await;
    proxy.drop_replies(false);
    // The fault happened: the caller got an error, and etcd applied the revoke.
    assert!(revoked.is_err(), "the revoke's reply was lost: {revoked:?}");
    assert!(proxy.dropped() >= 1);
    assert_eq!(
        leads(&direct, "app/0").await,
        None,
        "the lost revoke applied"
    );

    // The holder claims again: whatever it is told must be what the store holds.
    let deadline = Instant::now() + LONG;
    let again = loop {
        match holder.claim_leadership("app", "app/0", minute).await {
            Ok(fence) => break fence,
            Err(err) if err.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("the claim failed: {err}"),
        }
    };
    assert_eq!(
        leads(&direct, "app/0").await,
        Some(again),
        "the holder's claim returned a term the store holds"
    );
    assert!(
        again > first,
        "a new term after the revoke: {again} > {first}"
    );
    assert!(matches!(
        direct.claim_leadership("app", "app/1", minute).await,
        Err(Error::ClaimDenied)
    ));
}
