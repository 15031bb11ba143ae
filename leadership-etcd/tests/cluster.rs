//! Against 3-member clusters: losing the raft leader, a revoke while a member is down, a full
//! outage. Each test owns its cluster.

use std::time::{Duration, Instant};

use leadership_core::{CancellationToken, Checker, Claimer, Error, Fence, Revoker};
use leadership_etcd::EtcdStore;
use leadership_testkit::harness::EtcdCluster;

const LONG: Duration = Duration::from_secs(30);

fn cluster() -> EtcdCluster {
    match EtcdCluster::start(3) {
        Ok(cluster) => cluster,
        Err(err) => panic!("cannot start a 3-member etcd cluster: {err}"),
    }
}

async fn connect(cluster: &EtcdCluster, timeout: Duration) -> EtcdStore {
    let config = EtcdStore::builder(&cluster.url())
        .expect("a valid etcd URL")
        .namespace(leadership_core::conformance::unique_namespace("cluster"))
        .operation_timeout(timeout);
    match config.connect().await {
        Ok(store) => store,
        Err(err) => panic!("cannot connect to the cluster: {err}"),
    }
}

async fn check(store: &EtcdStore, application: &str, unit: &str) -> leadership_core::Result<Fence> {
    store.leadership_check(application, unit).check().await
}

/// Retries a call that may meet the cluster mid-election, for at most `within`.
async fn eventually<T, F, Fut>(within: Duration, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = leadership_core::Result<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        match call().await {
            Ok(value) => return value,
            Err(err) if err.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("call failed: {err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_survives_losing_the_raft_leader_and_fences_never_repeat() {
    let mut cluster = cluster();
    let store = connect(&cluster, Duration::from_secs(5)).await;
    let mut fences: Vec<Fence> = Vec::new();
    let first = store.claim_leadership("app", "app/0", LONG).await.unwrap();
    fences.push(first);

    let leader = cluster.leader().expect("the cluster has a leader");
    cluster.kill9(leader).unwrap();

    // The holder keeps its term through the election: renewals keep the fence.
    let renewed = eventually(Duration::from_secs(10), || {
        store.claim_leadership("app", "app/0", LONG)
    })
    .await;
    assert_eq!(renewed, first);
    let checked = eventually(Duration::from_secs(5), || check(&store, "app", "app/0")).await;
    assert_eq!(checked, first);
    assert!(matches!(
        store.claim_leadership("app", "app/1", LONG).await,
        Err(Error::ClaimDenied)
    ));
    // New terms on the surviving quorum get new, larger fences.
    let mut holder = "app/0";
    for unit in ["app/1", "app/2", "app/3"] {
        eventually(Duration::from_secs(5), || {
            store.revoke_leadership("app", holder)
        })
        .await;
        let fence = eventually(Duration::from_secs(5), || {
            store.claim_leadership("app", unit, LONG)
        })
        .await;
        fences.push(fence);
        holder = unit;
    }
    // The killed member comes back and catches up; fences keep increasing.
    cluster.start_member(leader).unwrap();
    eventually(Duration::from_secs(5), || {
        store.revoke_leadership("app", "app/3")
    })
    .await;
    let after = eventually(Duration::from_secs(5), || {
        store.claim_leadership("app", "app/0", LONG)
    })
    .await;
    fences.push(after);
    assert!(
        fences.windows(2).all(|pair| pair[0] < pair[1]),
        "fences must strictly increase: {fences:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_is_released_by_a_revoke_while_a_member_is_down() {
    let mut cluster = cluster();
    let store = connect(&cluster, Duration::from_secs(5)).await;
    let config = EtcdStore::builder(&cluster.url())
        .expect("a valid etcd URL")
        .namespace(store.namespace_name());
    let waiting = config.connect().await.unwrap();
    store.claim_leadership("app", "app/0", LONG).await.unwrap();
    let waiter = tokio::spawn(async move {
        waiting
            .block_until_leadership_released("app", CancellationToken::new())
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Whichever member the waiter's watch is on, one of the three goes down: the leader,
    // so that an election happens too.
    let leader = cluster.leader().expect("the cluster has a leader");
    cluster.kill9(leader).unwrap();
    let revoked = Instant::now();
    eventually(Duration::from_secs(10), || {
        store.revoke_leadership("app", "app/0")
    })
    .await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter is released")
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(revoked.elapsed() < Duration::from_secs(10));
    // And the application is vacant for the next claimant.
    eventually(Duration::from_secs(5), || {
        store.claim_leadership("app", "app/1", LONG)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_during_a_full_outage_is_unavailable_within_the_timeout() {
    let mut cluster = cluster();
    let timeout = Duration::from_secs(1);
    let store = connect(&cluster, timeout).await;
    store.claim_leadership("app", "app/0", LONG).await.unwrap();

    // Frozen: connections stay open, nothing answers.
    for i in 0..cluster.len() {
        cluster.pause(i).unwrap();
    }
    let started = Instant::now();
    let frozen = store.claim_leadership("app", "app/0", LONG).await;
    let took = started.elapsed();
    for i in 0..cluster.len() {
        cluster.resume(i).unwrap();
    }
    assert!(
        matches!(frozen, Err(Error::Unavailable { .. })),
        "{frozen:?}"
    );
    assert!(took < timeout + Duration::from_millis(500), "took {took:?}");
    let fence = eventually(Duration::from_secs(10), || {
        store.claim_leadership("app", "app/0", LONG)
    })
    .await;

    // Gone: every member killed.
    for i in 0..cluster.len() {
        cluster.kill9(i).unwrap();
    }
    let started = Instant::now();
    let gone = store.claim_leadership("app", "app/0", LONG).await;
    let took = started.elapsed();
    assert!(matches!(gone, Err(Error::Unavailable { .. })), "{gone:?}");
    assert!(took < timeout + Duration::from_millis(500), "took {took:?}");
    let checked = check(&store, "app", "app/0").await;
    assert!(
        matches!(checked, Err(Error::Unavailable { .. })),
        "{checked:?}"
    );

    // Back from disk: the same term, the same fence.
    for i in 0..cluster.len() {
        cluster.start_member_process(i).unwrap();
    }
    for i in 0..cluster.len() {
        cluster.wait_ready(i).unwrap();
    }
    let back = eventually(Duration::from_secs(10), || check(&store, "app", "app/0")).await;
    assert_eq!(back, fence);
}
