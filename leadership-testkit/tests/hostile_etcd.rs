//! Hostile input against the etcd store (V1–V5, N1), on one private etcd member; see
//! `hostile_cases`. Case counts are smaller than the memory store's: every case is a few
//! round trips.
//!
//! `largest_names` and `huge_durations` found two bugs in leadership-etcd (a key encoding
//! that tripled 64 KiB names past etcd's request limit; an overflow on `Duration::MAX`), now
//! fixed.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use leadership_core::conformance::{Profile, StoreFactory};
use leadership_core::{Leadership, Policy, async_trait};
use leadership_etcd::{EtcdStore, EtcdStoreBuilder};
use leadership_testkit::harness::EtcdServer;

fn server() -> &'static EtcdServer {
    static SERVER: OnceLock<EtcdServer> = OnceLock::new();
    SERVER.get_or_init(|| match EtcdServer::start() {
        Ok(server) => server,
        Err(err) => panic!("cannot start etcd: {err}"),
    })
}

struct Factory;

impl Factory {
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
            EtcdStore::builder(&server().url())
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
        let config = EtcdStore::builder(&server().url())
            .expect("a valid etcd URL")
            .namespace(namespace)
            .policy(policy);
        self.connect(config).await
    }

    fn profile(&self) -> Profile {
        // As the etcd crate's conformance profile: whole-second leases, a 500 ms lessor.
        Profile {
            min_duration: Duration::from_secs(1),
            expiry_slack: Duration::from_secs(1),
            notify_latency: Duration::from_millis(500),
        }
    }
}

fn factory() -> Arc<dyn StoreFactory> {
    Arc::new(Factory)
}

#[test]
fn rejected_input_changes_nothing() {
    leadership_core::conformance::hostile::rejected_input_changes_nothing(factory, 128);
}

#[test]
fn permissive_names_round_trip() {
    leadership_core::conformance::hostile::permissive_names_round_trip(factory, 64);
}

#[test]
fn namespaces_never_collide() {
    leadership_core::conformance::hostile::namespaces_never_collide(factory, 32);
}

#[test]
fn duration_edges() {
    leadership_core::conformance::hostile::duration_edges(factory);
}

#[test]
fn largest_names() {
    leadership_core::conformance::hostile::largest_names(factory);
}

#[test]
fn huge_durations() {
    leadership_core::conformance::hostile::huge_durations(factory, 16);
}
