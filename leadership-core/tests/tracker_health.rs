//! H1: the tracker's health, client-go's `HealthzAdaptor`: unhealthy exactly while it believes
//! it leads but its last successful renewal is older than the guarantee plus the tolerance, or
//! once it stopped with an error. The memory store behind a [`FaultyStore`], on tokio's paused
//! clock (the memory store keeps time with it), with juju's durations.

use std::sync::Arc;
use std::time::Duration;

use leadership_core::{Health, LeaderTracker, Leadership, Role, Tracker, TrackerWorker};
use leadership_memory::MemoryStore;
use leadership_testkit::{Fault, FaultyStore};
use tokio::time::{Instant, sleep_until, timeout};

const GUARANTEE: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(600);
const TICK: Duration = Duration::from_millis(1);

fn store(namespace: &str) -> (Arc<dyn Leadership>, Arc<FaultyStore>) {
    let memory: Arc<dyn Leadership> = Arc::new(MemoryStore::new().namespace(namespace));
    let faulty = FaultyStore::new(memory.clone());
    (memory, faulty)
}

async fn lead(tracker: &LeaderTracker) {
    let led = timeout(LONG, tracker.wait_leader().wait()).await;
    assert_eq!(led.ok(), Some(true), "the tracker leads");
}

/// When the last successful claim or renewal returned.
fn last_success(faulty: &FaultyStore) -> Instant {
    faulty
        .claims()
        .iter()
        .rev()
        .find(|c| c.result.is_ok())
        .map(|c| c.returned)
        .expect("a successful claim")
}

fn assert_stale(health: Health, what: &str) {
    assert!(matches!(health, Health::Stale { .. }), "{what}: {health}");
}

#[tokio::test(start_paused = true)]
async fn unhealthy_exactly_while_a_leader_is_past_its_renewal_plus_tolerance() {
    let (_, faulty) = store("h1-default");
    let tracker = LeaderTracker::builder("web/0", GUARANTEE, faulty.clone()).spawn();
    lead(&tracker).await;
    assert!(tracker.health().is_healthy());

    // Renewals keep succeeding: healthy across several of them.
    sleep_until(Instant::now() + GUARANTEE * 3).await;
    assert!(tracker.health().is_healthy(), "{}", tracker.health());

    // The store stops answering: the renewal due a guarantee after the last one fails and
    // is retried. The default tolerance is a quarter of the guarantee.
    faulty.fail(Fault::Unavailable);
    let last = last_success(&faulty);
    let allowed = GUARANTEE + GUARANTEE / 4;
    sleep_until(last + allowed - TICK).await;
    assert_eq!(
        tracker.role(),
        Role::Leader {
            fence: tracker.current_term().expect("term").fence
        }
    );
    assert!(tracker.health().is_healthy(), "{}", tracker.health());
    sleep_until(last + allowed + TICK).await;
    assert!(tracker.current_term().is_some(), "still believes it leads");
    assert_stale(tracker.health(), "past guarantee + tolerance");

    // At the loss deadline it turns minion (T7): a minion is healthy, as in client-go.
    let deadline = last + GUARANTEE * 2 - tracker.safety_margin();
    sleep_until(deadline + TICK).await;
    assert!(tracker.current_term().is_none());
    assert!(tracker.health().is_healthy(), "{}", tracker.health());

    // The store answers again: it leads again once the old lease expired, and is healthy.
    faulty.heal();
    lead(&tracker).await;
    assert!(tracker.health().is_healthy(), "{}", tracker.health());
    tracker.kill();
    tracker.wait().await.expect("a clean stop");
    assert!(tracker.health().is_healthy(), "a clean stop is healthy");
}

#[tokio::test(start_paused = true)]
async fn the_tolerance_is_a_builder_option() {
    let (_, faulty) = store("h1-tolerance");
    let tolerance = Duration::from_secs(1);
    let tracker = LeaderTracker::builder("web/0", GUARANTEE, faulty.clone())
        .health_tolerance(tolerance)
        .spawn();
    lead(&tracker).await;
    faulty.fail(Fault::Timeout(Duration::from_secs(5)));
    let last = last_success(&faulty);
    sleep_until(last + GUARANTEE + tolerance - TICK).await;
    assert!(tracker.health().is_healthy(), "{}", tracker.health());
    sleep_until(last + GUARANTEE + tolerance + TICK).await;
    assert_stale(tracker.health(), "past guarantee + 1 s");
    tracker.kill();
    tracker.wait().await.expect("a clean stop");
}

#[tokio::test(start_paused = true)]
async fn a_tracker_stopped_by_an_error_is_unhealthy() {
    let (_, faulty) = store("h1-failed");
    let tracker = LeaderTracker::builder("web/0", GUARANTEE, faulty.clone()).spawn();
    lead(&tracker).await;
    faulty.fail(Fault::Backend);
    let stopped = timeout(LONG, tracker.wait())
        .await
        .expect("the tracker stops");
    assert!(stopped.is_err(), "a backend error is fatal (T9)");
    match tracker.health() {
        Health::Failed(err) => assert!(matches!(err, leadership_core::Error::Backend { .. })),
        other => panic!("expected Failed, got {other}"),
    }
}
