//! One claim call, timed around the call: the record every recorder of claims keeps (the
//! tracker conformance's `ClaimProbe`, the testkit's `FaultyStore` and its history), so
//! their checks speak of the same thing (C4 counts from `started`; a term is known to its
//! unit from `returned`).
//!
//! ```
//! # async fn demo(store: &dyn leadership_core::Leadership) {
//! use std::time::Duration;
//! use leadership_core::record::{ClaimCall, ClaimOutcome};
//!
//! let call = ClaimCall::time(
//!     "web",
//!     "web/0",
//!     Duration::from_secs(30),
//!     store.claim_leadership("web", "web/0", Duration::from_secs(30)),
//! )
//! .await;
//! if let ClaimOutcome::Granted(fence) = call.outcome() {
//!     // web/0 leads until call.started + 30 s (C4), with this fence.
//!     # let _ = fence;
//! }
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::{Error, Fence, Result};

/// How a claim call ended, as the contract reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// `Ok(fence)`: the unit leads until call start + duration (C4).
    Granted(Fence),
    /// `ClaimDenied`: another unit leads.
    Denied,
    /// Any other error: the claim may or may not have applied (E2); it promises nothing.
    Failed,
}

/// One claim call, timed around the call itself.
#[derive(Debug, Clone)]
pub struct ClaimCall {
    /// The application claimed.
    pub application: String,
    /// The claimant.
    pub unit: String,
    /// The duration asked for.
    pub duration: Duration,
    /// When the call was made: a granted lease is promised from here (C4).
    pub started: Instant,
    /// When it returned: the first instant the unit knew the answer.
    pub returned: Instant,
    /// What it returned.
    pub result: Result<Fence>,
}

impl ClaimCall {
    /// Awaits `call` (a claim of `application` by `unit` for `duration`) and records it,
    /// timed from just before the first poll to its return.
    pub async fn time(
        application: &str,
        unit: &str,
        duration: Duration,
        call: impl Future<Output = Result<Fence>>,
    ) -> ClaimCall {
        let started = Instant::now();
        let result = call.await;
        ClaimCall {
            application: application.to_owned(),
            unit: unit.to_owned(),
            duration,
            started,
            returned: Instant::now(),
            result,
        }
    }

    /// How the call ended: granted, denied, or failed.
    pub fn outcome(&self) -> ClaimOutcome {
        match &self.result {
            Ok(fence) => ClaimOutcome::Granted(*fence),
            Err(Error::ClaimDenied) => ClaimOutcome::Denied,
            Err(_) => ClaimOutcome::Failed,
        }
    }

    /// The fence granted, if the claim returned `Ok`.
    pub fn granted(&self) -> Option<Fence> {
        self.result.as_ref().ok().copied()
    }
}
