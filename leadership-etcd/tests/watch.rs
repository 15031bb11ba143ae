//! Following who leads on etcd, beyond the conformance cases: a compaction during a watch
//! (O4) and one etcd watch per namespace that stops with the last stream (S3, O4).

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use leadership_core::conformance::WatchView;
use leadership_core::{Claimer, Fence, LeaderEvent, LeaderStream, Reader, Revoker, Watcher};
use leadership_etcd::EtcdStore;
use leadership_testkit::harness::EtcdServer;

use common::proxy::Proxy;

const LONG: Duration = Duration::from_secs(60);
const WITHIN: Duration = Duration::from_secs(10);

async fn next(stream: &mut LeaderStream, what: &str) -> LeaderEvent {
    match tokio::time::timeout(WITHIN, stream.next()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("{what}: the stream ended"),
        Err(_) => panic!("{what}: no event within {WITHIN:?}"),
    }
}

async fn claim(store: &EtcdStore, terms: &mut WatchView, app: &str, unit: &str) -> Fence {
    let fence = store
        .claim_leadership(app, unit, LONG)
        .await
        .unwrap_or_else(|err| panic!("claim {app} by {unit}: {err}"));
    terms.made(app, unit, fence);
    fence
}

async fn revoke(store: &EtcdStore, app: &str, unit: &str) {
    store
        .revoke_leadership(app, unit)
        .await
        .unwrap_or_else(|err| panic!("revoke {app} by {unit}: {err}"));
}

/// O4: the watch is cut while terms start and end, and the store is compacted past the
/// revision the watch had reached; when the member is reachable again the watch cannot resume
/// (its revisions are gone), so it re-reads and resynchronises: the stream converges to
/// `leaders()` with no event for a state that did not exist, and nothing for the term that
/// started and ended while it was away; then it goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_during_a_watch_resynchronises_without_a_false_event() {
    let proxy = Proxy::start(common::server().endpoint()).await;
    let namespace = leadership_core::conformance::unique_namespace("compact");
    let watched = common::connect(
        EtcdStore::builder(&format!("etcd://{}", proxy.endpoint()))
            .expect("a valid etcd URL")
            .namespace(&namespace),
    )
    .await;
    let direct = common::connect(
        EtcdStore::builder(&common::server().url())
            .expect("a valid etcd URL")
            .namespace(&namespace),
    )
    .await;
    // The view checks every Elected against the terms claimed here.
    let mut terms = WatchView::checking_terms();
    claim(&direct, &mut terms, "a", "a/0").await;
    claim(&direct, &mut terms, "b", "b/0").await;

    let mut stream = watched.watch_leaders().await.expect("watch_leaders");
    terms.apply(&next(&mut stream, "snapshot").await, "snapshot");
    assert_eq!(terms.units(), direct.leaders().await.unwrap());
    let fence = claim(&direct, &mut terms, "c", "c/0").await;
    let event = next(&mut stream, "c elected").await;
    assert_eq!(
        event,
        LeaderEvent::Elected {
            application: "c".into(),
            unit: "c/0".into(),
            fence
        }
    );
    terms.apply(&event, "compaction");

    // The watch is gone; terms end and start; the history it needs is compacted away.
    assert!(proxy.hold() > 0, "the watched handle had connections");
    revoke(&direct, "a", "a/0").await;
    claim(&direct, &mut terms, "a", "a/1").await;
    claim(&direct, &mut terms, "gone", "gone/0").await;
    revoke(&direct, "gone", "gone/0").await;
    revoke(&direct, "b", "b/0").await;
    claim(&direct, &mut terms, "d", "d/0").await;
    let mut client = direct.client();
    let revision = client
        .get("compact-probe", None)
        .await
        .expect("read the revision")
        .header()
        .expect("a header")
        .revision();
    client
        .compact(
            revision,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .expect("compact");
    let compactions = watched.watch_compactions();
    proxy.release();

    let truth = direct.leaders().await.unwrap();
    let deadline = Instant::now() + WITHIN;
    while terms.units() != truth {
        assert!(
            Instant::now() < deadline,
            "not converged: {:?}",
            terms.units()
        );
        let event = next(&mut stream, "resynchronising").await;
        assert_ne!(event.application(), Some("gone"), "{event:?}");
        terms.apply(&event, "compaction");
    }
    assert!(
        watched.watch_compactions() > compactions,
        "the watch did not meet the compaction"
    );
    if let Ok(event) = tokio::time::timeout(Duration::from_secs(1), stream.next()).await {
        panic!("an event after converging: {event:?}");
    }
    // Still alive, on the new watch.
    revoke(&direct, "c", "c/0").await;
    assert_eq!(
        next(&mut stream, "after").await,
        LeaderEvent::Vacated {
            application: "c".into()
        }
    );
    assert_eq!(watched.running_watches(), 1);
}

const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";
const WATCH_STREAMS: &str = "etcd_debugging_mvcc_watch_stream_total";

/// Polls the member's metric until it reads `expected`.
async fn metric_becomes(endpoint: &str, name: &str, expected: f64) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let value = common::metric(endpoint, name).await;
        if value == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stays {value}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// S3, O4: 25 streams over three handles of one client in two namespaces hold one etcd watch
/// per namespace (counted by the member itself); dropping a namespace's streams stops its
/// watch, and dropping every stream leaves no watch on the member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_share_one_etcd_watch_per_namespace_and_dropping_every_stream_stops_it() {
    // Its own member: the counts are this test's alone.
    let server = EtcdServer::start().unwrap_or_else(|err| panic!("cannot start etcd: {err}"));
    let endpoint = server.endpoint();
    let a = common::connect(
        EtcdStore::builder(&server.url())
            .expect("a valid etcd URL")
            .namespace("a"),
    )
    .await;
    let also_a = a.namespace("a");
    let b = a.namespace("b");
    assert_eq!(common::metric(&endpoint, WATCHERS).await, 0.0);

    let mut streams_a = Vec::new();
    for i in 0..10 {
        streams_a.push(a.watch_leaders().await.expect("watch_leaders"));
        streams_a.push(
            also_a
                .watch_leader(&format!("app{i}"))
                .await
                .expect("watch_leader"),
        );
    }
    let mut streams_b = Vec::new();
    for _ in 0..5 {
        streams_b.push(b.watch_leaders().await.expect("watch_leaders"));
    }
    assert_eq!(a.running_watches(), 2);
    metric_becomes(&endpoint, WATCHERS, 2.0).await;
    metric_becomes(&endpoint, WATCH_STREAMS, 2.0).await;

    // Every stream works (a shared watch, not a starved one).
    b.claim_leadership("app0", "app0/0", LONG).await.unwrap();
    a.claim_leadership("app0", "app0/1", LONG).await.unwrap();
    for stream in streams_a.iter_mut().chain(streams_b.iter_mut()) {
        assert!(matches!(
            next(stream, "snapshot").await,
            LeaderEvent::Snapshot { .. }
        ));
    }
    for stream in streams_a.iter_mut().step_by(2).chain(streams_b.iter_mut()) {
        assert!(matches!(
            next(stream, "claim").await,
            LeaderEvent::Elected { .. }
        ));
    }

    drop(streams_a);
    assert_eq!(a.running_watches(), 1);
    metric_becomes(&endpoint, WATCHERS, 1.0).await;
    // b's watch goes on.
    b.revoke_leadership("app0", "app0/0").await.unwrap();
    for stream in &mut streams_b {
        assert_eq!(
            next(stream, "b after a's streams went").await,
            LeaderEvent::Vacated {
                application: "app0".into()
            }
        );
    }

    drop(streams_b);
    assert_eq!(a.running_watches(), 0);
    metric_becomes(&endpoint, WATCHERS, 0.0).await;
    metric_becomes(&endpoint, WATCH_STREAMS, 0.0).await;

    // A new watcher starts a new watch.
    let again = also_a.watch_leaders().await.expect("watch_leaders");
    metric_becomes(&endpoint, WATCHERS, 1.0).await;
    drop(again);
    metric_becomes(&endpoint, WATCHERS, 0.0).await;
}

/// The client's last handle going stops its watches, which ends the streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_when_the_store_goes() {
    let store = common::store("store-goes").await;
    let mut stream = store.watch_leaders().await.expect("watch_leaders");
    assert!(matches!(
        next(&mut stream, "snapshot").await,
        LeaderEvent::Snapshot { .. }
    ));
    drop(store);
    let end = tokio::time::timeout(WITHIN, stream.next()).await;
    assert_eq!(end, Ok(None), "the stream goes on after its store");
}
