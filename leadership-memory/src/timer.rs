//! The store's one expiry timer task.
//!
//! A store may be created outside any runtime (in a `static`, say), so the task is started
//! lazily: every operation calls [`ensure_running`], which costs one atomic load once the task
//! runs, and spawns it on the current tokio runtime otherwise. The task holds only a `Weak`
//! reference, so it never keeps the store alive: dropping the last store handle wakes it and it
//! ends. If its runtime shuts down while the store lives on, the task's guard clears the
//! `running` flag and wakes every blocked waiter and every watch stream; each re-checks (a
//! waiter its lease, a stream its timer) and starts a new timer on its own runtime.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::store::Inner;

/// What the store and its timer task share, apart from the store itself.
#[derive(Debug, Default)]
pub(crate) struct TimerShared {
    /// Woken (with a stored permit, so nothing is missed) when an earlier deadline was
    /// scheduled or the store was dropped.
    pub(crate) wake: Notify,
    running: AtomicBool,
}

/// Starts the timer task on the current tokio runtime unless one is running.
///
/// Outside a runtime it does nothing: checks stay exact (they compare against the clock), and
/// the next operation made inside a runtime starts the task.
pub(crate) fn ensure_running(inner: &Arc<Inner>) {
    let shared = &inner.timer;
    if shared.running.load(Ordering::Acquire) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if shared
        .running
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    // The guard is made before the spawn and moves into the task: a runtime that is shutting
    // down refuses the task and drops it unpolled, and the guard then clears the flag (and
    // wakes everyone), so the next call from a live runtime starts a timer. Callers hold no
    // store lock here, so the guard may take it even when dropped inside `spawn`.
    let running = Running {
        store: Arc::downgrade(inner),
        shared: Arc::clone(shared),
    };
    runtime.spawn(run(running));
}

async fn run(running: Running) {
    let store = running.store.clone();
    let shared = Arc::clone(&running.shared);
    loop {
        let next = match store.upgrade() {
            Some(inner) => inner.expire_due(),
            None => return,
        };
        match next {
            Some(deadline) if deadline <= Instant::now() => {
                // More are due than one batch: let other tasks at the lock, then go on. The
                // thread yield lets a caller that was woken by the unlock take the lock
                // before this task takes it again: without it, a caller could wait through
                // many batches (75–113 ms while 2,000,000 revoked leases came due, measured
                // with `examples/mass_expiry`; 1–11 ms with it).
                std::thread::yield_now();
                tokio::task::yield_now().await;
            }
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = shared.wake.notified() => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}

/// Marks the timer stopped when its task ends or is dropped with its runtime.
struct Running {
    store: Weak<Inner>,
    shared: Arc<TimerShared>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shared.running.store(false, Ordering::Release);
        if let Some(inner) = self.store.upgrade() {
            inner.wake_all_waiters();
            // Watchers too: their next poll starts a timer on their own runtime, so expiries
            // keep being reported (O2).
            inner.hub.wake_all();
        }
    }
}
