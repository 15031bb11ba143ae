//! Key rules under tokio's paused clock: times are exact, so these assert exact instants.

use std::time::Duration;

use leadership_core::{CancellationToken, Checker, Claimer, Error, Pinner, Reader, Revoker};
use leadership_memory::MemoryStore;
use tokio::time::{Instant, advance};

const TEN: Duration = Duration::from_secs(10);
const NANO: Duration = Duration::from_nanos(1);

async fn held(handle: &impl Checker, application: &str, unit: &str) -> bool {
    handle
        .leadership_check(application, unit)
        .check()
        .await
        .is_ok()
}

#[tokio::test(start_paused = true)]
async fn c2_extension_never_shortens_and_keeps_the_fence() {
    let ns = MemoryStore::new().namespace("c2");
    let fence = ns.claim_leadership("a", "a/0", TEN).await.unwrap();
    advance(Duration::from_secs(5)).await;
    let again = ns
        .claim_leadership("a", "a/0", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(again, fence);
    advance(Duration::from_secs(5) - NANO).await;
    assert!(
        held(&ns, "a", "a/0").await,
        "shortened by a shorter re-claim"
    );
    // A longer re-claim extends from the call: now (t=10s-1ns) + 10s.
    ns.claim_leadership("a", "a/0", TEN).await.unwrap();
    advance(TEN - NANO).await;
    assert!(held(&ns, "a", "a/0").await);
    advance(NANO).await;
    assert!(!held(&ns, "a", "a/0").await);
}

#[tokio::test(start_paused = true)]
async fn c5_expiry_at_the_exact_nominal_time() {
    let ns = MemoryStore::new().namespace("c5");
    let fence = ns.claim_leadership("a", "a/0", TEN).await.unwrap();
    advance(TEN - NANO).await;
    assert_eq!(
        ns.leadership_check("a", "a/0").check().await.unwrap(),
        fence
    );
    assert_eq!(ns.leaders().await.unwrap().len(), 1);
    assert!(
        ns.claim_leadership("a", "a/1", TEN)
            .await
            .unwrap_err()
            .is_claim_denied()
    );
    advance(NANO).await;
    let err = ns.leadership_check("a", "a/0").check().await.unwrap_err();
    assert!(
        matches!(&err, Error::NotLeader { unit, application } if unit == "a/0" && application == "a"),
        "{err}"
    );
    assert!(ns.leaders().await.unwrap().is_empty());
    let next = ns.claim_leadership("a", "a/1", TEN).await.unwrap();
    assert!(next > fence);
}

#[tokio::test(start_paused = true)]
async fn f1_fences_increase_across_expiry_revoke_and_collection() {
    let store = MemoryStore::new();
    let ns = store.namespace("f1");
    let mut last = None;
    for round in 0..20 {
        let unit = format!("a/{}", round % 3);
        let fence = ns.claim_leadership("a", &unit, TEN).await.unwrap();
        assert!(last < Some(fence), "{last:?} then {fence:?}");
        last = Some(fence);
        if round % 2 == 0 {
            ns.revoke_leadership("a", &unit).await.unwrap();
        } else {
            // Let the timer collect the lease and drop the application's entry.
            tokio::time::sleep(TEN + Duration::from_secs(1)).await;
            assert_eq!(store.stats().applications, 0);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn p1_p3_pinned_lease_resumes_expiry_at_the_claimed_time() {
    let store = MemoryStore::new();
    let ns = store.namespace("p");
    ns.claim_leadership("a", "a/0", TEN).await.unwrap();
    ns.pin_leadership("a", "machine-1").await.unwrap();
    advance(Duration::from_secs(5)).await;
    ns.pin_leadership("a", "machine-0").await.unwrap();
    ns.unpin_leadership("a", "machine-1").await.unwrap();
    // Still pinned by machine-0: the claimed expiry (10 s) passes without effect (P1).
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(held(&ns, "a", "a/0").await);
    // P6: the holder extends while pinned.
    ns.claim_leadership("a", "a/0", TEN).await.unwrap();
    let extended_until = Instant::now() + TEN;
    // P3: after the last unpin, expiry resumes at the claimed expiry.
    ns.unpin_leadership("a", "machine-0").await.unwrap();
    assert!(held(&ns, "a", "a/0").await);
    ns.block_until_leadership_released("a", CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(Instant::now(), extended_until);
    assert!(!held(&ns, "a", "a/0").await);
}

#[tokio::test(start_paused = true)]
async fn p3_unpin_after_the_claimed_expiry_ends_the_lease_at_once() {
    let ns = MemoryStore::new().namespace("p3");
    ns.claim_leadership("a", "a/0", TEN).await.unwrap();
    ns.pin_leadership("a", "m").await.unwrap();
    advance(TEN * 2).await;
    assert!(held(&ns, "a", "a/0").await);
    ns.unpin_leadership("a", "m").await.unwrap();
    assert!(!held(&ns, "a", "a/0").await);
    assert!(ns.leaders().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn p4_pin_on_vacant_applies_to_the_next_claimant() {
    let ns = MemoryStore::new().namespace("p4");
    ns.pin_leadership("a", "m").await.unwrap();
    ns.claim_leadership("a", "a/3", TEN).await.unwrap();
    advance(TEN * 10).await;
    assert_eq!(ns.leaders().await.unwrap()["a"], "a/3");
    ns.revoke_leadership("a", "a/3").await.unwrap();
    assert_eq!(ns.pinned_leadership().await.unwrap()["a"], vec!["m"]);
}

#[tokio::test(start_paused = true)]
async fn b2_expiry_releases_waiters_at_the_exact_expiry() {
    let ns = MemoryStore::new().namespace("b2");
    let start = Instant::now();
    ns.claim_leadership("a", "a/0", TEN).await.unwrap();
    ns.block_until_leadership_released("a", CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(Instant::now() - start, TEN);
}

#[tokio::test(start_paused = true)]
async fn b2_extensions_keep_waiters_blocked() {
    let store = MemoryStore::new();
    let ns = store.namespace("b2x");
    ns.claim_leadership("a", "a/0", TEN).await.unwrap();
    let waiter = tokio::spawn({
        let ns = ns.clone();
        async move {
            ns.block_until_leadership_released("a", CancellationToken::new())
                .await
                .map(|()| Instant::now())
        }
    });
    let mut until = Instant::now() + TEN;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        ns.claim_leadership("a", "a/0", TEN).await.unwrap();
        until = Instant::now() + TEN;
        assert!(!waiter.is_finished());
    }
    assert_eq!(waiter.await.unwrap().unwrap(), until);
    assert_eq!(store.stats().waiters, 0);
}

#[tokio::test(start_paused = true)]
async fn b3_cancel_and_drop_leave_nothing_behind() {
    let store = MemoryStore::new();
    let ns = store.namespace("b3");
    ns.claim_leadership("a", "a/0", TEN).await.unwrap();

    let cancel = CancellationToken::new();
    let waiter = tokio::spawn({
        let (ns, cancel) = (ns.clone(), cancel.clone());
        async move { ns.block_until_leadership_released("a", cancel).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(store.stats().waiters, 1);
    cancel.cancel();
    assert!(matches!(waiter.await.unwrap(), Err(Error::BlockCancelled)));
    assert_eq!(store.stats().waiters, 0);

    let timed_out = tokio::time::timeout(
        Duration::from_secs(1),
        ns.block_until_leadership_released("a", CancellationToken::new()),
    )
    .await;
    assert!(timed_out.is_err());
    let stats = store.stats();
    assert_eq!(stats.waiters, 0);
    assert_eq!(stats.applications, 1);
    ns.revoke_leadership("a", "a/0").await.unwrap();
    tokio::time::sleep(TEN).await;
    let stats = store.stats();
    assert_eq!((stats.applications, stats.deadlines), (0, 0), "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn c5_a_mass_expiry_is_worked_through_in_batches() {
    let store = MemoryStore::new();
    let ns = store.namespace("mass");
    let start = Instant::now();
    for n in 0..5000 {
        ns.claim_leadership(&format!("app{n}"), &format!("app{n}/0"), TEN)
            .await
            .unwrap();
    }
    let waiters: Vec<_> = [0, 2500, 4999]
        .into_iter()
        .map(|n| {
            let ns = ns.clone();
            tokio::spawn(async move {
                ns.block_until_leadership_released(&format!("app{n}"), CancellationToken::new())
                    .await
                    .map(|()| Instant::now())
            })
        })
        .collect();
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().unwrap(), start + TEN);
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    let stats = store.stats();
    assert_eq!((stats.applications, stats.deadlines), (0, 0), "{stats:?}");
}
