#![doc = include_str!("../README.md")]

mod config;
mod error;
mod keys;
mod store;

pub use config::{DEFAULT_KEY_PREFIX, DEFAULT_NAMESPACE, DEFAULT_TIMEOUT, EtcdConfig};
pub use etcd_client;
pub use store::EtcdStore;

/// The backend name in errors.
pub(crate) const BACKEND: &str = "etcd";
