//! The shared store and its registry of named stores.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use leadership_core::{JujuPolicy, Policy};
use tokio::time::Instant;

use crate::handle::MemoryLeadership;
use crate::state::{MemoryStats, Nanos, State};
use crate::timer::{self, TimerShared};

/// One in-process leadership store, shared by cheap clones.
///
/// Open a handle per namespace with [`MemoryStore::namespace`]; handles of different namespaces
/// share nothing (N1). All state sits behind one mutex, held only for O(1) or O(log n) work
/// (except `leaders()` and `pinned_leadership()`, which copy one namespace).
///
/// Time is tokio's clock ([`tokio::time::Instant`]), so tests can pause and advance it. Expiry
/// is decided at each call against the clock (exact, nanosecond granularity: durations are
/// never rounded), and one timer task for the whole store wakes blocked waiters at the known
/// expiry. That task is spawned on the first operation made inside a tokio runtime (which must
/// have its time driver enabled); it holds the store weakly and ends when the store is dropped.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) policy: Arc<dyn Policy>,
    epoch: Instant,
    state: Mutex<State>,
    pub(crate) timer: Arc<TimerShared>,
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
        let next = state.expire_due(self.now(), EXPIRY_BATCH)?;
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

impl MemoryStore {
    /// A new, empty store with juju's validation rules ([`JujuPolicy`]).
    ///
    /// May be called outside a tokio runtime; see the type's docs for when the timer starts.
    pub fn new() -> MemoryStore {
        MemoryStore::with_policy(Arc::new(JujuPolicy::default()))
    }

    /// A new, empty store that validates names, durations and entities with `policy` (V5).
    pub fn with_policy(policy: Arc<dyn Policy>) -> MemoryStore {
        MemoryStore {
            inner: Arc::new(Inner {
                policy,
                epoch: Instant::now(),
                state: Mutex::new(State::default()),
                timer: Arc::new(TimerShared::default()),
            }),
        }
    }

    /// The process-wide store registered under `name`, created (with [`JujuPolicy`]) on first
    /// use. This is what `memory://NAME` URLs open. Named stores live until the process ends.
    pub fn named(name: &str) -> MemoryStore {
        static NAMED: OnceLock<Mutex<HashMap<Box<str>, MemoryStore>>> = OnceLock::new();
        let mut named = NAMED
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(store) = named.get(name) {
            return store.clone();
        }
        let store = MemoryStore::new();
        named.insert(name.into(), store.clone());
        store
    }

    /// A handle on namespace `namespace` (juju: the model UUID), created on first use.
    ///
    /// Namespaces are never removed: a store's memory grows with the number of distinct
    /// namespaces opened on it (a few dozen bytes each), not with the handles.
    pub fn namespace(&self, namespace: &str) -> MemoryLeadership {
        self.namespace_with_policy(namespace, Arc::clone(&self.inner.policy))
    }

    /// A handle on namespace `namespace` that validates with `policy` instead of the store's
    /// (V5). Handles with different policies on one namespace share its state.
    pub fn namespace_with_policy(
        &self,
        namespace: &str,
        policy: Arc<dyn Policy>,
    ) -> MemoryLeadership {
        // The only error is running out of 2^32 namespace ids: the handle then gets an id that
        // names no namespace, and every operation on it fails with `Error::Backend`.
        let id = self.inner.state().space_id(namespace).unwrap_or(u32::MAX);
        MemoryLeadership::new(Arc::clone(&self.inner), policy, id, namespace)
    }

    /// The validation policy of this store: the default for its handles.
    pub fn policy(&self) -> Arc<dyn Policy> {
        Arc::clone(&self.inner.policy)
    }

    /// Counts of what the store holds, for diagnostics and tests. Takes the lock and walks
    /// every entry: O(n).
    pub fn stats(&self) -> MemoryStats {
        self.inner.state().stats()
    }

    /// Starts the timer task on the current runtime now rather than at the first operation.
    /// Does nothing outside a runtime or if the task runs already.
    pub fn start_timer(&self) {
        timer::ensure_running(&self.inner);
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}
