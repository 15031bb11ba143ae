//! Connection settings: endpoints, TLS, credentials, namespace, timeouts.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use leadership_core::{Error, JujuPolicy, Policy, Result};

use crate::BACKEND;

/// How long an operation may take before it returns [`Error::Unavailable`] (E1).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The namespace of a store handle when none is given (N1).
pub const DEFAULT_NAMESPACE: &str = "default";

/// The first segment of every key this store writes.
pub const DEFAULT_KEY_PREFIX: &str = "leadership";

/// Settings for [`EtcdStore::connect`](crate::EtcdStore::connect); also its builder.
///
/// `Debug` never shows the password.
#[derive(Clone)]
pub struct EtcdConfig {
    pub(crate) endpoints: Vec<String>,
    pub(crate) tls: bool,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) namespace: String,
    pub(crate) key_prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) policy: Arc<dyn Policy>,
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .field("password", &self.credentials.as_ref().map(|_| "<redacted>"))
            .field("namespace", &self.namespace)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("policy", &self.policy)
            .finish()
    }
}

impl EtcdConfig {
    /// Settings for the given `host:port` endpoints, plain HTTP, no credentials, namespace
    /// `default`, juju's validation rules, a 5 s operation timeout.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            tls: false,
            ca_file: None,
            credentials: None,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            policy: Arc::new(JujuPolicy::default()),
        }
    }

    /// Parses `etcd://[user:password@]host:port[,host:port…][/][?query]` or `etcds://…` (TLS).
    ///
    /// Query parameters: `namespace=NAME`, `ca=/path/to/ca.pem` (the CA that signed the
    /// servers' certificates, for `etcds://`), `timeout=5s` (or `500ms`), `prefix=KEYPREFIX`.
    /// User, password and values are percent-decoded.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] naming what is wrong with the URL (password redacted).
    pub fn from_url(url: &str) -> Result<Self> {
        Self::parse_url(url).map_err(|err| match err {
            Error::Backend { source, .. } => Error::invalid_url(url, source.to_string()),
            other => other,
        })
    }

    fn parse_url(url: &str) -> Result<Self> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("etcd://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("etcds://") {
            (true, rest)
        } else {
            return Err(config_error("the URL must start with etcd:// or etcds://"));
        };
        let (authority, query) = match rest.split_once('?') {
            Some((authority, query)) => (authority, Some(query)),
            None => (rest, None),
        };
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let endpoints: Vec<String> = hosts.split(',').map(str::to_owned).collect();
        if endpoints.iter().any(|e| e.is_empty() || e.contains('/')) {
            return Err(config_error(
                "endpoints are host:port pairs separated by commas",
            ));
        }
        let mut config = EtcdConfig::new(endpoints);
        config.tls = tls;
        if let Some(userinfo) = userinfo {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            config = config.credentials(percent_decode(user)?, percent_decode(password)?);
        }
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)?;
            config = match name {
                "namespace" => config.namespace(value),
                "ca" | "cacert" | "ca_file" => config.tls_ca_file(value),
                "prefix" => config.key_prefix(value),
                "timeout" => config.timeout(parse_duration(&value)?),
                other => {
                    return Err(config_error(format!("unknown URL parameter {other:?}")));
                }
            };
        }
        Ok(config)
    }

    /// The namespace (juju: the model UUID): handles with different namespaces share nothing.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The first segment of every key (default `leadership`), to share a cluster with others.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Authenticate as `user` with `password` (etcd's auth must be enabled on the server).
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// Use TLS, trusting the CA certificate (PEM) in `path`.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls = true;
        self.ca_file = Some(path.into());
        self
    }

    /// Use TLS with the system's trust roots as bundled by the client (no CA file).
    pub fn tls(mut self, enabled: bool) -> Self {
        self.tls = enabled;
        self
    }

    /// How long an operation may take before it fails with [`Error::Unavailable`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The validation policy (V5); juju's rules by default.
    pub fn policy(mut self, policy: Arc<dyn Policy>) -> Self {
        self.policy = policy;
        self
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The configured namespace.
    pub fn namespace_name(&self) -> &str {
        &self.namespace
    }

    /// The configured operation timeout.
    pub fn operation_timeout(&self) -> Duration {
        self.timeout
    }
}

pub(crate) fn config_error(message: impl Into<String>) -> Error {
    Error::backend(BACKEND, "configure", message.into())
}

fn parse_duration(value: &str) -> Result<Duration> {
    let parsed = if let Some(ms) = value.strip_suffix("ms") {
        ms.parse::<u64>().ok().map(Duration::from_millis)
    } else if let Some(s) = value.strip_suffix('s') {
        s.parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
    } else {
        None
    };
    match parsed {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(config_error(format!(
            "timeout {value:?} is not a positive duration like 5s or 500ms"
        ))),
    }
}

fn percent_decode(value: &str) -> Result<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(byte) = hex else {
                return Err(config_error("bad percent-encoding in the URL"));
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| config_error("the URL decodes to invalid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_cluster_url() {
        let config =
            EtcdConfig::from_url("etcd://127.0.0.1:2379,127.0.0.1:3379/?namespace=m1&timeout=2s")
                .unwrap();
        assert_eq!(config.endpoints, ["127.0.0.1:2379", "127.0.0.1:3379"]);
        assert_eq!(config.namespace, "m1");
        assert_eq!(config.timeout, Duration::from_secs(2));
        assert!(!config.tls);
        assert!(config.credentials.is_none());
    }

    #[test]
    fn parses_tls_and_credentials_and_hides_the_password() {
        let config =
            EtcdConfig::from_url("etcds://alice:s%40cret@h1:2379?ca=/etc/ca.pem&timeout=250ms")
                .unwrap();
        assert!(config.tls);
        assert_eq!(config.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            config.credentials,
            Some(("alice".to_owned(), "s@cret".to_owned()))
        );
        assert_eq!(config.timeout, Duration::from_millis(250));
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s@cret") && !debug.contains("cret"),
            "{debug}"
        );
        assert!(debug.contains("alice"), "{debug}");
    }

    #[test]
    fn rejects_bad_urls() {
        for url in [
            "redis://h:1",
            "etcd://",
            "etcd://h:1,,h:2",
            "etcd://h:1?timeout=soon",
            "etcd://h:1?what=1",
            "etcd://h:1/path",
            "etcd://a:%zz@h:1",
            "etcd://root:hunter2@h:1?timeout=-1s",
        ] {
            let err = EtcdConfig::from_url(url).unwrap_err();
            assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }
}
