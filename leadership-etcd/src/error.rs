//! The one mapping from etcd-client errors to [`leadership_core::Error`].

use leadership_core::{Cause, Error};

use crate::BACKEND;

/// gRPC status codes that mean "try again": the server or the path to it was busy, gone or
/// too slow (etcd 3.4 answers `Unavailable` for "request timed out", "leader changed" and
/// "no leader"). Numbers from the gRPC spec, which tonic's `Code` mirrors.
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;
const DEADLINE_EXCEEDED: i32 = 4;
const NOT_FOUND: i32 = 5;
const RESOURCE_EXHAUSTED: i32 = 8;
const ABORTED: i32 = 10;
const UNAVAILABLE: i32 = 14;

/// The one mapping from an etcd-client error: refused, dropped or timed-out →
/// [`Error::Unavailable`] (retryable); everything else → [`Error::Backend`]. Either way the
/// source is a [`Cause`]: one short line for people, with the client's error behind it.
pub(crate) fn map_err(operation: &'static str, err: etcd_client::Error) -> Error {
    if is_transient(&err) {
        Error::unavailable(BACKEND, operation, cause(err))
    } else {
        Error::backend(BACKEND, operation, cause(err))
    }
}

/// A connect-time failure, saying what went wrong in words.
pub(crate) fn connect_error(err: etcd_client::Error, endpoints: &str, user: Option<&str>) -> Error {
    if is_auth_error(&err) {
        let who = user.unwrap_or("");
        let denied = matches!(&err, etcd_client::Error::GRpcStatus(status)
            if status.message().contains("permission denied"));
        let message = if denied {
            format!(
                "etcd at {endpoints} denied user {who:?} access to this namespace's keys: \
                 grant its role read and write on the namespace's key prefix"
            )
        } else {
            format!(
                "etcd at {endpoints} refused user {who:?}: wrong user or password, or auth is \
                 not set up for it"
            )
        };
        let detail = Detail {
            message,
            source: Some(cause(err)),
        };
        return Error::backend(BACKEND, "connect", detail);
    }
    if is_tls_refusal(&err) {
        let detail = Detail {
            message: format!(
                "etcd at {endpoints} presented a certificate this client does not trust: \
                 check the CA file (?ca=)"
            ),
            source: Some(cause(err)),
        };
        return Error::backend(BACKEND, "connect", detail);
    }
    let transient = is_transient(&err);
    let detail = Detail {
        message: format!("cannot reach etcd at {endpoints}"),
        source: Some(cause(err)),
    };
    if transient {
        Error::unavailable(BACKEND, "connect", detail)
    } else {
        Error::backend(BACKEND, "connect", detail)
    }
}

/// What an etcd call failed with, as core's [`Cause`]: one short line of this crate's words,
/// the gRPC code and the server's message (`unavailable: tcp connect error`) or what the
/// transport said, with the client's own error (whose text is tonic's `Debug` output) behind
/// it as [`source()`](std::error::Error::source). [`Error::one_line`] stops at it.
pub(crate) fn cause(err: etcd_client::Error) -> Cause {
    Cause::new(summarize(&err), err)
}

/// One line: gRPC `code: message`, or the variant's own words without the client's prefix.
fn summarize(err: &etcd_client::Error) -> String {
    use etcd_client::Error as E;
    let text = match err {
        E::GRpcStatus(status) => {
            let code = code_name(status.code() as i32);
            match status.message().trim() {
                "" => code.to_owned(),
                message => format!("{code}: {message}"),
            }
        }
        E::TransportError(transport) => format!("transport: {}", innermost(transport)),
        E::IoError(io) => format!("i/o: {io}"),
        E::WatchError(message) => format!("watch: {message}"),
        E::LeaseKeepAliveError(message) => format!("lease keep-alive: {message}"),
        other => other.to_string(),
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The deepest cause's text: tonic's outer layers say only "transport error".
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest = err;
    while let Some(next) = deepest.source() {
        deepest = next;
    }
    deepest.to_string()
}

/// gRPC code names as the spec writes them, lower-cased.
fn code_name(code: i32) -> &'static str {
    match code {
        0 => "ok",
        CANCELLED => "cancelled",
        UNKNOWN => "unknown",
        3 => "invalid argument",
        DEADLINE_EXCEEDED => "deadline exceeded",
        NOT_FOUND => "not found",
        6 => "already exists",
        7 => "permission denied",
        RESOURCE_EXHAUSTED => "resource exhausted",
        9 => "failed precondition",
        ABORTED => "aborted",
        11 => "out of range",
        12 => "unimplemented",
        13 => "internal",
        UNAVAILABLE => "unavailable",
        15 => "data loss",
        16 => "unauthenticated",
        _ => "grpc error",
    }
}

pub(crate) fn is_transient(err: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    if is_tls_refusal(err) {
        return false;
    }
    match err {
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) | E::LeaseKeepAliveError(_) => true,
        E::GRpcStatus(status) => matches!(
            status.code() as i32,
            CANCELLED | UNKNOWN | DEADLINE_EXCEEDED | RESOURCE_EXHAUSTED | ABORTED | UNAVAILABLE
        ),
        _ => false,
    }
}

/// True if the client refused the server's TLS certificate. Retrying cannot help. tonic
/// reports it as an "unavailable" status whose message is rustls's, so the message decides.
pub(crate) fn is_tls_refusal(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::GRpcStatus(status) => {
            status.message().contains("invalid peer certificate")
        }
        etcd_client::Error::TransportError(_) => {
            err.to_string().contains("invalid peer certificate")
        }
        _ => false,
    }
}

/// True for etcd's "requested lease not found" (the lease expired or was revoked).
pub(crate) fn is_lease_not_found(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::GRpcStatus(status) => status.code() as i32 == NOT_FOUND,
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("not found"),
        _ => false,
    }
}

/// True if the server refused our credentials or permissions.
pub(crate) fn is_auth_error(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            message.contains("authentication failed")
                || message.contains("permission denied")
                || message.contains("user name is empty")
                || message.contains("invalid auth token")
        }
        _ => false,
    }
}

/// A cause with a message for people, keeping the client's error as its own source.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Detail {
    pub(crate) message: String,
    #[source]
    pub(crate) source: Option<Cause>,
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// The error and its causes, joined as the CLI prints them.
    fn chain(err: &Error) -> String {
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }

    #[test]
    fn classifies_transport_and_status_errors() {
        let io = etcd_client::Error::IoError(std::io::Error::other("reset"));
        assert!(map_err("claim", io).is_retryable());
        let invalid = etcd_client::Error::InvalidArgs("bad".into());
        assert!(matches!(
            map_err("claim", invalid),
            Error::Backend {
                operation: "claim",
                ..
            }
        ));
    }

    #[test]
    fn the_cause_is_one_short_line_with_the_client_error_behind_it() {
        let err = map_err(
            "claim",
            etcd_client::Error::IoError(std::io::Error::other("connection\n reset")),
        );
        assert_eq!(err.to_string(), "etcd store unavailable during claim");
        let cause = err.source().expect("a cause");
        assert_eq!(cause.to_string(), "i/o: connection reset");
        let original = cause.source().expect("the client's error");
        assert!(
            matches!(
                original.downcast_ref::<etcd_client::Error>(),
                Some(etcd_client::Error::IoError(_))
            ),
            "{original:?}"
        );
    }

    /// Issue 19.5: a refused connection reads `unavailable: tcp connect error`, not tonic's
    /// `Debug` output; the gRPC status stays reachable.
    #[tokio::test]
    async fn a_refused_connection_is_a_short_line() {
        // Port 1 on loopback: nothing listens there, so the connection is refused.
        let client = etcd_client::Client::connect(["http://127.0.0.1:1"], None)
            .await
            .expect("connecting is lazy");
        let refused = client
            .kv_client()
            .get("k", None)
            .await
            .expect_err("nothing listens on port 1");
        let err = map_err("leaders", refused);
        assert!(err.is_retryable(), "{err:?}");
        let cause = err.source().expect("a cause");
        assert_eq!(cause.to_string(), "unavailable: tcp connect error");
        let original = cause.source().expect("the client's error");
        match original.downcast_ref::<etcd_client::Error>() {
            Some(etcd_client::Error::GRpcStatus(status)) => {
                assert_eq!(status.message(), "tcp connect error");
            }
            other => panic!("not the gRPC status: {other:?}"),
        }
        assert!(chain(&err).starts_with(
            "etcd store unavailable during leaders: unavailable: tcp connect error: \
             grpc request error: "
        ));
        // core's one_line stops at the Cause: no tonic text.
        assert_eq!(
            err.one_line(),
            "etcd store unavailable during leaders: unavailable: tcp connect error"
        );
    }
}
