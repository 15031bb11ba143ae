//! The store on real time and real threads: concurrency, waiters, the timer task's life,
//! validation, guarded writes, namespaces and the `dyn` API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use leadership_core::{
    CancellationToken, Checker, Claimer, Error, Fence, Leadership, PermissivePolicy, Pinner,
    Reader, Revoker,
};
use leadership_memory::MemoryStore;

const MINUTE: Duration = Duration::from_secs(60);
const BOUND: Duration = Duration::from_secs(5);

/// A runtime of its own (one worker), for the cases about a store outliving runtimes.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c6_one_of_many_concurrent_claimants_wins() {
    let ns = MemoryStore::new().namespace("c6");
    let claims = (0..64).map(|n| {
        let ns = ns.clone();
        tokio::spawn(async move { ns.claim_leadership("a", &format!("a/{n}"), MINUTE).await })
    });
    let results: Vec<_> = join_all(claims)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(Error::is_claim_denied)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b4_one_revoke_releases_a_thousand_waiters_and_no_others() {
    let store = MemoryStore::new();
    let ns = store.namespace("b4");
    ns.claim_leadership("a", "a/0", MINUTE).await.unwrap();
    ns.claim_leadership("b", "b/0", MINUTE).await.unwrap();
    let spawn_waiters = |application: &'static str, count: usize| {
        (0..count)
            .map(|_| {
                let ns = ns.clone();
                tokio::spawn(async move {
                    ns.block_until_leadership_released(application, CancellationToken::new())
                        .await
                })
            })
            .collect::<Vec<_>>()
    };
    let on_a = spawn_waiters("a", 1000);
    let on_b = spawn_waiters("b", 10);
    tokio::time::timeout(BOUND, async {
        while store.stats().waiters < 1010 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("waiters registered");

    ns.revoke_leadership("a", "a/0").await.unwrap();
    let released = tokio::time::timeout(BOUND, join_all(on_a))
        .await
        .expect("every waiter on a released");
    assert!(released.into_iter().all(|r| r.unwrap().is_ok()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(on_b.iter().all(|w| !w.is_finished()));
    assert_eq!(store.stats().waiters, 10);
    for waiter in on_b {
        waiter.abort();
        assert!(waiter.await.unwrap_err().is_cancelled());
    }
    assert_eq!(store.stats().waiters, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b2_expiry_wakes_a_waiter_in_real_time() {
    let ns = MemoryStore::new().namespace("b2");
    let duration = Duration::from_millis(200);
    let start = tokio::time::Instant::now();
    ns.claim_leadership("a", "a/0", duration).await.unwrap();
    tokio::time::timeout(
        BOUND,
        ns.block_until_leadership_released("a", CancellationToken::new()),
    )
    .await
    .expect("released by expiry")
    .unwrap();
    assert!(start.elapsed() >= duration);
    assert!(ns.leaders().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b1_vacant_returns_at_once_even_if_cancelled() {
    let ns = MemoryStore::new().namespace("b1");
    let cancel = CancellationToken::new();
    cancel.cancel();
    ns.block_until_leadership_released("a", cancel.clone())
        .await
        .unwrap();
    ns.claim_leadership("a", "a/0", MINUTE).await.unwrap();
    let err = ns
        .block_until_leadership_released("a", cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BlockCancelled), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn the_timer_task_ends_when_the_store_is_dropped() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let store = MemoryStore::new();
    assert_eq!(
        metrics.num_alive_tasks(),
        0,
        "timer started before any operation"
    );
    let ns = store.namespace("timer");
    ns.claim_leadership("a", "a/0", MINUTE).await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(metrics.num_alive_tasks(), 1);
    // Many claims, one timer.
    for n in 0..100 {
        ns.claim_leadership(&format!("app{n}"), &format!("app{n}/0"), MINUTE)
            .await
            .unwrap();
    }
    assert_eq!(metrics.num_alive_tasks(), 1);
    drop((store, ns));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(metrics.num_alive_tasks(), 0, "timer outlived its store");
}

#[test]
fn a_store_made_outside_a_runtime_works_in_one_runtime_after_another() {
    let store = MemoryStore::new();
    let ns = store.namespace("runtimes");
    let first = runtime();
    first
        .block_on(ns.claim_leadership("a", "a/0", Duration::from_millis(300)))
        .unwrap();
    // A waiter on a second runtime; the timer lives on the first, which then shuts down: the
    // waiter must still be released by the expiry.
    let second = runtime();
    let waiter = second.spawn({
        let ns = ns.clone();
        async move {
            ns.block_until_leadership_released("a", CancellationToken::new())
                .await
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    drop(first);
    second.block_on(async {
        tokio::time::timeout(BOUND, waiter)
            .await
            .expect("released after the timer's runtime went away")
            .unwrap()
            .unwrap();
    });
    // And the store keeps working on the second runtime.
    second.block_on(async {
        ns.claim_leadership("a", "a/1", Duration::from_millis(100))
            .await
            .unwrap();
        tokio::time::timeout(
            BOUND,
            ns.block_until_leadership_released("a", CancellationToken::new()),
        )
        .await
        .expect("released on the second runtime")
        .unwrap();
    });
}

#[tokio::test]
async fn v_invalid_input_changes_nothing() {
    let store = MemoryStore::new();
    let ns = store.namespace("v");
    let before = store.stats();
    let invalid_claims = [
        ("Foo", "Foo/0", MINUTE),
        ("foo", "bar/0", MINUTE),
        ("foo", "foo/01", MINUTE),
        ("foo", "foo/0", Duration::ZERO),
        ("foo", "foo/0", Duration::from_secs(3601)),
    ];
    for (application, unit, duration) in invalid_claims {
        let err = ns
            .claim_leadership(application, unit, duration)
            .await
            .unwrap_err();
        assert!(
            err.is_invalid_input(),
            "{application} {unit} {duration:?}: {err}"
        );
    }
    assert!(
        ns.pin_leadership("foo", "has space")
            .await
            .unwrap_err()
            .is_invalid_input()
    );
    assert!(
        ns.pin_leadership("foo-2", "m")
            .await
            .unwrap_err()
            .is_invalid_input()
    );
    assert!(
        ns.unpin_leadership("foo", "")
            .await
            .unwrap_err()
            .is_invalid_input()
    );
    assert!(
        ns.revoke_leadership("foo", "bar/0")
            .await
            .unwrap_err()
            .is_invalid_input()
    );
    let err = ns.leadership_check("foo", "foo").check().await.unwrap_err();
    assert!(matches!(err, Error::InvalidUnit { .. }), "{err}");
    let err = ns
        .block_until_leadership_released("42", CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidApplication { .. }), "{err}");
    assert_eq!(store.stats(), before);
    assert!(ns.leaders().await.unwrap().is_empty());
    assert!(ns.pinned_leadership().await.unwrap().is_empty());
}

#[tokio::test]
async fn v5_a_permissive_policy_keeps_names_apart() {
    let store = MemoryStore::with_policy(Arc::new(PermissivePolicy::default()));
    let ns = store.namespace("v5");
    ns.claim_leadership("a:b", "c", MINUTE).await.unwrap();
    ns.claim_leadership("a", "b:c", MINUTE).await.unwrap();
    let leaders = ns.leaders().await.unwrap();
    let expected: BTreeMap<String, String> = [("a:b", "c"), ("a", "b:c")]
        .into_iter()
        .map(|(a, u)| (a.to_owned(), u.to_owned()))
        .collect();
    assert_eq!(leaders, expected);
}

#[tokio::test]
async fn f2_guarded_runs_only_for_the_current_term() {
    let ns = MemoryStore::new().namespace("f2");
    let fence = ns.claim_leadership("a", "a/0", MINUTE).await.unwrap();
    assert_eq!(ns.guarded("a", "a/0", fence, || 7).unwrap(), 7);

    let mut ran = false;
    let err = ns
        .guarded("a", "a/0", Fence(fence.get() + 1), || ran = true)
        .unwrap_err();
    assert!(err.is_not_leader(), "{err}");
    let err = ns.guarded("a", "a/1", fence, || ran = true).unwrap_err();
    assert!(err.is_not_leader(), "{err}");
    assert!(!ran);

    // A stale leader's write fails once a new term has begun, even by the same unit.
    ns.revoke_leadership("a", "a/0").await.unwrap();
    let next = ns.claim_leadership("a", "a/0", MINUTE).await.unwrap();
    assert!(ns.guarded("a", "a/0", fence, || ran = true).is_err());
    assert!(!ran);
    assert!(ns.guarded("a", "a/0", next, || ()).is_ok());

    let err = ns.guarded("a", "b/0", next, || ()).unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
}

#[tokio::test]
async fn f2_a_panic_in_a_guarded_closure_leaves_the_store_usable() {
    let ns = MemoryStore::new().namespace("panic");
    let fence = ns.claim_leadership("a", "a/0", MINUTE).await.unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ns.guarded("a", "a/0", fence, || panic!("boom"))
    }));
    assert!(caught.is_err());
    assert_eq!(
        ns.leadership_check("a", "a/0").check().await.unwrap(),
        fence
    );
    ns.revoke_leadership("a", "a/0").await.unwrap();
}

#[tokio::test]
async fn n1_namespaces_share_nothing() {
    let store = MemoryStore::new();
    let (one, two) = (store.namespace("one"), store.namespace("two"));
    one.claim_leadership("a", "a/0", MINUTE).await.unwrap();
    one.pin_leadership("a", "m").await.unwrap();
    two.claim_leadership("a", "a/1", MINUTE).await.unwrap();
    assert!(two.leadership_check("a", "a/0").check().await.is_err());
    assert!(two.pinned_leadership().await.unwrap().is_empty());
    assert_eq!(two.leaders().await.unwrap()["a"], "a/1");
    // A block in `two` is not released by a revoke in `one`.
    let waiter = tokio::spawn({
        let two = two.clone();
        async move {
            two.block_until_leadership_released("a", CancellationToken::new())
                .await
        }
    });
    one.revoke_leadership("a", "a/0").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished());
    two.revoke_leadership("a", "a/1").await.unwrap();
    tokio::time::timeout(BOUND, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // Reopening a namespace reaches the same state.
    assert_eq!(
        store.namespace("one").pinned_leadership().await.unwrap()["a"],
        vec!["m"]
    );
}

#[tokio::test]
async fn named_stores_are_shared_by_name() {
    let here = MemoryStore::named("tests-named-stores").namespace("x");
    let there = MemoryStore::named("tests-named-stores").namespace("x");
    let elsewhere = MemoryStore::named("tests-named-stores-other").namespace("x");
    here.claim_leadership("a", "a/0", MINUTE).await.unwrap();
    assert_eq!(there.leaders().await.unwrap()["a"], "a/0");
    assert!(elsewhere.leaders().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_handle_works_as_arc_dyn_leadership() {
    let leadership: Arc<dyn Leadership> = Arc::new(MemoryStore::new().namespace("dyn"));
    let fence = leadership
        .claim_leadership("a", "a/0", MINUTE)
        .await
        .unwrap();
    let token = leadership.leadership_check("a", "a/0");
    assert_eq!(token.check().await.unwrap(), fence);
    assert!(matches!(
        leadership.revoke_leadership("a", "a/1").await,
        Err(Error::ClaimNotHeld)
    ));
    leadership.revoke_leadership("a", "a/0").await.unwrap();
    leadership.revoke_leadership("a", "a/0").await.unwrap();
    assert!(token.check().await.unwrap_err().is_not_leader());
}

/// O4: streams of many namespaces share the store's one hub; dropping them leaves nothing
/// behind, and the store stops journaling once nobody watches (O1 events still arrive in
/// order for those who do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o4_dropped_watch_streams_leave_nothing_behind() {
    use futures::StreamExt;
    use leadership_core::{LeaderEvent, Watcher};

    let store = MemoryStore::new();
    let mut streams = Vec::new();
    for i in 0..100 {
        let ns = store.namespace(&format!("ns{i}"));
        streams.push(ns.watch_leaders().await.expect("watch"));
        streams.push(ns.watch_leader("a").await.expect("watch one"));
    }
    assert_eq!(store.stats().watchers, 200);
    for stream in &mut streams[14..16] {
        assert!(matches!(
            stream.next().await,
            Some(LeaderEvent::Snapshot { .. })
        ));
    }
    let ns = store.namespace("ns7");
    let fence = ns
        .claim_leadership("a", "a/0", MINUTE)
        .await
        .expect("claim");
    for stream in &mut streams[14..16] {
        assert_eq!(
            stream.next().await,
            Some(LeaderEvent::Elected {
                application: "a".into(),
                unit: "a/0".into(),
                fence
            })
        );
    }
    ns.revoke_leadership("a", "a/0").await.expect("revoke");
    for stream in &mut streams[14..16] {
        assert_eq!(
            stream.next().await,
            Some(LeaderEvent::Vacated {
                application: "a".into()
            })
        );
    }
    drop(streams);
    let stats = store.stats();
    assert_eq!(stats.watchers, 0);
    // Nothing else was kept for the watches (the revoked lease's entry waits for its
    // deadline in the timeline, as without watches).
    assert_eq!(stats.waiters, 0);
}

/// O2 on a store shared by runtimes: the expiry timer runs on the runtime that started it;
/// when that runtime goes away while a watcher on another runtime waits, the watcher is
/// woken, its poll starts a new timer, and the expiry is still reported.
#[test]
fn o2_an_expiry_reaches_a_watcher_after_the_timers_runtime_went_away() {
    use futures::StreamExt;
    use leadership_core::{LeaderEvent, Watcher};

    let store = MemoryStore::new();
    let first = runtime();
    // The claim starts the store's timer on the first runtime.
    let fence = first
        .block_on(store.claim_leadership("a", "a/0", Duration::from_millis(400)))
        .expect("claim");
    let second = runtime();
    second.block_on(async {
        let mut stream = store.watch_leader("a").await.expect("watch");
        assert!(matches!(
            stream.next().await,
            Some(LeaderEvent::Snapshot { leaders }) if leaders["a"].fence == fence
        ));
        // The first runtime goes away (with the timer task) while the watcher waits.
        let dropper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(first);
        });
        // The lease ends 400 ms after the claim; the event must follow within the bound of
        // any notification, not wait for some later poll (the timeout's own wake-up).
        let waiting = std::time::Instant::now();
        let event = tokio::time::timeout(BOUND, stream.next()).await;
        let took = waiting.elapsed();
        dropper.join().expect("the first runtime dropped");
        assert!(
            took < Duration::from_millis(1500),
            "the expiry came {took:?} late"
        );
        assert_eq!(
            event.expect("the expiry was reported"),
            Some(LeaderEvent::Vacated {
                application: "a".into()
            })
        );
    });
}

/// O2, C5: a timer spawned onto a runtime that is already shutting down is dropped before it
/// ever runs (a call made by a task of that runtime while it closes). The store must not go
/// on believing a timer runs: the next call from a live runtime starts one, and expiries are
/// reported again. (CI saw three shared-store cases, whose tests each run on their own
/// runtime, wait in vain for an expiry.)
#[test]
fn o2_a_timer_spawned_on_a_closed_runtime_does_not_stop_expiries() {
    use futures::StreamExt;
    use leadership_core::{LeaderEvent, Watcher};

    let store = MemoryStore::new();
    let closed = runtime();
    let handle = closed.handle().clone();
    closed.shutdown_background();
    {
        // A call made inside the closed runtime's context: its spawn is refused and the
        // timer's future is dropped unpolled.
        let _entered = handle.enter();
        store.start_timer();
    }
    let live = runtime();
    live.block_on(async {
        let mut stream = store.watch_leader("a").await.expect("watch");
        assert!(matches!(
            stream.next().await,
            Some(LeaderEvent::Snapshot { leaders }) if leaders.is_empty()
        ));
        store
            .claim_leadership("a", "a/0", Duration::from_millis(100))
            .await
            .expect("claim");
        assert!(matches!(
            stream.next().await,
            Some(LeaderEvent::Elected { .. })
        ));
        let event = tokio::time::timeout(Duration::from_secs(2), stream.next()).await;
        assert_eq!(
            event.expect("the expiry was reported by a timer on the live runtime"),
            Some(LeaderEvent::Vacated {
                application: "a".into()
            })
        );
    });
}
