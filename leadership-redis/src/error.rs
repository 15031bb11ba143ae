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

/// A TLS handshake the client refused (unknown issuer, bad name, expired certificate): rustls
/// reports it inside an I/O error, but trying again cannot help.
#[cfg(feature = "tls")]
fn is_tls_refusal(err: &RedisError) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    // The redis crate keeps an I/O error as an `Arc<dyn Error>` around the `io::Error`, which
    // holds rustls's error.
    let Some(shared) = std::error::Error::source(err).and_then(|s| s.downcast_ref::<Shared>())
    else {
        return false;
    };
    let inner: &(dyn std::error::Error + 'static) = &**shared;
    inner
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        .is_some_and(|tls| tls.is::<rustls::Error>())
}

#[cfg(not(feature = "tls"))]
fn is_tls_refusal(_err: &RedisError) -> bool {
    false
}

fn is_transient(err: &RedisError) -> bool {
    if is_tls_refusal(err) {
        return false;
    }
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

#[cfg(all(test, feature = "tls"))]
mod tls_tests {
    use super::*;

    #[test]
    fn certificate_refusals_are_not_retryable() {
        let refusal = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, refusal);
        assert!(!map_redis_error("connect", RedisError::from(io)).is_retryable());
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(map_redis_error("connect", RedisError::from(reset)).is_retryable());
    }
}
