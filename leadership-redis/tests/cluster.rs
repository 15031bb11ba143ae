//! Redis Cluster beyond the conformance suite (issue 18.1, 18.4): waiters subscribe with
//! sharded pub/sub on the master of their namespace's slot, namespaces spread over the
//! masters, and moving a namespace's slot to another master during claims and waits loses
//! no lease and no waiter.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::scale::{ScaleFactory, cluster};
use leadership_core::conformance::unique_namespace;
use leadership_core::{CancellationToken, Checker, Claimer, Revoker};

const LONG: Duration = Duration::from_secs(60);

/// `PUBSUB SHARDNUMSUB channel` on node `i`.
fn shard_subscribers(i: usize, channel: &str) -> u64 {
    let reply = cluster()
        .node(i)
        .command(&["PUBSUB", "SHARDNUMSUB", channel])
        .expect("PUBSUB SHARDNUMSUB");
    reply
        .lines()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_subscribes_on_its_slots_master_and_a_revoke_wakes_it() {
    let factory = ScaleFactory::cluster();
    let store = factory.store(&unique_namespace("sharded")).await;
    store
        .claim_leadership("app", "app/0", LONG)
        .await
        .expect("claim");
    let channel = format!("{}released", store.key_prefix());
    let master = cluster()
        .master_of(cluster().slot_of(&channel).expect("slot"))
        .expect("master");

    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .block_until_leadership_released("app", CancellationToken::new())
                .await
        })
    };
    until("the sharded subscription", || {
        shard_subscribers(master, &channel) == 1
    })
    .await;
    for other in (0..3).filter(|i| *i != master) {
        assert_eq!(shard_subscribers(other, &channel), 0, "node {other}");
    }
    assert!(!waiter.is_finished(), "the lease is held: the waiter waits");

    store
        .revoke_leadership("app", "app/0")
        .await
        .expect("revoke");
    let woke = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("the revoke wakes the waiter within 2 s (B2)")
        .expect("task");
    woke.expect("released");
    until("the unsubscription", || {
        shard_subscribers(master, &channel) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_spread_over_every_master_on_one_connection() {
    let factory = ScaleFactory::cluster();
    let base = factory.store(&unique_namespace("spread")).await;
    let mut masters = BTreeSet::new();
    for i in 0..30 {
        let store = base.namespace(&unique_namespace(&format!("spread{i}")));
        let fence = store
            .claim_leadership("app", "app/0", LONG)
            .await
            .expect("claim");
        assert_eq!(
            store
                .leadership_check("app", "app/0")
                .check()
                .await
                .expect("check"),
            fence
        );
        let slot = cluster().slot_of(store.key_prefix()).expect("slot");
        masters.insert(cluster().master_of(slot).expect("master"));
    }
    assert_eq!(masters.len(), 3, "30 namespaces on {masters:?}");
}

/// Issue 18.4: `CLUSTER SETSLOT` + `MIGRATE` of the namespace's slot while a unit renews,
/// another claims and a waiter waits: the lease and its fence survive, the waiter is woken
/// by the revoke afterwards (its subscription followed the slot), nobody else was granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_namespaces_slot_loses_no_lease_and_no_waiter() {
    let factory = ScaleFactory::cluster();
    let store = factory.store(&unique_namespace("migrate")).await;
    let rival = factory.store(store.namespace_name()).await;
    let fence = store
        .claim_leadership("app", "app/0", LONG)
        .await
        .expect("claim");
    let waiter = {
        let rival = rival.clone();
        tokio::spawn(async move {
            rival
                .block_until_leadership_released("app", CancellationToken::new())
                .await
        })
    };
    let slot = cluster().slot_of(store.key_prefix()).expect("slot");
    let channel = format!("{}released", store.key_prefix());
    let from = cluster().master_of(slot).expect("master");
    until("the waiter's subscription", || {
        shard_subscribers(from, &channel) == 1
    })
    .await;

    // Renewals and rival claims all through the move.
    let stop = Arc::new(AtomicBool::new(false));
    let renewals = Arc::new(AtomicU64::new(0));
    let load = {
        let (store, rival, stop, renewals) =
            (store.clone(), rival.clone(), stop.clone(), renewals.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let renewed = store.claim_leadership("app", "app/0", LONG).await;
                assert_eq!(
                    renewed.expect("the holder's renewal during the move"),
                    fence
                );
                let denied = rival.claim_leadership("app", "app/1", LONG).await;
                assert!(
                    denied.as_ref().is_err_and(|e| e.is_claim_denied()),
                    "a rival was granted a held lease during the move: {denied:?}"
                );
                renewals.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let to = (from + 1) % 3;
    tokio::task::spawn_blocking(move || cluster().migrate_slot(slot, to))
        .await
        .expect("task")
        .expect("migrate the slot");
    assert_eq!(cluster().master_of(slot).expect("master"), to);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("renewals and rival claims held up");
    assert!(renewals.load(Ordering::Relaxed) > 0);

    assert_eq!(
        store
            .leadership_check("app", "app/0")
            .check()
            .await
            .expect("the lease survived the move"),
        fence,
        "with its fence"
    );
    until("the waiter's subscription on the new master", || {
        shard_subscribers(to, &channel) == 1
    })
    .await;
    assert!(!waiter.is_finished(), "the move released nobody");
    store
        .revoke_leadership("app", "app/0")
        .await
        .expect("revoke");
    let woke = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("the revoke wakes the waiter after the move")
        .expect("task");
    woke.expect("released");
    let next = rival
        .claim_leadership("app", "app/1", LONG)
        .await
        .expect("claim after the revoke");
    assert!(next > fence, "F1 across the move: {next:?} > {fence:?}");
}
