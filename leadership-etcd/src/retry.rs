//! The one retry path (E1, S4): every operation, `connect`'s too, runs within the operation
//! timeout, retrying retryable errors (a member that refuses connections, goes away mid-call
//! or has no leader) with jittered backoff on whatever members are reachable; only when the
//! time is up does it return `Unavailable`.

use std::future::Future;
use std::time::Duration;

use leadership_core::{Error, Result};
use tokio::time::Instant;

use crate::BACKEND;
use crate::error::TimedOut;
use crate::store::EtcdStore;

const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Exponential backoff with jitter: each pause is drawn from [½, 1] × the current step, so
/// callers that failed together do not retry together. The lead engineer will move one such
/// helper into core for every store and the tracker (issue 13.5); until then it lives here.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    step: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            step: FIRST_BACKOFF,
        }
    }

    /// The next pause; the step doubles up to [`MAX_BACKOFF`].
    pub(crate) fn next_pause(&mut self) -> Duration {
        let pause = self.step.mul_f64(0.5 + rand::random::<f64>() / 2.0);
        self.step = (self.step * 2).min(MAX_BACKOFF);
        pause
    }

    /// Back to the first step, after progress.
    pub(crate) fn reset(&mut self) {
        self.step = FIRST_BACKOFF;
    }
}

/// Runs `attempt` until it succeeds, fails with an error that is not retryable, or
/// `deadline` passes. An attempt still running at the deadline is dropped and `timed_out()`
/// returned; a retryable error with no time left to retry is returned as it is (it says more
/// than "timed out").
pub(crate) async fn retry_until<T, F, Fut>(
    deadline: Instant,
    timed_out: impl FnOnce() -> Error,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut backoff = Backoff::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let err = match tokio::time::timeout(remaining, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) if err.is_retryable() => err,
            Ok(Err(err)) => return Err(err),
            Err(_) => return Err(timed_out()),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let pause = backoff.next_pause();
        if pause >= remaining {
            return Err(err);
        }
        tracing::debug!(error = %err, ?pause, "etcd: retrying");
        tokio::time::sleep(pause).await;
    }
}

impl EtcdStore {
    /// Runs one operation of this handle through [`retry_until`], within the operation
    /// timeout from now; running out of time is `Unavailable` naming `operation`.
    pub(crate) async fn run<T, F, Fut>(&self, operation: &'static str, attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let timeout = self.inner.shared.timeout;
        let timed_out = || Error::unavailable(BACKEND, operation, TimedOut(timeout));
        retry_until(Instant::now() + timeout, timed_out, attempt).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn backoff_is_jittered_and_capped() {
        let mut backoff = Backoff::new();
        let mut step = FIRST_BACKOFF;
        for _ in 0..12 {
            let pause = backoff.next_pause();
            assert!(pause >= step / 2 && pause <= step, "{pause:?} for {step:?}");
            step = (step * 2).min(MAX_BACKOFF);
        }
        backoff.reset();
        assert!(backoff.next_pause() <= FIRST_BACKOFF);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_retryable_errors_until_the_deadline() {
        let calls = AtomicUsize::new(0);
        let started = Instant::now();
        let result: Result<()> = retry_until(
            started + Duration::from_secs(2),
            || Error::unavailable(BACKEND, "test", TimedOut(Duration::from_secs(2))),
            || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(Error::unavailable(BACKEND, "test", "refused"))
            },
        )
        .await;
        assert!(
            matches!(result, Err(Error::Unavailable { .. })),
            "{result:?}"
        );
        assert!(calls.load(Ordering::Relaxed) > 4);
        assert!(started.elapsed() <= Duration::from_secs(2));

        // Success after failures; an error that is not retryable ends at once.
        let calls = AtomicUsize::new(0);
        let value = retry_until(
            Instant::now() + Duration::from_secs(2),
            || Error::Stopped { what: "test" },
            || async {
                match calls.fetch_add(1, Ordering::Relaxed) {
                    0..3 => Err(Error::unavailable(BACKEND, "test", "refused")),
                    n => Ok(n),
                }
            },
        )
        .await;
        assert_eq!(value.ok(), Some(3));
        let calls = AtomicUsize::new(0);
        let denied: Result<()> = retry_until(
            Instant::now() + Duration::from_secs(2),
            || Error::Stopped { what: "test" },
            || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(Error::ClaimDenied)
            },
        )
        .await;
        assert!(matches!(denied, Err(Error::ClaimDenied)));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }
}
