#![doc = include_str!("../README.md")]

mod cas;
mod claim;
mod config;
mod connect;
mod error;
mod fence;
mod keys;
mod retry;
mod store;
mod traits;
mod txn;
mod watch;

pub use config::{DEFAULT_KEY_PREFIX, DEFAULT_NAMESPACE, DEFAULT_TIMEOUT, EtcdConfig};
pub use etcd_client;
pub use store::EtcdStore;

/// The backend name in errors.
pub(crate) const BACKEND: &str = "etcd";
