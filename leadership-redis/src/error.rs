//! The one mapping from redis errors to [`leadership_core::Error`].

use std::fmt;

use leadership_core::Error;
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// The backend name in every error of this crate.
pub(crate) const BACKEND: &str = "redis";

/// Refused, dropped, timed out or a server that cannot serve right now → `Unavailable`
/// (retryable); anything else (auth, permissions, script errors, wrong types) → `Backend`.
///
/// The redis error becomes the source as a [`Cause`], so that the chain names the cause once.
pub(crate) fn map_redis_error(operation: &'static str, err: RedisError) -> Error {
    if is_transient(&err) {
        Error::unavailable(BACKEND, operation, Cause(err))
    } else {
        Error::backend(BACKEND, operation, Cause(err))
    }
}

/// A redis error as the source of ours, its message said once (issue 19.5).
///
/// A `RedisError` that wraps another error (I/O, a server's reply, a parse failure) displays
/// exactly that error's message *and* returns it from `source()`, so a chain walked to the
/// end printed `Connection refused (os error 111): Connection refused (os error 111)`. The
/// cause displays the redis error's message and continues the chain from the wrapped
/// error's own source (e.g. rustls's error inside an I/O error), skipping the repeat.
#[derive(Debug)]
pub(crate) struct Cause(RedisError);

impl Cause {
    pub(crate) fn new(err: RedisError) -> Self {
        Cause(err)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // Every wrapped error is displayed by the redis error itself: skip it.
        std::error::Error::source(&self.0).and_then(std::error::Error::source)
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

/// A claim that fewer replicas acknowledged than the store waits for.
#[derive(Debug, thiserror::Error)]
#[error("the claim reached {acked} of {wanted} replicas in time")]
pub(crate) struct NotReplicated {
    pub(crate) wanted: u32,
    pub(crate) acked: u32,
}

/// A reply of a shape the scripts never produce (someone else wrote our keys?).
#[derive(Debug, thiserror::Error)]
#[error("unexpected reply from redis: {0}")]
pub(crate) struct BadReply(pub(crate) String);

#[cfg(test)]
mod tests {
    use super::*;

    /// The error and its sources, joined as the CLI prints them.
    fn chain(err: &Error) -> String {
        let mut text = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    #[test]
    fn the_chain_names_each_cause_once() {
        let refused = RedisError::from(std::io::Error::from_raw_os_error(111));
        assert_eq!(
            chain(&map_redis_error("claim", refused)),
            "redis store unavailable during claim: Connection refused (os error 111)"
        );
        let custom = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            BadReply("inner".into()),
        ));
        let text = chain(&map_redis_error("check", custom));
        assert_eq!(text.matches("inner").count(), 1, "{text}");
        let general = RedisError::from((ErrorKind::Io, "Connection dropped"));
        let text = chain(&map_redis_error("check", general));
        assert_eq!(text.matches("Connection dropped").count(), 1, "{text}");
    }

    /// Issue 19.5: an unreachable server, as the CLI prints it: the cause exactly once.
    #[tokio::test]
    async fn an_unreachable_connect_names_the_cause_once() {
        let err = crate::RedisStore::connect("redis://127.0.0.1:1?timeout=1s")
            .await
            .expect_err("nothing listens on port 1");
        assert!(err.is_retryable(), "{err:?}");
        let text = chain(&err);
        println!("{text}");
        assert_eq!(
            text,
            "redis store unavailable during connect: Connection refused (os error 111)"
        );
    }

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
