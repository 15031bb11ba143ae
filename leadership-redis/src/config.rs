//! Connecting: URL, credentials, database, namespace, timeouts.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use leadership_core::url::StoreUrl;
use leadership_core::{Error, JujuPolicy, Policy, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    RedisConnectionInfo,
};

use crate::error::{BACKEND, map_redis_error};
use crate::retry::{Retry, retrying};
use crate::store::{Connection, RedisStore};

/// Redis's port when the URL names none.
const DEFAULT_PORT: u16 = 6379;

/// Options for [`RedisStore`]; see [`RedisStore::builder`].
///
/// `Debug` never shows the user name or the password.
#[derive(Clone)]
pub struct RedisStoreBuilder {
    tls: bool,
    host: String,
    port: u16,
    namespace: String,
    username: Option<String>,
    password: Option<String>,
    db: i64,
    operation_timeout: Duration,
    policy: Arc<dyn Policy>,
    #[cfg(feature = "tls")]
    tls_root_cert: Option<Vec<u8>>,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("endpoint", &self.endpoint())
            .field("tls", &self.tls)
            .field("namespace", &self.namespace)
            .field("username", &self.username.as_ref().map(|_| "<redacted>"))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("operation_timeout", &self.operation_timeout)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    /// Parses `url` with the one URL grammar (S1, S2): `redis://` or `rediss://`, user and
    /// password percent-decoded, `host[:port]` (default port 6379), `/db` (default 0),
    /// `?namespace=` and `?timeout=`; any other parameter is an error naming it.
    pub(crate) fn from_url(url: &str) -> Result<Self> {
        let parsed = StoreUrl::parse(url, &["redis", "rediss"])?;
        parsed.finish()?;
        let tls = parsed.scheme() == "rediss";
        if tls && cfg!(not(feature = "tls")) {
            return Err(parsed
                .error("rediss:// needs the \"tls\" feature of leadership-redis (on by default)"));
        }
        let (host, port) = host_and_port(&parsed)?;
        let db = match parsed.path() {
            "" => 0,
            path => path
                .parse::<i64>()
                .ok()
                .filter(|db| *db >= 0)
                .ok_or_else(|| parsed.error(format!("database {path:?} is not a number")))?,
        };
        Ok(RedisStoreBuilder {
            tls,
            host,
            port,
            namespace: parsed.namespace().to_owned(),
            username: parsed.user().map(str::to_owned),
            password: parsed.password().map(str::to_owned),
            db,
            operation_timeout: parsed.timeout(),
            policy: Arc::new(JujuPolicy::default()),
            #[cfg(feature = "tls")]
            tls_root_cert: None,
        })
    }

    /// The namespace (juju: the model UUID); handles with different namespaces share
    /// nothing (N1). Default `default`, or the URL's `?namespace=`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The namespace the store will open.
    pub fn namespace_name(&self) -> &str {
        &self.namespace
    }

    /// The operation timeout the store will have.
    pub fn timeout(&self) -> Duration {
        self.operation_timeout
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
        self.db = db;
        self
    }

    /// How long any operation may take, retries included, before it fails with
    /// `Unavailable` (E1, S4). Default 5 s, or the URL's `?timeout=`.
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

    /// `host:port/db`, without credentials.
    fn endpoint(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.db)
    }

    /// The redis crate's connection settings, built from the parts (no URL is re-parsed).
    fn connection_info(&self) -> Result<ConnectionInfo> {
        let addr = if self.tls {
            ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(self.host.clone(), self.port)
        };
        let mut redis = RedisConnectionInfo::default().set_db(self.db);
        if let Some(username) = &self.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        let info = addr
            .into_connection_info()
            .map_err(|e| map_redis_error("connect", e))?;
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
        let probe_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        // Every call is already bounded by the operation timeout (which also covers waiting
        // for a reconnect); a second per-request timer would only cost time on the hot path.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(None)
            .set_number_of_retries(4)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        // The one retry path (S4): a server that refuses connections now (restarting, failing
        // over) is tried again until the operation timeout; a refused login is not.
        let manager = retrying(
            "connect",
            timeout,
            Retry::Idempotent,
            map_connect_error,
            || async {
                // One plain connection first: a wrong password fails here at once, clearly,
                // instead of inside the manager's reconnect loop. Without credentials the
                // handshake sends nothing that needs a login: ask once.
                let mut probe = client
                    .get_multiplexed_async_connection_with_config(&probe_config)
                    .await?;
                redis::cmd("PING")
                    .query_async::<redis::Value>(&mut probe)
                    .await?;
                drop(probe);
                ConnectionManager::new_with_config(client.clone(), manager_config.clone()).await
            },
        )
        .await?;

        let endpoint = self.endpoint();
        let connection = Connection::new(client, manager, endpoint, timeout, self.policy);
        Ok(RedisStore::open(connection, &self.namespace))
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

/// `host[:port]` of the URL's authority; an IPv6 host is written in brackets.
fn host_and_port(url: &StoreUrl) -> Result<(String, u16)> {
    let authority = url.authority();
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| url.error("an IPv6 host needs its closing ']'"))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(url.error("expected ':PORT' after the IPv6 host")),
                },
            }
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(url.error("no host; expected redis://[user:password@]host[:port][/db]"));
    }
    if host.contains(',') {
        return Err(url.error("one host only; Redis Cluster and Sentinel are not supported yet"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => port
            .parse()
            .map_err(|_| url.error(format!("port {port:?} is not a number from 0 to 65535")))?,
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use leadership_core::{DEFAULT_NAMESPACE, DEFAULT_TIMEOUT};

    fn builder(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder::from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

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
    fn debug_hides_credentials() {
        let builder = builder("redis://alice:hunter2@localhost:6379/2")
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
        let builder = builder("redis://alice:pw@localhost:6380/3");
        let info = builder.connection_info().expect("valid url");
        assert_eq!(info.redis_settings().username(), Some("alice"));
        assert_eq!(info.redis_settings().password(), Some("pw"));
        assert_eq!(info.redis_settings().db(), 3);
        assert_eq!(info.addr(), &ConnectionAddr::Tcp("localhost".into(), 6380));
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

    /// S2: the one grammar's parts reach the redis crate's settings and the store's options.
    #[test]
    fn the_url_grammar_reaches_every_setting() {
        let b = builder("redis://u%3Ax:p%40ss%20w@127.0.0.1?namespace=a%2Fb&timeout=1.5s");
        assert_eq!(b.namespace_name(), "a/b");
        assert_eq!(b.operation_timeout, Duration::from_millis(1500));
        let info = b.connection_info().expect("valid url");
        assert_eq!(info.redis_settings().username(), Some("u:x"));
        assert_eq!(info.redis_settings().password(), Some("p@ss w"));
        assert_eq!(info.redis_settings().db(), 0);
        assert_eq!(info.addr(), &ConnectionAddr::Tcp("127.0.0.1".into(), 6379));

        let b = builder("redis://[::1]:7000/4");
        assert_eq!(
            (b.namespace_name(), b.operation_timeout),
            (DEFAULT_NAMESPACE, DEFAULT_TIMEOUT)
        );
        let info = b.connection_info().expect("valid url");
        assert_eq!(info.addr(), &ConnectionAddr::Tcp("::1".into(), 7000));
        assert_eq!(info.redis_settings().db(), 4);

        #[cfg(feature = "tls")]
        assert!(matches!(
            builder("REDISS://localhost:6380").connection_info().expect("valid url").addr(),
            ConnectionAddr::TcpTls { host, port: 6380, insecure: false, .. } if host == "localhost"
        ));
    }

    #[test]
    fn bad_urls_say_what_is_wrong_and_never_show_the_password() {
        for (url, says) in [
            ("redis://u:topsecret@", "no host"),
            (
                "redis://u:topsecret@h:1?protocol=resp3",
                "unknown URL parameter \"protocol\"",
            ),
            ("redis://u:topsecret@h:1/x", "database \"x\""),
            ("redis://u:topsecret@h:99999", "port \"99999\""),
            ("redis://u:topsecret@h1:1,h2:2", "one host only"),
            ("redis://u:topsecret@[::1", "closing ']'"),
            ("etcd://u:topsecret@h:1", "is not redis:// or rediss://"),
        ] {
            let err = RedisStoreBuilder::from_url(url).expect_err(url);
            assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err:?}");
            let text = chain(&err);
            assert!(text.contains(says), "{url}: {text}");
            assert!(!text.contains("topsecret"), "{url}: {text}");
        }
    }
}
