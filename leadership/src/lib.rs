#![doc = include_str!("../../README.md")]

use std::sync::Arc;

pub use leadership_core::*;

/// The contract crate, under its own name.
pub use leadership_core as core;

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

/// The namespace a URL without `?namespace=` gets.
pub const DEFAULT_NAMESPACE: &str = "default";

mod url;

pub use url::StoreUrl;

/// Opens a store by URL and returns it as `Arc<dyn Leadership>`.
///
/// | URL | store | feature |
/// |---|---|---|
/// | `memory://` | a new private in-process store | `memory` |
/// | `memory://NAME` | the in-process store shared by that name | `memory` |
/// | `redis://[user:pass@]host:port[/db]`, `rediss://…` | Redis (TLS with `rediss`) | `redis` |
/// | `etcd://host:port[,host:port…]`, `etcds://…` | etcd (TLS with `etcds`) | `etcd` |
///
/// Every form takes `?namespace=NAME` (default `default`): handles with different namespaces
/// share nothing (N1).
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
    let parsed = StoreUrl::parse(url)?;
    match parsed.scheme.as_str() {
        "memory" => connect_memory(&parsed),
        "redis" | "rediss" => connect_redis(url, &parsed).await,
        "etcd" | "etcds" => connect_etcd(url, &parsed).await,
        other => Err(Error::invalid_url(
            url,
            format!(
                "unknown scheme {other:?}: use memory://, redis://, rediss://, etcd:// or etcds://"
            ),
        )),
    }
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
fn connect_memory(parsed: &StoreUrl) -> Result<Arc<dyn Leadership>> {
    let store = match parsed.authority.as_str() {
        "" => leadership_memory::MemoryStore::new(),
        name => leadership_memory::MemoryStore::named(name),
    };
    Ok(Arc::new(store.namespace(&parsed.namespace)))
}

#[cfg(not(feature = "memory"))]
fn connect_memory(parsed: &StoreUrl) -> Result<Arc<dyn Leadership>> {
    Err(feature_off(&parsed.original, "memory", "memory"))
}

/// `redis://…?namespace=NS&timeout=2s`: the facade's parameters are taken out, the rest of
/// the URL goes to the redis crate.
#[cfg(feature = "redis")]
async fn connect_redis(url: &str, parsed: &StoreUrl) -> Result<Arc<dyn Leadership>> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut rest = Vec::new();
    let mut timeout = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("namespace", _)) => {}
            Some(("timeout", value)) => timeout = Some(url::parse_timeout(url, value)?),
            _ => rest.push(pair),
        }
    }
    let redis_url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut builder = leadership_redis::RedisStore::builder(redis_url).namespace(&parsed.namespace);
    if let Some(timeout) = timeout {
        builder = builder.operation_timeout(timeout);
    }
    Ok(Arc::new(builder.connect().await?))
}

#[cfg(not(feature = "redis"))]
async fn connect_redis(url: &str, _parsed: &StoreUrl) -> Result<Arc<dyn Leadership>> {
    Err(feature_off(url, "Redis", "redis"))
}

#[cfg(feature = "etcd")]
async fn connect_etcd(url: &str, _parsed: &StoreUrl) -> Result<Arc<dyn Leadership>> {
    let store = leadership_etcd::EtcdStore::connect_url(url).await?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "etcd"))]
async fn connect_etcd(url: &str, _parsed: &StoreUrl) -> Result<Arc<dyn Leadership>> {
    Err(feature_off(url, "etcd", "etcd"))
}
