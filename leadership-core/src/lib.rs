#![doc = include_str!("../README.md")]

mod error;
mod fence;
mod forward;
#[cfg(feature = "metrics")]
pub mod metered;
pub mod policy;
pub mod record;
pub mod retry;
pub mod tracker;
mod traits;
pub mod url;
pub mod watch;
pub mod work;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
pub mod tracker_conformance;

pub use async_trait::async_trait;
pub use error::{Cause, Error, Result, Source, redact_url};
pub use fence::Fence;
pub use policy::{JujuPolicy, PermissivePolicy, Policy};
pub use tokio_util::sync::CancellationToken;
pub use tracker::{Health, LeaderTracker, Role, TrackerBuilder};
pub use traits::{
    Checker, Claimer, Leadership, Pinner, Reader, Revoker, Term, Ticket, Token, Tracker,
    TrackerWorker,
};
pub use url::{DEFAULT_NAMESPACE, DEFAULT_TIMEOUT};
pub use watch::{Leader, LeaderEvent, LeaderStream, Watcher};
pub use work::with_leader;
