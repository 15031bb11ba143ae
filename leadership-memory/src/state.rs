//! The store's state and every rule of the contract, as plain functions of `now`.
//!
//! Nothing here reads a clock or takes a lock: the caller holds the store's one mutex and passes
//! the current time, so every decision is exact at the moment of the call and the rules can be
//! unit-tested without a runtime.
//!
//! Time is `Nanos`, nanoseconds since the store's epoch (8 bytes instead of an `Instant`'s 16,
//! which matters at a million leases).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

use leadership_core::watch::{Change, Leader};
use leadership_core::{Error, Fence, Result};
use tokio::sync::Notify;

/// Nanoseconds since the store's epoch.
pub(crate) type Nanos = u64;

/// `App::scheduled` when no deadline of the application is in the timeline.
const UNSCHEDULED: Nanos = Nanos::MAX;

/// `App::holder` when nobody holds the lease.
const NO_HOLDER: u64 = 0;
/// `App::holder` when the holder's name is kept in `Extra::holder`.
const NAMED_HOLDER: u64 = u64::MAX;

/// The number `n` if `unit` is exactly `<application>/<n>` in canonical decimal (juju's unit
/// names, V2), so that the number alone stands for the name, injectively.
fn unit_number(application: &str, unit: &str) -> Option<u64> {
    let digits = unit.strip_prefix(application)?.strip_prefix('/')?;
    let canonical = match digits.as_bytes() {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    let number: u64 = digits.parse().ok().filter(|_| canonical)?;
    // Leaves room for NO_HOLDER and NAMED_HOLDER in `App::holder`.
    (number < NAMED_HOLDER - 1).then_some(number)
}

/// One application of one namespace: its lease (if any), its pins and its waiters.
///
/// An entry exists only while it holds something: a lease, a pin, a waiter or a deadline in
/// the timeline; then it is removed. Fences come from the namespace's counter, so removing an
/// entry never lets a fence repeat (F1).
#[derive(Debug)]
pub(crate) struct App {
    /// The unit whose lease this is; it may have expired (see [`App::held`]) until settled.
    /// Packed so that the common lease allocates nothing for its holder: `NO_HOLDER`, a juju
    /// unit `<application>/<n>` as `n + 1`, or `NAMED_HOLDER` with the name in `Extra::holder`.
    holder: u64,
    /// The fence of the current (or last) term.
    fence: u64,
    /// When the lease expires unless pinned or extended (C2, C5, P3).
    expires: Nanos,
    /// The earliest deadline of this application in the timeline, or `UNSCHEDULED`.
    scheduled: Nanos,
    /// Pins, waiters and holder names that are not juju units: rare, so boxed to keep the
    /// common lease small.
    extra: Option<Box<Extra>>,
}

#[derive(Debug, Default)]
struct Extra {
    /// Sorted, unique (P2, P5).
    pins: Vec<Box<str>>,
    waiters: Option<Waiters>,
    holder: Option<Box<str>>,
}

#[derive(Debug)]
struct Waiters {
    notify: Arc<Notify>,
    count: usize,
}

impl App {
    fn vacant() -> App {
        App {
            holder: NO_HOLDER,
            fence: 0,
            expires: 0,
            scheduled: UNSCHEDULED,
            extra: None,
        }
    }

    fn has_holder(&self) -> bool {
        self.holder != NO_HOLDER
    }

    fn holder_is(&self, application: &str, unit: &str) -> bool {
        match self.holder {
            NO_HOLDER => false,
            NAMED_HOLDER => self
                .extra
                .as_ref()
                .is_some_and(|extra| extra.holder.as_deref() == Some(unit)),
            number => unit_number(application, unit) == Some(number - 1),
        }
    }

    fn holder_name(&self, application: &str) -> Option<Cow<'_, str>> {
        match self.holder {
            NO_HOLDER => None,
            NAMED_HOLDER => self.extra.as_ref()?.holder.as_deref().map(Cow::Borrowed),
            number => Some(Cow::Owned(format!("{application}/{}", number - 1))),
        }
    }

    fn set_holder(&mut self, application: &str, unit: &str) {
        match unit_number(application, unit) {
            Some(number) => {
                self.holder = number + 1;
                if let Some(extra) = self.extra.as_mut() {
                    extra.holder = None;
                }
                self.drop_empty_extra();
            }
            None => {
                self.holder = NAMED_HOLDER;
                self.extra.get_or_insert_default().holder = Some(unit.into());
            }
        }
    }

    fn pinned(&self) -> bool {
        self.extra
            .as_ref()
            .is_some_and(|extra| !extra.pins.is_empty())
    }

    /// Whether the lease is held at `now`: pinned leases never expire (P1); others expire at
    /// exactly `expires` (C5).
    fn held(&self, now: Nanos) -> bool {
        self.has_holder() && (self.pinned() || now < self.expires)
    }

    fn leader(&self, application: &str, now: Nanos) -> Option<Cow<'_, str>> {
        if self.held(now) {
            self.holder_name(application)
        } else {
            None
        }
    }

    fn leads(&self, application: &str, unit: &str, now: Nanos) -> bool {
        self.held(now) && self.holder_is(application, unit)
    }

    /// Ends a lease that has expired but was not collected yet, so no operation can revive it.
    /// Returns the fence of the term it ended.
    #[must_use]
    fn settle(&mut self, now: Nanos) -> Option<u64> {
        if self.has_holder() && !self.held(now) {
            self.end_term();
            return Some(self.fence);
        }
        None
    }

    /// Ends the term and releases every waiter on this application (R1, B2, B4). Pins stay (P6).
    fn end_term(&mut self) {
        self.holder = NO_HOLDER;
        if let Some(extra) = self.extra.as_mut() {
            extra.holder = None;
            if let Some(waiters) = &extra.waiters {
                waiters.notify.notify_waiters();
            }
        }
        self.drop_empty_extra();
    }

    fn drop_empty_extra(&mut self) {
        if self.extra.as_ref().is_some_and(|extra| {
            extra.pins.is_empty() && extra.waiters.is_none() && extra.holder.is_none()
        }) {
            self.extra = None;
        }
    }

    fn removable(&self) -> bool {
        !self.has_holder() && self.extra.is_none() && self.scheduled == UNSCHEDULED
    }
}

/// A deadline in the timeline: when `app` of namespace `space` may expire.
#[derive(Debug)]
struct Deadline {
    at: Nanos,
    space: u32,
    app: Arc<str>,
}

// Ordered by `at` only, reversed, so that `BinaryHeap` is a min-heap of deadlines.
impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at)
    }
}

impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Deadline {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Deadline {}

/// The store-wide min-heap of deadlines that the one timer task works through.
///
/// Each held, unpinned lease has at least one deadline at or before its expiry. Extensions push
/// nothing: the old deadline fires early and the timer re-schedules at the new expiry. So a
/// claim costs O(log n) at most, an extension O(1).
#[derive(Debug, Default)]
struct Timeline {
    heap: BinaryHeap<Deadline>,
    /// Set when a push made an earlier next deadline: the timer must be woken.
    earlier: bool,
}

impl Timeline {
    fn schedule(&mut self, space: u32, key: &Arc<str>, app: &mut App) {
        if !app.has_holder() || app.pinned() || app.expires >= app.scheduled {
            return;
        }
        if self.heap.peek().is_none_or(|next| app.expires < next.at) {
            self.earlier = true;
        }
        self.heap.push(Deadline {
            at: app.expires,
            space,
            app: Arc::clone(key),
        });
        app.scheduled = app.expires;
    }
}

/// Terms that started and ended, recorded while anyone watches (O1), for the store to
/// publish before it releases its lock, in the order they happened.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    /// Record only while on: nobody pays for watches nobody made.
    pub(crate) on: bool,
    pub(crate) changes: Vec<(u32, Change)>,
}

impl Journal {
    fn vacated(&mut self, space: u32, application: &str, ended: Option<u64>) {
        if let (true, Some(fence)) = (self.on, ended) {
            self.changes
                .push((space, Change::vacated(application, Fence(fence))));
        }
    }

    fn elected(&mut self, space: u32, application: &str, unit: &str, fence: u64) {
        if self.on {
            self.changes
                .push((space, Change::elected(application, unit, Fence(fence))));
        }
    }
}

/// The applications of one namespace (N1).
#[derive(Debug, Default)]
struct Space {
    /// The namespace's name, for watches.
    name: Arc<str>,
    apps: HashMap<Arc<str>, App>,
    /// The last fence issued in this namespace: fences never repeat (F1).
    last_fence: u64,
}

impl Space {
    fn next_fence(&mut self) -> Result<u64> {
        self.last_fence = self.last_fence.checked_add(1).ok_or_else(|| {
            Error::backend(
                "memory",
                "claim",
                "the namespace's fence counter is exhausted",
            )
        })?;
        Ok(self.last_fence)
    }

    /// Schedules `application`'s expiry if needed.
    fn schedule(&mut self, timeline: &mut Timeline, space: u32, application: &str) {
        let Some((key, _)) = self.apps.get_key_value(application) else {
            return;
        };
        let key = Arc::clone(key);
        if let Some(app) = self.apps.get_mut(application) {
            timeline.schedule(space, &key, app);
        }
    }

    fn remove_if_empty(&mut self, application: &str) {
        if self.apps.get(application).is_some_and(App::removable) {
            self.apps.remove(application);
        }
    }

    fn entry(&mut self, application: &str) -> &mut App {
        if !self.apps.contains_key(application) {
            self.apps.insert(Arc::from(application), App::vacant());
        }
        self.apps
            .get_mut(application)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }
}

/// What a blocked waiter holds on to: the wake-up of its application and the term it waits out.
#[derive(Debug)]
pub(crate) struct Registration {
    pub(crate) notify: Arc<Notify>,
    pub(crate) fence: u64,
}

/// Counts for diagnostics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryStats {
    /// Namespaces ever opened on the store.
    pub namespaces: usize,
    /// Application entries kept: held, pinned, waited on, or with a pending deadline.
    pub applications: usize,
    /// Blocked waiters (B3: zero once every wait has ended or been dropped).
    pub waiters: usize,
    /// Deadlines in the expiry timeline.
    pub deadlines: usize,
    /// Open watch streams of every namespace (O4: zero once every stream was dropped).
    pub watchers: usize,
}

/// Everything the store knows, behind its one mutex.
#[derive(Debug, Default)]
pub(crate) struct State {
    names: HashMap<Box<str>, u32>,
    spaces: Vec<Space>,
    timeline: Timeline,
    pub(crate) journal: Journal,
}

impl State {
    /// The id of namespace `name`, created on first use.
    pub(crate) fn space_id(&mut self, name: &str) -> Result<u32> {
        if let Some(&id) = self.names.get(name) {
            return Ok(id);
        }
        let id = u32::try_from(self.spaces.len())
            .map_err(|_| Error::backend("memory", "namespace", "too many namespaces"))?;
        self.spaces.push(Space {
            name: name.into(),
            ..Space::default()
        });
        self.names.insert(name.into(), id);
        Ok(id)
    }

    fn space(&self, id: u32) -> Option<&Space> {
        self.spaces.get(id as usize)
    }

    fn space_mut(&mut self, id: u32) -> Option<&mut Space> {
        self.spaces.get_mut(id as usize)
    }

    /// Takes the flag that says the timer must recompute its next deadline.
    pub(crate) fn take_earlier(&mut self) -> bool {
        std::mem::take(&mut self.timeline.earlier)
    }

    /// C1–C3: grants a vacant application, extends the holder's lease, denies anyone else.
    pub(crate) fn claim(
        &mut self,
        id: u32,
        application: &str,
        unit: &str,
        duration: Nanos,
        now: Nanos,
    ) -> Result<Fence> {
        let State {
            spaces,
            timeline,
            journal,
            ..
        } = self;
        let space = spaces.get_mut(id as usize).ok_or_else(unknown_namespace)?;
        let until = now.saturating_add(duration);
        let app = space.apps.get_mut(application);
        let fence = match app {
            Some(app) => {
                journal.vacated(id, application, app.settle(now));
                if app.holder_is(application, unit) {
                    app.expires = app.expires.max(until);
                    app.fence
                } else if app.has_holder() {
                    return Err(Error::ClaimDenied);
                } else {
                    let fence = space.next_fence()?;
                    start_term(space.entry(application), application, unit, fence, until);
                    journal.elected(id, application, unit, fence);
                    fence
                }
            }
            None => {
                let fence = space.next_fence()?;
                start_term(space.entry(application), application, unit, fence, until);
                journal.elected(id, application, unit, fence);
                fence
            }
        };
        space.schedule(timeline, id, application);
        Ok(Fence(fence))
    }

    /// K1: the fence if `unit` leads `application` at `now`.
    pub(crate) fn check(
        &self,
        id: u32,
        application: &str,
        unit: &str,
        now: Nanos,
    ) -> Result<Fence> {
        self.space(id)
            .and_then(|space| space.apps.get(application))
            .filter(|app| app.leads(application, unit, now))
            .map(|app| Fence(app.fence))
            .ok_or_else(|| Error::not_leader(unit, application))
    }

    /// F2: whether `unit` leads `application` at `now` with exactly `fence`.
    pub(crate) fn leads(
        &self,
        id: u32,
        application: &str,
        unit: &str,
        fence: Fence,
        now: Nanos,
    ) -> bool {
        self.check(id, application, unit, now)
            .is_ok_and(|held| held == fence)
    }

    /// R1–R3.
    pub(crate) fn revoke(
        &mut self,
        id: u32,
        application: &str,
        unit: &str,
        now: Nanos,
    ) -> Result<()> {
        let State {
            spaces, journal, ..
        } = self;
        let space = spaces.get_mut(id as usize).ok_or_else(unknown_namespace)?;
        let Some(app) = space.apps.get_mut(application) else {
            return Ok(());
        };
        journal.vacated(id, application, app.settle(now));
        if app.holder_is(application, unit) {
            app.end_term();
            journal.vacated(id, application, Some(app.fence));
        } else if app.has_holder() {
            return Err(Error::ClaimNotHeld);
        }
        space.remove_if_empty(application);
        Ok(())
    }

    /// P1, P2, P4.
    pub(crate) fn pin(
        &mut self,
        id: u32,
        application: &str,
        entity: &str,
        now: Nanos,
    ) -> Result<()> {
        let State {
            spaces, journal, ..
        } = self;
        let space = spaces.get_mut(id as usize).ok_or_else(unknown_namespace)?;
        let app = space.entry(application);
        // An expired lease must not come back to life by being pinned.
        journal.vacated(id, application, app.settle(now));
        let pins = &mut app.extra.get_or_insert_default().pins;
        if let Err(at) = pins.binary_search_by(|pin| (**pin).cmp(entity)) {
            pins.insert(at, entity.into());
        }
        Ok(())
    }

    /// P2, P3.
    pub(crate) fn unpin(
        &mut self,
        id: u32,
        application: &str,
        entity: &str,
        now: Nanos,
    ) -> Result<()> {
        let State {
            spaces,
            timeline,
            journal,
            ..
        } = self;
        let space = spaces.get_mut(id as usize).ok_or_else(unknown_namespace)?;
        let Some(app) = space.apps.get_mut(application) else {
            return Ok(());
        };
        if let Some(extra) = app.extra.as_mut()
            && let Ok(at) = extra.pins.binary_search_by(|pin| (**pin).cmp(entity))
        {
            extra.pins.remove(at);
        }
        app.drop_empty_extra();
        // P3: expiry resumes at the claimed expiry, at once if that has passed.
        journal.vacated(id, application, app.settle(now));
        space.schedule(timeline, id, application);
        space.remove_if_empty(application);
        Ok(())
    }

    /// P5.
    pub(crate) fn pinned(&self, id: u32) -> BTreeMap<String, Vec<String>> {
        let Some(space) = self.space(id) else {
            return BTreeMap::new();
        };
        space
            .apps
            .iter()
            .filter_map(|(name, app)| {
                let pins = &app.extra.as_ref()?.pins;
                (!pins.is_empty()).then(|| {
                    (
                        name.to_string(),
                        pins.iter().map(|p| p.to_string()).collect(),
                    )
                })
            })
            .collect()
    }

    /// L1: every lease held at `now`.
    pub(crate) fn leaders(&self, id: u32, now: Nanos) -> BTreeMap<String, String> {
        let Some(space) = self.space(id) else {
            return BTreeMap::new();
        };
        space
            .apps
            .iter()
            .filter_map(|(name, app)| {
                let leader = app.leader(name, now)?.into_owned();
                Some((name.to_string(), leader))
            })
            .collect()
    }

    /// O1: every lease held at `now`, with its term's fence.
    pub(crate) fn leaders_with_fences(&self, id: u32, now: Nanos) -> BTreeMap<String, Leader> {
        let Some(space) = self.space(id) else {
            return BTreeMap::new();
        };
        space
            .apps
            .iter()
            .filter_map(|(name, app)| {
                let unit = app.leader(name, now)?.into_owned();
                Some((
                    name.to_string(),
                    Leader {
                        unit,
                        fence: Fence(app.fence),
                    },
                ))
            })
            .collect()
    }

    /// The name of namespace `id`.
    pub(crate) fn space_name(&self, id: u32) -> Option<&Arc<str>> {
        self.space(id).map(|space| &space.name)
    }

    /// B1/B2: registers a waiter on a held application; `None` if it is vacant.
    pub(crate) fn register(
        &mut self,
        id: u32,
        application: &str,
        now: Nanos,
    ) -> Option<Registration> {
        let State {
            spaces, journal, ..
        } = self;
        let app = spaces.get_mut(id as usize)?.apps.get_mut(application)?;
        journal.vacated(id, application, app.settle(now));
        if !app.held(now) {
            return None;
        }
        let waiters = app
            .extra
            .get_or_insert_default()
            .waiters
            .get_or_insert_with(|| Waiters {
                notify: Arc::new(Notify::new()),
                count: 0,
            });
        waiters.count += 1;
        Some(Registration {
            notify: Arc::clone(&waiters.notify),
            fence: app.fence,
        })
    }

    /// Whether the term a waiter registered on has ended: revoked, expired, or replaced.
    pub(crate) fn released(&self, id: u32, application: &str, fence: u64, now: Nanos) -> bool {
        self.space(id)
            .and_then(|space| space.apps.get(application))
            .is_none_or(|app| !app.held(now) || app.fence != fence)
    }

    /// When a waiter on `application` should look again at the latest: the lease's expiry,
    /// unless it is pinned (then only a release or an unpin, which notify, can end it).
    pub(crate) fn expiry(&self, id: u32, application: &str) -> Option<Nanos> {
        let app = self.space(id)?.apps.get(application)?;
        (app.has_holder() && !app.pinned()).then_some(app.expires)
    }

    /// B3: forgets a waiter that returned or was dropped.
    pub(crate) fn unregister(&mut self, id: u32, application: &str) {
        let Some(space) = self.space_mut(id) else {
            return;
        };
        let Some(app) = space.apps.get_mut(application) else {
            return;
        };
        if let Some(extra) = app.extra.as_mut()
            && let Some(waiters) = extra.waiters.as_mut()
        {
            waiters.count = waiters.count.saturating_sub(1);
            if waiters.count == 0 {
                extra.waiters = None;
            }
        }
        app.drop_empty_extra();
        space.remove_if_empty(application);
    }

    /// Wakes every waiter of the store, so each re-checks its lease (used when the timer task
    /// went away with its runtime and waiters must start a new one).
    pub(crate) fn wake_all_waiters(&self) {
        let waiters = self
            .spaces
            .iter()
            .flat_map(|space| space.apps.values())
            .filter_map(|app| app.extra.as_ref()?.waiters.as_ref());
        for waiters in waiters {
            waiters.notify.notify_waiters();
        }
    }

    /// The timer's work: ends leases whose deadline has come (C5, B2) and re-schedules extended
    /// ones, at most `batch` deadlines per call so the lock is never held for long. Returns the
    /// next deadline: at or before `now` if the batch ran out.
    pub(crate) fn expire_due(&mut self, now: Nanos, batch: usize) -> Option<Nanos> {
        let State {
            spaces,
            timeline,
            journal,
            ..
        } = self;
        for _ in 0..batch {
            if timeline.heap.peek().is_none_or(|next| next.at > now) {
                break;
            }
            let Some(due) = timeline.heap.pop() else {
                break;
            };
            let Some(space) = spaces.get_mut(due.space as usize) else {
                continue;
            };
            let Some(app) = space.apps.get_mut(&*due.app) else {
                continue;
            };
            if app.scheduled != due.at {
                // A later duplicate of a deadline that was handled already.
                continue;
            }
            app.scheduled = UNSCHEDULED;
            journal.vacated(due.space, &due.app, app.settle(now));
            // Extended: comes back at the new expiry. Pinned: unpin schedules it again (P3).
            timeline.schedule(due.space, &due.app, app);
            space.remove_if_empty(&due.app);
        }
        timeline.earlier = false;
        timeline.heap.peek().map(|next| next.at)
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        let apps = || self.spaces.iter().flat_map(|space| space.apps.values());
        MemoryStats {
            namespaces: self.spaces.len(),
            applications: apps().count(),
            waiters: apps()
                .filter_map(|app| app.extra.as_ref()?.waiters.as_ref())
                .map(|waiters| waiters.count)
                .sum(),
            deadlines: self.timeline.heap.len(),
            watchers: 0,
        }
    }
}

fn start_term(app: &mut App, application: &str, unit: &str, fence: u64, until: Nanos) {
    app.set_holder(application, unit);
    app.fence = fence;
    app.expires = until;
}

fn unknown_namespace() -> Error {
    Error::backend("memory", "lookup", "namespace handle from another store")
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Nanos = 1_000_000_000;

    impl State {
        fn expire_due_all(&mut self, now: Nanos) -> Option<Nanos> {
            self.expire_due(now, usize::MAX)
        }
    }

    #[test]
    fn expiry_works_in_batches() {
        let (mut st, ns) = state();
        for n in 0..10 {
            st.claim(ns, &format!("a{n}"), &format!("a{n}/0"), 10, n)
                .unwrap();
        }
        assert_eq!(st.expire_due(100, 4), Some(14));
        assert_eq!(st.stats().applications, 6);
        assert_eq!(st.expire_due(100, 4), Some(18));
        assert_eq!(st.expire_due(100, 4), None);
        assert_eq!(st.stats().applications, 0);
    }

    fn state() -> (State, u32) {
        let mut state = State::default();
        let id = state.space_id("ns").unwrap();
        (state, id)
    }

    #[test]
    fn claim_extend_deny() {
        let (mut st, ns) = state();
        let f1 = st.claim(ns, "a", "a/0", 10 * S, 0).unwrap();
        assert_eq!(st.claim(ns, "a", "a/0", 5 * S, S).unwrap(), f1);
        assert!(matches!(
            st.claim(ns, "a", "a/1", 5 * S, 2 * S),
            Err(Error::ClaimDenied)
        ));
        // C2: the shorter extension did not shorten the lease.
        assert_eq!(st.check(ns, "a", "a/0", 10 * S - 1).unwrap(), f1);
        assert!(
            st.check(ns, "a", "a/0", 10 * S)
                .unwrap_err()
                .is_not_leader()
        );
        // C1: expired, so another unit gets a larger fence.
        let f2 = st.claim(ns, "a", "a/1", S, 10 * S).unwrap();
        assert!(f2 > f1);
    }

    #[test]
    fn expiry_is_exact_and_timer_collects() {
        let (mut st, ns) = state();
        st.claim(ns, "a", "a/0", 10, 0).unwrap();
        assert!(st.take_earlier());
        assert_eq!(st.expire_due_all(9), Some(10));
        assert_eq!(st.leaders(ns, 9).len(), 1);
        assert_eq!(st.leaders(ns, 10).len(), 0);
        assert_eq!(st.expire_due_all(10), None);
        assert_eq!(st.stats().applications, 0);
        assert_eq!(st.stats().deadlines, 0);
    }

    #[test]
    fn extension_reschedules_without_pushing() {
        let (mut st, ns) = state();
        st.claim(ns, "a", "a/0", 10, 0).unwrap();
        for t in 1..100 {
            st.claim(ns, "a", "a/0", 10, t).unwrap();
        }
        assert_eq!(st.stats().deadlines, 1);
        assert_eq!(st.expire_due_all(10), Some(109));
        assert_eq!(st.expire_due_all(109), None);
        assert!(st.leaders(ns, 109).is_empty());
    }

    #[test]
    fn revoke_rules() {
        let (mut st, ns) = state();
        st.revoke(ns, "a", "a/0", 0).unwrap();
        let f1 = st.claim(ns, "a", "a/0", 10, 0).unwrap();
        assert!(matches!(
            st.revoke(ns, "a", "a/1", 1),
            Err(Error::ClaimNotHeld)
        ));
        assert_eq!(st.check(ns, "a", "a/0", 1).unwrap(), f1);
        st.revoke(ns, "a", "a/0", 1).unwrap();
        assert!(st.check(ns, "a", "a/0", 1).is_err());
        let f2 = st.claim(ns, "a", "a/1", 10, 2).unwrap();
        assert!(f2 > f1);
    }

    #[test]
    fn fences_never_repeat_after_the_entry_is_gone() {
        let (mut st, ns) = state();
        let f1 = st.claim(ns, "a", "a/0", 10, 0).unwrap();
        st.expire_due_all(10);
        assert_eq!(st.stats().applications, 0);
        let f2 = st.claim(ns, "a", "a/0", 10, 10).unwrap();
        assert!(f2 > f1);
    }

    #[test]
    fn pins_hold_and_release() {
        let (mut st, ns) = state();
        st.claim(ns, "a", "a/0", 10, 0).unwrap();
        st.pin(ns, "a", "m-1", 1).unwrap();
        st.pin(ns, "a", "m-0", 1).unwrap();
        st.pin(ns, "a", "m-1", 1).unwrap();
        assert_eq!(st.pinned(ns)["a"], vec!["m-0".to_owned(), "m-1".to_owned()]);
        assert_eq!(st.expire_due_all(100), None);
        assert!(st.check(ns, "a", "a/0", 100).is_ok());
        st.unpin(ns, "a", "m-0", 100).unwrap();
        st.unpin(ns, "a", "nobody", 100).unwrap();
        assert!(st.check(ns, "a", "a/0", 100).is_ok());
        // P3: the claimed expiry has passed, so the last unpin ends the lease at once.
        st.unpin(ns, "a", "m-1", 100).unwrap();
        assert!(st.check(ns, "a", "a/0", 100).is_err());
        assert_eq!(st.stats().applications, 0);
    }

    #[test]
    fn unpin_resumes_at_the_claimed_expiry() {
        let (mut st, ns) = state();
        st.claim(ns, "a", "a/0", 10, 0).unwrap();
        st.pin(ns, "a", "m", 1).unwrap();
        assert_eq!(st.expire_due_all(5), Some(10));
        assert_eq!(st.expire_due_all(10), None);
        st.claim(ns, "a", "a/0", 20, 8).unwrap();
        st.unpin(ns, "a", "m", 12).unwrap();
        assert_eq!(st.expire_due_all(12), Some(28));
        assert!(st.check(ns, "a", "a/0", 27).is_ok());
        assert!(st.check(ns, "a", "a/0", 28).is_err());
    }

    #[test]
    fn pins_on_vacant_apply_to_next_and_survive_revoke() {
        let (mut st, ns) = state();
        st.pin(ns, "a", "m", 0).unwrap();
        st.claim(ns, "a", "a/0", 10, 0).unwrap();
        assert!(st.check(ns, "a", "a/0", 1000).is_ok());
        st.revoke(ns, "a", "a/0", 1000).unwrap();
        assert!(st.check(ns, "a", "a/0", 1000).is_err());
        assert_eq!(st.pinned(ns)["a"], vec!["m".to_owned()]);
    }

    #[test]
    fn an_expired_lease_is_not_revived_by_a_pin() {
        let (mut st, ns) = state();
        st.claim(ns, "a", "a/0", 10, 0).unwrap();
        st.pin(ns, "a", "m", 10).unwrap();
        assert!(st.check(ns, "a", "a/0", 11).is_err());
    }

    #[test]
    fn waiters_are_released_by_a_new_term() {
        let (mut st, ns) = state();
        assert!(st.register(ns, "a", 0).is_none());
        st.claim(ns, "a", "a/0", 10, 0).unwrap();
        let reg = st.register(ns, "a", 1).unwrap();
        assert!(!st.released(ns, "a", reg.fence, 9));
        // Expired lazily and immediately taken by another unit: the wait still ends.
        st.claim(ns, "a", "a/1", 10, 10).unwrap();
        assert!(st.released(ns, "a", reg.fence, 11));
        assert_eq!(st.stats().waiters, 1);
        st.unregister(ns, "a");
        assert_eq!(st.stats().waiters, 0);
    }

    #[test]
    fn unit_numbers_are_canonical() {
        assert_eq!(unit_number("a", "a/0"), Some(0));
        assert_eq!(unit_number("a-b", "a-b/120"), Some(120));
        for not_juju in [
            "a/01", "a/00", "a/", "a", "b/0", "a/0/1", "a/+1", "a/1x", "ab/1", "a//1",
        ] {
            assert_eq!(unit_number("a", not_juju), None, "{not_juju}");
        }
        assert_eq!(unit_number("a", &format!("a/{}", u64::MAX)), None);
        assert_eq!(unit_number("a", &format!("a/{}", u64::MAX - 1)), None);
        assert_eq!(
            unit_number("a", &format!("a/{}", u64::MAX - 2)),
            Some(u64::MAX - 2)
        );
    }

    #[test]
    fn named_and_numbered_holders_stay_apart() {
        let (mut st, ns) = state();
        // Names a permissive policy admits: look-alikes of `a/1` must not lead as `a/1`.
        let f = st.claim(ns, "a", "a/01", 10, 0).unwrap();
        assert!(st.check(ns, "a", "a/1", 1).is_err());
        assert_eq!(st.check(ns, "a", "a/01", 1).unwrap(), f);
        assert!(matches!(
            st.claim(ns, "a", "a/1", 10, 1),
            Err(Error::ClaimDenied)
        ));
        assert_eq!(st.leaders(ns, 1)["a"], "a/01");
        st.revoke(ns, "a", "a/01", 2).unwrap();
        st.claim(ns, "a", "a/1", 10, 2).unwrap();
        assert!(st.check(ns, "a", "a/01", 3).is_err());
        assert_eq!(st.leaders(ns, 3)["a"], "a/1");
        st.claim(ns, "b", "pod-7", 10, 3).unwrap();
        assert_eq!(st.leaders(ns, 3)["b"], "pod-7");
        assert_eq!(st.expire_due_all(100), None);
        assert_eq!(st.stats().applications, 0);
    }

    #[test]
    fn namespaces_share_nothing() {
        let (mut st, a) = state();
        let b = st.space_id("other").unwrap();
        st.claim(a, "x", "x/0", 10, 0).unwrap();
        st.claim(b, "x", "x/1", 10, 0).unwrap();
        st.pin(a, "x", "m", 0).unwrap();
        assert_eq!(st.leaders(a, 1)["x"], "x/0");
        assert_eq!(st.leaders(b, 1)["x"], "x/1");
        assert!(st.pinned(b).is_empty());
        assert_eq!(st.space_id("other").unwrap(), b);
    }

    #[test]
    fn a_revoked_long_lease_then_a_short_one_gets_its_own_deadline() {
        let (mut st, ns) = state();
        st.claim(ns, "a", "a/0", 100, 0).unwrap();
        st.revoke(ns, "a", "a/0", 1).unwrap();
        st.claim(ns, "a", "a/1", 10, 1).unwrap();
        assert_eq!(st.expire_due_all(1), Some(11));
        assert_eq!(st.expire_due_all(11), Some(100));
        assert!(st.leaders(ns, 11).is_empty());
        assert_eq!(st.expire_due_all(100), None);
        assert_eq!(st.stats().applications, 0);
    }
}
