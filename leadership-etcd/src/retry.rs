//! The one retry path (E1, S4), core's: every operation, `connect`'s too, runs through
//! [`retry::within`] within the operation timeout, retrying retryable errors (a member that
//! refuses connections, goes away mid-call or has no leader) with core's jittered
//! [`Backoff`](leadership_core::retry::Backoff) on whatever members are reachable; only when
//! the time is up does it return `Unavailable`.

use std::future::Future;

use leadership_core::{Result, retry};

use crate::BACKEND;
use crate::store::EtcdStore;

impl EtcdStore {
    /// Runs one operation of this handle through [`retry::within`], within the operation
    /// timeout from now; running out of time is `Unavailable` naming `operation`.
    pub(crate) async fn run<T, F, Fut>(&self, operation: &'static str, attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        retry::within(BACKEND, operation, self.inner.shared.timeout, attempt).await
    }
}
