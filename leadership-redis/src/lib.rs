#![doc = include_str!("../README.md")]

mod config;
mod error;
mod hints;
mod keys;
mod scripts;
mod store;
#[cfg(feature = "tls")]
mod tls;
mod waiters;

pub use config::{DEFAULT_NAMESPACE, DEFAULT_OPERATION_TIMEOUT, RedisStoreBuilder};
pub use store::{GuardedScript, RedisStore};
