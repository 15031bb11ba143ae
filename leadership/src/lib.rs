#![doc = include_str!("../../README.md")]

use std::sync::Arc;

// The contract, re-exported item by item: what a user of the facade needs and nothing by
// accident (a new core item is exported here on purpose, or not at all).
pub use leadership_core::{
    CancellationToken, Cause, Checker, Claimer, DEFAULT_NAMESPACE, DEFAULT_TIMEOUT, Error, Fence,
    Health, JujuPolicy, Leader, LeaderEvent, LeaderStream, LeaderTracker, Leadership,
    PermissivePolicy, Pinner, Policy, Reader, Result, Revoker, Role, Source, Term, Ticket, Token,
    Tracker, TrackerBuilder, TrackerWorker, Watcher, async_trait, redact_url, with_leader,
};
pub use leadership_core::{policy, retry, tracker, url, watch, work};

/// Per store operation metrics (M1): the store `connect` opens is wrapped in
/// [`metered::Metered`]; wrap a store built directly yourself.
#[cfg(feature = "metrics")]
pub use leadership_core::metered;

/// The conformance suite, for your own store (see the README's "Your own store").
#[cfg(feature = "conformance")]
pub use leadership_core::{conformance, conformance_tests, tracker_conformance};

/// The in-process store.
#[cfg(feature = "memory")]
pub use leadership_memory as memory;

/// The Redis store.
#[cfg(feature = "redis")]
pub use leadership_redis as redis;

/// The etcd store.
#[cfg(feature = "etcd")]
pub use leadership_etcd as etcd;

/// Mocks and real-server harnesses for tests.
#[cfg(feature = "testkit")]
pub use leadership_testkit as testkit;

/// Opens a store by URL and returns it as `Arc<dyn Leadership>`.
///
/// | URL | store | feature |
/// |---|---|---|
/// | `memory://` | a new private in-process store | `memory` |
/// | `memory://NAME` | the in-process store shared by that name | `memory` |
/// | `redis://[user:pass@]host:port[/db]`, `rediss://…` | Redis (TLS with `rediss`) | `redis` |
/// | `redis+cluster://[user:pass@]host:port[,host:port…]`, `rediss+cluster://…` | Redis Cluster (any nodes as seeds; TLS with `rediss+cluster`) | `redis` |
/// | `redis+sentinel://[user:pass@]host:port[,host:port…]/MASTER`, `rediss+sentinel://…` | Redis behind Sentinel (the sentinels' addresses; TLS to sentinels and servers with `rediss+sentinel`) | `redis` |
/// | `etcd://host:port[,host:port…]`, `etcds://…` | etcd (TLS with `etcds`) | `etcd` |
///
/// Every form takes `?namespace=NAME` (default `default`): handles with different namespaces
/// share nothing (N1).
///
/// With the `metrics` feature the store is wrapped in [`metered::Metered`] (labelled
/// `store = memory | redis | etcd`), so each operation's latency and outcome and the blocked
/// waiters are recorded through the `metrics` crate (M1); install a recorder before
/// connecting.
///
/// # Errors
/// [`Error::InvalidUrl`] for a malformed URL, an unknown scheme, or a store whose feature is
/// off (the message names the feature); whatever the store's connect returns otherwise (for
/// example [`Error::Unavailable`] when the server cannot be reached in time).
///
/// # Example
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> leadership::Result<()> {
/// let store = leadership::connect("memory://example?namespace=docs").await?;
/// let fence = store
///     .claim_leadership("wordpress", "wordpress/0", std::time::Duration::from_secs(30))
///     .await?;
/// assert_eq!(store.leadership_check("wordpress", "wordpress/0").check().await?, fence);
/// # Ok(())
/// # }
/// ```
pub async fn connect(url: &str) -> Result<Arc<dyn Leadership>> {
    // S1: the facade only dispatches on the scheme; each store parses its own URL with the
    // one grammar of `leadership_core::url`.
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(Error::invalid_url(
            url,
            "expected SCHEME://…, e.g. memory://, redis://127.0.0.1:6379 or etcd://127.0.0.1:2379",
        ));
    };
    let (store, name) = match scheme.to_ascii_lowercase().as_str() {
        "memory" => (connect_memory(url).await?, "memory"),
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" | "redis+sentinel"
        | "rediss+sentinel" => (connect_redis(url).await?, "redis"),
        "etcd" | "etcds" => (connect_etcd(url).await?, "etcd"),
        other => {
            return Err(Error::invalid_url(
                url,
                format!(
                    "unknown scheme {other:?}: use memory://, redis://, rediss://, redis+cluster://, \
                     rediss+cluster://, redis+sentinel://, rediss+sentinel://, etcd:// or etcds://"
                ),
            ));
        }
    };
    Ok(metered(store, name))
}

/// With the `metrics` feature, every store `connect` opens records its operations (M1).
#[cfg(feature = "metrics")]
fn metered(store: Arc<dyn Leadership>, name: &'static str) -> Arc<dyn Leadership> {
    Arc::new(leadership_core::metered::Metered::new(store, name))
}

#[cfg(not(feature = "metrics"))]
fn metered(store: Arc<dyn Leadership>, _: &'static str) -> Arc<dyn Leadership> {
    store
}

#[cfg(not(all(feature = "memory", feature = "redis", feature = "etcd")))]
fn feature_off(url: &str, store: &str, feature: &str) -> Error {
    Error::invalid_url(
        url,
        format!(
            "the {store} store is not compiled in: enable the `{feature}` feature of the \
             `leadership` crate"
        ),
    )
}

#[cfg(feature = "memory")]
async fn connect_memory(url: &str) -> Result<Arc<dyn Leadership>> {
    Ok(Arc::new(
        leadership_memory::MemoryStore::connect(url).await?,
    ))
}

#[cfg(not(feature = "memory"))]
async fn connect_memory(url: &str) -> Result<Arc<dyn Leadership>> {
    Err(feature_off(url, "memory", "memory"))
}

#[cfg(feature = "redis")]
async fn connect_redis(url: &str) -> Result<Arc<dyn Leadership>> {
    Ok(Arc::new(leadership_redis::RedisStore::connect(url).await?))
}

#[cfg(not(feature = "redis"))]
async fn connect_redis(url: &str) -> Result<Arc<dyn Leadership>> {
    Err(feature_off(url, "Redis", "redis"))
}

#[cfg(feature = "etcd")]
async fn connect_etcd(url: &str) -> Result<Arc<dyn Leadership>> {
    Ok(Arc::new(leadership_etcd::EtcdStore::connect(url).await?))
}

#[cfg(not(feature = "etcd"))]
async fn connect_etcd(url: &str) -> Result<Arc<dyn Leadership>> {
    Err(feature_off(url, "etcd", "etcd"))
}
