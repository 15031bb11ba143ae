#![doc = include_str!("../README.md")]

mod builder;
mod cas;
mod claim;
#[cfg(feature = "conformance")]
mod conformance;
mod connect;
mod error;
mod fence;
mod follow;
mod keys;
mod retry;
mod store;
mod traits;
mod txn;
mod watch;

pub use builder::{DEFAULT_KEY_PREFIX, EtcdStoreBuilder};
#[cfg(feature = "conformance")]
pub use conformance::conformance_profile;
pub use etcd_client;
pub use leadership_core::{DEFAULT_NAMESPACE, DEFAULT_TIMEOUT};
pub use store::EtcdStore;

/// The backend name in errors.
pub(crate) const BACKEND: &str = "etcd";
