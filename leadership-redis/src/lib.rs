#![doc = include_str!("../README.md")]

mod config;
#[cfg(feature = "conformance")]
mod conformance;
mod conn;
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
#[cfg(feature = "conformance")]
pub use conformance::conformance_profile;
pub use leadership_core::{DEFAULT_NAMESPACE, DEFAULT_TIMEOUT};
pub use store::{GuardedScript, RedisStore};
