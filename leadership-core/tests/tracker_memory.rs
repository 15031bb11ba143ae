//! The tracker against the memory store in real time: three trackers per application,
//! handovers with and without release, and a loss by deadline when one tracker's store
//! fails (T4, T7, T8).

use std::sync::{Arc, Weak};
use std::time::Duration;

use leadership_core::tracker_conformance::{self, ClaimProbe};
use leadership_core::{Error, LeaderTracker, Leadership, Tracker, TrackerWorker};
use leadership_memory::{MemoryFactory, MemoryStore, conformance_profile};
use leadership_testkit::{Fault, FaultyStore};
use tokio::time::{Instant, sleep, timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_t4_handover_without_release() {
    tracker_conformance::t4_handover_without_release(&MemoryFactory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_t8_handover_with_release() {
    tracker_conformance::t8_handover_with_release(&MemoryFactory::default()).await;
}

/// W2 on one clock: across 100 handovers by stop-with-release on the memory store, the next
/// leader's work never starts before the previous leader's work ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w2_hundred_handovers_never_overlap() {
    tracker_conformance::w2_handovers(&MemoryFactory::default(), 100).await;
}

/// The leader's store stops answering: its tracker turns minion at the loss deadline, before
/// the lease expires in the store, so the next leader's first claim is made after the loss
/// signal fired; once its store is back it contends again and leads after a release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_by_deadline_precedes_the_next_leaders_first_claim() {
    let profile = conformance_profile();
    let guarantee = Duration::from_millis(300);
    let lease = guarantee * 2;
    let limit = Duration::from_secs(10);
    let store: Arc<dyn Leadership> = Arc::new(MemoryStore::new().namespace("loss"));

    let faulty = FaultyStore::new(store.clone());
    let a = Arc::new(
        LeaderTracker::builder("web/0", guarantee, faulty.clone())
            .release_on_stop(store.clone())
            .spawn(),
    );
    assert!(
        timeout(limit, a.wait_leader().wait())
            .await
            .expect("a leads")
    );
    let a_term = a.current_term().expect("a's term");

    let probes: Vec<Arc<ClaimProbe>> = (0..2).map(|_| ClaimProbe::new(store.clone())).collect();
    let others: Vec<Arc<LeaderTracker>> = probes
        .iter()
        .enumerate()
        .map(|(i, probe)| {
            Arc::new(
                LeaderTracker::builder(format!("web/{}", i + 1), guarantee, probe.clone())
                    .release_on_stop(store.clone())
                    .spawn(),
            )
        })
        .collect();
    for (i, probe) in probes.iter().enumerate() {
        let weak_a: Weak<LeaderTracker> = Arc::downgrade(&a);
        probe.watch(weak_a);
        let weak_other: Weak<LeaderTracker> = Arc::downgrade(&others[1 - i]);
        probe.watch(weak_other);
    }
    sleep(guarantee / 3).await;
    assert!(others.iter().all(|t| t.current_term().is_none()));

    let failed = Instant::now();
    faulty.fail(Fault::Unavailable);
    let waits: Vec<_> = others.iter().map(|t| t.wait_leader()).collect();
    let next = futures_first(&waits, limit).await;
    let took = failed.elapsed();
    assert!(a_term.lost.is_cancelled());
    assert!(a.current_term().is_none());
    let first = probes[next]
        .first_success_returning_after(failed)
        .expect("the next leader's claim");
    assert_eq!(
        first.peers_leading_at_return, 0,
        "a still believed it led when {next}'s claim returned"
    );
    let new_term = others[next].current_term().expect("the next leader's term");
    assert!(new_term.fence > a_term.fence);
    // The lease was renewed at most a guarantee before the failure; it then expires and a
    // blocked tracker takes over.
    let bound = lease + profile.expiry_slack + profile.notify_latency * 2;
    assert!(took <= bound, "takeover took {took:?}, more than {bound:?}");
    // a kept retrying while failing.
    let a_failures = faulty
        .claims()
        .iter()
        .filter(|c| c.started >= failed && c.result.as_ref().is_err_and(Error::is_retryable))
        .count();
    assert!(a_failures >= 2, "a retried {a_failures} time(s)");

    // a's store comes back: a contends again and leads after both others release.
    faulty.heal();
    sleep(guarantee).await;
    assert!(!a.claim_leader().wait().await, "denied while another leads");
    for other in &others {
        other.kill();
        other.wait().await.expect("clean stop");
    }
    let back = timeout(limit, a.wait_leader().wait())
        .await
        .expect("a leads again");
    assert!(back);
    assert!(a.current_term().expect("a's new term").fence > new_term.fence);
    a.kill();
    a.wait().await.expect("clean stop");
}

/// Waits until one of `tickets` answers true; returns its index.
async fn futures_first(tickets: &[Box<dyn leadership_core::Ticket>], limit: Duration) -> usize {
    let give_up = Instant::now() + limit;
    loop {
        for (i, ticket) in tickets.iter().enumerate() {
            if timeout(Duration::ZERO, ticket.ready()).await.is_ok() && ticket.wait().await {
                return i;
            }
        }
        assert!(
            Instant::now() < give_up,
            "nobody took over within {limit:?}"
        );
        sleep(Duration::from_millis(2)).await;
    }
}

/// Each term's work: unit, start, end.
type Spans = Arc<std::sync::Mutex<Vec<(String, Instant, Option<Instant>)>>>;

/// W2 on a loss rather than a release: the leader's store stops answering, its term's work is
/// asked to stop at the loss deadline (T7) and ends (here: a work that ignores the signal
/// is dropped a safety margin later), all before the next leader's work starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w2_work_ends_on_a_loss_before_the_next_leaders_work_starts() {
    let guarantee = Duration::from_millis(400);
    let limit = Duration::from_secs(10);
    let store: Arc<dyn Leadership> = Arc::new(MemoryStore::new().namespace("w2-loss"));
    let faulty = FaultyStore::new(store.clone());
    let spans: Spans = Arc::default();

    struct End(Spans, usize);
    impl Drop for End {
        fn drop(&mut self) {
            if let Ok(mut spans) = self.0.lock() {
                spans[self.1].2 = Some(Instant::now());
            }
        }
    }
    let record = |unit: &'static str, ignore_signal: bool| {
        let spans = spans.clone();
        move |term: leadership_core::Term| {
            let spans = spans.clone();
            async move {
                let index = {
                    let mut spans = spans.lock().expect("lock");
                    spans.push((unit.to_owned(), Instant::now(), None));
                    spans.len() - 1
                };
                let _end = End(spans, index);
                if ignore_signal {
                    // Stuck work: only the tracker dropping it ends it.
                    std::future::pending::<()>().await;
                }
                term.lost.cancelled().await;
            }
        }
    };

    let a = LeaderTracker::builder("api/0", guarantee, faulty.clone()).spawn();
    a.run_as_leader(record("api/0", true));
    assert_eq!(
        timeout(limit, a.wait_leader().wait()).await.ok(),
        Some(true)
    );
    let b = LeaderTracker::builder("api/1", guarantee, store.clone()).spawn();
    b.run_as_leader(record("api/1", false));
    sleep(guarantee / 2).await;

    faulty.fail(Fault::Unavailable);
    assert_eq!(
        timeout(limit, b.wait_leader().wait()).await.ok(),
        Some(true)
    );
    sleep(guarantee / 4).await;
    let spans = spans.lock().expect("lock").clone();
    assert_eq!(spans.len(), 2, "{spans:?}");
    let (old, new) = (&spans[0], &spans[1]);
    assert_eq!((old.0.as_str(), new.0.as_str()), ("api/0", "api/1"));
    let ended = old.2.expect("the old leader's stuck work was dropped");
    assert!(
        new.1 >= ended,
        "the new leader's work started {:?} before the old one's ended",
        ended - new.1
    );
    for tracker in [&a, &b] {
        tracker.kill();
        tracker.wait().await.expect("clean stop");
    }
}
