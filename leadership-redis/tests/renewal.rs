//! The holder's renewal fast path (one `PEXPIRE GT` while the handle's hint is fresh) keeps
//! every rule the full claim keeps: C2 (extends, never shortens, same fence), C4 (the lease
//! runs the full duration from the call), P1/P6 (a pinned lease keeps no TTL), and a term
//! that changed under the handle is seen within the store's re-verification window.

mod common;

use std::time::Duration;

use leadership_core::{Checker, Claimer, Pinner, Revoker};
use leadership_redis::RedisStore;

const LEASE: Duration = Duration::from_secs(30);
/// Longer than the store's re-verification window (1 s).
const PAST_REVERIFY: Duration = Duration::from_millis(1_100);

async fn store(namespace: &str) -> RedisStore {
    RedisStore::builder(&common::server().url())
        .expect("valid redis URL")
        .namespace(namespace)
        .connect()
        .await
        .expect("connect")
}

/// The lease key's remaining TTL in ms, read by a raw client (-2: gone, -1: no TTL).
fn pttl(store: &RedisStore, app: &str, unit: &str) -> i64 {
    let key = format!("{}lease:{}:{app}{unit}", store.key_prefix(), app.len());
    common::server()
        .command(&["PTTL", &key])
        .expect("PTTL")
        .parse()
        .expect("PTTL is a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2_c4_fast_renewals_extend_to_the_full_duration_with_the_same_fence() {
    let store = store("renew-fast").await;
    let fence = store
        .claim_leadership("app", "app/0", Duration::from_secs(2))
        .await
        .expect("claim");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = pttl(&store, "app", "app/0");
    assert!(before <= 1_700, "the first lease has run down: {before} ms");
    // Renewals in quick succession: the first verifies, the rest take the fast path.
    for _ in 0..20 {
        let renewed = store
            .claim_leadership("app", "app/0", LEASE)
            .await
            .expect("renew");
        assert_eq!(renewed, fence, "C2: a renewal keeps the fence");
    }
    let after = pttl(&store, "app", "app/0");
    assert!(
        after > 29_000,
        "C4: the lease runs the renewal's 30 s, left {after} ms"
    );
    // C2: a shorter renewal on the fast path never shortens.
    store
        .claim_leadership("app", "app/0", Duration::from_secs(1))
        .await
        .expect("short renewal");
    assert!(pttl(&store, "app", "app/0") > 28_000, "C2: never shortens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k3_a_term_changed_through_another_handle_of_the_same_unit_shows_after_the_window() {
    let a = store("renew-two-handles").await;
    let b = store("renew-two-handles").await;
    let first = a
        .claim_leadership("app", "app/0", LEASE)
        .await
        .expect("claim through a");
    // The same unit revokes and claims again through another handle: a new term.
    b.revoke_leadership("app", "app/0").await.expect("revoke");
    let second = b
        .claim_leadership("app", "app/0", LEASE)
        .await
        .expect("claim through b");
    assert!(second > first, "F1: a new term has a larger fence");
    // Within the window `a` may still report its term's fence (lower: guarded writes with
    // it fail); never a larger one, and the lease is extended either way.
    let seen = a
        .claim_leadership("app", "app/0", LEASE)
        .await
        .expect("renew through a");
    assert!(seen == first || seen == second, "unexpected fence {seen:?}");
    tokio::time::sleep(PAST_REVERIFY).await;
    let renewed = a
        .claim_leadership("app", "app/0", LEASE)
        .await
        .expect("renew through a");
    assert_eq!(
        renewed, second,
        "K3: past the window the current term shows"
    );
    // That renewal refreshed the handle's hint in place: the next one, a bare PEXPIRE within
    // the window, reports the current term too.
    let again = a
        .claim_leadership("app", "app/0", LEASE)
        .await
        .expect("renew through a");
    assert_eq!(again, second, "the refreshed hint holds the current term");
    assert_eq!(
        a.leadership_check("app", "app/0")
            .check()
            .await
            .expect("check"),
        second
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_a_revoked_lease_is_never_renewed_by_the_fast_path() {
    let a = store("renew-revoked").await;
    let b = store("renew-revoked").await;
    let first = a
        .claim_leadership("app", "app/0", LEASE)
        .await
        .expect("claim");
    // Another unit takes over after a revoke: the fresh hint must not renew the old term.
    b.revoke_leadership("app", "app/0").await.expect("revoke");
    let other = b
        .claim_leadership("app", "app/1", LEASE)
        .await
        .expect("app/1 claims the vacant lease");
    assert!(other > first);
    match a.claim_leadership("app", "app/0", LEASE).await {
        Err(leadership_core::Error::ClaimDenied) => {}
        other => panic!("C3: app/0's renewal must be denied, got {other:?}"),
    }
    assert_eq!(pttl(&a, "app", "app/0"), -2, "no key was revived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p1_p6_renewing_a_pinned_lease_keeps_it_pinned() {
    let store = store("renew-pinned").await;
    let fence = store
        .claim_leadership("app", "app/0", LEASE)
        .await
        .expect("claim");
    // Fresh hint, then a pin: the renewal right after must not give the key a TTL.
    store
        .claim_leadership("app", "app/0", LEASE)
        .await
        .expect("renew");
    store.pin_leadership("app", "machine-0").await.expect("pin");
    for _ in 0..5 {
        assert_eq!(
            store
                .claim_leadership("app", "app/0", LEASE)
                .await
                .expect("renew pinned"),
            fence
        );
    }
    assert_eq!(
        pttl(&store, "app", "app/0"),
        -1,
        "P1: a pinned lease has no TTL"
    );
    // P3: the last unpin restores the claimed expiry (the renewals' 30 s).
    store
        .unpin_leadership("app", "machine-0")
        .await
        .expect("unpin");
    let left = pttl(&store, "app", "app/0");
    assert!(
        (28_000..=30_000).contains(&left),
        "P3: expiry resumes at the claimed one, left {left} ms"
    );
}
