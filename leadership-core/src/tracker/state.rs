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

/// The tracker's one state machine: what it believes about its unit and, from that, what its
/// task does next ([`Shared::next_action`]). The task only performs the store calls an
/// [`Action`] names and reports each answer back through one of the transitions below; the
/// handle answers tickets from the same state. Time drives one transition of its own: a
/// lease whose loss deadline has passed is demoted by [`Shared::settle`], which every entry
/// point applies before it reads or changes anything, so no one ever sees a lease past its
/// window as held.
#[derive(Debug)]
enum Stage {
    /// Not leader: claim at `at` (at once, or after a backoff). `decided` is false until a
    /// claim has answered (juju's undecided tracker).
    Claiming { decided: bool, at: Instant },
    /// Denied: wait until the lease is released, then claim (T4).
    Blocked,
    /// Leader: renew at the lease's renewal time (T2), at once if a ticket needs a fresh
    /// guarantee (T3), or at `retry_at` after a failed renewal; always before the deadline
    /// (T7).
    Leading {
        lease: Lease,
        retry_at: Option<Instant>,
    },
    /// Stopped (T6): every ticket is answered `false`.
    Stopped,
}

/// What the tracker's task does next, as the state machine decides.
#[derive(Debug, Clone, Copy)]
pub(super) enum Action {
    /// Claim at `at`.
    Claim { at: Instant },
    /// Block until the lease is released.
    Block,
    /// Renew at `at`, which must succeed before `deadline` (T7).
    Renew { at: Instant, deadline: Instant },
    /// Nothing more: the tracker has stopped.
    Stop,
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
    stage: Stage,
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

impl State {
    fn is_stopped(&self) -> bool {
        matches!(self.stage, Stage::Stopped)
    }

    /// The lease, if leader. After [`Shared::settle`], a lease here is within its window.
    fn lease(&self) -> Option<&Lease> {
        match &self.stage {
            Stage::Leading { lease, .. } => Some(lease),
            _ => None,
        }
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("stage", &self.stage)
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
    /// Wakes the task to look at the state again: a `claim_leader` ticket needs a fresh
    /// guarantee (T3).
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
                stage: Stage::Claiming {
                    decided: false,
                    at: Instant::now(),
                },
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

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-changed in a way that
        // matters more than stopping would; keep serving rather than propagate the poison.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock, with the time-driven transition applied: a lease past its loss deadline is
    /// demoted now, even if the task has not woken yet (T7).
    fn settled(&self, now: Instant) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        self.settle(&mut state, now);
        state
    }

    /// T7: the loss deadline of the lease has passed without a renewal: demote and claim
    /// again at once.
    fn settle(&self, state: &mut State, now: Instant) {
        if state.lease().is_some_and(|lease| now >= lease.deadline) {
            self.to_minion(
                state,
                "no renewal succeeded within the guaranteed window",
                Ended::Lost,
                Stage::Claiming {
                    decided: true,
                    at: now,
                },
            );
        }
    }

    /// What the task does next.
    pub(super) fn next_action(&self) -> Action {
        let now = Instant::now();
        let state = self.settled(now);
        match &state.stage {
            Stage::Claiming { at, .. } => Action::Claim { at: *at },
            Stage::Blocked => Action::Block,
            Stage::Leading { lease, retry_at } => {
                // T3: a pending claim ticket asks for a renewal now, unless one just failed
                // and its retry is waiting out the backoff.
                let at = match retry_at {
                    Some(at) => *at,
                    None if state.tickets.claims.iter().any(|(_, r)| !r.is_abandoned()) => now,
                    None => lease.renew_at,
                };
                Action::Renew {
                    at: at.min(lease.deadline),
                    deadline: lease.deadline,
                }
            }
            Stage::Stopped => Action::Stop,
        }
    }

    /// H1: unhealthy when it believes it leads but its last successful renewal is older than
    /// the guarantee plus the tolerance, or when it stopped with an error.
    pub(super) fn health(&self) -> Health {
        let now = Instant::now();
        let state = self.settled(now);
        if let Some(err) = &state.failure {
            return Health::Failed(err.clone());
        }
        let allowed = self.guarantee + self.health_tolerance;
        match (state.lease(), state.last_renewal) {
            (Some(_), Some(last)) if now.duration_since(last) > allowed => Health::Stale {
                since_renewal: now.duration_since(last),
                allowed,
            },
            _ => Health::Healthy,
        }
    }

    /// The task stopped with a fatal error (T9); reported by `health()` (H1).
    pub(super) fn failed(&self, err: &Error) {
        self.lock().failure = Some(err.clone());
    }

    /// Registers leader-only work (W2) and starts it at once if the tracker leads.
    pub(super) fn run_as_leader(&self, runner: Runner) {
        let mut state = self.settled(Instant::now());
        if state.is_stopped() {
            return;
        }
        if let Some(term) = state.lease().map(Lease::term) {
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

    /// T3: true at once if leadership is guaranteed for the guarantee from now; pending until
    /// a renewal (asked for at once) if the renewal is due; false if minion.
    pub(super) fn claim_leader(&self) -> WatchTicket {
        let now = Instant::now();
        let mut state = self.settled(now);
        match &state.stage {
            Stage::Stopped | Stage::Blocked | Stage::Claiming { decided: true, .. } => {
                return ticket::resolved(false);
            }
            Stage::Leading { lease, .. } if now + self.guarantee <= lease.deadline => {
                return ticket::resolved(true);
            }
            // The task looks at the state again and renews now.
            Stage::Leading { .. } => self.renew_now.notify_one(),
            Stage::Claiming { decided: false, .. } => {}
        }
        let (ticket, resolver) = ticket::pending();
        state.tickets.claims.retain(|(_, r)| !r.is_abandoned());
        state.tickets.claims.push((now, resolver));
        ticket
    }

    /// T5: true once leader.
    pub(super) fn wait_leader(&self) -> WatchTicket {
        let mut state = self.settled(Instant::now());
        match &state.stage {
            Stage::Stopped => ticket::resolved(false),
            Stage::Leading { .. } => ticket::resolved(true),
            _ => {
                let (ticket, resolver) = ticket::pending();
                ticket::prune(&mut state.tickets.leader);
                state.tickets.leader.push(resolver);
                ticket
            }
        }
    }

    /// T5: true on losing leadership; ready at once with false if already minion (juju).
    pub(super) fn wait_minion(&self) -> WatchTicket {
        let now = Instant::now();
        let mut state = self.lock();
        if state.lease().is_some_and(|lease| now >= lease.deadline) {
            // The window has just ended: that is the loss this ticket waits for.
            self.settle(&mut state, now);
            return ticket::resolved(true);
        }
        let (ticket, resolver) = ticket::pending();
        match &state.stage {
            Stage::Stopped | Stage::Blocked | Stage::Claiming { decided: true, .. } => {
                return ticket::resolved(false);
            }
            Stage::Claiming { decided: false, .. } => {
                ticket::prune(&mut state.tickets.undecided_minion);
                state.tickets.undecided_minion.push(resolver);
            }
            Stage::Leading { .. } => {
                ticket::prune(&mut state.tickets.minion);
                state.tickets.minion.push(resolver);
            }
        }
        ticket
    }

    /// The current term while leader (T7).
    pub(super) fn current_term(&self) -> Option<Term> {
        self.settled(Instant::now()).lease().map(Lease::term)
    }

    /// The loss deadline of a claim whose call started at `call_start` (T7): the store keeps
    /// the lease for at least the claim duration from the call (C4), so no other unit can be
    /// granted it before `call_start + claim_length`; the margin is kept on top of that.
    fn deadline_for(&self, call_start: Instant) -> Instant {
        call_start + self.claim_length - self.safety_margin
    }

    /// A claim that started at `call_start` succeeded with `fence`: the tracker becomes (or
    /// stays) leader, unless it is stopping or the answer came so late that the claim's own
    /// window has already ended, in which case it claims again at once.
    pub(super) fn claimed(&self, fence: Fence, call_start: Instant) {
        let now = Instant::now();
        let renew_at = call_start + self.guarantee;
        let deadline = self.deadline_for(call_start);
        let mut state = self.settled(now);
        let state = &mut *state;
        if state.is_stopped() {
            return;
        }
        if now >= deadline {
            let reason = if state.lease().is_some() {
                "the renewal answered after its guaranteed window ended"
            } else {
                "the claim answered after its guaranteed window ended"
            };
            let again = Stage::Claiming {
                decided: true,
                at: now,
            };
            self.to_minion(state, reason, Ended::Lost, again);
            return;
        }
        state.last_renewal = Some(now);
        match &mut state.stage {
            Stage::Leading { lease, retry_at } if lease.fence == fence => {
                // C2: an extension keeps the fence; the window only moves forward.
                lease.renew_at = lease.renew_at.max(renew_at);
                lease.deadline = lease.deadline.max(deadline);
                *retry_at = None;
            }
            stage => {
                if let Stage::Leading { lease: old, .. } = stage {
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
                *stage = Stage::Leading {
                    lease,
                    retry_at: None,
                };
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
        // its request; otherwise it stays, and the next action is a renewal at once.
        let claims = std::mem::take(&mut state.tickets.claims);
        for (asked, resolver) in claims {
            if asked + self.guarantee <= deadline {
                resolver.resolve(true);
            } else {
                state.tickets.claims.push((asked, resolver));
            }
        }
    }

    /// The claim was denied: another unit holds the lease; wait for its release (T4).
    pub(super) fn denied(&self) {
        let mut state = self.settled(Instant::now());
        if state.is_stopped() {
            return;
        }
        let reason = if state.lease().is_some() {
            "leadership renewal denied"
        } else {
            "leadership claim denied"
        };
        self.to_minion(&mut state, reason, Ended::Demoted, Stage::Blocked);
    }

    /// A claim or renewal failed with a retryable error; the next attempt is at `retry_at`.
    /// A leader keeps its lease and retries until the loss deadline (T7); a claimant is no
    /// leader.
    pub(super) fn claim_failed(&self, retry_at: Instant) {
        let mut state = self.settled(Instant::now());
        match &mut state.stage {
            Stage::Stopped => {}
            Stage::Leading { retry_at: at, .. } => *at = Some(retry_at),
            _ => {
                let again = Stage::Claiming {
                    decided: true,
                    at: retry_at,
                };
                self.to_minion(&mut state, "leadership claim failed", Ended::Demoted, again);
            }
        }
    }

    /// The wait for a release ended: claim at `at` (at once if the lease was released, after
    /// a backoff if the wait failed). Like juju, any error ends the wait and the tracker
    /// claims: a claim tells it what is going on.
    pub(super) fn block_ended(&self, at: Instant) {
        let mut state = self.settled(Instant::now());
        if let Stage::Blocked = state.stage {
            state.stage = Stage::Claiming { decided: true, at };
        }
    }

    /// The task's loss timer fired (T7): the same transition as [`Shared::settle`], applied by
    /// the task at the deadline.
    pub(super) fn deadline_passed(&self, deadline: Instant) {
        drop(self.settled(Instant::now().max(deadline)));
    }

    /// Demotes to minion (if leader) and moves to `next`: the role is shown before the loss
    /// signal fires, so whoever wakes on the signal sees the new role; tickets waiting for
    /// the loss are answered true, pending claims and undecided waits false.
    fn to_minion(&self, state: &mut State, reason: &str, how: Ended, next: Stage) {
        self.show(Role::Minion);
        if let Stage::Leading { lease, .. } = &state.stage {
            self.demoted(lease, reason, Some(how));
            resolve_all(&mut state.tickets.minion, true);
        }
        state.stage = next;
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
        let mut state = self.settled(now);
        let mut bound = now;
        // Shown before the loss signal fires, so whoever wakes on the signal sees the new role.
        self.show(Role::Stopped);
        let fence = match state.lease() {
            Some(old) => {
                // Half the margin is left before the lease could pass, as in `spawn_work`.
                bound = (now + self.guarantee).min(old.deadline + self.safety_margin / 2);
                // Before the loss signal fires, so the work sees the bound (W2).
                let _ = self.stop_bound.set(bound);
                self.demoted(old, reason, None);
                Some(old.fence)
            }
            None => None,
        };
        state.stage = Stage::Stopped;
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

#[cfg(test)]
mod tests {
    //! The state machine on its own, with no task to move it: what the task would be told
    //! to do, and the transitions time applies when anyone looks.

    use super::*;
    use crate::Ticket;

    const GUARANTEE: Duration = Duration::from_secs(10);
    const MARGIN: Duration = Duration::from_secs(2);

    fn shared() -> Shared {
        Shared::new(
            "app/0".to_owned(),
            "app".to_owned(),
            GUARANTEE,
            GUARANTEE * 2,
            MARGIN,
            GUARANTEE / 4,
            Metrics::new("app", "app/0", true),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn t2_t7_a_new_term_renews_at_the_guarantee_and_must_by_its_deadline() {
        let shared = shared();
        let start = Instant::now();
        assert!(matches!(shared.next_action(), Action::Claim { at } if at <= start));
        assert_eq!(*shared.view().borrow(), Role::Undecided);
        shared.claimed(Fence(7), start);
        assert_eq!(*shared.view().borrow(), Role::Leader { fence: Fence(7) });
        match shared.next_action() {
            Action::Renew { at, deadline } => {
                assert_eq!(at, start + GUARANTEE);
                assert_eq!(deadline, start + GUARANTEE * 2 - MARGIN);
            }
            other => panic!("a leader renews, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn t7_a_lease_past_its_deadline_is_demoted_whole_by_whoever_looks_first() {
        let shared = shared();
        let view = shared.view();
        let start = Instant::now();
        shared.claimed(Fence(1), start);
        let term = shared.current_term().expect("leader");
        let loss = shared.wait_minion();
        tokio::time::advance(GUARANTEE * 2 - MARGIN).await;
        // No task runs here: the read itself applies the transition, all of it at once.
        assert!(shared.current_term().is_none());
        assert!(term.lost.is_cancelled(), "the loss signal fired");
        assert_eq!(*view.borrow(), Role::Minion, "the role shows it too");
        assert!(loss.wait().await, "a wait for the loss is answered");
        assert!(
            matches!(shared.next_action(), Action::Claim { at } if at <= Instant::now()),
            "the task is told to claim again at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn t3_a_claim_ticket_needing_a_fresh_guarantee_asks_for_a_renewal_now() {
        let shared = shared();
        let start = Instant::now();
        shared.claimed(Fence(1), start);
        // Past the point where the current window still covers a guarantee from now.
        tokio::time::advance(GUARANTEE - MARGIN + Duration::from_secs(1)).await;
        let ticket = shared.claim_leader();
        let now = Instant::now();
        assert!(matches!(shared.next_action(), Action::Renew { at, .. } if at == now));
        shared.claimed(Fence(1), now);
        assert!(ticket.wait().await);
        assert!(matches!(
            shared.next_action(),
            Action::Renew { at, .. } if at == now + GUARANTEE
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn t7_a_failed_renewal_retries_after_its_backoff_but_never_past_the_deadline() {
        let shared = shared();
        let start = Instant::now();
        shared.claimed(Fence(1), start);
        tokio::time::advance(GUARANTEE).await;
        let now = Instant::now();
        shared.claim_failed(now + Duration::from_millis(300));
        assert!(matches!(
            shared.next_action(),
            Action::Renew { at, .. } if at == now + Duration::from_millis(300)
        ));
        assert_eq!(*shared.view().borrow(), Role::Leader { fence: Fence(1) });
        shared.claim_failed(now + GUARANTEE * 5);
        assert!(matches!(
            shared.next_action(),
            Action::Renew { at, deadline } if at == deadline
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn t4_a_denied_claim_blocks_and_a_release_claims_at_once() {
        let shared = shared();
        let undecided = shared.wait_minion();
        shared.denied();
        assert!(!undecided.wait().await, "juju: false once known minion");
        assert_eq!(*shared.view().borrow(), Role::Minion);
        assert!(matches!(shared.next_action(), Action::Block));
        let now = Instant::now();
        shared.block_ended(now);
        assert!(matches!(shared.next_action(), Action::Claim { at } if at == now));
    }

    #[tokio::test(start_paused = true)]
    async fn t6_a_stopped_tracker_answers_false_and_asks_for_nothing() {
        let shared = shared();
        shared.claimed(Fence(3), Instant::now());
        let stopped = shared.stop("test");
        assert_eq!(stopped.fence, Some(Fence(3)));
        assert!(matches!(shared.next_action(), Action::Stop));
        assert!(!shared.claim_leader().wait().await);
        assert!(!shared.wait_leader().wait().await);
        shared.claimed(Fence(4), Instant::now());
        assert_eq!(
            *shared.view().borrow(),
            Role::Stopped,
            "no claim revives it"
        );
    }
}
