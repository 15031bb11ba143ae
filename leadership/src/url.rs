//! The parts of a store URL that every store shares.

use crate::{DEFAULT_NAMESPACE, Error, Result};

/// A store URL split into the parts the facade needs; each store parses the rest itself.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl {
    /// The URL as given (printed only through [`leadership_core::redact_url`]).
    pub original: String,
    /// `memory`, `redis`, `rediss`, `etcd` or `etcds`.
    pub scheme: String,
    /// What stands between `://` and the path or query: `NAME` for memory, the host list for
    /// the servers (with any credentials).
    pub authority: String,
    /// `?namespace=` or [`DEFAULT_NAMESPACE`].
    pub namespace: String,
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreUrl")
            .field("url", &leadership_core::redact_url(&self.original))
            .field("scheme", &self.scheme)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl StoreUrl {
    /// Splits `url` into scheme, authority and namespace.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] naming what is wrong: no `scheme://`, an empty or repeated
    /// namespace, an unknown query parameter.
    pub fn parse(url: &str) -> Result<Self> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(Error::invalid_url(
                url,
                "expected SCHEME://…, e.g. memory://, redis://127.0.0.1:6379 or etcd://127.0.0.1:2379",
            ));
        };
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+')
        {
            return Err(Error::invalid_url(
                url,
                format!("malformed scheme {scheme:?}"),
            ));
        }
        let (before_query, query) = match rest.split_once('?') {
            Some((before, query)) => (before, Some(query)),
            None => (rest, None),
        };
        let authority = before_query
            .split_once('/')
            .map_or(before_query, |(authority, _path)| authority);
        let mut namespace = None;
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "namespace" if namespace.is_some() => {
                    return Err(Error::invalid_url(url, "namespace given twice"));
                }
                "namespace" if value.is_empty() => {
                    return Err(Error::invalid_url(url, "namespace must not be empty"));
                }
                "namespace" => namespace = Some(value.to_owned()),
                // Store-specific options are the store's to check.
                _ => {}
            }
        }
        Ok(StoreUrl {
            original: url.to_owned(),
            scheme: scheme.to_ascii_lowercase(),
            authority: authority.to_owned(),
            namespace: namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
        })
    }
}

/// Parses a `timeout=` value: `500ms`, `2s`, `1m`.
///
/// # Errors
/// [`Error::InvalidUrl`] unless it is a positive duration.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn parse_timeout(url: &str, value: &str) -> Result<std::time::Duration> {
    let parsed = if let Some(ms) = value.strip_suffix("ms") {
        ms.parse::<u64>().ok().map(std::time::Duration::from_millis)
    } else if let Some(s) = value.strip_suffix('s') {
        s.parse::<u64>().ok().map(std::time::Duration::from_secs)
    } else if let Some(m) = value.strip_suffix('m') {
        m.parse::<u64>()
            .ok()
            .and_then(|m| m.checked_mul(60))
            .map(std::time::Duration::from_secs)
    } else {
        None
    };
    match parsed {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(Error::invalid_url(
            url,
            format!("timeout {value:?} is not a positive duration like 500ms, 5s or 1m"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_shared_parts() {
        let url = StoreUrl::parse("memory://shared?namespace=model-1").unwrap();
        assert_eq!(
            (
                url.scheme.as_str(),
                url.authority.as_str(),
                url.namespace.as_str()
            ),
            ("memory", "shared", "model-1")
        );
        let url = StoreUrl::parse("redis://u:pw@127.0.0.1:6379/2").unwrap();
        assert_eq!(url.authority, "u:pw@127.0.0.1:6379");
        assert_eq!(url.namespace, DEFAULT_NAMESPACE);
        assert!(!format!("{url:?}").contains("pw"));
        let url = StoreUrl::parse("etcd://a:1,b:2?namespace=x&timeout=2s").unwrap();
        assert_eq!(
            (url.authority.as_str(), url.namespace.as_str()),
            ("a:1,b:2", "x")
        );
    }

    #[test]
    fn timeouts() {
        assert_eq!(
            parse_timeout("u", "250ms").ok(),
            Some(std::time::Duration::from_millis(250))
        );
        assert_eq!(
            parse_timeout("u", "2s").ok(),
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(
            parse_timeout("u", "1m").ok(),
            Some(std::time::Duration::from_secs(60))
        );
        for bad in ["0s", "soon", "-1s", "5", "99999999999999999999m"] {
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
            ("memory://?namespace=", "must not be empty"),
            ("memory://?namespace=a&namespace=b", "twice"),
            ("://host", "malformed scheme"),
        ] {
            let err = StoreUrl::parse(bad).unwrap_err();
            assert!(err.to_string().contains(says), "{bad}: {err}");
            assert!(matches!(err, Error::InvalidUrl { .. }), "{bad}");
        }
    }
}
