//! The one mapping from redis errors to [`leadership_core::Error`].

use leadership_core::Error;
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// The backend name in every error of this crate.
pub(crate) const BACKEND: &str = "redis";

/// Refused, dropped, timed out or a server that cannot serve right now → `Unavailable`
/// (retryable); anything else (auth, permissions, script errors, wrong types) → `Backend`.
pub(crate) fn map_redis_error(operation: &'static str, err: RedisError) -> Error {
    if is_transient(&err) {
        Error::unavailable(BACKEND, operation, err)
    } else {
        Error::backend(BACKEND, operation, err)
    }
}

fn is_transient(err: &RedisError) -> bool {
    if err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
    {
        return true;
    }
    if matches!(
        err.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask
        )
    ) {
        return true;
    }
    // A long-running script elsewhere blocks the server: try again later.
    matches!(err.code(), Some("BUSY" | "LOADING"))
}

/// The operation did not finish within the store's operation timeout (E1).
#[derive(Debug, thiserror::Error)]
#[error("no answer from redis within {0:?}")]
pub(crate) struct TimedOut(pub(crate) std::time::Duration);

/// A reply of a shape the scripts never produce (someone else wrote our keys?).
#[derive(Debug, thiserror::Error)]
#[error("unexpected reply from redis: {0}")]
pub(crate) struct BadReply(pub(crate) String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_retryable_server_errors_are_not() {
        let refused = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert!(map_redis_error("claim", refused).is_retryable());
        let wrong_type = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "WRONGTYPE",
        ));
        assert!(!map_redis_error("claim", wrong_type).is_retryable());
        let loading =
            RedisError::from((ErrorKind::Server(ServerErrorKind::BusyLoading), "loading"));
        assert!(map_redis_error("check", loading).is_retryable());
    }
}
