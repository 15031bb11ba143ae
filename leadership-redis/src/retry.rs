//! One retry path for every operation (S4, E1): a retryable error (refused, dropped,
//! timed out, a server loading or failing over) is tried again, with core's jittered
//! [`Backoff::store`], until the operation timeout ends; only then is it `Unavailable`.
//!
//! Not [`leadership_core::retry::within`]: Redis needs two things it does not do. An attempt
//! that must not run twice (a caller's guarded script) is resent only after errors that prove
//! it did not run, which only the driver's error says; and an idempotent attempt that hangs
//! on a half-open connection is abandoned after a third of the budget and sent again.

use std::future::Future;
use std::time::Duration;

use leadership_core::retry::Backoff;
use leadership_core::{Error, Result};
use redis::{RedisError, RedisResult, ServerErrorKind};
use tokio::time::Instant;

use crate::error::{BACKEND, TimedOut};

/// The least time an idempotent attempt gets before it is abandoned and sent again.
const ATTEMPT_MIN: Duration = Duration::from_millis(250);

/// Whether an operation may be sent again after an error that leaves its outcome unknown
/// (the connection dropped after the command was written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Running it twice is the same as once: claims (C2, E2), checks, reads, revokes (R3),
    /// pins (P2), guarded set and delete.
    Idempotent,
    /// A caller's guarded script may not be idempotent: only errors that prove it did not
    /// run (no connection could be made, the server refused to run anything yet) are
    /// retried.
    AtMostOnce,
}

/// Runs `attempt` until it succeeds, fails with an error that retrying cannot mend (mapped
/// by `map`), or `timeout` ends: then `Unavailable` with the last error, or [`TimedOut`] if
/// the last attempt was still waiting.
pub(crate) async fn retrying<T, F, Fut>(
    operation: &'static str,
    timeout: Duration,
    retry: Retry,
    map: impl Fn(RedisError) -> Error,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = RedisResult<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut backoff = Backoff::store();
    loop {
        // An idempotent attempt that hangs (a request sent on a connection that died without
        // a reset) is abandoned after a part of the budget and sent again; one that must not
        // run twice gets all that is left.
        let attempt_deadline = match retry {
            Retry::Idempotent => deadline.min(Instant::now() + (timeout / 3).max(ATTEMPT_MIN)),
            Retry::AtMostOnce => deadline,
        };
        let err = match tokio::time::timeout_at(attempt_deadline, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) => err,
            Err(_) if attempt_deadline < deadline => {
                tracing::debug!(operation, "redis operation got no answer; retrying");
                continue;
            }
            Err(_) => return Err(Error::unavailable(BACKEND, operation, TimedOut(timeout))),
        };
        let may_resend = retry == Retry::Idempotent || did_not_run(&err);
        let mapped = map(err);
        if !mapped.is_retryable() || !may_resend {
            return Err(mapped);
        }
        let delay = backoff.next_delay();
        if Instant::now() + delay >= deadline {
            return Err(mapped);
        }
        tracing::debug!(error = %mapped, operation, ?delay, "redis operation failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

/// The backoff of the long-lived loops (the subscriber's reconnects, a blocked waiter's and
/// the watch timer's looks after an error): 50 ms to 2 s, gentler than an operation's.
pub(crate) fn background_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_secs(2))
}

/// Errors after which the command surely did not run: no connection could be made, or the
/// server answered that it runs nothing right now.
fn did_not_run(err: &RedisError) -> bool {
    err.is_connection_refusal()
        || matches!(
            err.kind(),
            redis::ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
            )
        )
        || matches!(err.code(), Some("BUSY" | "LOADING"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn dropped() -> RedisError {
        RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    }

    fn refused() -> RedisError {
        RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    }

    /// Fails with `errors` in turn, then succeeds; counts the attempts.
    async fn run(retry: Retry, errors: Vec<RedisError>, timeout: Duration) -> (Result<u8>, usize) {
        let attempts = Cell::new(0);
        let result = retrying(
            "claim",
            timeout,
            retry,
            |e| crate::error::map_redis_error("claim", e),
            || {
                let n = attempts.get();
                attempts.set(n + 1);
                let reply = errors.get(n).cloned().map_or(Ok(7), Err);
                async move { reply }
            },
        )
        .await;
        (result, attempts.get())
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_errors_are_retried_within_the_timeout() {
        let second = Duration::from_secs(1);
        let (result, attempts) = run(Retry::Idempotent, vec![dropped(), refused()], second).await;
        assert_eq!((result.ok(), attempts), (Some(7), 3));
        // Refusals only, for longer than the timeout: Unavailable with the refusal.
        let (result, attempts) = run(Retry::Idempotent, vec![refused(); 1_000], second).await;
        let err = result.expect_err("never answers");
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        assert!(attempts > 3 && attempts < 1_000, "{attempts}");
        // A refusal that retrying cannot mend is returned at once.
        let wrongtype = RedisError::from((
            redis::ErrorKind::Server(ServerErrorKind::ResponseError),
            "WRONGTYPE",
        ));
        let (result, attempts) = run(Retry::Idempotent, vec![wrongtype], second).await;
        assert!(matches!(result, Err(Error::Backend { .. })));
        assert_eq!(attempts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_once_resends_only_what_surely_did_not_run() {
        let second = Duration::from_secs(1);
        let (result, attempts) = run(Retry::AtMostOnce, vec![refused(), refused()], second).await;
        assert_eq!((result.ok(), attempts), (Some(7), 3));
        let (result, attempts) = run(Retry::AtMostOnce, vec![dropped()], second).await;
        assert!(matches!(result, Err(Error::Unavailable { .. })));
        assert_eq!(attempts, 1, "a drop after sending may have run the script");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_idempotent_attempt_is_sent_again() {
        let attempts = Cell::new(0);
        let result = retrying(
            "check",
            Duration::from_secs(3),
            Retry::Idempotent,
            |e| crate::error::map_redis_error("check", e),
            || {
                attempts.set(attempts.get() + 1);
                let hang = attempts.get() == 1;
                async move {
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, RedisError>(1)
                }
            },
        )
        .await;
        assert_eq!((result.ok(), attempts.get()), (Some(1), 2));
    }
}
