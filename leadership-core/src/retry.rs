//! One backoff and one timeout for every store and the tracker (E1, S4, T7).
//!
//! - [`Backoff`]: exponential from a floor, capped at a ceiling, with "equal jitter" (a random
//!   delay in the upper half of each step, never below the floor), so many clients that lost
//!   one server at once do not come back in lockstep.
//! - [`within`]: runs an operation until it succeeds, fails with an error that is not
//!   [`Error::is_retryable`], or the operation timeout ends; then the last retryable error is
//!   returned (or [`Error::Unavailable`] naming the timeout if no attempt finished). This is the
//!   one path every remote store's operations go through (S4).
//!
//! ```
//! use std::time::Duration;
//! use leadership_core::{Error, retry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut calls = 0;
//! let answer = retry::within("example", "claim", Duration::from_secs(1), || {
//!     calls += 1;
//!     let attempt = calls;
//!     async move {
//!         if attempt < 3 {
//!             Err(Error::unavailable("example", "claim", "connection refused"))
//!         } else {
//!             Ok(attempt)
//!         }
//!     }
//! })
//! .await;
//! assert_eq!(answer.unwrap(), 3);
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::{Error, Result};

/// Jittered exponential backoff (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Backoff {
    floor: Duration,
    ceiling: Duration,
    failures: u32,
}

impl Backoff {
    /// The backoff the remote stores use between attempts of one operation: 10 ms to 500 ms.
    pub const STORE: (Duration, Duration) = (Duration::from_millis(10), Duration::from_millis(500));

    /// A backoff from `floor` to `ceiling` (a ceiling below the floor is raised to it).
    pub fn new(floor: Duration, ceiling: Duration) -> Backoff {
        Backoff {
            floor,
            ceiling: ceiling.max(floor),
            failures: 0,
        }
    }

    /// The backoff for a store operation's retries ([`Backoff::STORE`]).
    pub fn store() -> Backoff {
        Backoff::new(Backoff::STORE.0, Backoff::STORE.1)
    }

    /// Counts a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.delay_after(self.failures)
    }

    /// The jittered delay after `failures` consecutive failures (1 for the first), without
    /// counting: for callers that keep their own count.
    pub fn delay_after(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(20);
        let step = self.floor.saturating_mul(1 << exponent).min(self.ceiling);
        let low = (step / 2).max(self.floor);
        if low >= step {
            return step;
        }
        rand::rng().random_range(low..=step)
    }

    /// Failures counted since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Starts again from the floor (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Runs `op` until it succeeds or fails for good, retrying retryable errors with
/// [`Backoff::store`] until `timeout` has passed since the call (E1, S4).
///
/// Each attempt is cut at the deadline.
///
/// # Errors
/// The first error that is not retryable; after the deadline the last retryable error, or
/// [`Error::Unavailable`] for `backend` and `operation` if the deadline cut an attempt short.
pub async fn within<T, F, Fut>(
    backend: &'static str,
    operation: &'static str,
    timeout: Duration,
    mut op: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut backoff = Backoff::store();
    loop {
        let err = match timeout_at(deadline, op()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) if !err.is_retryable() => return Err(err),
            Ok(Err(err)) => err,
            Err(_) => return Err(timed_out(backend, operation, timeout)),
        };
        let wake = Instant::now() + backoff.next_delay();
        if wake >= deadline {
            return Err(err);
        }
        tracing::debug!(backend, operation, error = %err, attempt = backoff.failures(), "retrying");
        sleep_until(wake).await;
    }
}

/// Runs one attempt of `fut`, cut at `timeout` (E1): the one timeout helper of the stores.
///
/// # Errors
/// What `fut` returns; [`Error::Unavailable`] for `backend` and `operation` if it took longer.
pub async fn timeout<T>(
    backend: &'static str,
    operation: &'static str,
    timeout: Duration,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result,
        Err(_) => Err(timed_out(backend, operation, timeout)),
    }
}

/// The cause of an operation that ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("no answer within the operation timeout of {0:?}")]
pub struct TimedOut(pub Duration);

fn timed_out(backend: &'static str, operation: &'static str, timeout: Duration) -> Error {
    Error::unavailable(backend, operation, TimedOut(timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_grows_within_floor_and_ceiling_with_jitter() {
        let floor = Duration::from_millis(10);
        let ceiling = Duration::from_millis(80);
        let mut backoff = Backoff::new(floor, ceiling);
        let mut steps = Vec::new();
        for _ in 0..8 {
            steps.push(backoff.next_delay());
        }
        assert_eq!(steps[0], floor);
        for (i, d) in steps.iter().enumerate() {
            let step = floor.saturating_mul(1 << i).min(ceiling);
            assert!(*d >= (step / 2).max(floor) && *d <= step, "{i}: {d:?}");
        }
        // Jitter: many draws at the ceiling are not all equal.
        let draws: std::collections::BTreeSet<_> = (0..50).map(|_| backoff.next_delay()).collect();
        assert!(draws.len() > 1, "{draws:?}");
        backoff.reset();
        assert_eq!(backoff.next_delay(), floor);
    }

    #[tokio::test(start_paused = true)]
    async fn within_retries_until_success() {
        let calls = AtomicU32::new(0);
        let result = within("t", "op", Duration::from_secs(5), || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 4 {
                    Err(Error::unavailable("t", "op", "refused"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn within_gives_up_at_the_deadline_with_the_last_error() {
        let start = Instant::now();
        let calls = AtomicU32::new(0);
        let err = within("t", "op", Duration::from_secs(2), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(Error::unavailable("t", "op", "refused")) }
        })
        .await
        .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(
            start.elapsed() <= Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(calls.load(Ordering::SeqCst) > 3);
    }

    #[tokio::test(start_paused = true)]
    async fn within_returns_a_final_error_at_once() {
        let calls = AtomicU32::new(0);
        let err = within("t", "op", Duration::from_secs(2), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(Error::ClaimDenied) }
        })
        .await
        .unwrap_err();
        assert!(err.is_claim_denied());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn within_cuts_a_hanging_attempt_at_the_deadline() {
        let start = Instant::now();
        let err = within("t", "op", Duration::from_secs(1), || {
            std::future::pending::<Result<()>>()
        })
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Unavailable {
                    operation: "op",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
