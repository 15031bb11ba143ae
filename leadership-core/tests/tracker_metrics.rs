//! M1: the tracker's metrics after real transitions on the memory store, read back from
//! `metrics-util`'s debugging recorder. The recorder is installed for the test's thread; the
//! paused-clock runtime runs every task on that thread, and trackers register their metrics
//! when spawned.
#![cfg(feature = "metrics")]

mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use leadership_core::{LeaderTracker, Leadership, Tracker, TrackerWorker};
use leadership_memory::MemoryStore;
use leadership_testkit::{Fault, FaultyStore};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use snapshot::Snap;
use tokio::time::{sleep, timeout};

const GUARANTEE: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(600);

/// What these tests read from a snapshot.
impl Snap {
    fn gauge(&self, labels: &[(&str, &str)]) -> f64 {
        match self.value("leadership_is_leader", labels) {
            Some(DebugValue::Gauge(v)) => v.into_inner(),
            other => panic!("leadership_is_leader{labels:?}: {other:?}"),
        }
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.value(name, labels) {
            Some(DebugValue::Counter(v)) => *v,
            other => panic!("{name}{labels:?}: {other:?}"),
        }
    }

    fn samples(&self, labels: &[(&str, &str)]) -> usize {
        match self.value("leadership_claim_duration_seconds", labels) {
            Some(DebugValue::Histogram(v)) => v.len(),
            other => panic!("leadership_claim_duration_seconds{labels:?}: {other:?}"),
        }
    }
}

async fn lead(tracker: &LeaderTracker) {
    let led = timeout(LONG, tracker.wait_leader().wait()).await;
    assert_eq!(led.ok(), Some(true));
}

#[tokio::test(start_paused = true)]
async fn transitions_gauge_latency_and_failures() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _installed = metrics::set_default_local_recorder(&recorder);
    let store: Arc<dyn Leadership> = Arc::new(MemoryStore::new().namespace("m1"));
    let w0 = [("application", "web"), ("unit", "web/0")];
    let w1 = [("application", "web"), ("unit", "web/1")];
    let with = |labels: &[(&'static str, &'static str)], key, value| {
        let mut labels = labels.to_vec();
        labels.push((key, value));
        labels
    };

    // web/0 leads; web/1 waits.
    let a = LeaderTracker::builder("web/0", GUARANTEE, store.clone())
        .release_on_stop(store.clone())
        .spawn();
    lead(&a).await;
    let faulty = FaultyStore::new(store.clone());
    let b = LeaderTracker::builder("web/1", GUARANTEE, faulty.clone())
        .release_on_stop(store.clone())
        .spawn();
    sleep(GUARANTEE * 2 + Duration::from_secs(1)).await; // two renewals of web/0
    let snap = Snap::take(&snapshotter);
    assert_eq!(snap.gauge(&w0), 1.0);
    assert_eq!(snap.gauge(&w1), 0.0);
    let promoted = |l| with(l, "transition", "promoted");
    let transitions = "leadership_transitions_total";
    let failures = "leadership_claim_failures_total";
    assert_eq!(snap.counter(transitions, &promoted(&w0)), 1);
    // Latency is labelled by call alone (one series per call, whatever the labels): web/0's
    // first claim and web/1's denied ones, and web/0's renewals.
    assert!(snap.samples(&[("call", "claim")]) >= 2);
    assert!(snap.samples(&[("call", "renew")]) >= 2);
    assert_eq!(snap.counter(failures, &with(&w0, "call", "renew")), 0);
    // web/1 was denied: a denial is an answer, not a failure.
    assert_eq!(snap.counter(failures, &with(&w1, "call", "claim")), 0);

    // web/0 stops with release: released; web/1 is promoted.
    a.kill();
    a.wait().await.expect("a clean stop");
    lead(&b).await;
    let snap = Snap::take(&snapshotter);
    assert_eq!(snap.gauge(&w0), 0.0);
    assert_eq!(snap.gauge(&w1), 1.0);
    assert_eq!(
        snap.counter(transitions, &with(&w0, "transition", "released")),
        1
    );
    assert_eq!(
        snap.counter(transitions, &with(&w0, "transition", "demoted")),
        0
    );
    assert_eq!(snap.counter(transitions, &promoted(&w1)), 1);

    // web/1's store stops answering: its renewals fail, and it loses leadership at the
    // deadline (T7).
    faulty.fail(Fault::Unavailable);
    let term = b.current_term().expect("b leads");
    timeout(LONG, term.lost.cancelled()).await.expect("b loses");
    let snap = Snap::take(&snapshotter);
    assert_eq!(snap.gauge(&w1), 0.0);
    assert_eq!(
        snap.counter(transitions, &with(&w1, "transition", "lost")),
        1
    );
    assert!(snap.counter(failures, &with(&w1, "call", "renew")) >= 1);

    // Back: web/1 leads again. A tracker that stops without release while leading: demoted.
    faulty.heal();
    lead(&b).await;
    let c = LeaderTracker::builder("db/0", GUARANTEE, store.clone()).spawn();
    lead(&c).await;
    c.kill();
    c.wait().await.expect("a clean stop");
    let d0 = [("application", "db"), ("unit", "db/0")];
    let snap = Snap::take(&snapshotter);
    assert_eq!(snap.gauge(&w1), 1.0);
    assert_eq!(snap.counter(transitions, &promoted(&w1)), 1);
    assert_eq!(snap.gauge(&d0), 0.0);
    assert_eq!(
        snap.counter(transitions, &with(&d0, "transition", "promoted")),
        1
    );
    assert_eq!(
        snap.counter(transitions, &with(&d0, "transition", "demoted")),
        1
    );
    b.kill();
    b.wait().await.expect("a clean stop");
}

#[tokio::test(start_paused = true)]
async fn the_application_label_can_be_switched_off() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _installed = metrics::set_default_local_recorder(&recorder);
    let store: Arc<dyn Leadership> = Arc::new(MemoryStore::new().namespace("m1-labels"));
    let unlabelled = |unit: &str| {
        LeaderTracker::builder(unit, GUARANTEE, store.clone())
            .metrics_application_label(false)
            .spawn()
    };
    let (web, db) = (unlabelled("web/0"), unlabelled("db/0"));
    lead(&web).await;
    lead(&db).await;
    let snap = Snap::take(&snapshotter);
    // One series shared by both trackers: the gauge counts the leaderships they hold.
    assert_eq!(snap.gauge(&[]), 2.0);
    assert_eq!(
        snap.counter(
            "leadership_transitions_total",
            &[("transition", "promoted")]
        ),
        2
    );
    for labels in [
        &[("application", "web"), ("unit", "web/0")][..],
        &[("unit", "web/0")][..],
    ] {
        assert!(snap.value("leadership_is_leader", labels).is_none());
    }
    // Taking the snapshot drained the gauge: what follows is the change since then.
    web.kill();
    web.wait().await.expect("a clean stop");
    let snap = Snap::take(&snapshotter);
    assert_eq!(
        snap.gauge(&[]),
        -1.0,
        "web's leadership is no longer counted"
    );
    assert_eq!(
        snap.counter("leadership_transitions_total", &[("transition", "demoted")]),
        1
    );
    // Dropping the handle of a tracker that still leads stops it: its one goes away too.
    drop(db);
    sleep(Duration::from_secs(1)).await;
    let snap = Snap::take(&snapshotter);
    assert_eq!(
        snap.gauge(&[]),
        -1.0,
        "db's dropped tracker is no longer counted"
    );
}
