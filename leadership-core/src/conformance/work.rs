//! W1: leader-only work over the store ([`with_leader`]), run by every store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::{Instant, sleep, timeout};

use super::{A0, A1, APP, Profile, claim, limit, long, revoke};
use crate::work::with_leader;
use crate::{Error, Leadership};

/// Stores keep time in whole milliseconds at best; a lease may end this much before its
/// nominal expiry as seen from the test's clock.
const GRANULARITY: Duration = Duration::from_millis(5);

/// W1: `with_leader` runs the work only if the unit leads (`NotLeader` otherwise, work not
/// run); the work's token stays quiet across an extension, fires within the notification
/// latency of a revoke, and within the expiry slack plus that latency of an expiry, never
/// before the lease could have ended (C4).
pub async fn w1_with_leader_cancels_on_loss(store: &dyn Leadership, profile: &Profile) {
    let limit = limit(profile);
    let long = long(profile);

    // Vacant: NotLeader, the work never runs.
    not_leader(store, A0, "W1 vacant").await;

    // Revoke.
    let fence = claim(store, APP, A0, long).await;
    not_leader(store, A1, "W1 another unit leads").await;
    let revoker = async {
        sleep(profile.notify_latency.min(Duration::from_millis(100))).await;
        // An extension is not a change of term: the token must stay quiet (O1).
        let extended = claim(store, APP, A0, long).await;
        assert_eq!(extended, fence, "W1: an extension keeps the fence (C2)");
        sleep(profile.notify_latency.min(Duration::from_millis(100))).await;
        let caused = Instant::now();
        revoke(store, APP, A0).await;
        caused
    };
    let work = with_leader(store, APP, A0, |given, lost| async move {
        assert_eq!(given, fence, "W1: the work gets the term's fence");
        timeout(limit, lost.cancelled())
            .await
            .expect("W1: the token never fired after a revoke");
        Instant::now()
    });
    let (outcome, caused) = futures::future::join(work, revoker).await;
    let fired = outcome.unwrap_or_else(|err| panic!("W1: with_leader failed: {err}"));
    assert!(fired >= caused, "W1: the token fired before the revoke");
    assert!(
        fired - caused <= profile.notify_latency,
        "W1: the token fired {:?} after the revoke, more than the notification latency {:?}",
        fired - caused,
        profile.notify_latency
    );

    // Expiry.
    let d = profile.min_duration;
    let started = Instant::now();
    let fence = claim(store, APP, A1, d).await;
    let fired = with_leader(store, APP, A1, |given, lost| async move {
        assert_eq!(given, fence);
        timeout(limit, lost.cancelled())
            .await
            .expect("W1: the token never fired after an expiry");
        Instant::now()
    })
    .await
    .unwrap_or_else(|err| panic!("W1: with_leader failed: {err}"));
    assert!(
        fired + GRANULARITY >= started + d,
        "W1: the token fired {:?} before the lease could expire (C4)",
        started + d - fired
    );
    let bound = d + profile.expiry_slack + profile.notify_latency;
    assert!(
        fired - started <= bound,
        "W1: the token fired {:?} after the claim, more than duration + slack + latency {bound:?}",
        fired - started
    );

    // A work that ends on its own returns its output, and nothing is left behind.
    claim(store, APP, A0, long).await;
    let output = with_leader(store, APP, A0, |_, lost| async move { lost.is_cancelled() })
        .await
        .unwrap_or_else(|err| panic!("W1: with_leader failed: {err}"));
    assert!(!output, "W1: the token fired while the unit led");
    revoke(store, APP, A0).await;
    not_leader(store, A0, "W1 after revoke").await;
}

async fn not_leader(store: &dyn Leadership, unit: &str, what: &str) {
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let outcome = with_leader(store, APP, unit, |_, _| async move {
        flag.store(true, Ordering::SeqCst);
    })
    .await;
    match outcome {
        Err(Error::NotLeader {
            unit: u,
            application: a,
        }) => assert_eq!((u.as_str(), a.as_str()), (unit, APP), "{what}"),
        other => panic!("{what}: expected NotLeader, got {other:?}"),
    }
    assert!(!ran.load(Ordering::SeqCst), "{what}: the work ran");
}
