//! M1, per store operation: `Metered` over the memory store records each operation's latency
//! and outcome and the blocked waiters, read back from `metrics-util`'s debugging recorder
//! (installed for the test's thread; the current-thread runtime runs every task on it).
#![cfg(feature = "metrics")]

mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use leadership_core::metered::Metered;
use leadership_core::{CancellationToken, Checker, Claimer, Leadership, Pinner, Reader, Revoker};
use leadership_memory::MemoryStore;
use leadership_testkit::{Fault, FaultyStore};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use snapshot::Snap;

const LEASE: Duration = Duration::from_secs(60);

/// What these tests read from a snapshot.
impl Snap {
    fn count(&self, operation: &str, outcome: &str) -> u64 {
        let labels = [
            ("store", "memory"),
            ("operation", operation),
            ("outcome", outcome),
        ];
        match self.value("leadership_store_operations_total", &labels) {
            Some(DebugValue::Counter(n)) => *n,
            other => panic!("{operation}/{outcome}: {other:?}"),
        }
    }

    fn timings(&self, operation: &str) -> usize {
        let labels = [("store", "memory"), ("operation", operation)];
        match self.value("leadership_store_operation_duration_seconds", &labels) {
            Some(DebugValue::Histogram(samples)) => samples.len(),
            other => panic!("{operation} latency: {other:?}"),
        }
    }

    fn waiters(&self) -> f64 {
        match self.value("leadership_store_blocked_waiters", &[("store", "memory")]) {
            Some(DebugValue::Gauge(v)) => v.into_inner(),
            other => panic!("blocked waiters: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn each_operation_is_timed_and_counted_by_outcome() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _installed = metrics::set_default_local_recorder(&recorder);
    let faulty = FaultyStore::new(Arc::new(MemoryStore::new().namespace("m1-store")));
    let store = Metered::new(faulty.clone() as Arc<dyn Leadership>, "memory");

    let fence = store
        .claim_leadership("web", "web/0", LEASE)
        .await
        .expect("claim");
    let denied = store.claim_leadership("web", "web/1", LEASE).await;
    assert!(
        denied.as_ref().is_err_and(|e| e.is_claim_denied()),
        "{denied:?}"
    );
    let invalid = store.claim_leadership("web", "db/0", LEASE).await;
    assert!(
        invalid.as_ref().is_err_and(|e| e.is_invalid_input()),
        "{invalid:?}"
    );
    assert_eq!(
        store.leadership_check("web", "web/0").check().await.ok(),
        Some(fence)
    );
    let not_leader = store.leadership_check("web", "web/1").check().await;
    assert!(not_leader.is_err_and(|e| e.is_not_leader()));
    store.pin_leadership("web", "op").await.expect("pin");
    store.unpin_leadership("web", "op").await.expect("unpin");
    assert_eq!(store.pinned_leadership().await.expect("pinned").len(), 0);
    assert_eq!(store.leaders().await.expect("leaders").len(), 1);
    faulty.fail(Fault::Unavailable);
    assert!(store.leaders().await.is_err());
    faulty.heal();

    let snap = Snap::take(&snapshotter);
    assert_eq!(snap.count("claim", "ok"), 1);
    assert_eq!(snap.count("claim", "refused"), 1);
    assert_eq!(snap.count("claim", "invalid"), 1);
    assert_eq!(snap.count("claim", "error"), 0);
    assert_eq!(snap.timings("claim"), 3);
    assert_eq!(snap.count("check", "ok"), 1);
    assert_eq!(snap.count("check", "refused"), 1);
    assert_eq!(snap.count("pin", "ok"), 1);
    assert_eq!(snap.count("unpin", "ok"), 1);
    assert_eq!(snap.count("pinned", "ok"), 1);
    assert_eq!(snap.count("leaders", "ok"), 1);
    assert_eq!(snap.count("leaders", "error"), 1);
    assert_eq!(snap.timings("leaders"), 2);

    // A blocked waiter is counted while it waits, and no longer once the lease is released.
    let waiting = {
        let store = Arc::new(store);
        let waiter = Arc::clone(&store);
        let task = tokio::spawn(async move {
            waiter
                .block_until_leadership_released("web", CancellationToken::new())
                .await
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let snap = Snap::take(&snapshotter);
        assert_eq!(snap.waiters(), 1.0, "one waiter blocks");
        store
            .revoke_leadership("web", "web/0")
            .await
            .expect("revoke");
        task.await.expect("the waiter's task").expect("released");
        store
    };
    let snap = Snap::take(&snapshotter);
    // Drained at the previous snapshot: the change since then is the waiter leaving.
    assert_eq!(snap.waiters(), -1.0, "the waiter is no longer counted");
    assert_eq!(snap.count("block", "ok"), 1);
    assert_eq!(snap.count("revoke", "ok"), 1);

    // A waiter whose wait is cancelled is a refusal, and is not counted afterwards either.
    waiting
        .claim_leadership("web", "web/0", LEASE)
        .await
        .expect("claim");
    let cancel = CancellationToken::new();
    cancel.cancel();
    let cancelled = waiting.block_until_leadership_released("web", cancel).await;
    assert!(cancelled.is_err(), "{cancelled:?}");
    let snap = Snap::take(&snapshotter);
    assert_eq!(snap.count("block", "refused"), 1);
    assert_eq!(snap.waiters(), 0.0);
}
