//! The state one store's handles share, and the registry of named stores.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use leadership_core::watch::WatchHub;
use leadership_core::{JujuPolicy, Policy};
use tokio::time::Instant;

use crate::state::{MemoryStats, Nanos, State};
use crate::timer::{self, TimerShared};

pub(crate) struct Inner {
    pub(crate) policy: Arc<dyn Policy>,
    epoch: Instant,
    state: Mutex<State>,
    pub(crate) timer: Arc<TimerShared>,
    /// Every watcher of every namespace (O1–O4), fed from the state's journal.
    pub(crate) hub: WatchHub,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the timer task see that the store is gone and end.
        self.timer.wake.notify_one();
    }
}

impl Inner {
    /// The store's state. A panic in a guarded closure poisons the mutex but leaves the state
    /// consistent (the closure runs between operations), so poisoning is ignored.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The instant `at` nanoseconds after the store's epoch.
    pub(crate) fn instant(&self, at: Nanos) -> Instant {
        self.epoch + Duration::from_nanos(at)
    }

    /// Now, in nanoseconds since the store's epoch.
    pub(crate) fn now(&self) -> Nanos {
        nanos(Instant::now().saturating_duration_since(self.epoch))
    }

    /// Ends due leases, one batch; returns when the timer should wake next (in the past if
    /// more are due).
    pub(crate) fn expire_due(&self) -> Option<Instant> {
        let mut state = self.state();
        let next = state.expire_due(self.now(), EXPIRY_BATCH);
        self.flush(&mut state);
        let next = next?;
        Some(self.epoch + Duration::from_nanos(next))
    }

    pub(crate) fn wake_all_waiters(&self) {
        self.state().wake_all_waiters();
    }

    /// Tells the timer that an earlier deadline was scheduled, if one was.
    pub(crate) fn reschedule(&self, state: &mut State) {
        if state.take_earlier() {
            self.timer.wake.notify_one();
        }
    }
}

/// How many deadlines the timer handles per lock acquisition, so that a mass expiry does not
/// stall other operations (a deadline can cost microseconds in a heap of millions).
const EXPIRY_BATCH: usize = 128;

/// A duration in nanoseconds, saturating (a lease of 584 years does not expire).
pub(crate) fn nanos(duration: Duration) -> Nanos {
    Nanos::try_from(duration.as_nanos()).unwrap_or(Nanos::MAX)
}

impl Inner {
    /// A new, empty store's state.
    pub(crate) fn new(policy: Arc<dyn Policy>) -> Inner {
        Inner {
            policy,
            epoch: Instant::now(),
            state: Mutex::new(State::default()),
            timer: Arc::new(TimerShared::default()),
            hub: WatchHub::new(),
        }
    }

    /// Publishes what the journal recorded, under the store's lock so watchers see changes
    /// in the order they happened; stops journaling once nobody watches.
    pub(crate) fn flush(&self, state: &mut State) {
        if !state.journal.on {
            return;
        }
        let mut changes = std::mem::take(&mut state.journal.changes);
        for (space, change) in changes.drain(..) {
            if let Some(name) = state.space_name(space) {
                self.hub.publish(name, change);
            }
        }
        state.journal.changes = changes;
        if self.hub.watchers() == 0 {
            state.journal.on = false;
        }
    }

    /// The process-wide store registered under `name`, created on first use.
    pub(crate) fn named(name: &str) -> Arc<Inner> {
        static NAMED: OnceLock<Mutex<HashMap<Box<str>, Arc<Inner>>>> = OnceLock::new();
        let mut named = NAMED
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            named
                .entry(name.into())
                .or_insert_with(|| Arc::new(Inner::new(Arc::new(JujuPolicy::default())))),
        )
    }

    /// The id of `namespace`, created on first use. The only error is running out of 2^32
    /// namespace ids: the handle then gets an id that names no namespace, and every operation
    /// on it fails with `Error::Backend`.
    pub(crate) fn space_id(&self, namespace: &str) -> u32 {
        self.state().space_id(namespace).unwrap_or(u32::MAX)
    }

    /// Counts of what the store holds.
    pub(crate) fn stats(&self) -> MemoryStats {
        MemoryStats {
            watchers: self.hub.watchers(),
            ..self.state().stats()
        }
    }

    pub(crate) fn start_timer(self: &Arc<Self>) {
        timer::ensure_running(self);
    }
}
