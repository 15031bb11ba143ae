#![doc = include_str!("../README.md")]

mod handle;
mod state;
mod store;
mod timer;

#[cfg(feature = "conformance")]
mod conformance;

#[cfg(feature = "conformance")]
pub use conformance::{MemoryFactory, conformance_profile};
pub use handle::{MemoryStore, MemoryStoreBuilder};
pub use state::MemoryStats;
