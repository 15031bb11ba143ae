//! The tracker worker: juju's leadership tracker, plus a loss signal, re-contention and
//! release on stop (DESIGN.md T1–T9). It works over any [`Claimer`], so every store has it.
//!
//! A [`LeaderTracker`] runs one task per unit. It claims the lease for twice the guarantee
//! and renews it a guarantee after the previous claim *started* (T2), so a `claim_leader()`
//! ticket that answers `true` promises leadership for at least the guarantee (T3). Denied,
//! it waits until the lease is released and claims again, forever (T4).
//!
//! # The loss deadline (T7)
//!
//! Store errors that [`Error::is_retryable`] are retried with jittered exponential backoff
//! between a floor and a ceiling. While leader, the tracker keeps a *loss deadline*:
//!
//! ```text
//! deadline = call start of the last successful claim + claim duration − safety margin
//! ```
//!
//! The call start is read from the tracker's clock *before* the request is sent. A store
//! measures its expiry from when it processed the claim, which is later, and keeps the lease
//! for at least the claim duration from then (C2, C4); so no other unit can be granted the
//! lease before `call start + claim duration`. If no renewal has succeeded by the deadline,
//! the tracker drops any renewal still in flight, turns minion, and fires the term's loss
//! signal ([`Term::lost`]), then keeps contending. The deadline is also checked whenever
//! a ticket or [`Tracker::current_term`] is asked for, so a late-scheduled task cannot make
//! the tracker claim leadership past it.
//!
//! The safety margin defaults to a tenth of the claim duration (6 s for juju's 30 s
//! guarantee, 60 s claim). It covers what the argument above leaves out: the rate at which
//! the tracker's and the store's clocks drift apart (NTP keeps that under 500 ppm, i.e.
//! 30 ms over a 60 s lease) and the time leader-only work needs to notice the signal and
//! stop. It must be shorter than the guarantee, so the renewal (at call start + guarantee)
//! comes before the deadline. Set it with [`TrackerBuilder::safety_margin`].
//!
//! `claim_leader()` answers `true` at once only if the deadline is at least a guarantee
//! away; otherwise it renews first. So after a `true`, the loss signal stays quiet for at
//! least the guarantee unless the tracker is stopped or the store denies a renewal.
//!
//! # Errors
//!
//! `ClaimDenied` is normal (T4). Retryable errors are retried (T7). Every other error is
//! fatal (T9): the tracker stops, fires the loss signal, answers every ticket `false`, and
//! [`TrackerWorker::wait`] returns the error. That covers `Invalid*` (found at build time,
//! before any store I/O, with the tracker's [`Policy`]) and also [`Error::Backend`]: a store
//! answer the driver could not classify as an outage is not something blind retries should
//! hide, and juju's tracker stops on any unexpected error too. Restart policy belongs to the
//! caller's supervisor. Errors from `block_until_leadership_released` only end the wait: the
//! tracker then claims, and the claim's answer decides.
//!
//! # Stopping
//!
//! [`TrackerWorker::kill`] (or dropping the tracker) stops it; [`TrackerWorker::wait`] waits
//! for the stop. Stopping fires the loss signal first, answers every ticket `false` (T6) and,
//! with [`TrackerBuilder::release_on_stop`], then revokes the lease so a waiting unit takes
//! over at once (T8). A failed revoke is logged; the lease then expires as without release.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use leadership_core::{Leadership, Tracker, TrackerWorker};
//! use leadership_core::tracker::LeaderTracker;
//!
//! /// Leader-only work for one term, stopped by the loss signal.
//! async fn serve(store: Arc<dyn Leadership>) -> leadership_core::Result<()> {
//!     let tracker = LeaderTracker::builder("wordpress/0", Duration::from_secs(30), store.clone())
//!         .release_on_stop(store)
//!         .spawn();
//!     while tracker.wait_leader().wait().await {
//!         let Some(term) = tracker.current_term() else { continue };
//!         tokio::select! {
//!             () = term.lost.cancelled() => {} // stop writing: another unit may lead soon
//!             () = do_leader_work(term.fence) => {}
//!         }
//!     }
//!     tracker.kill();
//!     tracker.wait().await
//! }
//! # async fn do_leader_work(_fence: leadership_core::Fence) {}
//! ```
//!
//! # Leader-only work (W2, W3)
//!
//! [`LeaderTracker::run_as_leader`] runs work for every term the tracker wins, stops it with
//! the term's loss signal, and, on a stop with release, waits for it before revoking.
//! [`LeaderTracker::with_stable_leadership`] runs work while the role does not change. For a
//! lease held without a tracker, see [`with_leader`](crate::with_leader) (W1).
//!
//! # Health and metrics (H1, M1)
//!
//! [`LeaderTracker::health`] reports what client-go's `HealthzAdaptor` would. With the
//! `metrics` feature, each tracker records the metrics listed in the crate docs
//! (`leadership_is_leader`, `leadership_transitions_total`, claim latency and failures).
//!
//! # Observability
//!
//! Each transition is a `tracing` event with `application`, `unit` and `fence` fields and a
//! `transition` of `promoted` (info), `demoted` (warn, with a `reason`), `renew failed` or
//! `claim failed` (warn, with the error and the retry delay) and `released` (info).

mod metrics;
mod role;
mod run;
mod state;
mod ticket;

pub use role::Role;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::{
    CancellationToken, Claimer, Error, JujuPolicy, Policy, Result, Revoker, Term, Ticket, Tracker,
    TrackerWorker,
};
use state::Shared;

/// Builds a [`LeaderTracker`]; see [`LeaderTracker::builder`].
#[must_use = "a builder does nothing until spawned"]
pub struct TrackerBuilder {
    unit: String,
    guarantee: Duration,
    claimer: Arc<dyn Claimer>,
    policy: Arc<dyn Policy>,
    release: Option<Arc<dyn Revoker>>,
    safety_margin: Option<Duration>,
    backoff_floor: Option<Duration>,
    backoff_ceiling: Option<Duration>,
    health_tolerance: Option<Duration>,
    application_label: bool,
}

impl fmt::Debug for TrackerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackerBuilder")
            .field("unit", &self.unit)
            .field("guarantee", &self.guarantee)
            .field("policy", &self.policy)
            .field("release_on_stop", &self.release.is_some())
            .field("safety_margin", &self.safety_margin)
            .field("backoff_floor", &self.backoff_floor)
            .field("backoff_ceiling", &self.backoff_ceiling)
            .field("health_tolerance", &self.health_tolerance)
            .field("application_label", &self.application_label)
            .finish_non_exhaustive()
    }
}

impl TrackerBuilder {
    /// The validation policy, used to derive the application from the unit (T1) and to
    /// check the unit and the claim duration before any claim (T9). Default: [`JujuPolicy`].
    pub fn policy(mut self, policy: Arc<dyn Policy>) -> Self {
        self.policy = policy;
        self
    }

    /// Revoke the lease through `revoker` when the tracker stops, so a waiting unit takes
    /// over at once (T8). Any store is a revoker: pass the same `Arc<dyn Leadership>`.
    pub fn release_on_stop(mut self, revoker: Arc<dyn Revoker>) -> Self {
        self.release = Some(revoker);
        self
    }

    /// How long before the end of the guaranteed window the tracker gives up leadership if
    /// no renewal succeeded (T7). Default: a tenth of the claim duration. Must be shorter
    /// than the guarantee; see the [module docs](self#the-loss-deadline-t7).
    pub fn safety_margin(mut self, margin: Duration) -> Self {
        self.safety_margin = Some(margin);
        self
    }

    /// The shortest delay between retries of a failing store call. Default: a twentieth of
    /// the guarantee, between 1 ms and 1 s.
    pub fn backoff_floor(mut self, floor: Duration) -> Self {
        self.backoff_floor = Some(floor);
        self
    }

    /// The longest delay between retries. Default: a quarter of the guarantee, at most 10 s
    /// and at least the floor.
    pub fn backoff_ceiling(mut self, ceiling: Duration) -> Self {
        self.backoff_ceiling = Some(ceiling);
        self
    }

    /// How much older than the guarantee a leader's last successful renewal may be before
    /// [`LeaderTracker::health`] reports it unhealthy (H1, client-go's `HealthzAdaptor`
    /// timeout). Default: a quarter of the guarantee, so a leader whose renewal (due a
    /// guarantee after the previous one) keeps failing is reported well before the loss
    /// deadline (T7) makes it give up.
    pub fn health_tolerance(mut self, tolerance: Duration) -> Self {
        self.health_tolerance = Some(tolerance);
        self
    }

    /// Whether the tracker's metrics carry `application` and `unit` labels (M1). Default:
    /// true. Turn it off for deployments with many thousands of applications: every tracker
    /// of the process then shares one series per metric (and label value such as `call`), so
    /// `leadership_is_leader` counts the leaderships the process holds, and the recorder keeps
    /// a handful of series instead of several per tracker. Has no effect without the
    /// `metrics` feature.
    pub fn metrics_application_label(mut self, on: bool) -> Self {
        self.application_label = on;
        self
    }

    /// Starts the tracker's task.
    ///
    /// With the `metrics` feature, the tracker registers its metrics here, with the recorder
    /// installed at this moment: install the recorder before spawning trackers.
    ///
    /// Invalid settings do not fail here: the tracker stops at once and
    /// [`TrackerWorker::wait`] returns the `Invalid*` error (T9), as juju's worker does.
    ///
    /// # Panics
    /// Outside a tokio runtime, like [`tokio::spawn`].
    pub fn spawn(self) -> LeaderTracker {
        let claim_duration = self.guarantee.checked_mul(2);
        let margin = self
            .safety_margin
            .unwrap_or_else(|| claim_duration.unwrap_or(Duration::MAX) / 10);
        let floor = self.backoff_floor.unwrap_or_else(|| {
            (self.guarantee / 20).clamp(Duration::from_millis(1), Duration::from_secs(1))
        });
        let ceiling = self
            .backoff_ceiling
            .unwrap_or_else(|| (self.guarantee / 4).min(Duration::from_secs(10)).max(floor));
        let application = self.policy.application_of(&self.unit);
        let invalid = validate(
            &*self.policy,
            &self.unit,
            &application,
            self.guarantee,
            claim_duration,
            margin,
            floor,
            ceiling,
        )
        .err();
        let application = application.unwrap_or_default();
        let metrics = metrics::Metrics::new(&application, &self.unit, self.application_label);
        let tolerance = self.health_tolerance.unwrap_or(self.guarantee / 4);
        let shared = Arc::new(Shared::new(
            self.unit,
            application,
            self.guarantee,
            claim_duration.unwrap_or(Duration::MAX),
            margin.min(self.guarantee),
            tolerance,
            metrics,
        ));
        let task = run::Task {
            shared: shared.clone(),
            claimer: self.claimer,
            release: self.release,
            backoff: crate::retry::Backoff::new(floor, ceiling),
            invalid,
            may_hold: AtomicBool::new(false),
        };
        let (done_tx, done) = watch::channel(None);
        tokio::spawn(async move {
            let outcome = task.run().await;
            done_tx.send_replace(Some(outcome));
        });
        LeaderTracker { shared, done }
    }
}

#[allow(clippy::too_many_arguments)]
fn validate(
    policy: &dyn Policy,
    unit: &str,
    application: &Result<String>,
    guarantee: Duration,
    claim_duration: Option<Duration>,
    margin: Duration,
    floor: Duration,
    ceiling: Duration,
) -> Result<()> {
    let application = application.as_ref().map_err(Clone::clone)?;
    policy.check_unit(application, unit)?;
    let invalid = |duration, reason: &str| Error::InvalidDuration {
        duration,
        reason: reason.to_owned(),
    };
    let Some(claim_duration) = claim_duration else {
        return Err(invalid(guarantee, "twice the guarantee overflows (T2)"));
    };
    policy.check_duration(claim_duration)?;
    if margin >= guarantee {
        return Err(invalid(
            margin,
            "the safety margin must be shorter than the guarantee (T7)",
        ));
    }
    if floor.is_zero() {
        return Err(invalid(
            floor,
            "the backoff floor must be greater than zero (T7)",
        ));
    }
    if ceiling < floor {
        return Err(invalid(
            ceiling,
            "the backoff ceiling must not be below the backoff floor (T7)",
        ));
    }
    Ok(())
}

/// Juju's leadership tracker for one unit, with a loss signal, re-contention and release on
/// stop. See the [module docs](self).
///
/// Dropping it kills it, like [`TrackerWorker::kill`].
pub struct LeaderTracker {
    shared: Arc<Shared>,
    done: watch::Receiver<Option<Result<()>>>,
}

impl fmt::Debug for LeaderTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderTracker")
            .field("unit", &self.shared.unit)
            .field("application", &self.shared.application)
            .field("guarantee", &self.shared.guarantee)
            .field("term", &self.shared.current_term().map(|t| t.fence))
            .finish_non_exhaustive()
    }
}

impl LeaderTracker {
    /// A builder for a tracker of `unit`, guaranteeing leadership for `guarantee` per
    /// `claim_leader()` (T2, T3), over any store: pass an `Arc<dyn Leadership>` or a bare
    /// `Arc<dyn Claimer>`.
    pub fn builder(
        unit: impl Into<String>,
        guarantee: Duration,
        claimer: Arc<dyn Claimer>,
    ) -> TrackerBuilder {
        TrackerBuilder {
            unit: unit.into(),
            guarantee,
            claimer,
            policy: Arc::new(JujuPolicy::default()),
            release: None,
            safety_margin: None,
            backoff_floor: None,
            backoff_ceiling: None,
            health_tolerance: None,
            application_label: true,
        }
    }

    /// The unit this tracker claims for.
    pub fn unit_name(&self) -> &str {
        &self.shared.unit
    }

    /// The guarantee: how long a `true` from `claim_leader()` promises leadership.
    pub fn guarantee(&self) -> Duration {
        self.shared.guarantee
    }

    /// The safety margin kept before the end of the guaranteed window (T7).
    pub fn safety_margin(&self) -> Duration {
        self.shared.safety_margin
    }

    /// What the tracker believes now (W3).
    pub fn role(&self) -> Role {
        *self.shared.view().borrow()
    }

    /// H1, client-go's `HealthzAdaptor`: [`Health::Stale`] while the tracker believes it
    /// leads but its last successful claim or renewal is older than the guarantee plus the
    /// [tolerance](TrackerBuilder::health_tolerance); [`Health::Failed`] once it stopped with
    /// a fatal error (T9); [`Health::Healthy`] otherwise (a minion, or a tracker stopped
    /// cleanly, is healthy: it is not holding anything it cannot keep).
    pub fn health(&self) -> Health {
        self.shared.health()
    }

    /// Runs leader-only work for every term of this tracker (W2): `work(term)` is spawned as
    /// a new task each time the unit becomes leader (and at once if it leads now).
    ///
    /// # Contract
    /// - The work is asked to stop by the term's loss signal ([`Term::lost`]), which fires
    ///   a safety margin before any other unit can be granted the lease (T7). If it has not
    ///   ended half a safety margin after the signal, its future is dropped, so it never runs
    ///   into the next leader's term (the other half covers clock drift and scheduling).
    /// - When the tracker stops, the running work is waited for (bounded by the guarantee,
    ///   and by the old lease's earliest expiry) *before* the lease is released (T8), so the
    ///   next leader's work never starts before the old leader's work has ended.
    /// - Work registered after the tracker stopped never runs.
    pub fn run_as_leader<W, Fut>(&self, work: W)
    where
        W: Fn(Term) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.shared
            .run_as_leader(Arc::new(move |term| Box::pin(work(term))));
    }

    /// Runs `work` while the tracker's role (leader in one term, or minion) does not change
    /// (W3, juju 4.0's `ChangeTracker.WithStableLeadership`).
    ///
    /// # Contract
    /// - Waits for the first claim's answer if the tracker is still undecided, then runs
    ///   `work(token)` and returns its result if the role stayed the same throughout.
    /// - A change of role (promoted, demoted, a new term, the loss deadline passing, the
    ///   tracker stopping) cancels `token`; once the work has returned, the result is
    ///   [`Error::LeadershipChanged`] naming the roles before and after, whatever the work
    ///   returned.
    ///
    /// # Errors
    /// [`Error::LeadershipChanged`] as above; [`Error::Stopped`] if the tracker had stopped
    /// before the work could start; otherwise the work's own error.
    pub async fn with_stable_leadership<T, W, Fut>(&self, work: W) -> Result<T>
    where
        W: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let stopped = || Error::Stopped {
            what: "leadership tracker",
        };
        let mut view = self.shared.view();
        let from = match view.wait_for(|role| *role != Role::Undecided).await {
            Ok(role) => *role,
            Err(_) => return Err(stopped()),
        };
        if from == Role::Stopped {
            return Err(stopped());
        }
        // The loss deadline can pass before the task wakes to demote (T7): the term's signal
        // is the earlier sign.
        let lost = match (from, self.shared.current_term()) {
            (Role::Leader { fence }, Some(term)) if term.fence == fence => term.lost,
            (Role::Leader { .. }, _) => {
                let to = *view.borrow();
                return Err(self.changed(from, to));
            }
            _ => CancellationToken::new(),
        };
        let token = CancellationToken::new();
        let work = work(token.clone());
        tokio::pin!(work);
        let changed = async {
            tokio::select! {
                role = view.wait_for(|role| *role != from) => match role {
                    Ok(role) => *role,
                    Err(_) => Role::Stopped,
                },
                // The role is shown before the signal fires; if it has not changed yet,
                // the loss deadline passed and the task has yet to demote (T7).
                () = lost.cancelled() => match *self.shared.view().borrow() {
                    role if role != from => role,
                    _ => Role::Minion,
                },
            }
        };
        let to = tokio::select! {
            output = &mut work => return output,
            to = changed => to,
        };
        token.cancel();
        let _ignored = work.await;
        Err(self.changed(from, to))
    }

    fn changed(&self, from: Role, to: Role) -> Error {
        Error::LeadershipChanged {
            unit: self.shared.unit.clone(),
            from,
            to,
        }
    }
}

/// A tracker's health (H1); see [`LeaderTracker::health`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Health {
    /// Nothing to report.
    Healthy,
    /// It believes it leads, but has not renewed for longer than allowed.
    Stale {
        /// Time since the last successful claim or renewal.
        since_renewal: Duration,
        /// The guarantee plus the tolerance.
        allowed: Duration,
    },
    /// It stopped with this fatal error (T9).
    Failed(Error),
}

impl Health {
    /// True for [`Health::Healthy`].
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Healthy => f.write_str("healthy"),
            Health::Stale {
                since_renewal,
                allowed,
            } => write!(
                f,
                "leader without a successful renewal for {since_renewal:?} (allowed {allowed:?})"
            ),
            Health::Failed(err) => write!(f, "stopped with an error: {}", err.one_line()),
        }
    }
}

impl Drop for LeaderTracker {
    fn drop(&mut self) {
        self.shared.kill.cancel();
    }
}

impl Tracker for LeaderTracker {
    fn application_name(&self) -> String {
        self.shared.application.clone()
    }

    fn claim_duration(&self) -> Duration {
        // T2: juju's ClaimDuration is the guarantee, not the length of the claims made.
        self.shared.guarantee
    }

    fn claim_leader(&self) -> Box<dyn Ticket> {
        Box::new(self.shared.claim_leader())
    }

    fn wait_leader(&self) -> Box<dyn Ticket> {
        Box::new(self.shared.wait_leader())
    }

    fn wait_minion(&self) -> Box<dyn Ticket> {
        Box::new(self.shared.wait_minion())
    }

    fn current_term(&self) -> Option<Term> {
        self.shared.current_term()
    }
}

#[async_trait]
impl TrackerWorker for LeaderTracker {
    fn kill(&self) {
        self.shared.kill.cancel();
    }

    async fn wait(&self) -> Result<()> {
        let mut done = self.done.clone();
        match done.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or(Ok(())),
            // The task ended without an outcome: it panicked.
            Err(_) => Err(Error::Stopped {
                what: "leadership tracker (its task panicked)",
            }),
        }
    }
}
