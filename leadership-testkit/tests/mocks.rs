//! The mocks injected into consumer code through the traits' object types.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use leadership_core::{Error, Fence, Leadership, Result, Term, Tracker, TrackerWorker};
use leadership_testkit::mockall::{Sequence, predicate::eq};
use leadership_testkit::{MockLeadership, MockTracker, MockTrackerWorker, mocks};
use tokio_util::sync::CancellationToken;

/// A consumer: claims, and if it leads, checks its token and reports every leader.
async fn lead_and_report(
    store: Arc<dyn Leadership>,
    unit: &str,
) -> Result<Option<(Fence, BTreeMap<String, String>)>> {
    let application = unit.split('/').next().unwrap_or_default();
    match store
        .claim_leadership(application, unit, Duration::from_secs(10))
        .await
    {
        Ok(_) => {}
        Err(err) if err.is_claim_denied() => return Ok(None),
        Err(err) => return Err(err),
    }
    let fence = store.leadership_check(application, unit).check().await?;
    Ok(Some((fence, store.leaders().await?)))
}

#[tokio::test]
async fn mock_leadership_injected_as_arc_dyn_leadership() {
    let mut store = MockLeadership::new();
    let mut seq = Sequence::new();
    store
        .expect_claim_leadership()
        .with(eq("mysql"), eq("mysql/1"), eq(Duration::from_secs(10)))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(Fence(5)));
    store
        .expect_leadership_check()
        .with(eq("mysql"), eq("mysql/1"))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Box::new(mocks::token(Ok(Fence(5)))));
    store
        .expect_leaders()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|| Ok(BTreeMap::from([("mysql".into(), "mysql/1".into())])));
    store.expect_revoke_leadership().never();

    let store: Arc<dyn Leadership> = Arc::new(store);
    let (fence, leaders) = lead_and_report(store, "mysql/1")
        .await
        .expect("no error")
        .expect("leads");
    assert_eq!(fence, Fence(5));
    assert_eq!(leaders.get("mysql").map(String::as_str), Some("mysql/1"));
}

#[tokio::test]
async fn mock_errors_reach_the_consumer() {
    let mut store = MockLeadership::new();
    store
        .expect_claim_leadership()
        .times(1)
        .returning(|_, _, _| Err(Error::ClaimDenied));
    store.expect_leadership_check().never();
    assert!(
        lead_and_report(Arc::new(store), "mysql/2")
            .await
            .expect("denied is not an error")
            .is_none()
    );

    let mut store = MockLeadership::new();
    store
        .expect_claim_leadership()
        .returning(|_, _, _| Ok(Fence(9)));
    store
        .expect_leadership_check()
        .returning(|app, unit| Box::new(mocks::token(Err(Error::not_leader(unit, app)))));
    let err = lead_and_report(Arc::new(store), "mysql/3")
        .await
        .expect_err("not leader");
    assert!(err.is_not_leader(), "{err}");
    assert_eq!(err.to_string(), r#""mysql/3" is not leader of "mysql""#);
}

#[tokio::test]
async fn mock_trackers_behind_dyn_traits() {
    let lost = CancellationToken::new();
    let mut tracker = MockTracker::new();
    tracker
        .expect_application_name()
        .return_const("web".to_owned());
    tracker
        .expect_claim_leader()
        .times(1)
        .returning(|| Box::new(mocks::ticket(true)));
    let term_lost = lost.clone();
    tracker.expect_current_term().returning(move || {
        Some(Term {
            fence: Fence(2),
            lost: term_lost.clone(),
            claim_started: tokio::time::Instant::now(),
            began: tokio::time::Instant::now(),
        })
    });
    let tracker: Arc<dyn Tracker> = Arc::new(tracker);
    assert_eq!(tracker.application_name(), "web");
    assert!(tracker.claim_leader().wait().await);
    lost.cancel();
    assert!(
        tracker
            .current_term()
            .is_some_and(|t| t.lost.is_cancelled())
    );

    let mut worker = MockTrackerWorker::new();
    worker.expect_kill().times(1).return_const(());
    worker.expect_wait().times(1).returning(|| {
        Err(Error::Stopped {
            what: "mock tracker",
        })
    });
    let worker: Arc<dyn TrackerWorker> = Arc::new(worker);
    worker.kill();
    assert!(matches!(worker.wait().await, Err(Error::Stopped { .. })));
}
