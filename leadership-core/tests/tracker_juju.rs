//! Juju's tracker scenarios (worker/leadership/tracker_test.go) against mocks, on tokio's
//! paused clock with juju's durations: a 30 s guarantee, 60 s claims.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use leadership_core::tracker::Role;
use leadership_core::{
    Claimer, Error, Fence, LeaderTracker, Result, Ticket, Tracker, TrackerWorker, async_trait,
};
use leadership_testkit::mockall::{Sequence, predicate::eq};
use leadership_testkit::{MockClaimer, MockRevoker};
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;

const GUARANTEE: Duration = Duration::from_secs(30);
const LEASE: Duration = Duration::from_secs(60);
const APP: &str = "led-service";
const UNIT: &str = "led-service/123";
/// Long enough for anything the tracker does at once; short against the guarantee.
const SHORT: Duration = Duration::from_millis(50);
/// Longer than any step of these scenarios.
const LONG: Duration = Duration::from_secs(600);

/// Juju's StubClaimer: a [`MockClaimer`] for the calls and their order, plus a gate that
/// keeps `block_until_leadership_released` blocked until the test releases it.
struct GatedClaimer {
    mock: MockClaimer,
    releases: Semaphore,
}

impl GatedClaimer {
    fn new(mock: MockClaimer) -> Arc<Self> {
        Arc::new(GatedClaimer {
            mock,
            releases: Semaphore::new(0),
        })
    }

    /// Juju's unblockRelease: lets one blocked (or the next) wait return.
    fn release(&self) {
        self.releases.add_permits(1);
    }
}

#[async_trait]
impl Claimer for GatedClaimer {
    async fn claim_leadership(
        &self,
        application: &str,
        unit: &str,
        duration: Duration,
    ) -> Result<Fence> {
        self.mock
            .claim_leadership(application, unit, duration)
            .await
    }

    async fn block_until_leadership_released(
        &self,
        application: &str,
        cancel: CancellationToken,
    ) -> Result<()> {
        self.mock
            .block_until_leadership_released(application, cancel.clone())
            .await?;
        tokio::select! {
            permit = self.releases.acquire() => {
                permit.map_err(|_| Error::BlockCancelled)?.forget();
                Ok(())
            }
            () = cancel.cancelled() => Err(Error::BlockCancelled),
        }
    }
}

/// Expects the claims and blocks in `script`, in order: `Ok(fence)`, `Err(e)` for claims,
/// `None` for a block.
fn scripted(script: Vec<Option<Result<Fence>>>) -> MockClaimer {
    let mut mock = MockClaimer::new();
    let mut seq = Sequence::new();
    for step in script {
        match step {
            Some(result) => {
                mock.expect_claim_leadership()
                    .with(eq(APP), eq(UNIT), eq(LEASE))
                    .times(1)
                    .in_sequence(&mut seq)
                    .returning(move |_, _, _| result.clone());
            }
            None => {
                mock.expect_block_until_leadership_released()
                    .withf(|app, _| app == APP)
                    .times(1)
                    .in_sequence(&mut seq)
                    .returning(|_, _| Ok(()));
            }
        }
    }
    mock
}

fn granted() -> Option<Result<Fence>> {
    Some(Ok(Fence(7)))
}
fn denied() -> Option<Result<Fence>> {
    Some(Err(Error::ClaimDenied))
}
fn block() -> Option<Result<Fence>> {
    None
}

fn tracker(claimer: &Arc<GatedClaimer>) -> LeaderTracker {
    LeaderTracker::builder(UNIT, GUARANTEE, claimer.clone()).spawn()
}

/// Juju's assertTicket, twice: ready within LONG and answering `expect` every time.
async fn assert_ticket(ticket: &dyn Ticket, expect: bool) {
    timeout(LONG, ticket.ready())
        .await
        .expect("ticket never became ready");
    assert_eq!(ticket.wait().await, expect);
    assert_eq!(ticket.wait().await, expect);
}

async fn assert_not_ready(ticket: &dyn Ticket) {
    if timeout(SHORT, ticket.ready()).await.is_ok() {
        panic!("unexpected readiness: {}", ticket.wait().await);
    }
}

async fn assert_claim_leader(tracker: &LeaderTracker, expect: bool) {
    assert_ticket(&*tracker.claim_leader(), expect).await;
}

/// Juju's refreshes(n): advances the clock by (2n + 1) half guarantees.
async fn refreshes(count: u32) {
    sleep(GUARANTEE / 2 * (2 * count + 1)).await;
}

async fn clean_kill(tracker: &LeaderTracker) {
    tracker.kill();
    tracker.wait().await.expect("tracker stopped with an error");
}

#[tokio::test(start_paused = true)]
async fn application_name() {
    let claimer = GatedClaimer::new(scripted(vec![granted()]));
    let tracker = tracker(&claimer);
    assert_eq!(tracker.application_name(), APP);
    // T2: juju's ClaimDuration is the guarantee; the claims themselves last LEASE (checked
    // by the mock's expectation on every claim).
    assert_eq!(tracker.claim_duration(), GUARANTEE);
    assert_eq!(tracker.guarantee(), GUARANTEE);
    assert_claim_leader(&tracker, true).await;
    clean_kill(&tracker).await;
}

#[tokio::test(start_paused = true)]
async fn claim_on_start() {
    let claimer = GatedClaimer::new(scripted(vec![granted()]));
    let tracker = tracker(&claimer);
    assert_claim_leader(&tracker, true).await;
    let term = tracker.current_term().expect("leader has a term");
    assert_eq!(term.fence, Fence(7));
    assert!(!term.lost.is_cancelled());
    clean_kill(&tracker).await;
    // T6, T7: stopping ends the term and fires its loss signal.
    assert!(term.lost.is_cancelled());
    assert!(tracker.current_term().is_none());
    assert_claim_leader(&tracker, false).await;
}

#[tokio::test(start_paused = true)]
async fn claim_failure_then_block() {
    let claimer = GatedClaimer::new(scripted(vec![denied(), block()]));
    let tracker = tracker(&claimer);
    assert_claim_leader(&tracker, false).await;
    assert!(tracker.current_term().is_none());
    // Juju's loop stays blocked: no more claims however long we wait.
    refreshes(3).await;
    clean_kill(&tracker).await;
}

#[tokio::test(start_paused = true)]
async fn claim_error_stops_the_tracker() {
    let claimer = GatedClaimer::new(scripted(vec![Some(Err(Error::backend(
        "stub", "claim", "pow",
    )))]));
    let tracker = tracker(&claimer);
    assert_claim_leader(&tracker, false).await;
    let err = tracker
        .wait()
        .await
        .expect_err("a backend error is fatal (T9)");
    assert!(matches!(err, Error::Backend { .. }), "{err}");
    assert_claim_leader(&tracker, false).await;
    assert_ticket(&*tracker.wait_leader(), false).await;
}

#[tokio::test(start_paused = true)]
async fn invalid_unit_stops_the_tracker_before_any_claim() {
    let claimer = GatedClaimer::new(MockClaimer::new());
    let tracker = LeaderTracker::builder("led-service/01", GUARANTEE, claimer.clone()).spawn();
    let err = tracker
        .wait()
        .await
        .expect_err("an invalid unit is fatal (T9)");
    assert!(
        matches!(err, Error::InvalidUnit { ref name, .. } if name == "led-service/01"),
        "{err}"
    );
    assert_claim_leader(&tracker, false).await;

    let tracker = LeaderTracker::builder(UNIT, Duration::ZERO, claimer.clone()).spawn();
    let err = tracker
        .wait()
        .await
        .expect_err("a zero guarantee is fatal (T9)");
    assert!(matches!(err, Error::InvalidDuration { .. }), "{err}");

    let tracker = LeaderTracker::builder(UNIT, GUARANTEE, claimer.clone())
        .safety_margin(GUARANTEE)
        .spawn();
    let err = tracker
        .wait()
        .await
        .expect_err("a margin as long as the guarantee");
    assert!(matches!(err, Error::InvalidDuration { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn losing_leadership_at_renewal() {
    let claimer = GatedClaimer::new(scripted(vec![granted(), denied(), block()]));
    let tracker = tracker(&claimer);
    assert_claim_leader(&tracker, true).await;
    let term = tracker.current_term().expect("leader has a term");
    refreshes(1).await;
    assert_claim_leader(&tracker, false).await;
    assert!(
        term.lost.is_cancelled(),
        "the loss signal fires on demotion"
    );
    assert!(tracker.current_term().is_none());
    clean_kill(&tracker).await;
}

#[tokio::test(start_paused = true)]
async fn gaining_leadership_after_release() {
    let claimer = GatedClaimer::new(scripted(vec![denied(), block(), granted()]));
    let tracker = tracker(&claimer);
    assert_claim_leader(&tracker, false).await;
    claimer.release();
    refreshes(0).await;
    assert_claim_leader(&tracker, true).await;
    clean_kill(&tracker).await;
}

#[tokio::test(start_paused = true)]
async fn failing_to_gain_leadership() {
    let claimer = GatedClaimer::new(scripted(vec![denied(), block(), denied(), block()]));
    let tracker = tracker(&claimer);
    assert_claim_leader(&tracker, false).await;
    claimer.release();
    refreshes(0).await;
    assert_claim_leader(&tracker, false).await;
    refreshes(1).await;
    clean_kill(&tracker).await;
}

#[tokio::test(start_paused = true)]
async fn wait_leader_already_leader() {
    let claimer = GatedClaimer::new(scripted(vec![granted()]));
    let tracker = tracker(&claimer);
    assert_ticket(&*tracker.wait_leader(), true).await;
    clean_kill(&tracker).await;
}

#[tokio::test(start_paused = true)]
async fn wait_leader_becoming_leader() {
    let claimer = GatedClaimer::new(scripted(vec![denied(), block(), granted()]));
    let tracker = tracker(&claimer);
    let ticket = tracker.wait_leader();
    assert_not_ready(&*ticket).await;
    claimer.release();
    assert_ticket(&*ticket, true).await;
    assert_ticket(&*tracker.wait_leader(), true).await;
    clean_kill(&tracker).await;
}

#[tokio::test(start_paused = true)]
async fn wait_leader_never_becoming_leader() {
    let claimer = GatedClaimer::new(scripted(vec![denied(), block()]));
    let tracker = tracker(&claimer);
    assert_not_ready(&*tracker.wait_leader()).await;
    let ticket = tracker.wait_leader();
    clean_kill(&tracker).await;
    assert_ticket(&*ticket, false).await;
}

#[tokio::test(start_paused = true)]
async fn wait_minion_already_minion() {
    let claimer = GatedClaimer::new(scripted(vec![denied(), block()]));
    let tracker = tracker(&claimer);
    assert_claim_leader(&tracker, false).await;
    // Juju: ready at once, and false.
    let ticket = tracker.wait_minion();
    timeout(Duration::ZERO, ticket.ready())
        .await
        .expect("wait_minion on a minion is ready at once");
    assert_ticket(&*ticket, false).await;
    clean_kill(&tracker).await;
}

#[tokio::test(start_paused = true)]
async fn wait_minion_becoming_minion() {
    let claimer = GatedClaimer::new(scripted(vec![granted(), denied(), block()]));
    let tracker = tracker(&claimer);
    let ticket = tracker.wait_minion();
    assert_not_ready(&*ticket).await;
    refreshes(1).await;
    assert_ticket(&*ticket, true).await;
    assert_ticket(&*tracker.wait_minion(), false).await;
    clean_kill(&tracker).await;
}

#[tokio::test(start_paused = true)]
async fn wait_minion_never_becoming_minion() {
    let claimer = GatedClaimer::new(scripted(vec![granted(), granted(), granted()]));
    let tracker = tracker(&claimer);
    let ticket = tracker.wait_minion();
    refreshes(2).await;
    assert_not_ready(&*ticket).await;
    clean_kill(&tracker).await;
    assert_ticket(&*ticket, false).await;
}

#[tokio::test(start_paused = true)]
async fn renews_a_guarantee_after_each_claim_started() {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let mut mock = MockClaimer::new();
    let record = starts.clone();
    mock.expect_claim_leadership()
        .with(eq(APP), eq(UNIT), eq(LEASE))
        .times(4)
        .returning(move |_, _, _| {
            record.lock().expect("recorder lock").push(Instant::now());
            Ok(Fence(3))
        });
    let begin = Instant::now();
    let claimer = GatedClaimer::new(mock);
    let tracker = tracker(&claimer);
    sleep(GUARANTEE * 3 + GUARANTEE / 2).await;
    clean_kill(&tracker).await;
    let offsets: Vec<_> = starts
        .lock()
        .expect("recorder lock")
        .iter()
        .map(|t| *t - begin)
        .collect();
    assert_eq!(
        offsets,
        [Duration::ZERO, GUARANTEE, GUARANTEE * 2, GUARANTEE * 3]
    );
}

#[tokio::test(start_paused = true)]
async fn claim_leader_renews_first_when_the_guarantee_would_not_hold() {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let mut mock = MockClaimer::new();
    let record = starts.clone();
    mock.expect_claim_leadership()
        .times(2)
        .returning(move |_, _, _| {
            record.lock().expect("recorder lock").push(Instant::now());
            Ok(Fence(3))
        });
    let begin = Instant::now();
    let claimer = GatedClaimer::new(mock);
    let tracker = tracker(&claimer);
    // The default margin is 6 s: at 25 s the deadline (54 s) is less than a guarantee away.
    sleep(Duration::from_secs(25)).await;
    assert_claim_leader(&tracker, true).await;
    let offsets: Vec<_> = starts
        .lock()
        .expect("recorder lock")
        .iter()
        .map(|t| *t - begin)
        .collect();
    assert_eq!(offsets, [Duration::ZERO, Duration::from_secs(25)]);
    clean_kill(&tracker).await;
}

#[tokio::test(start_paused = true)]
async fn stop_with_release_revokes_only_a_lease_it_may_hold() {
    let claimer = GatedClaimer::new(scripted(vec![granted()]));
    let mut revoker = MockRevoker::new();
    revoker
        .expect_revoke_leadership()
        .with(eq(APP), eq(UNIT))
        .times(1)
        .returning(|_, _| Ok(()));
    let tracker = LeaderTracker::builder(UNIT, GUARANTEE, claimer.clone())
        .release_on_stop(Arc::new(revoker))
        .spawn();
    assert_claim_leader(&tracker, true).await;
    clean_kill(&tracker).await;

    // Denied: another unit holds the lease, so there is nothing to release.
    let claimer = GatedClaimer::new(scripted(vec![denied(), block()]));
    let mut revoker = MockRevoker::new();
    revoker.expect_revoke_leadership().never();
    let tracker = LeaderTracker::builder(UNIT, GUARANTEE, claimer.clone())
        .release_on_stop(Arc::new(revoker))
        .spawn();
    assert_claim_leader(&tracker, false).await;
    clean_kill(&tracker).await;
}

#[tokio::test(start_paused = true)]
async fn every_ticket_is_false_after_stop() {
    let claimer = GatedClaimer::new(scripted(vec![granted()]));
    let tracker = tracker(&claimer);
    let minion = tracker.wait_minion();
    assert_claim_leader(&tracker, true).await;
    clean_kill(&tracker).await;
    assert_ticket(&*minion, false).await;
    assert_ticket(&*tracker.claim_leader(), false).await;
    assert_ticket(&*tracker.wait_leader(), false).await;
    assert_ticket(&*tracker.wait_minion(), false).await;
    // wait() can be called again and by many.
    tracker.wait().await.expect("still a clean stop");
}

// -------------------------------------------------------------------------------------------
// W3: with_stable_leadership, ported from juju 4.0's internal/worker/leadership/tracker_test.go
// (TestWithStableLeadership, TestWithStableLeadershipLeadershipChanged,
// TestWithStableLeadershipFuncError), plus the changes juju's tests do not cover.

/// Juju's TestWithStableLeadership: a leader runs a function that waits for another task to
/// let it finish, after one refresh; it returns the function's result.
#[tokio::test(start_paused = true)]
async fn with_stable_leadership() {
    let claimer = GatedClaimer::new(scripted(vec![granted(), granted()]));
    let tracker = tracker(&claimer);
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
    let finisher = tokio::spawn(async move {
        // Juju's finishLeadershipFunc.
        if started_rx.await.is_ok() {
            let _ = finish_tx.send(());
        }
    });
    // Wait long enough for a single refresh.
    refreshes(1).await;
    let mut called = false;
    let outcome = tracker
        .with_stable_leadership(|token| {
            called = true;
            async move {
                let _ = started_tx.send(());
                tokio::select! {
                    _ = finish_rx => Ok(()),
                    () = token.cancelled() => Err(Error::Stopped { what: "cancelled work" }),
                    () = sleep(LONG) => Err(Error::Stopped { what: "trying to finish leadership func" }),
                }
            }
        })
        .await;
    outcome.expect("leadership was stable");
    assert!(called);
    finisher.await.expect("the finisher ran");
    clean_kill(&tracker).await;
}

/// Juju's TestWithStableLeadershipLeadershipChanged: the renewal is denied while the function
/// runs; its token is cancelled and the result is LeadershipChanged.
#[tokio::test(start_paused = true)]
async fn with_stable_leadership_leadership_changed() {
    let claimer = GatedClaimer::new(scripted(vec![granted(), denied(), block()]));
    let tracker = tracker(&claimer);
    assert_claim_leader(&tracker, true).await;
    let mut called = false;
    let outcome: Result<()> = tracker
        .with_stable_leadership(|token| {
            called = true;
            async move {
                tokio::select! {
                    () = token.cancelled() => Ok(()),
                    () = sleep(LONG) => Err(Error::Stopped { what: "trying to finish leadership func" }),
                }
            }
        })
        .await;
    assert!(called);
    match outcome {
        Err(Error::LeadershipChanged { unit, from, to }) => {
            assert_eq!(unit, UNIT);
            assert_eq!(from, Role::Leader { fence: Fence(7) });
            assert_eq!(to, Role::Minion);
        }
        other => panic!("expected LeadershipChanged, got {other:?}"),
    }
    clean_kill(&tracker).await;
}

/// Juju's TestWithStableLeadershipFuncError: the function's own error is returned.
#[tokio::test(start_paused = true)]
async fn with_stable_leadership_func_error() {
    let claimer = GatedClaimer::new(scripted(vec![granted()]));
    let tracker = tracker(&claimer);
    let outcome: Result<()> = tracker
        .with_stable_leadership(|_| async { Err(Error::backend("stub", "work", "boom")) })
        .await;
    match outcome {
        Err(err @ Error::Backend { .. }) => {
            assert_eq!(err.one_line(), "stub store failed during work: boom")
        }
        other => panic!("expected the function's error, got {other:?}"),
    }
    clean_kill(&tracker).await;
}

/// Not in juju's tests: a renewal (an extension, same term) is no change; a minion's work is
/// cancelled when it becomes leader; stopping the tracker is a change.
#[tokio::test(start_paused = true)]
async fn with_stable_leadership_extension_promotion_and_stop() {
    // Leader across two renewals.
    let claimer = GatedClaimer::new(scripted(vec![granted(), granted(), granted()]));
    let leader = tracker(&claimer);
    let outcome = leader
        .with_stable_leadership(|token| async move {
            sleep(GUARANTEE * 2 + SHORT).await;
            Ok(token.is_cancelled())
        })
        .await;
    assert_eq!(outcome.ok(), Some(false), "an extension is not a change");
    clean_kill(&leader).await;

    // Minion, then leader after a release.
    let claimer = GatedClaimer::new(scripted(vec![denied(), block(), granted()]));
    let tracker = tracker(&claimer);
    assert_claim_leader(&tracker, false).await;
    let release = claimer.clone();
    let outcome: Result<()> = tracker
        .with_stable_leadership(|token| async move {
            release.release();
            token.cancelled().await;
            Ok(())
        })
        .await;
    assert!(
        matches!(
            outcome,
            Err(Error::LeadershipChanged {
                from: Role::Minion,
                to: Role::Leader { fence: Fence(7) },
                ..
            })
        ),
        "{outcome:?}"
    );

    // Stopped while the work runs.
    let outcome: Result<()> = tracker
        .with_stable_leadership(|token| {
            tracker.kill();
            async move {
                token.cancelled().await;
                Ok(())
            }
        })
        .await;
    assert!(
        matches!(
            outcome,
            Err(Error::LeadershipChanged {
                to: Role::Stopped,
                ..
            })
        ),
        "{outcome:?}"
    );
    tracker.wait().await.expect("a clean stop");
    let outcome: Result<()> = tracker.with_stable_leadership(|_| async { Ok(()) }).await;
    assert!(matches!(outcome, Err(Error::Stopped { .. })), "{outcome:?}");
}
