//! [`MemoryStore`], a handle on one namespace of an in-process store: the contract's traits.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use leadership_core::url::StoreUrl;
use leadership_core::watch::{LeaderEvent, LeaderStream, Watcher};
use leadership_core::{
    CancellationToken, Checker, Claimer, DEFAULT_NAMESPACE, Error, Fence, JujuPolicy, Pinner,
    Policy, Reader, Result, Revoker, Token,
};

use crate::state::{MemoryStats, Registration};
use crate::store::{Inner, nanos};
use crate::timer;

/// A handle on one namespace of an in-process leadership store (N1): cheap to clone,
/// implements every leadership trait, so `Arc<MemoryStore>` is an `Arc<dyn Leadership>`.
///
/// Open one with [`MemoryStore::new`] (a new private store), [`MemoryStore::named`] (the
/// process-wide store of that name) or [`MemoryStore::connect`] (`memory://[NAME]?namespace=…`);
/// [`MemoryStore::namespace`] gives a handle on another namespace of the same store. Handles of
/// different namespaces share nothing (N1).
///
/// Every operation validates its input through the handle's policy before touching state, so
/// invalid input changes nothing (V). The store keys state by the exact strings, so any names
/// a policy admits stay apart (V5).
///
/// All state sits behind one mutex, held only for O(1) or O(log n) work (except `leaders()`
/// and `pinned_leadership()`, which copy one namespace). Time is tokio's clock
/// ([`tokio::time::Instant`]), so tests can pause and advance it. Expiry is decided at each
/// call against the clock (exact, nanosecond granularity: durations are never rounded), and
/// one timer task for the whole store wakes blocked waiters at the known expiry. That task is
/// spawned on the first operation made inside a tokio runtime (which must have its time
/// driver enabled); it holds the store weakly and ends when the store is dropped.
///
/// ```
/// use leadership_memory::MemoryStore;
/// use leadership_core::{Checker, Claimer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> leadership_core::Result<()> {
/// let store = MemoryStore::connect("memory://docs?namespace=model-1").await?;
/// let fence = store
///     .claim_leadership("wordpress", "wordpress/0", std::time::Duration::from_secs(30))
///     .await?;
/// assert_eq!(store.leadership_check("wordpress", "wordpress/0").check().await?, fence);
/// // Another namespace of the same store shares nothing (N1).
/// let other = store.namespace("model-2");
/// assert!(other.leadership_check("wordpress", "wordpress/0").check().await.is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
    policy: Arc<dyn Policy>,
    space: u32,
    name: Arc<str>,
}

impl MemoryStore {
    fn open(inner: Arc<Inner>, policy: Arc<dyn Policy>, namespace: &str) -> MemoryStore {
        let space = inner.space_id(namespace);
        MemoryStore {
            inner,
            policy,
            space,
            name: namespace.into(),
        }
    }

    /// A handle on the default namespace of a new, empty store with juju's validation rules
    /// ([`JujuPolicy`]).
    ///
    /// May be called outside a tokio runtime; see the type's docs for when the timer starts.
    pub fn new() -> MemoryStore {
        MemoryStore::with_policy(Arc::new(JujuPolicy::default()))
    }

    /// A handle on the default namespace of a new, empty store that validates names,
    /// durations and entities with `policy` (V5); the store's other namespaces inherit it.
    pub fn with_policy(policy: Arc<dyn Policy>) -> MemoryStore {
        let inner = Arc::new(Inner::new(Arc::clone(&policy)));
        MemoryStore::open(inner, policy, DEFAULT_NAMESPACE)
    }

    /// A handle on the default namespace of the process-wide store registered under `name`,
    /// created (with [`JujuPolicy`]) on first use. This is what `memory://NAME` URLs open.
    /// Named stores live until the process ends.
    pub fn named(name: &str) -> MemoryStore {
        let inner = Inner::named(name);
        let policy = Arc::clone(&inner.policy);
        MemoryStore::open(inner, policy, DEFAULT_NAMESPACE)
    }

    /// Opens `memory://[NAME][?namespace=NS][&timeout=D]` (S1): a new private store without
    /// a name, the process-wide store of that name with one. `timeout` is accepted, as on
    /// every store, and has nothing to bound here: the store never waits for I/O.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] naming what is wrong (the shared grammar of
    /// [`leadership_core::url`]).
    pub async fn connect(url: &str) -> Result<MemoryStore> {
        MemoryStore::builder(url)?.connect().await
    }

    /// Parses `url` (see [`MemoryStore::connect`]) into a builder for more options.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] naming what is wrong.
    pub fn builder(url: &str) -> Result<MemoryStoreBuilder> {
        let url = StoreUrl::parse(url, &["memory"])?;
        if url.user().is_some() || url.password().is_some() || !url.path().is_empty() {
            return Err(url.error("a memory:// URL is memory://[NAME][?namespace=NS]"));
        }
        url.finish()?;
        Ok(MemoryStoreBuilder {
            name: Some(url.authority().to_owned()).filter(|n| !n.is_empty()),
            namespace: url.namespace().to_owned(),
            timeout: url.timeout(),
            policy: None,
        })
    }

    /// A handle on namespace `namespace` (juju: the model UUID) of the same store, with this
    /// handle's policy (S3).
    ///
    /// Namespaces are never removed: a store's memory grows with the number of distinct
    /// namespaces opened on it (a few dozen bytes each), not with the handles.
    pub fn namespace(&self, namespace: &str) -> MemoryStore {
        self.namespace_with_policy(namespace, Arc::clone(&self.policy))
    }

    /// A handle on namespace `namespace` that validates with `policy` instead (V5). Handles
    /// with different policies on one namespace share its state.
    pub fn namespace_with_policy(&self, namespace: &str, policy: Arc<dyn Policy>) -> MemoryStore {
        MemoryStore::open(Arc::clone(&self.inner), policy, namespace)
    }

    /// The namespace this handle works in.
    pub fn namespace_name(&self) -> &str {
        &self.name
    }

    /// The validation policy of this handle.
    pub fn policy(&self) -> &Arc<dyn Policy> {
        &self.policy
    }

    /// Counts of what the whole store (every namespace) holds, for diagnostics and tests.
    /// Takes the lock and walks every entry: O(n).
    pub fn stats(&self) -> MemoryStats {
        self.inner.stats()
    }

    /// Starts the timer task on the current runtime now rather than at the first operation.
    /// Does nothing outside a runtime or if the task runs already.
    pub fn start_timer(&self) {
        self.inner.start_timer();
    }

    /// Runs `f` if and only if `unit` leads `application` with exactly `fence` (F2), holding
    /// the store's lock while it runs: no claim, revoke or expiry can happen in between, so a
    /// stale leader's write never runs once a new term has begun.
    ///
    /// `f` must be short and must not call back into this store (any handle of it): it runs
    /// under the store's one mutex, so a call back would deadlock and a slow `f` stalls every
    /// other operation. A panic in `f` propagates to the caller and leaves the store usable.
    ///
    /// # Errors
    /// [`Error::NotLeader`] (without running `f`) if `unit` does not lead with that fence;
    /// `Invalid*` for input the policy rejects.
    pub fn guarded<R>(
        &self,
        application: &str,
        unit: &str,
        fence: Fence,
        f: impl FnOnce() -> R,
    ) -> Result<R> {
        self.policy.check_member(application, unit)?;
        let state = self.inner.state();
        let now = self.inner.now();
        if !state.leads(self.space, application, unit, fence, now) {
            return Err(Error::not_leader(unit, application));
        }
        let result = f();
        drop(state);
        Ok(result)
    }

    fn check_now(&self, application: &str, unit: &str) -> Result<Fence> {
        self.policy.check_member(application, unit)?;
        let state = self.inner.state();
        state.check(self.space, application, unit, self.inner.now())
    }

    fn register<'a>(&'a self, application: &'a str) -> Option<Waiter<'a>> {
        let mut state = self.inner.state();
        let registration = state.register(self.space, application, self.inner.now());
        self.inner.flush(&mut state);
        let registration = registration?;
        drop(state);
        Some(Waiter {
            handle: self,
            application,
            registration,
        })
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

/// Options for a [`MemoryStore`]; see [`MemoryStore::builder`].
#[derive(Clone, Debug)]
pub struct MemoryStoreBuilder {
    name: Option<String>,
    namespace: String,
    timeout: Duration,
    policy: Option<Arc<dyn Policy>>,
}

impl MemoryStoreBuilder {
    /// The namespace (N1), overriding the URL's.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The validation rules (V5) of this handle. Default: the store's ([`JujuPolicy`] for a
    /// new or named store).
    pub fn policy(mut self, policy: Arc<dyn Policy>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The namespace the handle will work in.
    pub fn namespace_name(&self) -> &str {
        &self.namespace
    }

    /// The URL's `?timeout=` (every store takes it); the memory store never waits for I/O,
    /// so nothing uses it.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Opens the handle.
    ///
    /// # Errors
    /// None today; `Result` keeps the shape of every store's `connect`.
    pub async fn connect(self) -> Result<MemoryStore> {
        let store = match (&self.name, &self.policy) {
            (Some(name), _) => MemoryStore::named(name),
            (None, Some(policy)) => MemoryStore::with_policy(Arc::clone(policy)),
            (None, None) => MemoryStore::new(),
        };
        let policy = self.policy.unwrap_or_else(|| Arc::clone(&store.policy));
        Ok(store.namespace_with_policy(&self.namespace, policy))
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("namespace", &self.name)
            .finish_non_exhaustive()
    }
}

/// A blocked waiter's registration; dropping it (return or a dropped future) unregisters (B3).
struct Waiter<'a> {
    handle: &'a MemoryStore,
    application: &'a str,
    registration: Registration,
}

impl Waiter<'_> {
    fn released(&self) -> bool {
        let inner = &self.handle.inner;
        let state = inner.state();
        state.released(
            self.handle.space,
            self.application,
            self.registration.fence,
            inner.now(),
        )
    }
}

impl Waiter<'_> {
    /// The lease's expiry as an instant, if it can expire.
    fn expiry(&self) -> Option<tokio::time::Instant> {
        let inner = &self.handle.inner;
        let expires = inner.state().expiry(self.handle.space, self.application)?;
        Some(inner.instant(expires))
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.handle
            .inner
            .state()
            .unregister(self.handle.space, self.application);
    }
}

#[async_trait]
impl Claimer for MemoryStore {
    async fn claim_leadership(
        &self,
        application: &str,
        unit: &str,
        duration: Duration,
    ) -> Result<Fence> {
        self.policy.check_claim(application, unit, duration)?;
        timer::ensure_running(&self.inner);
        let mut state = self.inner.state();
        let now = self.inner.now();
        let fence = state.claim(self.space, application, unit, nanos(duration), now);
        self.inner.flush(&mut state);
        let fence = fence?;
        self.inner.reschedule(&mut state);
        Ok(fence)
    }

    async fn block_until_leadership_released(
        &self,
        application: &str,
        cancel: CancellationToken,
    ) -> Result<()> {
        self.policy.check_application(application)?;
        let Some(waiter) = self.register(application) else {
            return Ok(());
        };
        loop {
            // Created before the check: a release between the check and the await still wakes
            // it, since `notify_waiters` reaches every `Notified` that exists.
            let notified = waiter.registration.notify.notified();
            if waiter.released() {
                return Ok(());
            }
            timer::ensure_running(&self.inner);
            // The store's timer wakes waiters at expiry; the waiter's own sleep until the
            // expiry covers a timer whose runtime is shutting down (a store shared by several
            // runtimes), so an expiry is never missed.
            let expiry = waiter.expiry();
            let at_expiry = async {
                match expiry {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(Error::BlockCancelled),
                () = notified => {}
                () = at_expiry => {}
            }
        }
    }
}

#[async_trait]
impl Revoker for MemoryStore {
    async fn revoke_leadership(&self, application: &str, unit: &str) -> Result<()> {
        self.policy.check_member(application, unit)?;
        let mut state = self.inner.state();
        let now = self.inner.now();
        let revoked = state.revoke(self.space, application, unit, now);
        self.inner.flush(&mut state);
        revoked
    }
}

#[async_trait]
impl Pinner for MemoryStore {
    async fn pin_leadership(&self, application: &str, entity: &str) -> Result<()> {
        self.policy.check_pin(application, entity)?;
        let mut state = self.inner.state();
        let now = self.inner.now();
        let pinned = state.pin(self.space, application, entity, now);
        self.inner.flush(&mut state);
        pinned
    }

    async fn unpin_leadership(&self, application: &str, entity: &str) -> Result<()> {
        self.policy.check_pin(application, entity)?;
        timer::ensure_running(&self.inner);
        let mut state = self.inner.state();
        let now = self.inner.now();
        let unpinned = state.unpin(self.space, application, entity, now);
        self.inner.flush(&mut state);
        unpinned?;
        self.inner.reschedule(&mut state);
        Ok(())
    }

    async fn pinned_leadership(&self) -> Result<BTreeMap<String, Vec<String>>> {
        Ok(self.inner.state().pinned(self.space))
    }
}

#[async_trait]
impl Reader for MemoryStore {
    async fn leaders(&self) -> Result<BTreeMap<String, String>> {
        let state = self.inner.state();
        Ok(state.leaders(self.space, self.inner.now()))
    }
}

#[async_trait]
impl Watcher for MemoryStore {
    async fn watch_leaders(&self) -> Result<LeaderStream> {
        Ok(self.watch(None))
    }

    async fn watch_leader(&self, application: &str) -> Result<LeaderStream> {
        self.policy.check_application(application)?;
        Ok(self.watch(Some(application)))
    }
}

impl MemoryStore {
    /// Subscribes and reads the snapshot under the store's one lock, so no change falls
    /// between them (O1); the store's timer reports expiries as they happen (O2).
    fn watch(&self, application: Option<&str>) -> LeaderStream {
        timer::ensure_running(&self.inner);
        let mut state = self.inner.state();
        // Leases that expired but were not collected yet are left out: the snapshot is exact.
        let now = self.inner.now();
        state.journal.on = true;
        let subscription = self.inner.hub.subscribe(&self.name, application);
        let snapshot = state.leaders_with_fences(self.space, now);
        drop(state);
        Box::pin(MemoryWatch {
            events: subscription.start(snapshot, None),
            store: Arc::downgrade(&self.inner),
        })
    }
}

/// A watch stream of the memory store: each poll makes sure the store's expiry timer runs
/// (on the consumer's runtime if the one that ran it went away), so expiries are reported
/// (O2) even on a store shared by several runtimes.
struct MemoryWatch {
    events: LeaderStream,
    store: std::sync::Weak<Inner>,
}

impl futures_core::Stream for MemoryWatch {
    type Item = LeaderEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<LeaderEvent>> {
        if let Some(inner) = self.store.upgrade() {
            timer::ensure_running(&inner);
        }
        self.events.as_mut().poll_next(cx)
    }
}

impl Checker for MemoryStore {
    fn leadership_check(&self, application: &str, unit: &str) -> Box<dyn Token> {
        Box::new(MemoryToken {
            handle: self.clone(),
            application: application.into(),
            unit: unit.into(),
        })
    }
}

/// A token of the memory store: each check looks the lease up at that moment (K1, K2).
struct MemoryToken {
    handle: MemoryStore,
    application: Box<str>,
    unit: Box<str>,
}

#[async_trait]
impl Token for MemoryToken {
    async fn check(&self) -> Result<Fence> {
        self.handle.check_now(&self.application, &self.unit)
    }
}
