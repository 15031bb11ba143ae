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

use crate::conn::{Conn, SentinelConn};
use crate::error::{BACKEND, map_redis_error};
use crate::retry::{Retry, retrying};
use crate::store::{Connection, RedisStore};
use crate::waiters::Source;

/// The schemes this store opens: one server, a cluster, Sentinel; each with TLS.
pub(crate) const SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
];

/// Redis's port when the URL names none.
const DEFAULT_PORT: u16 = 6379;
/// A sentinel's port when the URL names none.
const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// Options for [`RedisStore`]; see [`RedisStore::builder`].
///
/// `Debug` never shows the user name or the password.
#[derive(Clone)]
pub struct RedisStoreBuilder {
    /// One server, a cluster, or Sentinel; `host` and `port` are the first node's.
    deployment: Deployment,
    tls: bool,
    host: String,
    port: u16,
    namespace: String,
    username: Option<String>,
    password: Option<String>,
    db: i64,
    operation_timeout: Duration,
    wait_replicas: u32,
    policy: Arc<dyn Policy>,
    #[cfg(feature = "tls")]
    tls_root_cert: Option<Vec<u8>>,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("endpoint", &self.endpoint())
            .field("deployment", &self.deployment)
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
        let parsed = StoreUrl::parse(url, SCHEMES)?;
        parsed.finish()?;
        let tls = parsed.scheme().starts_with("rediss");
        if tls && cfg!(not(feature = "tls")) {
            return Err(parsed.error(format!(
                "{}:// needs the \"tls\" feature of leadership-redis (on by default)",
                parsed.scheme()
            )));
        }
        let (deployment, (host, port), db) = match parsed.scheme() {
            "redis+cluster" | "rediss+cluster" => {
                let nodes = host_list(&parsed)?;
                if !parsed.path().is_empty() {
                    return Err(parsed.error(format!(
                        "a Redis Cluster has no databases; remove the path {:?} \
                         (expected {}://[user:password@]host:port[,host:port…])",
                        parsed.path(),
                        parsed.scheme()
                    )));
                }
                let first = nodes[0].clone();
                (Deployment::Cluster { nodes }, first, 0)
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let sentinels = host_list(&parsed)?;
                let master = parsed.path();
                if master.is_empty() || master.contains('/') {
                    return Err(parsed.error(format!(
                        "no master name; expected \
                         {}://[user:password@]host:port[,host:port…]/MASTER",
                        parsed.scheme()
                    )));
                }
                let first = sentinels[0].clone();
                let deployment = Deployment::Sentinel {
                    sentinels,
                    master: master.to_owned(),
                };
                (deployment, first, 0)
            }
            _ => {
                let (host, port) = host_and_port(&parsed, parsed.authority(), true)?;
                let db = match parsed.path() {
                    "" => 0,
                    path => path
                        .parse::<i64>()
                        .ok()
                        .filter(|db| *db >= 0)
                        .ok_or_else(|| {
                            parsed.error(format!("database {path:?} is not a number"))
                        })?,
                };
                (Deployment::Single, (host, port), db)
            }
        };
        Ok(RedisStoreBuilder {
            deployment,
            tls,
            host,
            port,
            namespace: parsed.namespace().to_owned(),
            username: parsed.user().map(str::to_owned),
            password: parsed.password().map(str::to_owned),
            db,
            operation_timeout: parsed.timeout(),
            wait_replicas: 0,
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

    /// Makes every successful claim (a new term or an extension) wait until `replicas`
    /// replicas have acknowledged it (`WAIT`, up to a fifth of the operation timeout) before it
    /// returns `Ok`; fewer acknowledgements give [`Error::Unavailable`] (the claim may have
    /// applied; retrying is safe, E2). Default 0: replication stays asynchronous and a
    /// failover can lose a lease that was granted (C4).
    ///
    /// The claim and its `WAIT` travel in one pipeline on one connection, so the count is
    /// for that claim's own write, even across a reconnect. This narrows the window to
    /// claims whose acknowledgement was lost with the primary; it is not a consensus
    /// protocol. It costs the replica's lag on every claim and renewal, and renewals run the
    /// claim script instead of the one-command fast path. On one server, behind Sentinel and
    /// on a cluster (where the pipeline goes to the master of the namespace's slot, so the
    /// `WAIT` counts that master's replicas).
    pub fn wait_for_replicas(mut self, replicas: u32) -> Self {
        self.wait_replicas = replicas;
        self
    }

    /// The validation rules (V5). Default [`JujuPolicy`].
    pub fn policy(mut self, policy: Arc<dyn Policy>) -> Self {
        self.policy = policy;
        self
    }

    /// A PEM root certificate to trust for `rediss://`, `rediss+cluster://` and
    /// `rediss+sentinel://` (every node, every sentinel) instead of the system's roots.
    #[cfg(feature = "tls")]
    pub fn tls_root_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_cert = Some(pem.into());
        self
    }

    /// `host:port/db`, without credentials; every node for a cluster, every sentinel and the
    /// master name for Sentinel.
    fn endpoint(&self) -> String {
        match &self.deployment {
            Deployment::Single => format!("{}:{}/{}", self.host, self.port, self.db),
            Deployment::Cluster { nodes } => format!("cluster {}", join_nodes(nodes)),
            Deployment::Sentinel { sentinels, master } => {
                format!("sentinel {}/{master}", join_nodes(sentinels))
            }
        }
    }

    /// The redis crate's connection settings, built from the parts (no URL is re-parsed).
    fn connection_info(&self) -> Result<ConnectionInfo> {
        let addr = self.addr(&self.host, self.port);
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
        if let Some(certs) = self.certificates() {
            return Client::build_with_tls(info, certs).map_err(|e| map_redis_error("connect", e));
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
        match &self.deployment {
            Deployment::Single => self.connect_single().await,
            Deployment::Cluster { nodes } => {
                let nodes = nodes.clone();
                self.connect_cluster(&nodes).await
            }
            Deployment::Sentinel { sentinels, master } => {
                let (sentinels, master) = (sentinels.clone(), master.clone());
                self.connect_sentinel(&sentinels, &master).await
            }
        }
    }

    async fn connect_single(self) -> Result<RedisStore> {
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
        let connection = Connection::new(
            Source::Single(Box::new(client)),
            Conn::Single(manager),
            endpoint,
            timeout,
            self.policy,
            self.wait_replicas,
        );
        Ok(RedisStore::open(connection, &self.namespace))
    }

    /// A Redis Cluster: the redis crate's cluster client, seeded with every node of the URL.
    /// Commands are routed by slot (a namespace's keys share one hash tag, so one slot) and
    /// follow `MOVED`/`ASK`; the subscriber uses sharded pub/sub (see waiters.rs).
    async fn connect_cluster(self, nodes: &[(String, u16)]) -> Result<RedisStore> {
        let timeout = self.operation_timeout;
        #[cfg(feature = "tls")]
        let certificates = self.certificates();
        let infos = nodes
            .iter()
            .map(|(host, port)| self.node_info(host, *port))
            .collect::<Result<Vec<_>>>()?;
        let (username, password) = (self.username.clone(), self.password.clone());
        let builder = move || {
            let mut builder = redis::cluster::ClusterClientBuilder::new(infos.clone())
                .connection_timeout(timeout)
                .response_timeout((timeout / 4).max(Duration::from_millis(200)))
                .retries(4)
                .min_retry_wait(20)
                .max_retry_wait(500);
            if let Some(username) = &username {
                builder = builder.username(username);
            }
            if let Some(password) = &password {
                builder = builder.password(password);
            }
            // TLS itself comes from the nodes' addresses (`TcpTls`); a private CA from here.
            #[cfg(feature = "tls")]
            if let Some(certificates) = &certificates {
                builder = builder.certs(certificates.clone());
            }
            builder
        };
        let client = builder()
            .build()
            .map_err(|e| map_redis_error("connect", e))?;
        let conn = retrying(
            "connect",
            timeout,
            Retry::Idempotent,
            map_connect_error,
            || async {
                let mut conn = client.get_async_connection().await?;
                redis::cmd("PING")
                    .query_async::<redis::Value>(&mut conn)
                    .await?;
                Ok(conn)
            },
        )
        .await?;
        let connection = Connection::new(
            Source::Cluster(Arc::new(builder)),
            Conn::Cluster(conn),
            self.endpoint(),
            timeout,
            self.policy,
            self.wait_replicas,
        );
        Ok(RedisStore::open(connection, &self.namespace))
    }

    /// Redis Sentinel: the sentinels of the URL are asked for the primary of `master`, which
    /// is asked again after every error that says it may have moved (see conn.rs). The URL's
    /// user and password log in to the data servers; the sentinels are asked without.
    async fn connect_sentinel(
        self,
        sentinels: &[(String, u16)],
        master: &str,
    ) -> Result<RedisStore> {
        let timeout = self.operation_timeout;
        let addrs = sentinels.iter().map(|(host, port)| self.addr(host, *port));
        let mut builder = redis::sentinel::SentinelClientBuilder::new(
            addrs,
            master,
            redis::sentinel::SentinelServerType::Master,
        )
        .map_err(|e| map_redis_error("connect", e))?
        .set_client_to_redis_db(self.db);
        if let Some(username) = &self.username {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = &self.password {
            builder = builder.set_client_to_redis_password(password);
        }
        #[cfg(feature = "tls")]
        if self.tls {
            // The sentinels and the data servers they name are both spoken to over TLS.
            builder = builder
                .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
            if let Some(certificates) = self.certificates() {
                builder = builder
                    .set_client_to_redis_certificates(certificates.clone())
                    .set_client_to_sentinel_certificates(certificates);
            }
        }
        let sentinel = builder.build().map_err(|e| map_redis_error("connect", e))?;
        let conn = SentinelConn::new(sentinel, timeout);
        // A store opened during a failover waits for it within the timeout; a wrong master
        // name then ends as `Unavailable` naming it ("master name not found by sentinel").
        let map = |err: redis::RedisError| {
            if crate::conn::failover_under_way(&err) {
                Error::unavailable(BACKEND, "connect", crate::error::Cause::new(err))
            } else {
                map_connect_error(err)
            }
        };
        retrying("connect", timeout, Retry::Idempotent, map, || {
            let mut conn = Conn::Sentinel(conn.clone());
            async move {
                redis::cmd("PING")
                    .query_async::<redis::Value>(&mut conn)
                    .await
            }
        })
        .await?;
        let connection = Connection::new(
            Source::Sentinel(conn.clone()),
            Conn::Sentinel(conn),
            self.endpoint(),
            timeout,
            self.policy,
            self.wait_replicas,
        );
        Ok(RedisStore::open(connection, &self.namespace))
    }

    /// A node's or a sentinel's address: TLS for the `rediss` schemes.
    fn addr(&self, host: &str, port: u16) -> ConnectionAddr {
        if self.tls {
            ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.to_owned(), port)
        }
    }

    /// The private CA to trust, if one was given (else the system's roots).
    #[cfg(feature = "tls")]
    fn certificates(&self) -> Option<redis::TlsCertificates> {
        crate::tls::ensure_crypto_provider();
        self.tls_root_cert
            .as_ref()
            .map(|root_cert| redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert.clone()),
            })
    }

    /// One cluster node's settings: its address and the login.
    fn node_info(&self, host: &str, port: u16) -> Result<ConnectionInfo> {
        let mut redis = RedisConnectionInfo::default();
        if let Some(username) = &self.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        let info = self
            .addr(host, port)
            .into_connection_info()
            .map_err(|e| map_redis_error("connect", e))?;
        Ok(info.set_redis_settings(redis))
    }
}

/// Which Redis deployment a store talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Deployment {
    /// `redis://` and `rediss://`: one server.
    Single,
    /// `redis+cluster://`: every node given as a seed.
    Cluster { nodes: Vec<(String, u16)> },
    /// `redis+sentinel://`: the sentinels and the master name they monitor.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master: String,
    },
}

fn join_nodes(nodes: &[(String, u16)]) -> String {
    nodes
        .iter()
        .map(|(host, port)| match host.contains(':') {
            true => format!("[{host}]:{port}"),
            false => format!("{host}:{port}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The comma-separated `host[:port]` list of a cluster's or Sentinel's URL.
fn host_list(url: &StoreUrl) -> Result<Vec<(String, u16)>> {
    let default_port = match url.scheme() {
        "redis+sentinel" | "rediss+sentinel" => DEFAULT_SENTINEL_PORT,
        _ => DEFAULT_PORT,
    };
    url.authority()
        .split(',')
        .map(|item| {
            host_and_port(url, item, false).map(|(host, port)| {
                let explicit = item.ends_with(&format!(":{port}"));
                (host, if explicit { port } else { default_port })
            })
        })
        .collect()
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

/// `host[:port]` (`authority`, all of the URL's or one item of its list); an IPv6 host is
/// written in brackets.
fn host_and_port(url: &StoreUrl, authority: &str, single: bool) -> Result<(String, u16)> {
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
        let scheme = url.scheme();
        return Err(url.error(if scheme.ends_with("+cluster") {
            format!("no host; expected {scheme}://[user:password@]host:port[,host:port…]")
        } else if scheme.ends_with("+sentinel") {
            format!("no host; expected {scheme}://[user:password@]host:port[,host:port…]/MASTER")
        } else {
            format!("no host; expected {scheme}://[user:password@]host[:port][/db]")
        }));
    }
    if single && host.contains(',') {
        return Err(url.error(
            "one host only; use redis+cluster://h:p,h:p for Redis Cluster or \
             redis+sentinel://h:p,h:p/MASTER for Sentinel",
        ));
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

    /// Scale-out URLs: every node or sentinel, default ports, the master name, and the one
    /// grammar's parameters.
    #[test]
    fn cluster_and_sentinel_urls_name_every_node() {
        let b = builder("redis+cluster://u:p@h1:7000,h2,[::1]:7002?namespace=m&timeout=2s");
        assert_eq!(
            b.deployment,
            Deployment::Cluster {
                nodes: vec![
                    ("h1".into(), 7000),
                    ("h2".into(), 6379),
                    ("::1".into(), 7002)
                ]
            }
        );
        assert_eq!(
            (b.namespace_name(), b.timeout()),
            ("m", Duration::from_secs(2))
        );
        assert_eq!(b.username.as_deref(), Some("u"));
        assert_eq!(b.endpoint(), "cluster h1:7000,h2:6379,[::1]:7002");

        let b = builder("REDIS+SENTINEL://s1:26380,s2/leaders");
        assert_eq!(
            b.deployment,
            Deployment::Sentinel {
                sentinels: vec![("s1".into(), 26380), ("s2".into(), 26379)],
                master: "leaders".into()
            }
        );
        assert_eq!(b.endpoint(), "sentinel s1:26380,s2:26379/leaders");
        assert!(!b.tls);
        assert_eq!(builder("redis://h:1").deployment, Deployment::Single);

        // The same over TLS: every node, or the sentinels and the servers they name.
        let b = builder("rediss+cluster://h1:7000,h2");
        assert!(b.tls);
        assert_eq!(
            b.deployment,
            Deployment::Cluster {
                nodes: vec![("h1".into(), 7000), ("h2".into(), 6379)]
            }
        );
        let b = builder("rediss+sentinel://s1,s2:26380/leaders");
        assert!(b.tls);
        assert_eq!(
            b.deployment,
            Deployment::Sentinel {
                sentinels: vec![("s1".into(), 26379), ("s2".into(), 26380)],
                master: "leaders".into()
            }
        );
        assert!(matches!(
            b.addr("s1", 26379),
            ConnectionAddr::TcpTls {
                insecure: false,
                ..
            }
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
            ("redis://u:topsecret@h1:1,h2:2", "redis+cluster://h:p,h:p"),
            (
                "redis+cluster://u:topsecret@h1:1,h2:2/0",
                "has no databases",
            ),
            ("redis+cluster://u:topsecret@h1:1,,h2:2", "no host"),
            ("redis+cluster://u:topsecret@h1:x", "port \"x\""),
            ("redis+sentinel://u:topsecret@s1:1,s2:2", "no master name"),
            ("redis+sentinel://u:topsecret@s1:1/a/b", "no master name"),
            (
                "rediss+sentinel://u:topsecret@s1:1",
                "expected rediss+sentinel://",
            ),
            ("rediss+cluster://u:topsecret@/x", "no host"),
            ("redis+sentinel://u:topsecret@/m", "no host"),
            (
                "redis+cluster://u:topsecret@h:1?db=2",
                "unknown URL parameter \"db\"",
            ),
        ] {
            let err = RedisStoreBuilder::from_url(url).expect_err(url);
            assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err:?}");
            let text = chain(&err);
            assert!(text.contains(says), "{url}: {text}");
            assert!(!text.contains("topsecret"), "{url}: {text}");
        }
    }
}
