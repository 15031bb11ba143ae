//! The tracker against a failing store (T7): a [`FaultyStore`] over a model store on tokio's
//! paused clock, with juju's durations (30 s guarantee, 60 s claims, so a 6 s default margin).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::ModelStore;
use leadership_core::{Error, Fence, LeaderTracker, Leadership, Ticket, Tracker, TrackerWorker};
use leadership_testkit::{Fault, FaultyStore};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};

const GUARANTEE: Duration = Duration::from_secs(30);
const LEASE: Duration = Duration::from_secs(60);
const MARGIN: Duration = Duration::from_secs(6);
const LONG: Duration = Duration::from_secs(600);

async fn answer(ticket: Box<dyn Ticket>) -> bool {
    timeout(LONG, ticket.wait())
        .await
        .expect("ticket never answered")
}

/// The instant the current term's loss signal fires.
fn loss_instant(tracker: &LeaderTracker) -> JoinHandle<Instant> {
    let term = tracker.current_term().expect("leader has a term");
    tokio::spawn(async move {
        term.lost.cancelled().await;
        Instant::now()
    })
}

#[tokio::test(start_paused = true)]
async fn renewals_retried_and_loss_fired_before_takeover_then_recontention() {
    let model = Arc::new(ModelStore::new());
    let faulty = FaultyStore::new(model.clone());
    let start = Instant::now();
    let a = LeaderTracker::builder("app/0", GUARANTEE, faulty.clone()).spawn();
    assert!(answer(a.wait_leader()).await);
    let b_store: Arc<dyn Leadership> = model.clone();
    let b = LeaderTracker::builder("app/1", GUARANTEE, b_store.clone())
        .release_on_stop(b_store)
        .spawn();
    assert!(!answer(b.claim_leader()).await, "b is minion while a leads");
    assert_eq!(a.safety_margin(), MARGIN);
    let a_lost = loss_instant(&a);

    sleep(Duration::from_secs(10)).await;
    faulty.fail(Fault::Unavailable);

    // During the retries, a claim_leader cannot be answered true: it waits for a renewal,
    // and is answered false when the window ends.
    sleep_until(start + Duration::from_secs(40)).await;
    let pending = a.claim_leader();
    assert!(
        timeout(Duration::from_secs(1), pending.ready())
            .await
            .is_err()
    );
    assert!(
        a.current_term().is_some(),
        "still within the window at 41 s"
    );

    let lost_at = a_lost.await.expect("loss watcher");
    let expiry = model.expiry_of(Fence(1)).expect("a's lease");
    assert_eq!(
        expiry,
        start + LEASE,
        "a's last successful claim started at 0"
    );
    // T7: the loss fires at call start + claim duration − margin, before the lease expires.
    assert_eq!(lost_at, start + LEASE - MARGIN);
    assert!(lost_at < expiry);
    assert!(!answer(pending).await);
    assert!(a.current_term().is_none());

    // The renewal was retried, never faster than the backoff floor (1 s for a 30 s guarantee).
    let renewals: Vec<_> = faulty
        .claims()
        .into_iter()
        .filter(|c| c.started >= start + GUARANTEE && c.started < lost_at)
        .collect();
    assert!(
        renewals.len() >= 3,
        "only {} renewal attempts",
        renewals.len()
    );
    assert!(
        renewals
            .iter()
            .all(|c| c.result.as_ref().is_err_and(Error::is_retryable))
    );
    for pair in renewals.windows(2) {
        assert!(pair[1].started - pair[0].started >= Duration::from_secs(1));
    }

    // b takes over only once the lease has expired, after a's loss signal.
    assert!(answer(b.wait_leader()).await);
    let grants = model.grants();
    assert_eq!(grants.len(), 2);
    assert_eq!(grants[1].unit, "app/1");
    assert!(grants[1].at >= expiry);
    assert!(lost_at < grants[1].at);

    // The store comes back: a contends again, is denied, and takes over when b releases.
    sleep_until(start + Duration::from_secs(100)).await;
    faulty.heal();
    sleep(Duration::from_secs(20)).await;
    assert!(!answer(a.claim_leader()).await);
    let denied_after_heal = faulty.claims().iter().any(|c| {
        c.started >= start + Duration::from_secs(100) && matches!(c.result, Err(Error::ClaimDenied))
    });
    assert!(denied_after_heal, "a claims again once the store is back");
    let handover = Instant::now();
    b.kill();
    b.wait().await.expect("b stops cleanly");
    assert!(answer(a.wait_leader()).await);
    assert_eq!(
        Instant::now(),
        handover,
        "b's release hands over at once (T8)"
    );
    let term = a.current_term().expect("a leads again");
    assert_eq!(term.fence, Fence(3));
    a.kill();
    a.wait().await.expect("a stops cleanly");
}

#[tokio::test(start_paused = true)]
async fn a_renewal_hanging_past_the_deadline_is_abandoned() {
    let model = Arc::new(ModelStore::new());
    let faulty = FaultyStore::new(model.clone());
    let start = Instant::now();
    let a = LeaderTracker::builder("app/0", GUARANTEE, faulty.clone()).spawn();
    assert!(answer(a.wait_leader()).await);
    let a_lost = loss_instant(&a);
    let minion = a.wait_minion();
    // Each call hangs 20 s before timing out: renewals at 30 s and about 51 s.
    faulty.fail(Fault::Timeout(Duration::from_secs(20)));

    let lost_at = a_lost.await.expect("loss watcher");
    assert_eq!(lost_at, start + LEASE - MARGIN);
    assert!(
        answer(minion).await,
        "wait_minion answers true on the loss (T5)"
    );
    // The first claim, and the renewal at 30 s that timed out at 50 s, are the only ones
    // that returned: the retry in flight at the deadline (it would end at 71 s) was
    // abandoned, not waited for.
    let claims = faulty.claims();
    assert_eq!(claims.len(), 2, "{claims:?}");
    assert_eq!(claims[1].started, start + GUARANTEE);
    assert!(claims[1].result.as_ref().is_err_and(Error::is_retryable));
    assert_eq!(model.grants().len(), 1);
    a.kill();
    a.wait().await.expect("a stops cleanly");
}

#[tokio::test(start_paused = true)]
async fn leadership_resumes_when_the_store_returns_before_the_lease_expires() {
    let model = Arc::new(ModelStore::new());
    let faulty = FaultyStore::new(model.clone());
    let start = Instant::now();
    let a = LeaderTracker::builder("app/0", GUARANTEE, faulty.clone())
        .backoff_floor(Duration::from_secs(1))
        .backoff_ceiling(Duration::from_secs(1))
        .spawn();
    assert!(answer(a.wait_leader()).await);
    let first = a.current_term().expect("first term");
    faulty.fail(Fault::Unavailable);
    sleep_until(start + Duration::from_millis(55_500)).await;
    assert!(first.lost.is_cancelled(), "lost at 54 s");
    assert!(a.current_term().is_none());
    let comeback = a.wait_leader();
    faulty.heal();

    assert!(answer(comeback).await);
    let second = a.current_term().expect("leads again");
    assert!(
        Instant::now() < start + LEASE,
        "back before the lease expired"
    );
    // Its own lease was still there: the store extended it (C2), no new term began.
    assert_eq!(second.fence, first.fence);
    assert_eq!(model.grants().len(), 1);
    assert!(
        !second.lost.is_cancelled(),
        "a new local term has a fresh loss signal"
    );
    a.kill();
    a.wait().await.expect("a stops cleanly");
}

#[tokio::test(start_paused = true)]
async fn a_backend_error_is_fatal_fires_the_loss_signal_and_releases() {
    let model = Arc::new(ModelStore::new());
    let faulty = FaultyStore::new(model.clone());
    let start = Instant::now();
    let a = LeaderTracker::builder("app/0", GUARANTEE, faulty.clone())
        .release_on_stop(model.clone())
        .spawn();
    assert!(answer(a.wait_leader()).await);
    let term = a.current_term().expect("leader");
    faulty.fail(Fault::Backend);

    let err = a
        .wait()
        .await
        .expect_err("a backend error stops the tracker (T9)");
    assert!(matches!(err, Error::Backend { .. }), "{err}");
    assert!(term.lost.is_cancelled());
    assert_eq!(
        Instant::now(),
        start + GUARANTEE,
        "failed at the first renewal"
    );
    // Released through the (healthy) revoker: the lease ended at the stop.
    assert_eq!(model.expiry_of(term.fence), Some(start + GUARANTEE));
    assert!(!answer(a.claim_leader()).await);
}

/// A term carries the call start and the return of the claim that promoted it (C4 is
/// measured from the call start; histories start the term at the return), read from the
/// store's side of the call: a claim slowed by a delay returns that much later.
#[tokio::test(start_paused = true)]
async fn a_term_carries_its_promoting_claims_call_start_and_return() {
    let model = Arc::new(ModelStore::new());
    let faulty = FaultyStore::new(model.clone());
    // The first claim waits 5 s in the wrapper before failing; the retry is granted.
    faulty.fail(Fault::Timeout(Duration::from_secs(5)));
    let start = Instant::now();
    let a = LeaderTracker::builder("app/0", GUARANTEE, faulty.clone()).spawn();
    sleep(Duration::from_secs(1)).await;
    faulty.heal();
    assert!(answer(a.wait_leader()).await);
    let term = a.current_term().expect("leads");
    let granted: Vec<_> = faulty
        .claims()
        .into_iter()
        .filter(|c| c.result.is_ok())
        .collect();
    let promoting = granted.first().expect("a granted claim");
    assert_eq!(term.claim_started, promoting.started);
    assert_eq!(term.began, promoting.returned);
    assert!(
        term.claim_started > start,
        "the failed first claim did not promote"
    );
    // A renewal extends the term but does not move its start.
    sleep(GUARANTEE + Duration::from_secs(1)).await;
    let renewed = a.current_term().expect("still leads");
    assert_eq!(renewed.fence, term.fence);
    assert_eq!(renewed.began, term.began);
    assert!(faulty.claims().iter().filter(|c| c.result.is_ok()).count() >= 2);
    a.kill();
    a.wait().await.expect("clean stop");
}

/// A process frozen past its lease (SIGSTOP, a long GC pause): nothing runs, so no timer
/// fires and the loss signal cannot have been sent yet when the process wakes. The first
/// thing the work does on waking, looking at its term, must already say the term is lost:
/// `current_term()` judges the deadline itself (T7), it does not wait for the timer.
#[test]
fn a_process_frozen_past_its_lease_sees_its_term_lost_on_waking() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let guarantee = Duration::from_millis(100);
        let model = Arc::new(ModelStore::new());
        let a = LeaderTracker::builder("app/0", guarantee, model.clone()).spawn();
        assert!(answer(a.wait_leader()).await);
        let term = a.current_term().expect("leads");
        // The whole runtime (the tracker's task and its timers included) stops for longer
        // than the claim (twice the guarantee), as under SIGSTOP.
        std::thread::sleep(guarantee * 3);
        assert!(
            a.current_term().is_none(),
            "on waking, the term must already read as lost"
        );
        // The tracker then claims again: a term it shows from now on is a new promotion.
        assert!(answer(a.wait_leader()).await);
        let next = a.current_term().expect("leads again");
        assert!(next.began > term.began && next.claim_started > term.claim_started);
        a.kill();
        a.wait().await.expect("clean stop");
    });
}
