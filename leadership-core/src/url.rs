//! The one URL grammar every store parses its URL with (S1, S2).
//!
//! ```text
//! SCHEME://[USER[:PASSWORD]@]AUTHORITY[/PATH][?PARAM=VALUE&…]
//! ```
//!
//! - `USER`, `PASSWORD` and every parameter value are percent-decoded (`%2F` is `/`), the same
//!   way on every store: `?namespace=a%2Fb` and `?namespace=a/b` name one namespace.
//! - `?namespace=NAME` (default [`DEFAULT_NAMESPACE`]) and `?timeout=DURATION` (default
//!   [`DEFAULT_TIMEOUT`]; humane durations: `500ms`, `2s`, `1.5s`, `1m`, `1m 30s`) are taken
//!   by every store.
//! - A store takes its own parameters with [`StoreUrl::take`]; [`StoreUrl::finish`] then
//!   refuses any parameter nobody took, naming it.
//! - Errors show the URL through [`redact_url`](crate::redact_url): a password is never
//!   printed.
//!
//! ```
//! use leadership_core::url::StoreUrl;
//!
//! let mut url = StoreUrl::parse("etcd://u:p%40ss@h1:2379,h2:2379?namespace=a%2Fb&timeout=1.5s&ca=/ca.pem", &["etcd"])?;
//! assert_eq!(url.password(), Some("p@ss"));
//! assert_eq!(url.namespace(), "a/b");
//! assert_eq!(url.timeout(), std::time::Duration::from_millis(1500));
//! assert_eq!(url.take("ca").as_deref(), Some("/ca.pem"));
//! url.finish()?;
//!
//! let err = StoreUrl::parse("memory://?nmespace=x", &["memory"])?.finish().unwrap_err();
//! assert!(err.to_string().contains("unknown URL parameter \"nmespace\""), "{err}");
//! # Ok::<(), leadership_core::Error>(())
//! ```

use std::borrow::Cow;
use std::time::Duration;

use crate::{Error, Result};

/// The namespace of a handle whose URL or builder names none (N1).
pub const DEFAULT_NAMESPACE: &str = "default";

/// How long a store operation may take before it fails with [`Error::Unavailable`] (E1),
/// unless `?timeout=` or a builder says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A store URL split by the shared grammar (see the [module docs](self)).
///
/// `Debug` shows the URL with its password redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl {
    original: String,
    scheme: String,
    user: Option<String>,
    password: Option<String>,
    authority: String,
    path: String,
    namespace: String,
    timeout: Duration,
    /// Parameters no store has taken yet, decoded, in URL order.
    params: Vec<(String, String)>,
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreUrl")
            .field("url", &crate::redact_url(&self.original))
            .field("scheme", &self.scheme)
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl StoreUrl {
    /// Splits `url`, which must use one of `schemes` (compared without case).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`], naming what is wrong: no `scheme://`, another scheme, bad
    /// percent-encoding, an empty or repeated parameter, a timeout that is not a positive
    /// duration.
    pub fn parse(url: &str, schemes: &[&str]) -> Result<StoreUrl> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(Error::invalid_url(
                url,
                "expected SCHEME://…, e.g. memory://, redis://127.0.0.1:6379 or etcd://127.0.0.1:2379",
            ));
        };
        let scheme = scheme.to_ascii_lowercase();
        if !schemes.contains(&scheme.as_str()) {
            let expected: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
            return Err(Error::invalid_url(
                url,
                format!("scheme {scheme:?} is not {}", expected.join(" or ")),
            ));
        }
        let (before_query, query) = match rest.split_once('?') {
            Some((before, query)) => (before, query),
            None => (rest, ""),
        };
        // Everything up to the last `@` is user-info, as `redact_url` hides it.
        let (userinfo, host_and_path) = match before_query.rsplit_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, before_query),
        };
        let (authority, path) = match host_and_path.split_once('/') {
            Some((authority, path)) => (authority, path),
            None => (host_and_path, ""),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, password) = match info.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (info, None),
                };
                let user = decode(url, "user name", user)?;
                let password = password.map(|p| decode(url, "password", p)).transpose()?;
                (Some(user).filter(|u| !u.is_empty()), password)
            }
        };
        let mut parsed = StoreUrl {
            original: url.to_owned(),
            scheme,
            user,
            password,
            authority: authority.to_owned(),
            path: path.to_owned(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            params: Vec::new(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(url, "parameter name", name)?;
            let value = decode(url, &format!("parameter {name:?}"), value)?;
            if parsed.params.iter().any(|(n, _)| *n == name) {
                return Err(Error::invalid_url(url, format!("{name} given twice")));
            }
            if value.is_empty() {
                return Err(Error::invalid_url(url, format!("{name} must not be empty")));
            }
            parsed.params.push((name, value));
        }
        if let Some(namespace) = parsed.take("namespace") {
            parsed.namespace = namespace;
        }
        if let Some(timeout) = parsed.take("timeout") {
            parsed.timeout = parse_timeout(url, &timeout)?;
        }
        Ok(parsed)
    }

    /// The scheme, lower-cased.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The user name, decoded; `None` when the URL has none.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The password, decoded; `None` when the URL has none.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// What stands between the user-info and the path: `NAME` for memory, `host:port[,…]`
    /// for the servers. Not decoded.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// What follows the authority's `/`, without it (Redis: the database number).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `?namespace=`, decoded, or [`DEFAULT_NAMESPACE`].
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `?timeout=`, or [`DEFAULT_TIMEOUT`].
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The URL as given, for the store's own client library. Never print it: use
    /// [`StoreUrl::redacted`].
    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// The URL with its password hidden, for errors and logs.
    pub fn redacted(&self) -> String {
        crate::redact_url(&self.original)
    }

    /// Takes a store-specific parameter, decoded, so that [`StoreUrl::finish`] accepts it.
    pub fn take(&mut self, name: &str) -> Option<String> {
        let at = self.params.iter().position(|(n, _)| n == name)?;
        Some(self.params.remove(at).1)
    }

    /// An [`Error::InvalidUrl`] about this URL.
    pub fn error(&self, reason: impl Into<String>) -> Error {
        Error::invalid_url(&self.original, reason)
    }

    /// Checks that every parameter was taken.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] naming the first parameter no store took.
    pub fn finish(&self) -> Result<()> {
        match self.params.first() {
            None => Ok(()),
            Some((name, _)) => Err(self.error(format!("unknown URL parameter {name:?}"))),
        }
    }
}

fn decode<'a>(url: &str, what: &str, raw: &'a str) -> Result<String> {
    if let Some(bad) = raw.find('%').filter(|&i| {
        raw.get(i + 1..i + 3)
            .is_none_or(|hex| !hex.bytes().all(|b| b.is_ascii_hexdigit()))
    }) {
        return Err(Error::invalid_url(
            url,
            format!("bad percent-encoding in the {what} at byte {bad}"),
        ));
    }
    let decoded: Cow<'a, str> = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| Error::invalid_url(url, format!("the {what} decodes to invalid UTF-8")))?;
    Ok(decoded.into_owned())
}

/// Parses a humane duration for `?timeout=` (and the CLI's durations): `500ms`, `2s`, `1.5s`,
/// `1m`, `1m 30s`; it must be positive.
///
/// # Errors
/// [`Error::InvalidUrl`] naming the value.
pub fn parse_timeout(url: &str, value: &str) -> Result<Duration> {
    match humantime::parse_duration(value) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(Error::invalid_url(
            url,
            format!("timeout {value:?} is not a positive duration like 500ms, 1.5s or 1m"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_every_part() {
        let url = StoreUrl::parse(
            "redis://u%3Ax:p%40ss@127.0.0.1:6379/2?namespace=m",
            &["redis"],
        )
        .unwrap();
        assert_eq!(url.user(), Some("u:x"));
        assert_eq!(url.password(), Some("p@ss"));
        assert_eq!(url.authority(), "127.0.0.1:6379");
        assert_eq!(url.path(), "2");
        assert_eq!(url.namespace(), "m");
        assert_eq!(url.timeout(), DEFAULT_TIMEOUT);
        assert!(!format!("{url:?}").contains("p@ss") && !format!("{url:?}").contains("p%40ss"));
        let url = StoreUrl::parse("memory://", &["memory"]).unwrap();
        assert_eq!((url.authority(), url.namespace()), ("", DEFAULT_NAMESPACE));
    }

    #[test]
    fn timeouts() {
        for (value, want) in [
            ("250ms", Duration::from_millis(250)),
            ("2s", Duration::from_secs(2)),
            ("1.5s", Duration::from_millis(1500)),
            ("1m", Duration::from_secs(60)),
            ("1m 30s", Duration::from_secs(90)),
        ] {
            assert_eq!(parse_timeout("u", value).ok(), Some(want), "{value}");
        }
        for bad in ["0s", "soon", "-1s", "5", "99999999999999999999m", ""] {
            assert!(
                matches!(parse_timeout("u", bad), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn says_what_is_wrong() {
        for (bad, says) in [
            ("127.0.0.1:6379", "expected SCHEME://"),
            ("redis://h:1", "is not memory://"),
            ("memory://?namespace=", "must not be empty"),
            ("memory://?namespace=a&namespace=b", "twice"),
            ("memory://?namespace=%zz", "bad percent-encoding"),
            ("memory://?namespace=%ff", "invalid UTF-8"),
            ("memory://?timeout=soon", "timeout \"soon\""),
        ] {
            let err = StoreUrl::parse(bad, &["memory"]).unwrap_err();
            assert!(err.to_string().contains(says), "{bad}: {err}");
            assert!(matches!(err, Error::InvalidUrl { .. }), "{bad}");
        }
        let mut url = StoreUrl::parse("memory://?a=1&b=2", &["memory"]).unwrap();
        assert_eq!(url.take("a").as_deref(), Some("1"));
        let err = url.finish().unwrap_err();
        assert!(
            err.to_string().contains("unknown URL parameter \"b\""),
            "{err}"
        );
    }

    #[test]
    fn errors_never_show_the_password() {
        for bad in [
            "redis://u:hunter2@h:1?timeout=soon",
            "redis://u:hunter2@h:1?x=1",
            "redis://u:hunter2@h:1?namespace=%zz",
        ] {
            let err = StoreUrl::parse(bad, &["redis"])
                .and_then(|u| u.finish())
                .unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }
}
