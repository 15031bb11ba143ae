//! Shared by the test binaries: one redis-server per binary, a conformance factory.
#![allow(dead_code)] // each test binary uses part of it

use std::sync::{Arc, OnceLock};

use leadership_core::conformance::{Profile, StoreFactory};
use leadership_core::{Leadership, Policy};
use leadership_redis::RedisStore;
use leadership_testkit::harness::RedisServer;

/// One server for the whole test binary; each test opens its own clients and namespaces.
pub fn server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| match RedisServer::start() {
        Ok(server) => server,
        Err(err) => panic!("{err}"),
    })
}

/// Redis's promises to the conformance suite, as the crate exports them.
pub fn profile() -> Profile {
    leadership_redis::conformance_profile()
}

/// Opens stores as its own ACL user, so that `drop_connections` can kill exactly this
/// factory's connections (`CLIENT KILL USER`) without disturbing tests running in parallel.
pub struct Factory {
    url: String,
    user: String,
    password: String,
}

impl Factory {
    pub fn new() -> Self {
        let server = server();
        let user = format!("conformance-{:016x}", rand::random::<u64>());
        let password = format!("pw-{:016x}", rand::random::<u64>());
        let rule = format!(">{password}");
        server
            .command(&["ACL", "SETUSER", &user, "on", &rule, "~*", "&*", "+@all"])
            .expect("create ACL user");
        Factory {
            url: server.url(),
            user,
            password,
        }
    }

    pub async fn store(&self, namespace: &str) -> RedisStore {
        RedisStore::builder(&self.url)
            .expect("valid redis URL")
            .username(&self.user)
            .password(&self.password)
            .namespace(namespace)
            .connect()
            .await
            .expect("connect to the test redis-server")
    }
}

#[leadership_core::async_trait]
impl StoreFactory for Factory {
    async fn open(&self, namespace: &str) -> Arc<dyn Leadership> {
        Arc::new(self.store(namespace).await)
    }

    async fn open_with_policy(
        &self,
        namespace: &str,
        policy: Arc<dyn Policy>,
    ) -> Arc<dyn Leadership> {
        let store = RedisStore::builder(&self.url)
            .expect("valid redis URL")
            .username(&self.user)
            .password(&self.password)
            .namespace(namespace)
            .policy(policy)
            .connect()
            .await
            .expect("connect to the test redis-server");
        Arc::new(store)
    }

    fn profile(&self) -> Profile {
        profile()
    }

    /// Fewer random inputs than the memory store's: every one is a few round trips.
    /// `huge_durations` found that durations of about `i64::MAX` ms and more reached Redis as
    /// an out-of-range `PX` argument; the store refuses them as `InvalidDuration`.
    fn hostile_cases(&self) -> u32 {
        256
    }

    async fn drop_connections(&self) -> bool {
        let killed = server()
            .command(&["CLIENT", "KILL", "USER", &self.user])
            .expect("CLIENT KILL USER");
        assert_ne!(
            killed, "0",
            "the factory's stores had no connections to kill"
        );
        true
    }
}

pub mod scale;
