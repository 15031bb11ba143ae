//! A handle on one namespace of a [`MemoryStore`](crate::MemoryStore): the contract's traits.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use leadership_core::{
    CancellationToken, Checker, Claimer, Error, Fence, Pinner, Policy, Reader, Result, Revoker,
    Token,
};

use crate::state::Registration;
use crate::store::{Inner, nanos};
use crate::timer;

/// A handle on one namespace of a [`MemoryStore`](crate::MemoryStore) (N1): cheap to clone,
/// implements every leadership trait, so `Arc<MemoryLeadership>` is an `Arc<dyn Leadership>`.
///
/// Every operation validates its input through the handle's policy (the store's unless opened
/// with [`MemoryStore::namespace_with_policy`](crate::MemoryStore::namespace_with_policy))
/// before touching state, so invalid input changes nothing (V). The store keys state by the
/// exact strings, so any names a policy admits stay apart (V5).
#[derive(Clone)]
pub struct MemoryLeadership {
    inner: Arc<Inner>,
    policy: Arc<dyn Policy>,
    space: u32,
    name: Arc<str>,
}

impl MemoryLeadership {
    pub(crate) fn new(
        inner: Arc<Inner>,
        policy: Arc<dyn Policy>,
        space: u32,
        name: &str,
    ) -> MemoryLeadership {
        MemoryLeadership {
            inner,
            policy,
            space,
            name: name.into(),
        }
    }

    /// The namespace this handle works in.
    pub fn namespace(&self) -> &str {
        &self.name
    }

    /// The validation policy of this handle.
    pub fn policy(&self) -> &Arc<dyn Policy> {
        &self.policy
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
        let registration = state.register(self.space, application, self.inner.now())?;
        drop(state);
        Some(Waiter {
            handle: self,
            application,
            registration,
        })
    }
}

impl fmt::Debug for MemoryLeadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLeadership")
            .field("namespace", &self.name)
            .finish_non_exhaustive()
    }
}

/// A blocked waiter's registration; dropping it (return or a dropped future) unregisters (B3).
struct Waiter<'a> {
    handle: &'a MemoryLeadership,
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
impl Claimer for MemoryLeadership {
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
        let fence = state.claim(self.space, application, unit, nanos(duration), now)?;
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
impl Revoker for MemoryLeadership {
    async fn revoke_leadership(&self, application: &str, unit: &str) -> Result<()> {
        self.policy.check_member(application, unit)?;
        let mut state = self.inner.state();
        let now = self.inner.now();
        state.revoke(self.space, application, unit, now)
    }
}

#[async_trait]
impl Pinner for MemoryLeadership {
    async fn pin_leadership(&self, application: &str, entity: &str) -> Result<()> {
        self.policy.check_pin(application, entity)?;
        let mut state = self.inner.state();
        let now = self.inner.now();
        state.pin(self.space, application, entity, now)
    }

    async fn unpin_leadership(&self, application: &str, entity: &str) -> Result<()> {
        self.policy.check_pin(application, entity)?;
        timer::ensure_running(&self.inner);
        let mut state = self.inner.state();
        let now = self.inner.now();
        state.unpin(self.space, application, entity, now)?;
        self.inner.reschedule(&mut state);
        Ok(())
    }

    async fn pinned_leadership(&self) -> Result<BTreeMap<String, Vec<String>>> {
        Ok(self.inner.state().pinned(self.space))
    }
}

#[async_trait]
impl Reader for MemoryLeadership {
    async fn leaders(&self) -> Result<BTreeMap<String, String>> {
        let state = self.inner.state();
        Ok(state.leaders(self.space, self.inner.now()))
    }
}

impl Checker for MemoryLeadership {
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
    handle: MemoryLeadership,
    application: Box<str>,
    unit: Box<str>,
}

#[async_trait]
impl Token for MemoryToken {
    async fn check(&self) -> Result<Fence> {
        self.handle.check_now(&self.application, &self.unit)
    }
}
