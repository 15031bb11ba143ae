//! The one retry path: every operation runs within the operation timeout, retrying what is retryable (E1, S4).

use std::future::Future;
use std::time::Duration;

use leadership_core::{Error, Result};
use tokio::time::Instant;

use crate::BACKEND;
use crate::error::{TimedOut, map_err};
use crate::store::EtcdStore;

pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(20);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Awaits an etcd call with a timeout, mapping both failures.
pub(crate) async fn within<T>(
    timeout: Duration,
    operation: &'static str,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(|e| map_err(operation, e)),
        Err(_) => Err(Error::unavailable(BACKEND, operation, TimedOut(timeout))),
    }
}

impl EtcdStore {
    /// Runs `attempt` until it succeeds, fails for good, or the operation timeout passes;
    /// retryable errors (a member going away mid-call) are retried with backoff.
    pub(crate) async fn run<T, F, Fut>(&self, operation: &'static str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let timeout = self.inner.shared.timeout;
        let deadline = Instant::now() + timeout;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, attempt()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(err)) if err.is_retryable() => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return Err(err);
                    }
                    tokio::time::sleep(backoff.min(remaining)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Ok(Err(err)) => return Err(err),
                Err(_) => {
                    return Err(Error::unavailable(BACKEND, operation, TimedOut(timeout)));
                }
            }
        }
    }
}
