//! The etcd store's own behaviour, beyond the shared conformance suite: lease moves, pins
//! that survive expiry, injective names, guarded writes, blocking.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use leadership_core::{
    CancellationToken, Checker, Claimer, Error, Fence, PermissivePolicy, Pinner, Reader, Revoker,
};
use leadership_etcd::EtcdStore;

const SECOND: Duration = Duration::from_secs(1);
/// etcd checks for expired leases every 500 ms; a revoke then goes through raft.
const SLACK: Duration = Duration::from_millis(1500);

async fn leads(store: &EtcdStore, application: &str, unit: &str) -> Option<Fence> {
    match store.leadership_check(application, unit).check().await {
        Ok(fence) => Some(fence),
        Err(err) if err.is_not_leader() => None,
        Err(err) => panic!("check failed: {err}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_renew_check_revoke() {
    let store = common::store("basic").await;
    let fence = store
        .claim_leadership("app", "app/0", SECOND * 5)
        .await
        .unwrap();
    // Renewal by the holder keeps the fence (C2).
    for _ in 0..3 {
        assert_eq!(
            store
                .claim_leadership("app", "app/0", SECOND * 5)
                .await
                .unwrap(),
            fence
        );
    }
    assert!(matches!(
        store.claim_leadership("app", "app/1", SECOND).await,
        Err(Error::ClaimDenied)
    ));
    assert_eq!(leads(&store, "app", "app/0").await, Some(fence));
    assert_eq!(leads(&store, "app", "app/1").await, None);
    assert!(matches!(
        store.revoke_leadership("app", "app/1").await,
        Err(Error::ClaimNotHeld)
    ));
    store.revoke_leadership("app", "app/0").await.unwrap();
    store.revoke_leadership("app", "app/0").await.unwrap();
    let next = store
        .claim_leadership("app", "app/1", SECOND)
        .await
        .unwrap();
    assert!(next > fence, "{next} > {fence}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_claim_moves_to_a_longer_lease_and_keeps_the_fence() {
    let store = common::store("longer").await;
    let fence = store
        .claim_leadership("app", "app/0", SECOND)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_leadership("app", "app/0", SECOND * 4)
            .await
            .unwrap(),
        fence
    );
    tokio::time::sleep(SECOND + SLACK).await;
    assert_eq!(
        leads(&store, "app", "app/0").await,
        Some(fence),
        "extended to 4 s"
    );
    // The short-lease renewal path must not shorten it either (C2).
    assert_eq!(
        store
            .claim_leadership("app", "app/0", SECOND)
            .await
            .unwrap(),
        fence
    );
    tokio::time::sleep(SECOND).await;
    assert_eq!(leads(&store, "app", "app/0").await, Some(fence));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_handle_of_the_holder_extends_without_a_new_term() {
    let first = common::store("handles").await;
    let config = EtcdStore::builder(&common::server().url())
        .expect("a valid etcd URL")
        .namespace(first.namespace_name());
    let second = common::connect(config).await;
    let fence = first
        .claim_leadership("app", "app/0", SECOND)
        .await
        .unwrap();
    // `second` has no cached lease: it reads, finds the unit holding, and extends.
    assert_eq!(
        second
            .claim_leadership("app", "app/0", SECOND * 4)
            .await
            .unwrap(),
        fence
    );
    // `first`'s cached lease was replaced and revoked: its renewal falls back to a read and
    // must keep the 4-second expiry.
    assert_eq!(
        first
            .claim_leadership("app", "app/0", SECOND)
            .await
            .unwrap(),
        fence
    );
    tokio::time::sleep(SECOND + SLACK).await;
    assert_eq!(leads(&first, "app", "app/0").await, Some(fence));
    assert!(matches!(
        second.claim_leadership("app", "app/1", SECOND).await,
        Err(Error::ClaimDenied)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_on_the_etcd_clock() {
    let store = common::store("expiry").await;
    let started = Instant::now();
    let fence = store
        .claim_leadership("app", "app/0", SECOND)
        .await
        .unwrap();
    tokio::time::sleep(SECOND / 2).await;
    assert_eq!(
        leads(&store, "app", "app/0").await,
        Some(fence),
        "held within the duration"
    );
    while leads(&store, "app", "app/0").await.is_some() {
        assert!(
            started.elapsed() < SECOND + SLACK,
            "still held after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(store.leaders().await.unwrap().is_empty());
    let next = store
        .claim_leadership("app", "app/1", SECOND)
        .await
        .unwrap();
    assert!(next > fence);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_outlive_the_claimed_expiry_and_unpin_ends_it_at_once() {
    let store = common::store("pins").await;
    let fence = store
        .claim_leadership("app", "app/0", SECOND)
        .await
        .unwrap();
    store.pin_leadership("app", "machine-0").await.unwrap();
    store.pin_leadership("app", "machine-0").await.unwrap();
    store.pin_leadership("app", "machine-1").await.unwrap();
    tokio::time::sleep(SECOND + SLACK).await;
    assert_eq!(
        leads(&store, "app", "app/0").await,
        Some(fence),
        "pinned (P1)"
    );
    assert_eq!(
        store
            .leaders()
            .await
            .unwrap()
            .get("app")
            .map(String::as_str),
        Some("app/0")
    );
    assert!(matches!(
        store.claim_leadership("app", "app/1", SECOND).await,
        Err(Error::ClaimDenied)
    ));
    assert_eq!(
        store.pinned_leadership().await.unwrap().get("app"),
        Some(&vec!["machine-0".to_owned(), "machine-1".to_owned()])
    );
    store.unpin_leadership("app", "machine-0").await.unwrap();
    store.unpin_leadership("app", "never-pinned").await.unwrap();
    assert_eq!(
        leads(&store, "app", "app/0").await,
        Some(fence),
        "one pin left"
    );
    store.unpin_leadership("app", "machine-1").await.unwrap();
    // The claimed expiry has passed: the lease ends at once (P3).
    assert_eq!(leads(&store, "app", "app/0").await, None);
    assert!(store.pinned_leadership().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpin_resumes_expiry_at_the_claimed_expiry() {
    let store = common::store("resume").await;
    let started = Instant::now();
    let fence = store
        .claim_leadership("app", "app/0", SECOND * 3)
        .await
        .unwrap();
    store.pin_leadership("app", "m").await.unwrap();
    tokio::time::sleep(SECOND).await;
    store.unpin_leadership("app", "m").await.unwrap();
    assert_eq!(
        leads(&store, "app", "app/0").await,
        Some(fence),
        "claimed expiry not reached"
    );
    while leads(&store, "app", "app/0").await.is_some() {
        assert!(
            started.elapsed() < SECOND * 3 + SLACK,
            "held after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= SECOND * 3,
        "ended early at {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_on_a_vacant_application_apply_to_the_next_claimant() {
    let store = common::store("vacant-pin").await;
    store.pin_leadership("app", "m").await.unwrap();
    let fence = store
        .claim_leadership("app", "app/2", SECOND)
        .await
        .unwrap();
    tokio::time::sleep(SECOND + SLACK).await;
    assert_eq!(
        leads(&store, "app", "app/2").await,
        Some(fence),
        "pinned from the start (P4)"
    );
    // The holder can extend and revoke a pinned lease; revoke keeps the pins (P6).
    assert_eq!(
        store
            .claim_leadership("app", "app/2", SECOND * 2)
            .await
            .unwrap(),
        fence
    );
    store.revoke_leadership("app", "app/2").await.unwrap();
    assert_eq!(leads(&store, "app", "app/2").await, None);
    assert_eq!(store.pinned_leadership().await.unwrap().len(), 1);
    let next = store
        .claim_leadership("app", "app/3", SECOND)
        .await
        .unwrap();
    assert!(next > fence);
    tokio::time::sleep(SECOND + SLACK).await;
    assert_eq!(
        leads(&store, "app", "app/3").await,
        Some(next),
        "still pinned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_renewing_while_pinned_after_its_claimed_expiry_keeps_the_term() {
    let store = common::store("pinned-renew").await;
    let fence = store
        .claim_leadership("app", "app/0", SECOND)
        .await
        .unwrap();
    store.pin_leadership("app", "m").await.unwrap();
    tokio::time::sleep(SECOND + SLACK).await;
    // The clock lease has expired; the renewal starts a new clock for the same term.
    assert_eq!(
        store
            .claim_leadership("app", "app/0", SECOND * 3)
            .await
            .unwrap(),
        fence
    );
    store.unpin_leadership("app", "m").await.unwrap();
    assert_eq!(
        leads(&store, "app", "app/0").await,
        Some(fence),
        "new claimed expiry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_names_are_encoded_injectively() {
    let namespace = leadership_core::conformance::unique_namespace("names");
    let config = EtcdStore::builder(&common::server().url())
        .expect("a valid etcd URL")
        .namespace(namespace)
        .policy(Arc::new(PermissivePolicy::default()));
    let store = common::connect(config).await;
    let ab = store
        .claim_leadership("a:b", "c", SECOND * 5)
        .await
        .unwrap();
    let a = store
        .claim_leadership("a", "b:c", SECOND * 5)
        .await
        .unwrap();
    assert_ne!(ab, a);
    store
        .claim_leadership("x/y", "pod/1", SECOND * 5)
        .await
        .unwrap();
    store
        .claim_leadership("x", "y/pod", SECOND * 5)
        .await
        .unwrap();
    store
        .claim_leadership("%2F", "é {}*", SECOND * 5)
        .await
        .unwrap();
    let leaders = store.leaders().await.unwrap();
    let expected = [
        ("%2F", "é {}*"),
        ("a", "b:c"),
        ("a:b", "c"),
        ("x", "y/pod"),
        ("x/y", "pod/1"),
    ];
    assert_eq!(
        leaders
            .iter()
            .map(|(a, u)| (a.as_str(), u.as_str()))
            .collect::<Vec<_>>(),
        expected
    );
    store.pin_leadership("a/b", "c").await.unwrap();
    store.pin_leadership("a", "b/c").await.unwrap();
    let pinned = store.pinned_leadership().await.unwrap();
    assert_eq!(pinned.get("a/b"), Some(&vec!["c".to_owned()]));
    assert_eq!(pinned.get("a"), Some(&vec!["b/c".to_owned()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_writes_apply_only_while_the_fence_leads() {
    let store = common::store("guarded").await;
    let target = format!("guarded-test/{}", store.namespace_name());
    let fence = store
        .claim_leadership("app", "app/0", SECOND * 5)
        .await
        .unwrap();
    let write = |value: &str| Txn::new().and_then(vec![TxnOp::put(target.clone(), value, None)]);
    let applied = store
        .guarded_txn("app", "app/0", fence, write("one"))
        .await
        .unwrap();
    assert!(applied.succeeded());
    // The user's own compares still decide the inner transaction.
    let user_compare = Txn::new()
        .when(vec![Compare::value(
            target.clone(),
            CompareOp::Equal,
            "nope",
        )])
        .and_then(vec![TxnOp::put(target.clone(), "never", None)]);
    let inner = store
        .guarded_txn("app", "app/0", fence, user_compare)
        .await
        .unwrap();
    assert!(!inner.succeeded());
    // Another unit, or a stale fence after a new term, writes nothing (F2).
    assert!(
        store
            .guarded_txn("app", "app/1", fence, write("x"))
            .await
            .unwrap_err()
            .is_not_leader()
    );
    store.revoke_leadership("app", "app/0").await.unwrap();
    let next = store
        .claim_leadership("app", "app/0", SECOND * 5)
        .await
        .unwrap();
    assert!(next > fence);
    let stale = store
        .guarded_txn("app", "app/0", fence, write("stale"))
        .await;
    assert!(stale.unwrap_err().is_not_leader());
    let mut client = store.client();
    let value = client.get(target.clone(), None).await.unwrap();
    assert_eq!(value.kvs()[0].value(), b"one");
    // The compares can also go into the user's own transaction.
    let mut when = store.leadership_compares("app", "app/0", next).unwrap();
    when.push(Compare::value(target.clone(), CompareOp::Equal, "one"));
    let own = Txn::new()
        .when(when)
        .and_then(vec![TxnOp::put(target.clone(), "two", None)]);
    assert!(client.txn(own).await.unwrap().succeeded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_waiters_wake_on_revoke_and_on_expiry() {
    let store = common::store("block").await;
    // Vacant: returns at once (B1).
    store
        .block_until_leadership_released("app", CancellationToken::new())
        .await
        .unwrap();
    store
        .claim_leadership("app", "app/0", SECOND * 30)
        .await
        .unwrap();
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .block_until_leadership_released("app", CancellationToken::new())
                .await
        })
    };
    tokio::time::sleep(SECOND / 2).await;
    // Extensions and pins keep it blocked (B2).
    store
        .claim_leadership("app", "app/0", SECOND * 30)
        .await
        .unwrap();
    store.pin_leadership("app", "m").await.unwrap();
    store.unpin_leadership("app", "m").await.unwrap();
    tokio::time::sleep(SECOND / 2).await;
    assert!(!waiter.is_finished());
    let revoked = Instant::now();
    store.revoke_leadership("app", "app/0").await.unwrap();
    waiter.await.unwrap().unwrap();
    assert!(
        revoked.elapsed() < SECOND * 2,
        "released after {:?}",
        revoked.elapsed()
    );

    store
        .claim_leadership("app", "app/1", SECOND)
        .await
        .unwrap();
    let claimed = Instant::now();
    store
        .block_until_leadership_released("app", CancellationToken::new())
        .await
        .unwrap();
    assert!(
        claimed.elapsed() < SECOND + SLACK + SECOND / 2,
        "{:?}",
        claimed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_drop_end_a_block() {
    let store = common::store("cancel").await;
    store
        .claim_leadership("app", "app/0", SECOND * 30)
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let waiter = {
        let (store, cancel) = (store.clone(), cancel.clone());
        tokio::spawn(async move { store.block_until_leadership_released("app", cancel).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    cancel.cancel();
    let result = tokio::time::timeout(SECOND, waiter).await.unwrap().unwrap();
    assert!(matches!(result, Err(Error::BlockCancelled)), "{result:?}");
    let dropped = tokio::time::timeout(
        Duration::from_millis(300),
        store.block_until_leadership_released("app", CancellationToken::new()),
    )
    .await;
    assert!(dropped.is_err(), "still blocked, then dropped");
    // The store still works after the dropped watch.
    store.revoke_leadership("app", "app/0").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_fails_before_any_io() {
    let store = common::store("invalid").await;
    assert!(matches!(
        store.claim_leadership("Bad", "Bad/0", SECOND).await,
        Err(Error::InvalidApplication { .. })
    ));
    assert!(matches!(
        store.claim_leadership("app", "other/0", SECOND).await,
        Err(Error::InvalidUnit { .. })
    ));
    assert!(matches!(
        store.claim_leadership("app", "app/0", Duration::ZERO).await,
        Err(Error::InvalidDuration { .. })
    ));
    assert!(matches!(
        store.pin_leadership("app", "has space").await,
        Err(Error::InvalidEntity { .. })
    ));
    assert!(store.leaders().await.unwrap().is_empty());
}

/// A waiter on another connection claims right after the holder's revoke deletes the key,
/// often before the revoke call returns: the revoke must still report `Ok` (R1), and the
/// waiter must win the next term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_races_between_revoke_and_the_next_claim() {
    let store = common::store("handover").await;
    let config = EtcdStore::builder(&common::server().url())
        .expect("a valid etcd URL")
        .namespace(store.namespace_name());
    let waiting = common::connect(config).await;
    for round in 0..50 {
        let application = format!("handover{round}");
        let fence = store
            .claim_leadership(&application, &format!("{application}/0"), SECOND * 60)
            .await
            .unwrap();
        let waiter = {
            let (waiting, application) = (waiting.clone(), application.clone());
            tokio::spawn(async move {
                waiting
                    .block_until_leadership_released(&application, CancellationToken::new())
                    .await
                    .unwrap();
                waiting
                    .claim_leadership(&application, &format!("{application}/1"), SECOND * 60)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let revoked = store
            .revoke_leadership(&application, &format!("{application}/0"))
            .await;
        assert!(revoked.is_ok(), "round {round}: {revoked:?}");
        let next = waiter.await.unwrap();
        assert!(
            matches!(next, Ok(next) if next > fence),
            "round {round}: {next:?} after {fence}"
        );
    }
}

/// The raft index and the lease ids of the member at `url`: a write of any kind (a
/// transaction, even one whose compare fails, a lease grant or revoke) moves the first; a
/// grant changes the second.
async fn raft_index_and_leases(url: &str) -> (u64, Vec<i64>) {
    let store = common::connect(EtcdStore::builder(url).expect("a valid etcd URL")).await;
    let mut client = store.client();
    let status = client.status().await.expect("member status");
    let mut leases: Vec<i64> = client
        .leases()
        .await
        .expect("lease list")
        .leases()
        .iter()
        .map(|lease| lease.id())
        .collect();
    leases.sort_unstable();
    (status.raft_index(), leases)
}

/// C3, issue 17: a denied claim reads and writes nothing, from a handle that holds no lease,
/// from the holder's own handle, and from a handle with leases kept from revoked terms. On a
/// private member, so that no other test's writes move its raft index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c3_a_denied_claim_makes_no_write() {
    let server = leadership_testkit::harness::EtcdServer::start()
        .unwrap_or_else(|err| panic!("cannot start etcd for the test: {err}"));
    let open = || async {
        common::connect(
            EtcdStore::builder(&server.url())
                .expect("a valid etcd URL")
                .namespace("denied"),
        )
        .await
    };
    let holder = open().await;
    let other = open().await;
    let spare = open().await;
    holder
        .claim_leadership("app", "app/0", SECOND * 30)
        .await
        .unwrap();
    // `spare` ends a term of its own, so it keeps that term's lease for its next claim.
    spare
        .claim_leadership("other", "other/0", SECOND * 30)
        .await
        .unwrap();
    spare.revoke_leadership("other", "other/0").await.unwrap();
    let before = raft_index_and_leases(&server.url()).await;
    for store in [&other, &holder, &spare] {
        for _ in 0..3 {
            assert!(matches!(
                store.claim_leadership("app", "app/1", SECOND * 30).await,
                Err(Error::ClaimDenied)
            ));
        }
    }
    let after = raft_index_and_leases(&server.url()).await;
    assert_eq!(before, after, "(raft index, lease ids) before and after");
    assert!(leads(&other, "app", "app/0").await.is_some());
}

/// Issue 17: a revoked term's lease carries this handle's next term, and that term still
/// lasts its whole duration from the call's start (C4): the claim renews the lease before
/// the term goes onto it. Left alone, the lease would have ended 1.5 s into the new term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c4_a_reused_lease_counts_from_the_new_claim() {
    let store = common::store("reuse").await;
    let lease_of = |application: &'static str| {
        let store = store.clone();
        async move {
            let mut kv = store.client().kv_client();
            let response = kv
                .get(store.leader_key(application), None)
                .await
                .expect("read the leader key");
            response.kvs().first().map(|kv| kv.lease())
        }
    };
    let first = store
        .claim_leadership("app", "app/0", SECOND * 2)
        .await
        .unwrap();
    let lease = lease_of("app").await.expect("the term's leader key");
    assert_ne!(lease, 0);
    store.revoke_leadership("app", "app/0").await.unwrap();
    assert_eq!(lease_of("app").await, None, "revoke deletes the key (R1)");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let started = Instant::now();
    let next = store
        .claim_leadership("web", "web/3", SECOND * 2)
        .await
        .unwrap();
    assert!(next > first, "{next} > {first} (F1)");
    assert_eq!(lease_of("web").await, Some(lease), "the lease was reused");
    let mut leases = store.client().lease_client();
    let ttl = leases.time_to_live(lease, None).await.unwrap().ttl();
    assert!(ttl >= 1, "the reused lease was renewed: {ttl} s left");

    // Just short of the duration from the call's start: still held, and denied to others.
    let end = started + SECOND * 2 - Duration::from_millis(200);
    tokio::time::sleep_until(end.into()).await;
    assert_eq!(leads(&store, "web", "web/3").await, Some(next));
    assert!(matches!(
        store.claim_leadership("web", "web/0", SECOND).await,
        Err(Error::ClaimDenied)
    ));
    // And it still ends: once revoked, the next claim is another unit's.
    store.revoke_leadership("web", "web/3").await.unwrap();
    assert!(
        store
            .claim_leadership("web", "web/0", SECOND)
            .await
            .unwrap()
            > next
    );
}

/// S3: a lease kept from a term revoked in one namespace carries the next term of another
/// namespace's handle on the same connection, instead of a new grant; and that term still
/// counts its whole duration from its claim (C4: the claim renews the lease first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_namespaces_of_one_connection_share_spare_leases() {
    let server = leadership_testkit::harness::EtcdServer::start()
        .unwrap_or_else(|err| panic!("cannot start etcd for the test: {err}"));
    let first = common::connect(
        EtcdStore::builder(&server.url())
            .expect("a valid etcd URL")
            .namespace("first"),
    )
    .await;
    let second = first.namespace("second");
    let lease_of = |store: &EtcdStore, application: &str| {
        let (mut kv, key) = (store.client().kv_client(), store.leader_key(application));
        async move {
            let response = kv.get(key, None).await.expect("read the leader key");
            response.kvs().first().map(|kv| kv.lease())
        }
    };
    let fence = first
        .claim_leadership("app", "app/0", SECOND * 30)
        .await
        .unwrap();
    let lease = lease_of(&first, "app")
        .await
        .expect("the term's leader key");
    first.revoke_leadership("app", "app/0").await.unwrap();
    let (_, leases_before) = raft_index_and_leases(&server.url()).await;
    assert!(
        leases_before.contains(&lease),
        "the lease was kept, not revoked"
    );

    let started = Instant::now();
    let next = second
        .claim_leadership("web", "web/0", SECOND * 30)
        .await
        .unwrap();
    assert!(next > fence, "{next} > {fence} (F1)");
    assert_eq!(
        lease_of(&second, "web").await,
        Some(lease),
        "the other namespace's term went onto the kept lease"
    );
    let (_, leases_after) = raft_index_and_leases(&server.url()).await;
    assert_eq!(leases_before, leases_after, "no lease was granted");
    let ttl = second
        .client()
        .lease_client()
        .time_to_live(lease, None)
        .await
        .unwrap()
        .ttl();
    assert!(
        Duration::from_secs(u64::try_from(ttl).unwrap_or(0)) + started.elapsed() + SECOND
            >= SECOND * 30,
        "renewed for the new term: {ttl} s left"
    );
    assert_eq!(leads(&second, "web", "web/0").await, Some(next));
    assert_eq!(leads(&first, "app", "app/0").await, None);
}
