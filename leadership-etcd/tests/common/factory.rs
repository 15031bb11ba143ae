//! The conformance suite's store factory over one private etcd member: each case in its own
//! namespace, through its own client and a cuttable proxy (B5, O4).

use std::sync::Arc;

use leadership_core::conformance::{Profile, StoreFactory};
use leadership_core::{Leadership, Policy, async_trait};
use leadership_etcd::{EtcdStore, EtcdStoreBuilder};

use super::proxy::Proxy;

/// Opens handles on the member at an upstream endpoint, through one proxy.
pub struct Factory {
    proxy: Proxy,
}

impl Factory {
    /// A factory for the member at `upstream` (`host:port`).
    pub async fn new(upstream: String) -> Factory {
        Factory {
            proxy: Proxy::start(upstream).await,
        }
    }

    fn builder(&self, namespace: &str) -> EtcdStoreBuilder {
        EtcdStore::builder(&format!("etcd://{}", self.proxy.endpoint()))
            .expect("a valid etcd URL")
            .namespace(namespace)
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
        self.connect(self.builder(namespace)).await
    }

    async fn open_with_policy(
        &self,
        namespace: &str,
        policy: Arc<dyn Policy>,
    ) -> Arc<dyn Leadership> {
        self.connect(self.builder(namespace).policy(policy)).await
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
