//! Connecting: URL, credentials, database, namespace, timeouts.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use leadership_core::{Error, JujuPolicy, Policy, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Client, ConnectionInfo, IntoConnectionInfo};

use crate::error::{BACKEND, TimedOut, map_redis_error};
use crate::store::{Inner, RedisStore};

/// The default operation timeout (E1).
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The namespace used when none is given.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Options for [`RedisStore`]; see [`RedisStore::builder`].
///
/// `Debug` never shows the password (nor the URL, which may carry one).
#[derive(Clone)]
pub struct RedisStoreBuilder {
    url: String,
    namespace: String,
    username: Option<String>,
    password: Option<String>,
    db: Option<i64>,
    operation_timeout: Duration,
    policy: Arc<dyn Policy>,
    #[cfg(feature = "tls")]
    tls_root_cert: Option<Vec<u8>>,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("url", &redact_url(&self.url))
            .field("namespace", &self.namespace)
            .field("username", &self.username.as_ref().map(|_| "<redacted>"))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .field("operation_timeout", &self.operation_timeout)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// The URL without its user-info part.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparsed url>".into();
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

impl RedisStoreBuilder {
    pub(crate) fn new(url: impl Into<String>) -> Self {
        RedisStoreBuilder {
            url: url.into(),
            namespace: DEFAULT_NAMESPACE.into(),
            username: None,
            password: None,
            db: None,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            policy: Arc::new(JujuPolicy::default()),
            #[cfg(feature = "tls")]
            tls_root_cert: None,
        }
    }

    /// The namespace (juju: the model UUID); handles with different namespaces share
    /// nothing (N1). Default `default`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The ACL user name, overriding one in the URL.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The password, overriding one in the URL.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// The database number, overriding one in the URL.
    pub fn db(mut self, db: i64) -> Self {
        self.db = Some(db);
        self
    }

    /// How long any operation may take before it fails with `Unavailable` (E1).
    /// Default 5 s.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// The validation rules (V5). Default [`JujuPolicy`].
    pub fn policy(mut self, policy: Arc<dyn Policy>) -> Self {
        self.policy = policy;
        self
    }

    /// A PEM root certificate to trust for `rediss://` instead of the system's roots.
    #[cfg(feature = "tls")]
    pub fn tls_root_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_cert = Some(pem.into());
        self
    }

    fn connection_info(&self) -> Result<ConnectionInfo> {
        let info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| Error::invalid_url(&self.url, InvalidUrl(e.kind()).to_string()))?;
        let mut redis = info.redis_settings().clone();
        if let Some(username) = &self.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        if let Some(db) = self.db {
            redis = redis.set_db(db);
        }
        Ok(info.set_redis_settings(redis))
    }

    fn client(&self) -> Result<Client> {
        let info = self.connection_info()?;
        #[cfg(feature = "tls")]
        {
            crate::tls::ensure_crypto_provider();
            if let Some(root_cert) = &self.tls_root_cert {
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert.clone()),
                };
                return Client::build_with_tls(info, certs)
                    .map_err(|e| map_redis_error("connect", e));
            }
        }
        Client::open(info).map_err(|e| map_redis_error("connect", e))
    }

    /// Connects, logs in and checks the login, then returns the store.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if the server cannot be reached within the operation timeout;
    /// [`Error::InvalidUrl`] for a URL the redis crate cannot parse (password redacted);
    /// [`Error::Backend`] for a refused login.
    pub async fn connect(self) -> Result<RedisStore> {
        let client = self.client()?;
        let timeout = self.operation_timeout;
        // One plain connection first: a wrong password fails here at once, clearly, instead
        // of inside the manager's reconnect loop.
        let probe_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let probe = tokio::time::timeout(
            timeout,
            client.get_multiplexed_async_connection_with_config(&probe_config),
        )
        .await
        .map_err(|_| Error::unavailable(BACKEND, "connect", TimedOut(timeout)))?
        .map_err(map_connect_error)?;
        // Without credentials the handshake sends nothing that needs a login: ask once.
        let mut probe = probe;
        tokio::time::timeout(
            timeout,
            redis::cmd("PING").query_async::<redis::Value>(&mut probe),
        )
        .await
        .map_err(|_| Error::unavailable(BACKEND, "connect", TimedOut(timeout)))?
        .map_err(map_connect_error)?;
        drop(probe);

        // Every call is already bounded by the operation timeout (which also covers waiting
        // for a reconnect); a second per-request timer would only cost time on the hot path.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(None)
            .set_number_of_retries(4)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let manager = tokio::time::timeout(
            timeout,
            ConnectionManager::new_with_config(client.clone(), manager_config),
        )
        .await
        .map_err(|_| Error::unavailable(BACKEND, "connect", TimedOut(timeout)))?
        .map_err(|e| map_redis_error("connect", e))?;

        let endpoint = endpoint(client.get_connection_info());
        Ok(RedisStore::from_inner(Inner::new(
            client,
            manager,
            &self.namespace,
            endpoint,
            self.operation_timeout,
            self.policy,
        )))
    }
}

/// A refused login says so (`… failed during login`); other failures as usual.
fn map_connect_error(err: redis::RedisError) -> Error {
    let refused = err.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(err.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"));
    if refused {
        Error::backend(BACKEND, "login", err)
    } else {
        map_redis_error("connect", err)
    }
}

/// `host:port/db` (no credentials), for `Debug`.
fn endpoint(info: &ConnectionInfo) -> String {
    format!("{}/{}", info.addr(), info.redis_settings().db())
}

/// A URL the redis crate cannot parse. Only the error kind is kept: the crate's message may
/// quote the URL, and the URL may hold a password.
#[derive(Debug, thiserror::Error)]
#[error("invalid redis URL ({0:?}); expected redis://[user:password@]host:port[/db] or rediss://…")]
struct InvalidUrl(redis::ErrorKind);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_credentials() {
        let builder = RedisStoreBuilder::new("redis://alice:hunter2@localhost:6379/2")
            .password("s3cret")
            .username("bob");
        let debug = format!("{builder:?}");
        for secret in ["hunter2", "s3cret", "alice", "bob"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("localhost:6379/2"), "{debug}");
    }

    #[test]
    fn url_credentials_and_overrides_are_applied() {
        let builder = RedisStoreBuilder::new("redis://alice:pw@localhost:6380/3");
        let info = builder.connection_info().expect("valid url");
        assert_eq!(info.redis_settings().username(), Some("alice"));
        assert_eq!(info.redis_settings().password(), Some("pw"));
        assert_eq!(info.redis_settings().db(), 3);
        let info = builder
            .username("bob")
            .password("other")
            .db(5)
            .connection_info()
            .expect("valid url");
        assert_eq!(info.redis_settings().username(), Some("bob"));
        assert_eq!(info.redis_settings().password(), Some("other"));
        assert_eq!(info.redis_settings().db(), 5);
    }

    #[test]
    fn bad_url_error_does_not_leak_the_password() {
        let err = RedisStoreBuilder::new("redis://u:topsecret@")
            .connection_info()
            .expect_err("no host");
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            text.push_str(&s.to_string());
            source = s.source();
        }
        assert!(!text.contains("topsecret"), "{text}");
    }
}
