//! The tracker's observable state, shared by the handle and its task.
//!
//! Every transition happens here, under one short-held mutex, and never across an `.await`.
//! The handle answers tickets from this state without a round trip to the task; the task
//! does the store I/O and reports outcomes back through [`Shared`]'s transition methods.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ticket::{self, Resolver, WatchTicket};
use crate::{Fence, Term};

/// What the tracker believes about its unit.
#[derive(Debug)]
enum Role {
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

#[derive(Debug)]
struct State {
    role: Role,
    stopped: bool,
    tickets: Tickets,
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
    state: Mutex<State>,
}

impl Shared {
    pub(super) fn new(
        unit: String,
        application: String,
        guarantee: Duration,
        claim_length: Duration,
        safety_margin: Duration,
    ) -> Self {
        Shared {
            unit,
            application,
            guarantee,
            claim_length,
            safety_margin,
            kill: CancellationToken::new(),
            renew_now: Notify::new(),
            state: Mutex::new(State {
                role: Role::Unknown,
                stopped: false,
                tickets: Tickets::default(),
            }),
        }
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
            Role::Leader(lease) if now < lease.deadline => Some(lease),
            Role::Leader(lease) => {
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
            Role::Minion => return ticket::resolved(false),
            Role::Leader(_) => match Self::live_lease(&state, now) {
                None => return ticket::resolved(false),
                Some(lease) if now + self.guarantee <= lease.deadline => {
                    return ticket::resolved(true);
                }
                Some(_) => self.renew_now.notify_one(),
            },
            Role::Unknown => {}
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
            Role::Minion => return ticket::resolved(false),
            Role::Unknown => {
                ticket::prune(&mut state.tickets.undecided_minion);
                state.tickets.undecided_minion.push(resolver);
            }
            Role::Leader(_) => {
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
        Self::live_lease(&state, Instant::now()).map(|lease| Term {
            fence: lease.fence,
            lost: lease.lost.clone(),
        })
    }

    /// When the current lease is due for renewal, or `None` if not leader.
    pub(super) fn renew_at(&self) -> Option<Instant> {
        match &self.lock().role {
            Role::Leader(lease) => Some(lease.renew_at),
            _ => None,
        }
    }

    /// The current lease's loss deadline, or `None` if not leader.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match &self.lock().role {
            Role::Leader(lease) => Some(lease.deadline),
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
        match &mut state.role {
            Role::Leader(lease) if lease.fence == fence => {
                // C2: an extension keeps the fence; the window only moves forward.
                lease.renew_at = lease.renew_at.max(renew_at);
                lease.deadline = lease.deadline.max(deadline);
            }
            role => {
                if let Role::Leader(old) = role {
                    // The store started a new term under us: the old one is over.
                    self.demoted(old, "the store started a new term");
                    resolve_all(&mut state.tickets.minion, true);
                }
                let lease = Lease {
                    fence,
                    lost: CancellationToken::new(),
                    renew_at,
                    deadline,
                };
                tracing::info!(
                    application = %self.application,
                    unit = %self.unit,
                    fence = %fence,
                    transition = "promoted",
                    "leadership promoted"
                );
                *role = Role::Leader(lease);
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
    pub(super) fn minion(&self, reason: &str) {
        let mut state = self.lock();
        let state = &mut *state;
        if let Role::Leader(old) = &state.role {
            self.demoted(old, reason);
            resolve_all(&mut state.tickets.minion, true);
        }
        state.role = Role::Minion;
        resolve_all(&mut state.tickets.undecided_minion, false);
        for (_, resolver) in state.tickets.claims.drain(..) {
            resolver.resolve(false);
        }
    }

    /// Stops: fires the loss signal and answers every pending and later ticket `false` (T6).
    /// Returns the fence of the term that ended, if the tracker was leader.
    pub(super) fn stop(&self, reason: &str) -> Option<Fence> {
        let mut state = self.lock();
        state.stopped = true;
        let fence = match &state.role {
            Role::Leader(old) => {
                self.demoted(old, reason);
                Some(old.fence)
            }
            _ => None,
        };
        state.role = Role::Minion;
        // Dropping the resolvers answers their tickets false.
        state.tickets = Tickets::default();
        fence
    }

    fn demoted(&self, lease: &Lease, reason: &str) {
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

fn resolve_all(resolvers: &mut Vec<Resolver>, answer: bool) {
    for resolver in resolvers.drain(..) {
        resolver.resolve(answer);
    }
}
