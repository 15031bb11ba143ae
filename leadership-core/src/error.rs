//! The one error type of the project and its helpers.

use std::sync::Arc;
use std::time::Duration;

/// A boxed, shareable cause kept behind [`Error::Unavailable`] and [`Error::Backend`].
pub type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in leadership.
///
/// Juju's messages are kept exactly for the variants juju has. `Display` describes this
/// layer only: a store's cause is reachable through [`std::error::Error::source`], never
/// printed twice.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another unit holds the lease (C3).
    #[error("leadership claim denied")]
    ClaimDenied,
    /// A revoke by a unit that does not hold the lease (R2).
    #[error("leadership lease not held")]
    ClaimNotHeld,
    /// The cancel token fired while blocked until leadership was released (B3).
    #[error("waiting for leadership cancelled by client")]
    BlockCancelled,
    /// A token check found that the unit does not lead the application (K1).
    #[error("{unit:?} is not leader of {application:?}")]
    NotLeader {
        /// The unit that was checked.
        unit: String,
        /// The application it was checked against.
        application: String,
    },
    /// An application name the policy rejects (V1, V5).
    #[error("invalid application name {name:?}: {reason}")]
    InvalidApplication {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A unit name the policy rejects, or a unit of another application (V2, V5).
    #[error("invalid unit name {name:?}: {reason}")]
    InvalidUnit {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A lease duration the policy rejects (V3).
    #[error("invalid duration {duration:?}: {reason}")]
    InvalidDuration {
        /// The rejected duration.
        duration: Duration,
        /// Which rule it breaks.
        reason: String,
    },
    /// A pin entity the policy rejects (V4).
    #[error("invalid pin entity {entity:?}: {reason}")]
    InvalidEntity {
        /// The rejected entity.
        entity: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A store URL or option that cannot work: malformed, an unknown scheme, or a store
    /// whose cargo feature is off. The URL is shown with its password redacted.
    #[error("invalid store URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, password replaced by `***`.
        url: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The store could not be reached or did not answer in time (E1). Retryable.
    #[error("{backend} store unavailable during {operation}")]
    Unavailable {
        /// The store, e.g. `redis`.
        backend: &'static str,
        /// The operation that failed, e.g. `claim`.
        operation: &'static str,
        /// What the store's client said.
        #[source]
        source: Source,
    },
    /// A worker or store handle has shut down.
    #[error("{what} stopped")]
    Stopped {
        /// What stopped, e.g. `leadership tracker`.
        what: &'static str,
    },
    /// The tracker's role changed while [`LeaderTracker::with_stable_leadership`] ran its work
    /// (W3, juju's `ErrLeadershipChanged`); the work's token was cancelled.
    ///
    /// [`LeaderTracker::with_stable_leadership`]: crate::LeaderTracker::with_stable_leadership
    #[error("leadership of {unit:?} changed from {from} to {to}")]
    LeadershipChanged {
        /// The tracker's unit.
        unit: String,
        /// The role the work started under.
        from: crate::tracker::Role,
        /// The role that ended it.
        to: crate::tracker::Role,
    },
    /// Anything else the store reported.
    #[error("{backend} store failed during {operation}")]
    Backend {
        /// The store, e.g. `etcd`.
        backend: &'static str,
        /// The operation that failed.
        operation: &'static str,
        /// What the store's client said.
        #[source]
        source: Source,
    },
}

impl Error {
    /// The error juju returns when a unit's token check fails (`NewNotLeaderError`).
    pub fn not_leader(unit: impl Into<String>, application: impl Into<String>) -> Self {
        Error::NotLeader {
            unit: unit.into(),
            application: application.into(),
        }
    }

    /// A store outage, wrapping the client's error.
    pub fn unavailable(
        backend: &'static str,
        operation: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Unavailable {
            backend,
            operation,
            source: Arc::from(source.into()),
        }
    }

    /// Any other store failure, wrapping the client's error.
    pub fn backend(
        backend: &'static str,
        operation: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Backend {
            backend,
            operation,
            source: Arc::from(source.into()),
        }
    }

    /// An [`Error::InvalidUrl`], redacting any password in `url`.
    pub fn invalid_url(url: &str, reason: impl Into<String>) -> Self {
        Error::InvalidUrl {
            url: redact_url(url),
            reason: reason.into(),
        }
    }

    /// Juju's `IsNotLeaderError`.
    pub fn is_not_leader(&self) -> bool {
        matches!(self, Error::NotLeader { .. })
    }

    /// Juju's `errors.Is(err, ErrLeadershipChanged)` (W3).
    pub fn is_leadership_changed(&self) -> bool {
        matches!(self, Error::LeadershipChanged { .. })
    }

    /// True for [`Error::ClaimDenied`].
    pub fn is_claim_denied(&self) -> bool {
        matches!(self, Error::ClaimDenied)
    }

    /// True when trying again later may succeed: the store was unavailable.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// The error in one line for people (logs, a CLI): this error, then each cause once,
    /// stopping after a store's [`Cause`] (its source is the client library's own error,
    /// which is often long; it stays reachable through [`std::error::Error::source`]).
    ///
    /// ```
    /// use leadership_core::{Cause, Error};
    ///
    /// let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    /// let err = Error::unavailable("etcd", "connect", Cause::new("unavailable: tcp connect error", io));
    /// assert_eq!(err.one_line(), "etcd store unavailable during connect: unavailable: tcp connect error");
    /// ```
    pub fn one_line(&self) -> String {
        use std::error::Error as _;
        let mut line = self.to_string();
        let mut next = self.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !text.is_empty() && !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            if is_cause(cause) {
                break;
            }
            next = cause.source();
        }
        line.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// True for the validation variants (`Invalid*`): the input can never succeed.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidApplication { .. }
                | Error::InvalidUnit { .. }
                | Error::InvalidDuration { .. }
                | Error::InvalidEntity { .. }
                | Error::InvalidUrl { .. }
        )
    }
}

/// Whether `err` is a [`Cause`], also behind the `Arc` that [`Error`] keeps its source in.
fn is_cause(err: &(dyn std::error::Error + 'static)) -> bool {
    err.is::<Cause>()
        || err
            .downcast_ref::<Source>()
            .is_some_and(|inner| inner.is::<Cause>())
}

/// A store's one-line account of what its client library reported: `Display` is the summary
/// (e.g. `unavailable: tcp connect error`), `source()` the client's own error. Stores wrap
/// client errors in it so [`Error::one_line`] prints one short line.
#[derive(Debug)]
pub struct Cause {
    summary: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Cause {
    /// `summary`, with `source` behind it.
    pub fn new(
        summary: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Cause {
        Cause {
            summary: summary.into(),
            source: Some(source.into()),
        }
    }

    /// A summary with nothing behind it.
    pub fn message(summary: impl Into<String>) -> Cause {
        Cause {
            summary: summary.into(),
            source: None,
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

/// `url` with the password of its user-info part (`scheme://user:PASSWORD@host`) replaced by
/// `***`, for errors and logs.
///
/// It errs on the side of hiding: everything up to the *last* `@` counts as user-info, so a
/// password holding an unencoded `/`, `?`, `#` or `@` is hidden too, and a URL with a
/// mistyped `://` hides everything between its first `:` and the `@`. Text without `@` is
/// returned unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(at) = url.rfind('@') else {
        return url.to_owned();
    };
    let (start, well_formed) = match url.find("://") {
        Some(i) => (i + 3, true),
        None => (0, false),
    };
    if at < start {
        return url.to_owned();
    }
    let userinfo = &url[start..at];
    let kept = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        // `user@host`: no password, unless the URL is too mangled to tell.
        None if well_formed => userinfo.to_owned(),
        None => "***".to_owned(),
    };
    format!("{}{kept}{}", &url[..start], &url[at..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn juju_messages_are_kept() {
        assert_eq!(Error::ClaimDenied.to_string(), "leadership claim denied");
        assert_eq!(Error::ClaimNotHeld.to_string(), "leadership lease not held");
        assert_eq!(
            Error::BlockCancelled.to_string(),
            "waiting for leadership cancelled by client"
        );
        assert_eq!(
            Error::not_leader("mysql/1", "mysql").to_string(),
            r#""mysql/1" is not leader of "mysql""#
        );
    }

    #[test]
    fn leadership_changed_names_the_change() {
        use crate::tracker::Role;
        let err = Error::LeadershipChanged {
            unit: "mysql/0".into(),
            from: Role::Leader {
                fence: crate::Fence(3),
            },
            to: Role::Minion,
        };
        assert_eq!(
            err.to_string(),
            r#"leadership of "mysql/0" changed from leader (fence 3) to minion"#
        );
        assert!(err.is_leadership_changed());
        assert!(!err.is_retryable());
    }

    #[test]
    fn helpers_classify() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let unavailable = Error::unavailable("redis", "claim", io);
        assert!(unavailable.is_retryable());
        assert!(!unavailable.is_not_leader());
        assert!(Error::not_leader("a/0", "a").is_not_leader());
        assert!(Error::ClaimDenied.is_claim_denied());
        assert!(!Error::ClaimDenied.is_retryable());
        assert!(!Error::backend("etcd", "check", "boom").is_retryable());
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://app:s3cr%40t@127.0.0.1:6379/2?namespace=x"),
            "redis://app:***@127.0.0.1:6379/2?namespace=x"
        );
        assert_eq!(
            redact_url("etcds://root:pw@a:1,b:2"),
            "etcds://root:***@a:1,b:2"
        );
        assert_eq!(redact_url("redis://user@host"), "redis://user@host");
        assert_eq!(redact_url("memory://"), "memory://");
        assert_eq!(redact_url("not a url"), "not a url");
        // Unencoded separators in the password, and mistyped schemes, still hide it.
        for (url, secret) in [
            ("redis://u:pa/ss@h:1/0", "pa/ss"),
            ("redis://u:pa?ss@h:1", "pa?ss"),
            ("redis://u:pa#ss@h:1", "pa#ss"),
            ("redis://u:pa@ss@h:1", "pa@ss"),
            ("redis:/u:secret@h:1", "secret"),
            ("redis:u:secret@h:1", "secret"),
            ("redis//u:secret@h:1", "secret"),
            ("memory:/:secret@x", "secret"),
            ("redis//secret@h", "secret"),
        ] {
            let shown = redact_url(url);
            assert!(!shown.contains(secret), "{url} -> {shown}");
            assert!(shown.contains("***"), "{url} -> {shown}");
        }
        let err = Error::invalid_url("redis://u:hunter2@h", "bad port");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    }

    #[test]
    fn display_does_not_repeat_the_source() {
        let err = Error::unavailable("redis", "claim", "connection refused by 127.0.0.1:1");
        assert_eq!(err.to_string(), "redis store unavailable during claim");
        let source = err.source().map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("connection refused by 127.0.0.1:1"));
    }
}
