//! The tracker's observable state, shared by the handle and its task.
//!
//! Every transition happens here, under one short-held mutex, and never across an `.await`.
//! The handle answers tickets from this state without a round trip to the task; the task
//! does the store I/O and reports outcomes back through [`Shared`]'s transition methods.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::metrics::{Ended, Metrics};
use super::ticket::{self, Resolver, WatchTicket};
use super::{Health, Role};
use crate::{Error, Fence, Term};

/// Leader-only work registered with `run_as_leader` (W2): a future per term.
pub(super) type Runner =
    Arc<dyn Fn(Term) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What the tracker believes about its unit.
#[derive(Debug)]
enum Belief {
    /// Before the first claim has answered.
    Unknown,
    /// Not leader.
    Minion,
    /// Leader of the current term.
    Leader(Lease),
}

/// A leadership as the tracker sees it.
#[derive(Debug)]
struct Lease {
    fence: Fence,
    /// The term's loss signal (T7).
    lost: CancellationToken,
    /// Call start of the last successful claim + guarantee (T2).
    renew_at: Instant,
    /// Call start of the last successful claim + claim duration − safety margin: the moment
    /// the tracker stops believing it leads unless a renewal succeeded first (T7).
    deadline: Instant,
    /// Call start of the claim that began this term.
    claim_started: Instant,
    /// When that claim returned.
    began: Instant,
}

impl Lease {
    /// The term as the tracker shows it.
    fn term(&self) -> Term {
        Term {
            fence: self.fence,
            lost: self.lost.clone(),
            claim_started: self.claim_started,
            began: self.began,
        }
    }
}

#[derive(Debug, Default)]
struct Tickets {
    /// `claim_leader` tickets waiting for a renewal or the first claim, with their request time.
    claims: Vec<(Instant, Resolver)>,
    /// `wait_leader` tickets.
    leader: Vec<Resolver>,
    /// `wait_minion` tickets asked while leader.
    minion: Vec<Resolver>,
    /// `wait_minion` tickets asked before the first claim answered.
    undecided_minion: Vec<Resolver>,
}

struct State {
    role: Belief,
    stopped: bool,
    tickets: Tickets,
    /// When the last claim or renewal succeeded (H1).
    last_renewal: Option<Instant>,
    /// The fatal error the tracker stopped with (T9, H1).
    failure: Option<Error>,
    /// Leader-only work to start for every term (W2).
    runners: Vec<Runner>,
    /// The running terms' work tasks (W2).
    work: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("role", &self.role)
            .field("stopped", &self.stopped)
            .field("last_renewal", &self.last_renewal)
            .field("failure", &self.failure)
            .field("runners", &self.runners.len())
            .field("work", &self.work.len())
            .finish_non_exhaustive()
    }
}

/// Names, timings and state shared by [`LeaderTracker`](super::LeaderTracker) and its task.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) unit: String,
    pub(super) application: String,
    pub(super) guarantee: Duration,
    pub(super) claim_length: Duration,
    pub(super) safety_margin: Duration,
    /// Fired by `kill()` (and on drop).
    pub(super) kill: CancellationToken,
    /// Asks the task to renew now: a `claim_leader` ticket needs a fresh guarantee (T3).
    pub(super) renew_now: Notify,
    /// How much older than the guarantee the last renewal of a leader may be before the
    /// tracker reports itself unhealthy (H1).
    pub(super) health_tolerance: Duration,
    /// The role as users see it, for `with_stable_leadership` (W3) and `role()`.
    view: watch::Sender<Role>,
    /// Set once, when the tracker stops while leading: by when the old term's work must have
    /// ended, so that it ends before the lease can pass to another unit (W2).
    stop_bound: Arc<OnceLock<Instant>>,
    pub(super) metrics: Metrics,
    state: Mutex<State>,
}

impl Shared {
    pub(super) fn new(
        unit: String,
        application: String,
        guarantee: Duration,
        claim_length: Duration,
        safety_margin: Duration,
        health_tolerance: Duration,
        metrics: Metrics,
    ) -> Self {
        Shared {
            unit,
            application,
            guarantee,
            claim_length,
            safety_margin,
            kill: CancellationToken::new(),
            renew_now: Notify::new(),
            health_tolerance,
            view: watch::Sender::new(Role::Undecided),
            stop_bound: Arc::new(OnceLock::new()),
            metrics,
            state: Mutex::new(State {
                role: Belief::Unknown,
                stopped: false,
                tickets: Tickets::default(),
                last_renewal: None,
                failure: None,
                runners: Vec::new(),
                work: Vec::new(),
            }),
        }
    }

    /// The role as users see it, and its changes (W3).
    pub(super) fn view(&self) -> watch::Receiver<Role> {
        self.view.subscribe()
    }

    fn show(&self, role: Role) {
        self.view.send_if_modified(|shown| {
            let changed = *shown != role;
            *shown = role;
            changed
        });
    }

    /// H1: unhealthy when it believes it leads but its last successful renewal is older than
    /// the guarantee plus the tolerance, or when it stopped with an error.
    pub(super) fn health(&self) -> Health {
        let now = Instant::now();
        let state = self.lock();
        if let Some(err) = &state.failure {
            return Health::Failed(err.clone());
        }
        let allowed = self.guarantee + self.health_tolerance;
        match (&state.role, state.last_renewal) {
            (Belief::Leader(_), Some(last)) if now.duration_since(last) > allowed => {
                Health::Stale {
                    since_renewal: now.duration_since(last),
                    allowed,
                }
            }
            _ => Health::Healthy,
        }
    }

    /// The task stopped with a fatal error (T9); reported by `health()` (H1).
    pub(super) fn failed(&self, err: &Error) {
        self.lock().failure = Some(err.clone());
    }

    /// Registers leader-only work (W2) and starts it at once if the tracker leads.
    pub(super) fn run_as_leader(&self, runner: Runner) {
        let now = Instant::now();
        let mut state = self.lock();
        if state.stopped {
            return;
        }
        let term = Self::live_lease(&state, now).map(Lease::term);
        if let Some(term) = term {
            let handle = self.spawn_work(&runner, term);
            state.work.retain(|h| !h.is_finished());
            state.work.push(handle);
        }
        state.runners.push(runner);
    }

    /// Starts one term's work: it runs until it ends, or, once the term's loss signal has
    /// fired, for at most half the safety margin (the loss fires a safety margin before
    /// another unit can be granted the lease, T7; the other half is left for clock drift and
    /// scheduling) or, when the tracker is stopping, until the stop's bound. Past that the
    /// work's future is dropped: it never runs into another unit's term.
    fn spawn_work(&self, runner: &Runner, term: Term) -> JoinHandle<()> {
        let margin = self.safety_margin / 2;
        let bound = self.stop_bound.clone();
        let lost = term.lost.clone();
        let runner = runner.clone();
        tokio::spawn(async move {
            // Called here, not under the state's lock: the user's closure may use the tracker.
            let mut work = runner(term);
            tokio::select! {
                () = &mut work => return,
                () = lost.cancelled() => {}
            }
            let until = bound
                .get()
                .copied()
                .unwrap_or_else(|| Instant::now() + margin);
            let _ended_in_time = tokio::time::timeout_at(until, work).await;
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-changed in a way that
        // matters more than stopping would; keep serving rather than propagate the poison.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lease while it is still within its deadline; fires the loss signal of a lease
    /// whose deadline has passed, even if the task has not woken yet (T7).
    fn live_lease(state: &State, now: Instant) -> Option<&Lease> {
        match &state.role {
            Belief::Leader(lease) if now < lease.deadline => Some(lease),
            Belief::Leader(lease) => {
                lease.lost.cancel();
                None
            }
            _ => None,
        }
    }

    /// T3: true at once if leadership is guaranteed for the guarantee from now; pending until
    /// a renewal (asked for at once) if the renewal is due; false if minion.
    pub(super) fn claim_leader(&self) -> WatchTicket {
        let now = Instant::now();
        let mut state = self.lock();
        if state.stopped {
            return ticket::resolved(false);
        }
        match &state.role {
            Belief::Minion => return ticket::resolved(false),
            Belief::Leader(_) => match Self::live_lease(&state, now) {
                None => return ticket::resolved(false),
                Some(lease) if now + self.guarantee <= lease.deadline => {
                    return ticket::resolved(true);
                }
                Some(_) => self.renew_now.notify_one(),
            },
            Belief::Unknown => {}
        }
        let (ticket, resolver) = ticket::pending();
        state.tickets.claims.retain(|(_, r)| !r.is_abandoned());
        state.tickets.claims.push((now, resolver));
        ticket
    }

    /// T5: true once leader.
    pub(super) fn wait_leader(&self) -> WatchTicket {
        let now = Instant::now();
        let mut state = self.lock();
        if state.stopped {
            return ticket::resolved(false);
        }
        if Self::live_lease(&state, now).is_some() {
            return ticket::resolved(true);
        }
        let (ticket, resolver) = ticket::pending();
        ticket::prune(&mut state.tickets.leader);
        state.tickets.leader.push(resolver);
        ticket
    }

    /// T5: true on losing leadership; ready at once with false if already minion (juju).
    pub(super) fn wait_minion(&self) -> WatchTicket {
        let now = Instant::now();
        let mut state = self.lock();
        if state.stopped {
            return ticket::resolved(false);
        }
        let (ticket, resolver) = ticket::pending();
        match &state.role {
            Belief::Minion => return ticket::resolved(false),
            Belief::Unknown => {
                ticket::prune(&mut state.tickets.undecided_minion);
                state.tickets.undecided_minion.push(resolver);
            }
            Belief::Leader(_) => {
                if Self::live_lease(&state, now).is_none() {
                    // The window ended and the task is about to demote: that is the loss
                    // this ticket waits for.
                    return ticket::resolved(true);
                }
                ticket::prune(&mut state.tickets.minion);
                state.tickets.minion.push(resolver);
            }
        }
        ticket
    }

    /// The current term while leader (T7).
    pub(super) fn current_term(&self) -> Option<Term> {
        let state = self.lock();
        Self::live_lease(&state, Instant::now()).map(Lease::term)
    }

    /// When the current lease is due for renewal, or `None` if not leader.
    pub(super) fn renew_at(&self) -> Option<Instant> {
        match &self.lock().role {
            Belief::Leader(lease) => Some(lease.renew_at),
            _ => None,
        }
    }

    /// The current lease's loss deadline, or `None` if not leader.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match &self.lock().role {
            Belief::Leader(lease) => Some(lease.deadline),
            _ => None,
        }
    }

    /// The loss deadline of a claim whose call started at `call_start` (T7): the store keeps
    /// the lease for at least the claim duration from the call (C4), so no other unit can be
    /// granted it before `call_start + claim_length`; the margin is kept on top of that.
    pub(super) fn deadline_for(&self, call_start: Instant) -> Instant {
        call_start + self.claim_length - self.safety_margin
    }

    /// A claim that started at `call_start` succeeded with `fence`. Returns false if the
    /// tracker did not become (or stay) leader: it is stopping, or the answer came so late
    /// that the claim's own window has already ended.
    pub(super) fn claimed(&self, fence: Fence, call_start: Instant) -> bool {
        let now = Instant::now();
        let renew_at = call_start + self.guarantee;
        let deadline = self.deadline_for(call_start);
        let mut state = self.lock();
        if state.stopped || now >= deadline {
            return false;
        }
        let state = &mut *state;
        state.last_renewal = Some(now);
        match &mut state.role {
            Belief::Leader(lease) if lease.fence == fence => {
                // C2: an extension keeps the fence; the window only moves forward.
                lease.renew_at = lease.renew_at.max(renew_at);
                lease.deadline = lease.deadline.max(deadline);
            }
            role => {
                if let Belief::Leader(old) = role {
                    self.show(Role::Leader { fence });
                    // The store started a new term under us: the old one is over.
                    self.demoted(old, "the store started a new term", Some(Ended::Demoted));
                    resolve_all(&mut state.tickets.minion, true);
                }
                let lease = Lease {
                    fence,
                    lost: CancellationToken::new(),
                    renew_at,
                    deadline,
                    claim_started: call_start,
                    began: now,
                };
                tracing::info!(
                    application = %self.application,
                    unit = %self.unit,
                    fence = %fence,
                    transition = "promoted",
                    "leadership promoted"
                );
                let term = lease.term();
                *role = Belief::Leader(lease);
                self.metrics.promoted();
                self.show(Role::Leader { fence });
                state.work.retain(|h| !h.is_finished());
                for runner in &state.runners {
                    let handle = self.spawn_work(runner, term.clone());
                    state.work.push(handle);
                }
                resolve_all(&mut state.tickets.leader, true);
                // Juju answers a wait_minion asked before the first claim once it knows: a
                // leader's waits for the loss.
                let undecided = std::mem::take(&mut state.tickets.undecided_minion);
                state.tickets.minion.extend(undecided);
            }
        }
        // T3: a pending claim is answered true if this renewal guarantees the guarantee from
        // its request; otherwise it waits for the next renewal, which is due at once.
        let claims = std::mem::take(&mut state.tickets.claims);
        for (asked, resolver) in claims {
            if asked + self.guarantee <= deadline {
                resolver.resolve(true);
            } else {
                state.tickets.claims.push((asked, resolver));
            }
        }
        if !state.tickets.claims.is_empty() {
            self.renew_now.notify_one();
        }
        true
    }

    /// The tracker is not leader: denied, window ended, or the first claim failed.
    pub(super) fn minion(&self, reason: &str, how: Ended) {
        let mut state = self.lock();
        let state = &mut *state;
        // Shown before the loss signal fires, so whoever wakes on the signal sees the new role.
        self.show(Role::Minion);
        if let Belief::Leader(old) = &state.role {
            self.demoted(old, reason, Some(how));
            resolve_all(&mut state.tickets.minion, true);
        }
        state.role = Belief::Minion;
        resolve_all(&mut state.tickets.undecided_minion, false);
        for (_, resolver) in state.tickets.claims.drain(..) {
            resolver.resolve(false);
        }
    }

    /// Stops: fires the loss signal and answers every pending and later ticket `false` (T6).
    /// Returns the fence of the term that ended, if the tracker was leader, the work still
    /// running (W2) and by when it must end: well before the lease could pass to another unit
    /// (the old lease's deadline plus half the safety margin), and at most a guarantee from
    /// now.
    pub(super) fn stop(&self, reason: &str) -> Stopped {
        let now = Instant::now();
        let mut state = self.lock();
        state.stopped = true;
        let mut bound = now;
        // Shown before the loss signal fires, so whoever wakes on the signal sees the new role.
        self.show(Role::Stopped);
        let fence = match &state.role {
            Belief::Leader(old) => {
                // Half the margin is left before the lease could pass, as in `spawn_work`.
                bound = (now + self.guarantee).min(old.deadline + self.safety_margin / 2);
                // Before the loss signal fires, so the work sees the bound (W2).
                let _ = self.stop_bound.set(bound);
                self.demoted(old, reason, None);
                Some(old.fence)
            }
            _ => None,
        };
        state.role = Belief::Minion;
        // Dropping the resolvers answers their tickets false.
        state.tickets = Tickets::default();
        state.runners.clear();
        Stopped {
            fence,
            work: std::mem::take(&mut state.work),
            bound,
        }
    }

    /// `how` is `None` for a stop: the gauge drops now, and the task counts the transition
    /// once it knows whether the release succeeded (M1).
    fn demoted(&self, lease: &Lease, reason: &str, how: Option<Ended>) {
        match how {
            Some(how) => self.metrics.ended(how),
            None => self.metrics.stepping_down(),
        }
        lease.lost.cancel();
        tracing::warn!(
            application = %self.application,
            unit = %self.unit,
            fence = %lease.fence,
            transition = "demoted",
            reason,
            "leadership demoted"
        );
    }
}

/// What [`Shared::stop`] leaves for the task to finish.
pub(super) struct Stopped {
    /// The fence of the term that ended, if the tracker led.
    pub(super) fence: Option<Fence>,
    /// The terms' work still running (W2).
    pub(super) work: Vec<JoinHandle<()>>,
    /// By when that work must have ended.
    pub(super) bound: Instant,
}

fn resolve_all(resolvers: &mut Vec<Resolver>, answer: bool) {
    for resolver in resolvers.drain(..) {
        resolver.resolve(answer);
    }
}
