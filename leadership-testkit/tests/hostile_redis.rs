//! Hostile input against the Redis store (V1–V5, N1), on one private redis-server; see
//! `hostile_cases`. Case counts are smaller than the memory store's: every case is a few
//! round trips.
//!
//! `huge_durations` found that durations of about `i64::MAX` ms and more reached Redis as an
//! out-of-range `PX` argument (a `Backend` error); the store now refuses durations past its
//! longest lease as `InvalidDuration`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use leadership_core::conformance::{Profile, StoreFactory};
use leadership_core::{Leadership, Policy, async_trait};
use leadership_redis::RedisStore;
use leadership_testkit::harness::RedisServer;

fn server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| match RedisServer::start() {
        Ok(server) => server,
        Err(err) => panic!("{err}"),
    })
}

struct Factory;

impl Factory {
    async fn connect(
        &self,
        namespace: &str,
        policy: Option<Arc<dyn Policy>>,
    ) -> Arc<dyn Leadership> {
        let mut builder = RedisStore::builder(&server().url())
            .expect("valid redis URL")
            .namespace(namespace);
        if let Some(policy) = policy {
            builder = builder.policy(policy);
        }
        match builder.connect().await {
            Ok(store) => Arc::new(store),
            Err(err) => panic!("cannot connect to the test redis-server: {err}"),
        }
    }
}

#[async_trait]
impl StoreFactory for Factory {
    async fn open(&self, namespace: &str) -> Arc<dyn Leadership> {
        self.connect(namespace, None).await
    }

    async fn open_with_policy(
        &self,
        namespace: &str,
        policy: Arc<dyn Policy>,
    ) -> Arc<dyn Leadership> {
        self.connect(namespace, Some(policy)).await
    }

    fn profile(&self) -> Profile {
        // As the Redis crate's conformance profile: millisecond leases on the server's clock.
        Profile {
            min_duration: Duration::from_millis(200),
            expiry_slack: Duration::from_millis(250),
            notify_latency: Duration::from_millis(500),
        }
    }
}

fn factory() -> Arc<dyn StoreFactory> {
    Arc::new(Factory)
}

#[test]
fn rejected_input_changes_nothing() {
    leadership_core::conformance::hostile::rejected_input_changes_nothing(factory, 256);
}

#[test]
fn permissive_names_round_trip() {
    leadership_core::conformance::hostile::permissive_names_round_trip(factory, 128);
}

#[test]
fn namespaces_never_collide() {
    leadership_core::conformance::hostile::namespaces_never_collide(factory, 64);
}

#[test]
fn largest_names() {
    leadership_core::conformance::hostile::largest_names(factory);
}

#[test]
fn duration_edges() {
    leadership_core::conformance::hostile::duration_edges(factory);
}

#[test]
fn huge_durations() {
    leadership_core::conformance::hostile::huge_durations(factory, 64);
}
