//! The one mapping from etcd-client errors to [`leadership_core::Error`].

use leadership_core::Error;

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

/// Refused, dropped or timed-out → [`Error::Unavailable`] (retryable); everything else →
/// [`Error::Backend`].
pub(crate) fn map_err(operation: &'static str, err: etcd_client::Error) -> Error {
    if is_transient(&err) {
        Error::unavailable(BACKEND, operation, err)
    } else {
        Error::backend(BACKEND, operation, err)
    }
}

pub(crate) fn is_transient(err: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match err {
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) | E::LeaseKeepAliveError(_) => true,
        E::GRpcStatus(status) => matches!(
            status.code() as i32,
            CANCELLED | UNKNOWN | DEADLINE_EXCEEDED | RESOURCE_EXHAUSTED | ABORTED | UNAVAILABLE
        ),
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
    pub(crate) source: Option<etcd_client::Error>,
}

/// The cause of an operation that ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("no answer from etcd within {0:?}")]
pub(crate) struct TimedOut(pub(crate) std::time::Duration);

#[cfg(test)]
mod tests {
    use super::*;

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
}
