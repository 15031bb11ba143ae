//! `wait_for_replicas` (issue 18.5): a claim returns `Ok` only once the replicas acknowledged
//! that claim's own write, even when its connection is lost between the write and the wait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use leadership_core::{Checker, Claimer, Fence};
use leadership_redis::RedisStore;
use leadership_testkit::harness::{RedisCluster, RedisServer, ReplyDropProxy};

const LONG: Duration = Duration::from_secs(60);

/// A primary and a replica in sync.
fn primary_and_replica() -> (RedisServer, RedisServer) {
    let primary = RedisServer::start().expect("start the primary");
    let replica = RedisServer::start().expect("start the replica");
    replica
        .command(&["REPLICAOF", "127.0.0.1", &primary.port().to_string()])
        .expect("REPLICAOF");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = primary
            .command(&["INFO", "replication"])
            .expect("INFO replication");
        if info.contains("connected_slaves:1") && info.contains("state=online") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never synced: {info}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (primary, replica)
}

/// A claim of `app/0` the replicas acknowledged. On a loaded machine a replica's
/// acknowledgement can miss one `WAIT`'s window (a fifth of the operation timeout): the claim
/// applied but returns a retryable `Unavailable` (E2), and a caller's answer is to retry it,
/// which returns the same term (C2). Retried for up to 20 s; any other error fails the test.
async fn acknowledged(store: &RedisStore, what: &str) -> Fence {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.claim_leadership("app", "app/0", LONG).await {
            Ok(fence) => return fence,
            Err(err)
                if err.is_retryable()
                    && err.one_line().contains("replicas")
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("{what}: {err:?}"),
        }
    }
}

/// The claim's reply gets through and the connection is lost before the `WAIT`'s answer,
/// while the replica is frozen and acknowledges nothing. A `WAIT` sent again on the new
/// connection, which wrote nothing, would count the frozen replica at once; the claim must
/// instead stay unacknowledged: `Unavailable` (retryable, E2), never `Ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c4_e2_a_claim_waits_for_the_replicas_of_its_own_write_across_a_reconnect() {
    let (primary, replica) = primary_and_replica();
    let proxy = Arc::new(ReplyDropProxy::start(("127.0.0.1", primary.port())).expect("proxy"));
    let store = RedisStore::builder(&format!("redis://{}", proxy.addr()))
        .expect("url")
        .wait_for_replicas(1)
        .operation_timeout(Duration::from_secs(3))
        .connect()
        .await
        .expect("connect");
    let fence = acknowledged(&store, "acknowledged by the replica").await;

    replica.pause().expect("freeze the replica");
    // The next reply (the claim's) passes; the one after it (the WAIT's) is lost, and when
    // replies flow again the proxy closes that connection, so the client reconnects.
    proxy.drop_replies_after(true, 1);
    let restore = std::thread::spawn({
        let proxy = proxy.clone();
        move || {
            std::thread::sleep(Duration::from_millis(1500));
            proxy.drop_replies(false);
        }
    });
    let answer = store.claim_leadership("app", "app/0", LONG).await;
    restore.join().expect("restore thread");
    replica.resume().expect("thaw the replica");

    assert!(
        proxy.dropped() >= 1,
        "the fault happened: a connection lost a reply"
    );
    let err = answer.expect_err("the frozen replica acknowledged nothing");
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.one_line().contains("replicas"), "{}", err.one_line());
    // It applied on the primary (E2): the lease is still this unit's, in the same term.
    assert_eq!(
        store
            .leadership_check("app", "app/0")
            .check()
            .await
            .expect("held"),
        fence
    );
    // With the replica back, the retry is acknowledged.
    assert_eq!(acknowledged(&store, "acknowledged again").await, fence);
}

/// The same promise on a Redis Cluster: the claim script and its `WAIT` travel in one
/// pipeline, which the cluster connection routes by the script's keys to the master of the
/// namespace's slot, so the `WAIT` counts that master's replicas and this claim's write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c4_e2_a_claim_on_a_cluster_waits_for_its_masters_replica() {
    let cluster = RedisCluster::start(1, 1).unwrap_or_else(|e| panic!("{e:?}"));
    let store = RedisStore::builder(&cluster.url())
        .expect("url")
        .wait_for_replicas(1)
        .operation_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connect");
    let fence = acknowledged(&store, "acknowledged by the master's replica").await;

    // Node 1 is the one master's replica: frozen, it acknowledges nothing.
    cluster.pause(1).expect("freeze the replica");
    let answer = store.claim_leadership("app", "app/0", LONG).await;
    let other = store.claim_leadership("other", "other/0", LONG).await;
    cluster.resume(1).expect("thaw the replica");
    for (what, answer) in [("renewal", answer), ("new term", other)] {
        let err = answer.expect_err(what);
        assert!(err.is_retryable(), "{what}: {err:?}");
        assert!(
            err.one_line().contains("reached 0 of 1 replicas"),
            "{what}: {}",
            err.one_line()
        );
    }
    // Both applied on the master (E2): the lease is still this unit's, in the same term.
    assert_eq!(
        store
            .leadership_check("app", "app/0")
            .check()
            .await
            .expect("held"),
        fence
    );
    assert_eq!(acknowledged(&store, "acknowledged again").await, fence);

    // Two replicas asked of a master that has one: refused, never `Ok`.
    let two = RedisStore::builder(&cluster.url())
        .expect("url")
        .wait_for_replicas(2)
        .operation_timeout(Duration::from_millis(500))
        .connect()
        .await
        .expect("connect");
    let err = two
        .claim_leadership("app", "app/0", LONG)
        .await
        .expect_err("only one replica");
    assert!(
        err.one_line().contains("reached 1 of 2 replicas"),
        "{}",
        err.one_line()
    );
}
