//! The leadership traits, juju's interfaces in Rust.
//!
//! All are `Send + Sync` and dyn-compatible: stores are used as `Arc<dyn Leadership>`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::watch::Watcher;
use crate::{Fence, Result};

/// Claims leadership and waits for it to be released (juju's `leadership.Claimer`).
#[async_trait]
pub trait Claimer: Send + Sync {
    /// Claims leadership of `application` for `unit` for `duration`.
    ///
    /// # Contract
    /// A vacant application is granted and a new term starts with a fence strictly greater than
    /// every earlier one (C1). The holder's claim extends the lease to the later of its current
    /// expiry and call start + `duration`, keeping the fence (C2). After `Ok` the unit leads for
    /// at least `duration` from the call, unless it revokes (C4). A claim that timed out may
    /// have applied; retrying is safe (E2). Returns the term's fence.
    ///
    /// # Errors
    /// [`Error::ClaimDenied`](crate::Error::ClaimDenied) if another unit holds the lease (C3);
    /// `Invalid*` for input the policy rejects, before any change (V);
    /// [`Error::Unavailable`](crate::Error::Unavailable) if the store cannot be reached in time (E1).
    async fn claim_leadership(
        &self,
        application: &str,
        unit: &str,
        duration: Duration,
    ) -> Result<Fence>;

    /// Waits until `application` has no leader.
    ///
    /// # Contract
    /// Returns at once if the application is vacant (B1), otherwise after a revoke or expiry,
    /// within the store's notification latency; extensions keep it blocked (B2). Dropping the
    /// future cancels cleanly (B3). A dropped store connection is survived (B5).
    ///
    /// # Errors
    /// [`Error::BlockCancelled`](crate::Error::BlockCancelled) when `cancel` fires (B3);
    /// [`Error::InvalidApplication`](crate::Error::InvalidApplication) for a rejected name.
    /// It never returns `Ok` because of a store error.
    async fn block_until_leadership_released(
        &self,
        application: &str,
        cancel: CancellationToken,
    ) -> Result<()>;
}

/// Hands out leadership tokens (juju's `leadership.Checker`).
pub trait Checker: Send + Sync {
    /// A token for `unit`'s leadership of `application`. Never fails itself: invalid input
    /// and store errors come out of [`Token::check`].
    fn leadership_check(&self, application: &str, unit: &str) -> Box<dyn Token>;
}

/// A leadership token (juju's `leadership.Token`).
#[async_trait]
pub trait Token: Send + Sync {
    /// Checks, at the moment of the call, that the unit leads; returns the term's fence.
    ///
    /// # Contract
    /// Authoritative when called (K1), reusable (K2), and the fence changes only when a new
    /// term starts (K3).
    ///
    /// # Errors
    /// [`Error::NotLeader`](crate::Error::NotLeader) if the unit does not lead;
    /// `Invalid*` for rejected input; [`Error::Unavailable`](crate::Error::Unavailable).
    async fn check(&self) -> Result<Fence>;
}

/// Ends a leadership early (juju's `leadership.Revoker`).
#[async_trait]
pub trait Revoker: Send + Sync {
    /// Revokes `unit`'s leadership of `application`.
    ///
    /// # Contract
    /// The holder's revoke ends the lease at once and releases blocked waiters (R1); revoking a
    /// vacant application is `Ok` (R3); pins are kept (P6).
    ///
    /// # Errors
    /// [`Error::ClaimNotHeld`](crate::Error::ClaimNotHeld) if another unit holds the lease (R2);
    /// `Invalid*`; [`Error::Unavailable`](crate::Error::Unavailable).
    async fn revoke_leadership(&self, application: &str, unit: &str) -> Result<()>;
}

/// Keeps leases from expiring (juju's `leadership.Pinner`).
#[async_trait]
pub trait Pinner: Send + Sync {
    /// Pins `application`'s leadership on behalf of `entity` (P1, P2, P4).
    ///
    /// # Errors
    /// `Invalid*` for a rejected application or entity; [`Error::Unavailable`](crate::Error::Unavailable).
    async fn pin_leadership(&self, application: &str, entity: &str) -> Result<()>;

    /// Removes `entity`'s pin; when the last pin goes, expiry resumes at the claimed expiry (P3).
    /// Unpinning without a pin is `Ok` (P2).
    ///
    /// # Errors
    /// `Invalid*` for a rejected application or entity; [`Error::Unavailable`](crate::Error::Unavailable).
    async fn unpin_leadership(&self, application: &str, entity: &str) -> Result<()>;

    /// Every pinned application with its sorted pinning entities (P5).
    ///
    /// # Errors
    /// [`Error::Unavailable`](crate::Error::Unavailable) or [`Error::Backend`](crate::Error::Backend).
    async fn pinned_leadership(&self) -> Result<BTreeMap<String, Vec<String>>>;
}

/// Lists current leaders (juju's `leadership.Reader`).
#[async_trait]
pub trait Reader: Send + Sync {
    /// A consistent snapshot of every held lease: application → unit (L1).
    ///
    /// # Errors
    /// [`Error::Unavailable`](crate::Error::Unavailable) or [`Error::Backend`](crate::Error::Backend).
    async fn leaders(&self) -> Result<BTreeMap<String, String>>;
}

/// Everything a store offers; implemented for every type that has the six parts (juju's five
/// and [`Watcher`]).
pub trait Leadership: Claimer + Checker + Revoker + Pinner + Reader + Watcher {}

impl<T: Claimer + Checker + Revoker + Pinner + Reader + Watcher + ?Sized> Leadership for T {}

/// The answer to a tracker's question, available once (juju's `leadership.Ticket`).
#[async_trait]
pub trait Ticket: Send + Sync {
    /// Waits for the answer: `true` if the asked-for state was reached.
    async fn wait(&self) -> bool;

    /// Completes when an answer is available, without consuming it; for `select!`.
    async fn ready(&self);
}

/// The current term of a tracker that leads.
#[derive(Debug, Clone)]
pub struct Term {
    /// The term's fence (F1).
    pub fence: Fence,
    /// Fires when the tracker stops being leader: at the latest when the guaranteed window
    /// ends without a successful renewal, before any other unit can be granted the lease (T7).
    pub lost: CancellationToken,
    /// When the call of the claim that started this term was made: the store keeps the
    /// lease for at least the claim's duration from here (C4).
    pub claim_started: Instant,
    /// When that claim returned: the first instant the unit knew it led. Histories start
    /// the term here, not when a watcher of the tracker noticed it.
    pub began: Instant,
}

/// Tracks one unit's leadership of its application (juju's `leadership.Tracker`).
pub trait Tracker: Send + Sync {
    /// The application, derived from the unit name (T1).
    fn application_name(&self) -> String;

    /// How long a `true` ticket result is guaranteed valid: the guarantee (T2, juju's
    /// `ClaimDuration`). The claims the tracker makes last twice this long; trust a
    /// leadership for this long from the ticket's request, never for a claim's length.
    fn claim_duration(&self) -> Duration;

    /// Resolves `true` only if leadership is guaranteed for the guarantee from now (T3).
    fn claim_leader(&self) -> Box<dyn Ticket>;

    /// Resolves `true` once the unit is leader (T5); `false` if the tracker stops first (T6).
    fn wait_leader(&self) -> Box<dyn Ticket>;

    /// Resolves `true` once the unit is minion after having been leader; ready at once with
    /// `false` if already minion (T5, juju); `false` if the tracker stops first (T6).
    fn wait_minion(&self) -> Box<dyn Ticket>;

    /// The current term while leader, with its loss signal (T7); `None` while minion.
    fn current_term(&self) -> Option<Term>;
}

/// A [`Tracker`] that runs as a task (juju's worker).
#[async_trait]
pub trait TrackerWorker: Tracker {
    /// Asks the tracker to stop. Returns at once; see [`TrackerWorker::wait`].
    fn kill(&self);

    /// Waits until the tracker has stopped.
    ///
    /// # Errors
    /// The fatal error that stopped it (T9), e.g. an `Invalid*` unit name.
    async fn wait(&self) -> Result<()>;
}
