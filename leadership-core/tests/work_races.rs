//! W1's follow logic against a scripted store: the watch is opened before the check, so
//! events about *earlier* terms can still arrive, and latest-state-wins (O3) can fold "our
//! term began, then ended" into one `Vacated`. These orders are hard to provoke on a real
//! store, so a mock stream plays them exactly.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leadership_core::{Error, Fence, Leader, LeaderEvent, LeaderStream, Result, with_leader};
use leadership_testkit::MockLeadership;
use leadership_testkit::mocks::token;
use tokio::sync::mpsc;
use tokio::time::timeout;

const APP: &str = "db";
const US: &str = "db/0";
const OTHER: &str = "db/1";
const LONG: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_millis(100);

/// A store whose watch plays what the test sends, after a snapshot of `old`, and whose
/// checks answer `checks` in order.
fn scripted(
    old: Option<(&str, u64)>,
    checks: Vec<Result<Fence>>,
) -> (MockLeadership, mpsc::UnboundedSender<LeaderEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut leaders = BTreeMap::new();
    if let Some((unit, fence)) = old {
        leaders.insert(
            APP.to_owned(),
            Leader {
                unit: unit.to_owned(),
                fence: Fence(fence),
            },
        );
    }
    tx.send(LeaderEvent::Snapshot { leaders }).expect("sent");
    let rx = Mutex::new(Some(rx));
    let mut store = MockLeadership::new();
    store.expect_watch_leader().times(1).returning(move |_| {
        let rx = rx.lock().expect("lock").take().expect("one watch");
        let stream: LeaderStream = Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|event| (event, rx))
        }));
        Ok(stream)
    });
    let checks = Arc::new(Mutex::new(VecDeque::from(checks)));
    store.expect_leadership_check().returning(move |_, _| {
        let next = checks
            .lock()
            .expect("lock")
            .pop_front()
            .expect("a scripted check");
        Box::new(token(next))
    });
    (store, tx)
}

fn elected(unit: &str, fence: u64) -> LeaderEvent {
    LeaderEvent::Elected {
        application: APP.into(),
        unit: unit.into(),
        fence: Fence(fence),
    }
}

fn vacated() -> LeaderEvent {
    LeaderEvent::Vacated {
        application: APP.into(),
    }
}

/// Runs `with_leader` with a work that reports whether its token fired within `SHORT` after
/// `events` were sent.
async fn fired_after(
    store: &MockLeadership,
    tx: &mpsc::UnboundedSender<LeaderEvent>,
    events: Vec<LeaderEvent>,
) -> bool {
    with_leader(store, APP, US, |fence, lost| async move {
        assert_eq!(fence, Fence(2));
        for event in events {
            tx.send(event).expect("sent");
        }
        timeout(SHORT, lost.cancelled()).await.is_ok()
    })
    .await
    .expect("the unit leads")
}

#[tokio::test]
async fn an_earlier_terms_end_does_not_cancel() {
    // Snapshot: db/1 in term 1. Our check: term 2. Then the stream catches up: term 1's end,
    // our election. Nothing ended our term; the recheck on the vacancy says so.
    let (store, tx) = scripted(Some((OTHER, 1)), vec![Ok(Fence(2)), Ok(Fence(2))]);
    assert!(!fired_after(&store, &tx, vec![vacated(), elected(US, 2)]).await);
}

#[tokio::test]
async fn a_folded_begin_and_end_of_our_term_cancels() {
    // Latest state wins: "term 1 ended, term 2 (ours) began, term 2 ended" reaches us as one
    // Vacated. The recheck finds we no longer lead.
    let (store, tx) = scripted(
        Some((OTHER, 1)),
        vec![Ok(Fence(2)), Err(Error::not_leader(US, APP))],
    );
    assert!(fired_after(&store, &tx, vec![vacated()]).await);
}

#[tokio::test]
async fn an_earlier_terms_election_is_ignored_and_a_later_one_cancels() {
    let (store, tx) = scripted(None, vec![Ok(Fence(2))]);
    assert!(!fired_after(&store, &tx, vec![elected(OTHER, 1)]).await);
    let (store, tx) = scripted(None, vec![Ok(Fence(2))]);
    assert!(fired_after(&store, &tx, vec![elected(OTHER, 3)]).await);
}

#[tokio::test]
async fn once_our_term_is_seen_any_change_cancels() {
    let (store, tx) = scripted(Some((US, 2)), vec![Ok(Fence(2))]);
    assert!(fired_after(&store, &tx, vec![vacated()]).await);
    let (store, tx) = scripted(Some((US, 2)), vec![Ok(Fence(2))]);
    assert!(fired_after(&store, &tx, vec![elected(US, 4)]).await);
}

#[tokio::test]
async fn a_resynchronised_snapshot_decides_and_an_ended_stream_cancels() {
    let (store, tx) = scripted(Some((US, 2)), vec![Ok(Fence(2))]);
    let same = LeaderEvent::Snapshot {
        leaders: BTreeMap::from([(
            APP.to_owned(),
            Leader {
                unit: US.into(),
                fence: Fence(2),
            },
        )]),
    };
    assert!(!fired_after(&store, &tx, vec![same]).await);
    let (store, tx) = scripted(Some((US, 2)), vec![Ok(Fence(2))]);
    let empty = LeaderEvent::Snapshot {
        leaders: BTreeMap::new(),
    };
    assert!(fired_after(&store, &tx, vec![empty]).await);

    // The store shut down: the stream ends, leadership can no longer be confirmed.
    let (store, tx) = scripted(Some((US, 2)), vec![Ok(Fence(2))]);
    let outcome = with_leader(&store, APP, US, move |_, lost| async move {
        drop(tx);
        timeout(LONG, lost.cancelled()).await.is_ok()
    });
    assert!(outcome.await.expect("the unit leads"));
}

#[tokio::test]
async fn not_leader_runs_nothing() {
    let (store, _tx) = scripted(Some((OTHER, 1)), vec![Err(Error::not_leader(US, APP))]);
    let mut ran = false;
    let outcome = with_leader(&store, APP, US, |_, _| {
        ran = true;
        async {}
    })
    .await;
    assert!(
        matches!(outcome, Err(Error::NotLeader { .. })),
        "{outcome:?}"
    );
    assert!(!ran);
}
