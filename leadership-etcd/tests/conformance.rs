//! The shared conformance suite against one private etcd member (one per test binary); each
//! case in its own namespace, through its own client and its own cuttable proxy.

mod common;

use std::sync::Arc;

use leadership_core::conformance::{Profile, StoreFactory};
use leadership_core::{Leadership, Policy, async_trait};
use leadership_etcd::{EtcdStore, EtcdStoreBuilder};

use common::proxy::Proxy;

struct Factory {
    proxy: Proxy,
}

impl Factory {
    async fn new() -> Factory {
        let upstream = common::server().endpoint();
        Factory {
            proxy: Proxy::start(upstream).await,
        }
    }

    async fn connect(&self, config: EtcdStoreBuilder) -> Arc<dyn Leadership> {
        match config.connect().await {
            Ok(store) => Arc::new(store),
            Err(err) => panic!("cannot connect to the test etcd: {err}"),
        }
    }
}

#[async_trait]
impl StoreFactory for Factory {
    async fn open(&self, namespace: &str) -> Arc<dyn Leadership> {
        self.connect(
            EtcdStore::builder(&format!("etcd://{}", self.proxy.endpoint()))
                .expect("a valid etcd URL")
                .namespace(namespace),
        )
        .await
    }

    async fn open_with_policy(
        &self,
        namespace: &str,
        policy: Arc<dyn Policy>,
    ) -> Arc<dyn Leadership> {
        let config = EtcdStore::builder(&format!("etcd://{}", self.proxy.endpoint()))
            .expect("a valid etcd URL")
            .namespace(namespace)
            .policy(policy);
        self.connect(config).await
    }

    fn profile(&self) -> Profile {
        leadership_etcd::conformance_profile()
    }

    async fn drop_connections(&self) -> bool {
        self.proxy.drop_connections();
        true
    }

    /// Fewer random inputs than the memory store's: every one is a few round trips.
    /// `largest_names` and `huge_durations` found two bugs here (a key encoding that tripled
    /// 64 KiB names past etcd's request limit; an overflow on `Duration::MAX`), now fixed.
    fn hostile_cases(&self) -> u32 {
        128
    }
}

leadership_core::conformance_tests!(Factory::new().await);
