//! A failure-injecting wrapper around any store.
//!
//! [`FaultyStore`] forwards every call to the store it wraps until told to fail; then calls
//! fail the way an unreachable store fails (E1): at once with
//! [`Error::Unavailable`], after a timeout, or with a
//! non-retryable [`Error::Backend`]. It records every claim
//! with its call start, end and result, so tests can assert on retries and timing.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use leadership_core::{Claimer, Leadership};
//! use leadership_testkit::{Fault, FaultyStore, MockLeadership};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut inner = MockLeadership::new();
//! inner.expect_claim_leadership().returning(|_, _, _| Ok(leadership_core::Fence(1)));
//! let store = FaultyStore::new(Arc::new(inner));
//!
//! store.fail(Fault::Unavailable);
//! let err = store.claim_leadership("app", "app/0", Duration::from_secs(1)).await.unwrap_err();
//! assert!(err.is_retryable());
//!
//! store.heal();
//! assert!(store.claim_leadership("app", "app/0", Duration::from_secs(1)).await.is_ok());
//! assert_eq!(store.claims().len(), 2);
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use leadership_core::{
    Checker, Claimer, Error, Fence, LeaderStream, Leadership, Pinner, Reader, Result, Revoker,
    Token, Watcher, async_trait,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::history::{History, RevokeCall};
use leadership_core::record::ClaimCall;

/// The name failures report as their backend.
const BACKEND: &str = "faulty";

/// How calls fail while a fault is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Every call fails at once with a retryable `Unavailable`, like a refused connection.
    Unavailable,
    /// Every call waits this long (or until healed, whichever is first), then fails with a
    /// retryable `Unavailable`, like a request that timed out (E1). The wrapped store is
    /// not called.
    Timeout(Duration),
    /// Every call fails at once with a non-retryable `Backend` error.
    Backend,
}

#[derive(Debug)]
struct Injected(Option<Fault>);

/// A store wrapper that fails on demand; see the [module docs](self).
pub struct FaultyStore {
    inner: Arc<dyn Leadership>,
    fault: watch::Sender<Injected>,
    claims: Mutex<Vec<ClaimCall>>,
    history: OnceLock<Arc<History>>,
}

impl std::fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStore")
            .field("fault", &self.fault.borrow().0)
            .finish_non_exhaustive()
    }
}

impl FaultyStore {
    /// Wraps `inner`; healthy until [`fail`](Self::fail) is called.
    pub fn new(inner: Arc<dyn Leadership>) -> Arc<Self> {
        Arc::new(FaultyStore {
            inner,
            fault: watch::Sender::new(Injected(None)),
            claims: Mutex::new(Vec::new()),
            history: OnceLock::new(),
        })
    }

    /// Records every later claim and revoke call in `history` as well, timed around the
    /// call to the wrapped store, for its C4 check. The first history given is kept.
    pub fn record_into(&self, history: Arc<History>) {
        let _ = self.history.set(history);
    }

    /// Makes every later call fail as `fault` says.
    pub fn fail(&self, fault: Fault) {
        self.fault.send_replace(Injected(Some(fault)));
    }

    /// Makes calls reach the wrapped store again; calls waiting in a [`Fault::Timeout`]
    /// fail at once.
    pub fn heal(&self) {
        self.fault.send_replace(Injected(None));
    }

    /// The fault now injected, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.fault.borrow().0
    }

    /// Every claim seen so far, in call order.
    pub fn claims(&self) -> Vec<ClaimCall> {
        self.log().clone()
    }

    fn log(&self) -> MutexGuard<'_, Vec<ClaimCall>> {
        self.claims.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Err` if a fault is injected now, after its delay.
    async fn gate(&self, operation: &'static str) -> Result<()> {
        check_fault(&self.fault, operation).await
    }
}

async fn check_fault(fault: &watch::Sender<Injected>, operation: &'static str) -> Result<()> {
    let injected = fault.borrow().0;
    match injected {
        None => Ok(()),
        Some(Fault::Unavailable) => Err(Error::unavailable(
            BACKEND,
            operation,
            "injected fault: connection refused",
        )),
        Some(Fault::Backend) => Err(Error::backend(
            BACKEND,
            operation,
            "injected fault: unexpected reply",
        )),
        Some(Fault::Timeout(timeout)) => {
            let mut rx = fault.subscribe();
            // Either the timeout passes or the fault is healed; the call fails either way,
            // as a request already sent into a dead connection would.
            let _ = tokio::time::timeout(timeout, rx.wait_for(|i| i.0.is_none())).await;
            Err(Error::unavailable(
                BACKEND,
                operation,
                "injected fault: request timed out",
            ))
        }
    }
}

#[async_trait]
impl Claimer for FaultyStore {
    async fn claim_leadership(
        &self,
        application: &str,
        unit: &str,
        duration: Duration,
    ) -> Result<Fence> {
        let call = ClaimCall::time(application, unit, duration, async {
            self.gate("claim").await?;
            self.inner
                .claim_leadership(application, unit, duration)
                .await
        })
        .await;
        let result = call.result.clone();
        if let Some(history) = self.history.get() {
            history.claim(call.clone());
        }
        self.log().push(call);
        result
    }

    async fn block_until_leadership_released(
        &self,
        application: &str,
        cancel: CancellationToken,
    ) -> Result<()> {
        self.gate("block").await?;
        self.inner
            .block_until_leadership_released(application, cancel)
            .await
    }
}

impl Checker for FaultyStore {
    fn leadership_check(&self, application: &str, unit: &str) -> Box<dyn Token> {
        Box::new(FaultyToken {
            inner: self.inner.leadership_check(application, unit),
            fault: self.fault.clone(),
        })
    }
}

/// A token whose checks fail while its store's fault is injected.
struct FaultyToken {
    inner: Box<dyn Token>,
    fault: watch::Sender<Injected>,
}

#[async_trait]
impl Token for FaultyToken {
    async fn check(&self) -> Result<Fence> {
        check_fault(&self.fault, "check").await?;
        self.inner.check().await
    }
}

#[async_trait]
impl Revoker for FaultyStore {
    async fn revoke_leadership(&self, application: &str, unit: &str) -> Result<()> {
        let started = Instant::now();
        self.gate("revoke").await?;
        let result = self.inner.revoke_leadership(application, unit).await;
        if let Some(history) = self.history.get() {
            history.revoke(RevokeCall {
                application: application.to_owned(),
                unit: unit.to_owned(),
                started,
                ok: result.is_ok(),
            });
        }
        result
    }
}

#[async_trait]
impl Pinner for FaultyStore {
    async fn pin_leadership(&self, application: &str, entity: &str) -> Result<()> {
        self.gate("pin").await?;
        self.inner.pin_leadership(application, entity).await
    }

    async fn unpin_leadership(&self, application: &str, entity: &str) -> Result<()> {
        self.gate("unpin").await?;
        self.inner.unpin_leadership(application, entity).await
    }

    async fn pinned_leadership(&self) -> Result<BTreeMap<String, Vec<String>>> {
        self.gate("pinned").await?;
        self.inner.pinned_leadership().await
    }
}

#[async_trait]
impl Reader for FaultyStore {
    async fn leaders(&self) -> Result<BTreeMap<String, String>> {
        self.gate("leaders").await?;
        self.inner.leaders().await
    }
}

/// Opening a watch passes the gate; a stream already open keeps following the wrapped store.
#[async_trait]
impl Watcher for FaultyStore {
    async fn watch_leaders(&self) -> Result<LeaderStream> {
        self.gate("watch").await?;
        self.inner.watch_leaders().await
    }

    async fn watch_leader(&self, application: &str) -> Result<LeaderStream> {
        self.gate("watch").await?;
        self.inner.watch_leader(application).await
    }
}
