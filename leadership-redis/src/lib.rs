#![doc = include_str!("../README.md")]

mod config;
mod error;
mod hints;
mod keys;
mod retry;
mod scripts;
mod store;
#[cfg(feature = "tls")]
mod tls;
mod waiters;
mod watch;

pub use config::RedisStoreBuilder;
pub use leadership_core::{DEFAULT_NAMESPACE, DEFAULT_TIMEOUT};
pub use store::{GuardedScript, RedisStore};
