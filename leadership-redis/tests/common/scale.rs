//! Conformance factories over a Redis Cluster and a Sentinel setup: one deployment per test
//! binary, an ACL user per factory on every data server (ACLs are per server, neither
//! replicated nor gossiped), so `drop_connections` kills exactly this factory's connections.

use std::sync::{Arc, OnceLock};

use leadership_core::conformance::{Profile, StoreFactory};
use leadership_core::{Leadership, Policy};
use leadership_redis::RedisStore;
use leadership_testkit::harness::{RedisCluster, RedisSentinel, RedisServer};

/// One 3-master cluster (no replicas) for the whole test binary.
pub fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| match RedisCluster::start(3, 0) {
        Ok(cluster) => cluster,
        Err(err) => panic!("{err}"),
    })
}

/// One Sentinel setup (a primary, a replica, three sentinels) for the whole test binary.
pub fn sentinel() -> &'static RedisSentinel {
    static SENTINEL: OnceLock<RedisSentinel> = OnceLock::new();
    SENTINEL.get_or_init(|| match RedisSentinel::start("leaders") {
        Ok(setup) => setup,
        Err(err) => panic!("{err}"),
    })
}

/// Opens stores on `url` as its own ACL user, created on every one of `servers`.
pub struct ScaleFactory {
    url: String,
    servers: &'static [RedisServer],
    user: String,
    password: String,
}

impl ScaleFactory {
    pub fn cluster() -> Self {
        let cluster = cluster();
        Self::new(cluster.url(), cluster.nodes())
    }

    pub fn sentinel() -> Self {
        let setup = sentinel();
        Self::new(setup.url(), setup.servers())
    }

    fn new(url: String, servers: &'static [RedisServer]) -> Self {
        let user = format!("conformance-{:016x}", rand::random::<u64>());
        let password = format!("pw-{:016x}", rand::random::<u64>());
        let rule = format!(">{password}");
        for server in servers {
            server
                .command(&["ACL", "SETUSER", &user, "on", &rule, "~*", "&*", "+@all"])
                .expect("create ACL user");
        }
        ScaleFactory {
            url,
            servers,
            user,
            password,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn store(&self, namespace: &str) -> RedisStore {
        self.builder(namespace)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url))
    }

    pub fn builder(&self, namespace: &str) -> leadership_redis::RedisStoreBuilder {
        RedisStore::builder(&self.url)
            .expect("valid redis URL")
            .username(&self.user)
            .password(&self.password)
            .namespace(namespace)
    }
}

#[leadership_core::async_trait]
impl StoreFactory for ScaleFactory {
    async fn open(&self, namespace: &str) -> Arc<dyn Leadership> {
        Arc::new(self.store(namespace).await)
    }

    async fn open_with_policy(
        &self,
        namespace: &str,
        policy: Arc<dyn Policy>,
    ) -> Arc<dyn Leadership> {
        let store = self
            .builder(namespace)
            .policy(policy)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url));
        Arc::new(store)
    }

    fn profile(&self) -> Profile {
        super::profile()
    }

    /// Fewer than one server's: every input is a few round trips, and the cluster binary
    /// runs every case against three servers on a shared machine.
    fn hostile_cases(&self) -> u32 {
        64
    }

    async fn drop_connections(&self) -> bool {
        let mut killed = 0;
        for server in self.servers {
            let reply = server
                .command(&["CLIENT", "KILL", "USER", &self.user])
                .expect("CLIENT KILL USER");
            killed += reply.parse::<u64>().unwrap_or(0);
        }
        assert_ne!(killed, 0, "the factory's stores had no connections to kill");
        true
    }
}
