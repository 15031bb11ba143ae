//! The builder: one URL in the shared grammar (S1, S2), then setters for what a URL cannot
//! say (a policy) or what code prefers to set.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use leadership_core::url::StoreUrl;
use leadership_core::{JujuPolicy, Policy, Result};

use crate::EtcdStore;

/// The first segment of every key this store writes.
pub const DEFAULT_KEY_PREFIX: &str = "leadership";

/// Options for an [`EtcdStore`], started from a URL by [`EtcdStore::builder`].
///
/// `Debug` never shows the password.
#[derive(Clone)]
pub struct EtcdStoreBuilder {
    pub(crate) endpoints: Vec<String>,
    pub(crate) tls: bool,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) namespace: String,
    pub(crate) key_prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) policy: Arc<dyn Policy>,
}

impl fmt::Debug for EtcdStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStoreBuilder")
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

impl EtcdStoreBuilder {
    /// Parses `etcd://[user[:password]@]host:port[,host:port…][/][?param=value&…]` or
    /// `etcds://…` (TLS) through the shared grammar ([`leadership_core::url`]).
    pub(crate) fn from_url(url: &str) -> Result<Self> {
        let mut parsed = StoreUrl::parse(url, &["etcd", "etcds"])?;
        let endpoints: Vec<String> = parsed.authority().split(',').map(str::to_owned).collect();
        if endpoints.iter().any(String::is_empty) {
            return Err(parsed.error("endpoints are host:port pairs separated by commas"));
        }
        if !parsed.path().is_empty() {
            return Err(parsed.error("an etcd URL has no path: etcd://host:port[,host:port…]"));
        }
        let mut builder = EtcdStoreBuilder {
            endpoints,
            tls: parsed.scheme() == "etcds",
            ca_file: None,
            credentials: None,
            namespace: parsed.namespace().to_owned(),
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            timeout: parsed.timeout(),
            policy: Arc::new(JujuPolicy::default()),
        };
        if let Some(user) = parsed.user() {
            builder = builder.credentials(user, parsed.password().unwrap_or_default());
        }
        if let Some(ca) = parsed.take("ca") {
            builder = builder.tls_ca_file(ca);
        }
        if let Some(prefix) = parsed.take("prefix") {
            builder = builder.key_prefix(prefix);
        }
        parsed.finish()?;
        Ok(builder)
    }

    /// The namespace (juju: the model UUID): handles with different namespaces share
    /// nothing (N1). Default: `?namespace=`, else [`DEFAULT_NAMESPACE`](leadership_core::DEFAULT_NAMESPACE).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The first segment of every key (`?prefix=`, default [`DEFAULT_KEY_PREFIX`]), to share
    /// a cluster with others.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Authenticate as `user` with `password` (etcd's auth must be enabled on the server).
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// Use TLS, trusting the CA certificate (PEM) in `path` (`?ca=`).
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls = true;
        self.ca_file = Some(path.into());
        self
    }

    /// How long an operation may take, retries included, before it fails with
    /// [`Error::Unavailable`](leadership_core::Error::Unavailable) (E1, S4). Default:
    /// `?timeout=`, else [`DEFAULT_TIMEOUT`](leadership_core::DEFAULT_TIMEOUT).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The validation policy (V5); juju's rules by default.
    pub fn policy(mut self, policy: Arc<dyn Policy>) -> Self {
        self.policy = policy;
        self
    }

    /// The endpoints, `host:port` each.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The namespace the store will have.
    pub fn namespace_name(&self) -> &str {
        &self.namespace
    }

    /// The operation timeout the store will have.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Connects; see [`EtcdStore::connect`].
    ///
    /// # Errors
    /// As [`EtcdStore::connect`].
    pub async fn connect(self) -> Result<EtcdStore> {
        EtcdStore::open(self).await
    }
}

#[cfg(test)]
mod tests {
    use leadership_core::{DEFAULT_NAMESPACE, DEFAULT_TIMEOUT, Error};

    use super::*;

    #[test]
    fn parses_a_cluster_url() {
        let builder = EtcdStoreBuilder::from_url(
            "etcd://127.0.0.1:2379,127.0.0.1:3379/?namespace=m%2F1&timeout=1.5s&prefix=lp",
        )
        .unwrap();
        assert_eq!(builder.endpoints, ["127.0.0.1:2379", "127.0.0.1:3379"]);
        assert_eq!(builder.namespace_name(), "m/1");
        assert_eq!(builder.timeout(), Duration::from_millis(1500));
        assert_eq!(builder.key_prefix, "lp");
        assert!(!builder.tls);
        assert!(builder.credentials.is_none());
        let builder = EtcdStoreBuilder::from_url("etcd://h:1?timeout=1m").unwrap();
        assert_eq!(builder.timeout(), Duration::from_secs(60));
        assert_eq!(builder.namespace_name(), DEFAULT_NAMESPACE);
        let builder = EtcdStoreBuilder::from_url("etcd://h:1").unwrap();
        assert_eq!(builder.timeout(), DEFAULT_TIMEOUT);
    }

    #[test]
    fn parses_tls_and_credentials_and_hides_the_password() {
        let builder = EtcdStoreBuilder::from_url(
            "etcds://alice:s%40cret@h1:2379?ca=/etc/ca.pem&timeout=250ms",
        )
        .unwrap();
        assert!(builder.tls);
        assert_eq!(builder.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            builder.credentials,
            Some(("alice".to_owned(), "s@cret".to_owned()))
        );
        assert_eq!(builder.timeout(), Duration::from_millis(250));
        let debug = format!("{builder:?}");
        assert!(
            !debug.contains("s@cret") && !debug.contains("cret"),
            "{debug}"
        );
        assert!(debug.contains("alice"), "{debug}");
    }

    #[test]
    fn setters_override_the_url() {
        let builder = EtcdStoreBuilder::from_url("etcd://h:1?namespace=a&timeout=2s")
            .unwrap()
            .namespace("b")
            .operation_timeout(Duration::from_secs(3));
        assert_eq!(builder.namespace_name(), "b");
        assert_eq!(builder.timeout(), Duration::from_secs(3));
    }

    #[test]
    fn rejects_bad_urls() {
        for (url, says) in [
            ("redis://h:1", "is not etcd://"),
            ("etcd://", "host:port"),
            ("etcd://h:1,,h:2", "host:port"),
            ("etcd://h:1?timeout=soon", "timeout \"soon\""),
            ("etcd://h:1?what=1", "unknown URL parameter \"what\""),
            (
                "etcd://h:1?cacert=/ca.pem",
                "unknown URL parameter \"cacert\"",
            ),
            ("etcd://h:1/path", "no path"),
            ("etcd://a:%zz@h:1", "percent-encoding"),
            ("etcd://root:hunter2@h:1?timeout=-1s", "timeout"),
        ] {
            let err = EtcdStoreBuilder::from_url(url).unwrap_err();
            assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err}");
            assert!(err.to_string().contains(says), "{url}: {err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }
}
