//! Following who leads (O1–O4): [`Watcher`], its events, and [`WatchHub`], the one
//! latest-state-wins delivery every store builds its watches on.
//!
//! A store turns what it learns (a term started, a term ended, "here is everything after a
//! reconnect") into [`WatchHub::publish`] and [`WatchHub::resync`] calls; the hub keeps, per
//! watcher, at most one pending state per application (O3), drops anything older than what the
//! watcher already knows (fences order terms, F1), and never reports a state twice. Many
//! watchers of a store share whatever subscription the store feeds the hub from (O4).
//!
//! ```
//! use std::collections::BTreeMap;
//! use futures::StreamExt;
//! use leadership_core::Fence;
//! use leadership_core::watch::{Change, LeaderEvent, WatchHub};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let hub = WatchHub::new();
//! let mut stream = hub.subscribe("model-1", None).start(BTreeMap::new(), None);
//! hub.publish("model-1", Change::elected("db", "db/0", Fence(1)));
//! hub.publish("model-1", Change::vacated("db", Fence(1)));
//! hub.publish("model-1", Change::elected("db", "db/1", Fence(2)));
//! assert_eq!(stream.next().await, Some(LeaderEvent::Snapshot { leaders: BTreeMap::new() }));
//! // The consumer was not reading: it sees the latest state only (O3).
//! assert_eq!(
//!     stream.next().await,
//!     Some(LeaderEvent::Elected { application: "db".into(), unit: "db/1".into(), fence: Fence(2) })
//! );
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;
use futures_core::Stream;

use crate::{Fence, Result};

/// Who leads an application, in which term.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Leader {
    /// The leading unit.
    pub unit: String,
    /// The term's fence (F1).
    pub fence: Fence,
}

/// What a watcher sees (O1).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaderEvent {
    /// The first item of every stream: every held lease at one instant, as `leaders()` would
    /// return it, with each term's fence. For [`Watcher::watch_leader`], at most that one
    /// application.
    Snapshot {
        /// Application → its leader.
        leaders: BTreeMap<String, Leader>,
    },
    /// A term started: `unit` leads `application` with `fence`.
    Elected {
        /// The application.
        application: String,
        /// Its new leader.
        unit: String,
        /// The new term's fence.
        fence: Fence,
    },
    /// The application has no leader: its term ended by revoke or expiry.
    Vacated {
        /// The application.
        application: String,
    },
}

impl LeaderEvent {
    /// The application the event is about; `None` for a snapshot.
    pub fn application(&self) -> Option<&str> {
        match self {
            LeaderEvent::Snapshot { .. } => None,
            LeaderEvent::Elected { application, .. } | LeaderEvent::Vacated { application } => {
                Some(application)
            }
        }
    }
}

/// A stream of [`LeaderEvent`]s; see [`Watcher`].
pub type LeaderStream = Pin<Box<dyn Stream<Item = LeaderEvent> + Send>>;

/// Follows who leads (O1–O4): part of every store.
#[async_trait]
pub trait Watcher: Send + Sync {
    /// Every application of the handle's namespace.
    ///
    /// # Contract
    /// The first item is a [`LeaderEvent::Snapshot`] equal to `leaders()` at one instant
    /// (O1); then `Elected` when a term starts and `Vacated` when one ends by revoke or
    /// expiry; extensions and pins produce nothing. A revoke is seen within the store's
    /// notification latency, an expiry within its expiry slack plus that latency, and no
    /// event is reported for a state that did not exist (O2). Latest state wins: a consumer
    /// that stops reading holds at most one pending state per application, and then sees each
    /// application's current state (O3). Dropped connections and compactions are
    /// resynchronised without false events; transient store errors never end the stream;
    /// dropping it frees its subscription, and the watchers of a handle share one
    /// subscription to the store (O4). The stream ends only when the store shuts down.
    ///
    /// # Errors
    /// [`Error::Unavailable`](crate::Error::Unavailable) if the snapshot cannot be read within
    /// the operation timeout.
    async fn watch_leaders(&self) -> Result<LeaderStream>;

    /// The same as [`Watcher::watch_leaders`] for one application.
    ///
    /// # Contract
    /// As `watch_leaders`, restricted to `application` (O1).
    ///
    /// # Errors
    /// [`Error::InvalidApplication`](crate::Error::InvalidApplication) for a name the policy
    /// rejects; [`Error::Unavailable`](crate::Error::Unavailable) as for `watch_leaders`.
    async fn watch_leader(&self, application: &str) -> Result<LeaderStream>;
}

/// A change a store learned of, for [`WatchHub::publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The application.
    pub application: String,
    /// The term that started, or the term that ended.
    pub fence: Fence,
    /// The leader of a started term; `None` when the term `fence` ended.
    pub unit: Option<String>,
}

impl Change {
    /// `unit` started term `fence` of `application`.
    pub fn elected(application: impl Into<String>, unit: impl Into<String>, fence: Fence) -> Self {
        Change {
            application: application.into(),
            fence,
            unit: Some(unit.into()),
        }
    }

    /// Term `fence` of `application` ended.
    pub fn vacated(application: impl Into<String>, fence: Fence) -> Self {
        Change {
            application: application.into(),
            fence,
            unit: None,
        }
    }
}

/// The latest-state-wins fan-out from a store to its watchers (see the [module docs](self)).
///
/// Cheap to clone; clones share the watchers. Streams end when the last clone is dropped.
#[derive(Clone, Default)]
pub struct WatchHub {
    shared: Arc<HubShared>,
}

impl std::fmt::Debug for WatchHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHub")
            .field("watchers", &self.watchers())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct HubShared {
    namespaces: Mutex<HashMap<String, Vec<Weak<Slot>>>>,
    live: AtomicUsize,
}

impl Drop for HubShared {
    fn drop(&mut self) {
        let namespaces = self
            .namespaces
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for slot in namespaces.values().flatten().filter_map(Weak::upgrade) {
            let mut view = slot.lock();
            view.closed = true;
            if let Some(waker) = view.waker.take() {
                waker.wake();
            }
        }
    }
}

impl WatchHub {
    /// A hub without watchers.
    pub fn new() -> WatchHub {
        WatchHub::default()
    }

    /// Live watchers of every namespace: a lock-free read, for a store's hot path to skip
    /// work nobody watches.
    pub fn watchers(&self) -> usize {
        self.shared.live.load(Ordering::Acquire)
    }

    /// Wakes every live watcher's consumer without an event, so each stream is polled again
    /// (a store whose background task died can restart it from the consumer's poll).
    pub fn wake_all(&self) {
        let slots: Vec<Arc<Slot>> = self
            .namespaces()
            .values()
            .flatten()
            .filter_map(Weak::upgrade)
            .collect();
        for slot in slots {
            if let Some(waker) = slot.lock().waker.take() {
                waker.wake();
            }
        }
    }

    /// Namespaces that have live watchers (for a store to resynchronise after a reconnect).
    pub fn watched_namespaces(&self) -> Vec<String> {
        let mut namespaces = self.namespaces();
        namespaces.retain(|_, slots| {
            slots.retain(|slot| slot.strong_count() > 0);
            !slots.is_empty()
        });
        namespaces.keys().cloned().collect()
    }

    /// Live watchers of `namespace`.
    pub fn watchers_of(&self, namespace: &str) -> usize {
        self.namespaces().get(namespace).map_or(0, |slots| {
            slots.iter().filter(|s| s.strong_count() > 0).count()
        })
    }

    /// Registers a watcher of `namespace` (one application, or all): changes published from
    /// now on reach it. Read the snapshot *after* this, then [`Subscription::start`].
    pub fn subscribe(&self, namespace: &str, application: Option<&str>) -> Subscription {
        let slot = Arc::new(Slot {
            filter: application.map(str::to_owned),
            view: Mutex::new(View::default()),
            hub: Arc::downgrade(&self.shared),
        });
        self.shared.live.fetch_add(1, Ordering::AcqRel);
        let mut namespaces = self.namespaces();
        let slots = namespaces.entry(namespace.to_owned()).or_default();
        slots.retain(|slot| slot.strong_count() > 0);
        slots.push(Arc::downgrade(&slot));
        Subscription { slot }
    }

    /// Tells the watchers of `namespace` about a change, in the order the store learned of
    /// them. A change older than what a watcher knows (a smaller fence) is dropped.
    pub fn publish(&self, namespace: &str, change: Change) {
        if self.watchers() == 0 {
            return;
        }
        for slot in self.slots(namespace) {
            if slot
                .filter
                .as_deref()
                .is_none_or(|a| a == change.application)
            {
                slot.lock()
                    .apply(&change.application, change.fence, change.unit.as_deref());
            }
        }
    }

    /// Brings every watcher of `namespace` to `leaders`, which the store read after losing
    /// its feed (a reconnect, a compaction): applications missing from it are vacant. Call it
    /// in order with [`WatchHub::publish`] (a change learned after the read comes after).
    pub fn resync(&self, namespace: &str, leaders: &BTreeMap<String, Leader>) {
        for slot in self.slots(namespace) {
            let mut view = slot.lock();
            let mut apps: Vec<String> = view.known.keys().cloned().collect();
            apps.extend(leaders.keys().cloned());
            for app in apps {
                if slot.filter.as_deref().is_some_and(|a| a != app) {
                    continue;
                }
                match leaders.get(&app) {
                    Some(leader) => view.apply(&app, leader.fence, Some(&leader.unit)),
                    None => {
                        if let Some((fence, Some(_))) = view.known.get(&app).cloned() {
                            view.apply(&app, fence, None);
                        }
                    }
                }
            }
        }
    }

    fn namespaces(&self) -> MutexGuard<'_, HashMap<String, Vec<Weak<Slot>>>> {
        self.shared
            .namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn slots(&self, namespace: &str) -> Vec<Arc<Slot>> {
        self.namespaces()
            .get(namespace)
            .map(|slots| slots.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default()
    }
}

/// A registered watcher that has not emitted its snapshot yet; see [`WatchHub::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    slot: Arc<Slot>,
}

impl Subscription {
    /// Starts the stream with `snapshot`, read after [`WatchHub::subscribe`].
    ///
    /// `floor`, if given, is a fence every term that started before the snapshot was read is
    /// below (and every later term is at or above): changes that arrived in between for
    /// applications missing from the snapshot are dropped when below it. Stores whose feed is
    /// ordered with their reads (a watch from the snapshot's revision, one lock) pass `None`.
    pub fn start(self, snapshot: BTreeMap<String, Leader>, floor: Option<Fence>) -> LeaderStream {
        let slot = self.slot;
        {
            let mut view = slot.lock();
            let filter = slot.filter.clone();
            let snapshot: BTreeMap<String, Leader> = snapshot
                .into_iter()
                .filter(|(app, _)| filter.as_deref().is_none_or(|a| a == app))
                .collect();
            // Changes queued since subscribing: keep those newer than the snapshot.
            let early = std::mem::take(&mut view.known);
            view.queue.clear();
            view.queued.clear();
            for (app, leader) in &snapshot {
                view.known
                    .insert(app.clone(), (leader.fence, Some(leader.unit.clone())));
                view.seen
                    .insert(app.clone(), (leader.fence, Some(leader.unit.clone())));
            }
            for (app, (fence, unit)) in early {
                let in_snapshot = snapshot.contains_key(&app);
                if !in_snapshot && floor.is_some_and(|floor| fence < floor) {
                    continue;
                }
                view.apply(&app, fence, unit.as_deref());
            }
            view.snapshot = Some(snapshot);
        }
        Box::pin(LeaderWatch { slot })
    }
}

struct Slot {
    filter: Option<String>,
    view: Mutex<View>,
    hub: Weak<HubShared>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.live.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// One watcher's state: what it knows, what it delivered, what is pending.
#[derive(Default)]
struct View {
    /// The snapshot, until delivered.
    snapshot: Option<BTreeMap<String, Leader>>,
    /// The latest accepted state per application: (highest fence, leader of that term if
    /// it is running).
    known: HashMap<String, (Fence, Option<String>)>,
    /// What the consumer was last given per application.
    seen: HashMap<String, (Fence, Option<String>)>,
    /// Applications whose `known` may differ from `seen`, oldest first; each at most once.
    queue: VecDeque<String>,
    queued: HashSet<String>,
    waker: Option<Waker>,
    closed: bool,
}

impl View {
    fn apply(&mut self, app: &str, fence: Fence, unit: Option<&str>) {
        match self.known.get(app) {
            // An older term: stale news.
            Some((known, _)) if fence < *known => return,
            // The same term: only its end is news; a repeated start is not.
            Some((known, state)) if fence == *known && (state.is_none() || unit.is_some()) => {
                return;
            }
            _ => {}
        }
        self.known
            .insert(app.to_owned(), (fence, unit.map(str::to_owned)));
        if self.queued.insert(app.to_owned()) {
            self.queue.push_back(app.to_owned());
        }
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn next_event(&mut self) -> Option<LeaderEvent> {
        if let Some(leaders) = self.snapshot.take() {
            return Some(LeaderEvent::Snapshot { leaders });
        }
        while let Some(app) = self.queue.pop_front() {
            self.queued.remove(&app);
            let Some(known) = self.known.get(&app).cloned() else {
                continue;
            };
            let seen_unit = self.seen.get(&app).and_then(|(_, unit)| unit.clone());
            let seen_fence = self.seen.get(&app).map(|(fence, _)| *fence);
            let event = match &known {
                (fence, Some(unit)) if seen_fence != Some(*fence) || seen_unit.is_none() => {
                    LeaderEvent::Elected {
                        application: app.clone(),
                        unit: unit.clone(),
                        fence: *fence,
                    }
                }
                (_, None) if seen_unit.is_some() => LeaderEvent::Vacated {
                    application: app.clone(),
                },
                // Nothing the consumer has not seen (a term that started and ended while it
                // was not reading, after a vacancy it saw).
                _ => {
                    self.seen.insert(app, known);
                    continue;
                }
            };
            self.seen.insert(app, known);
            return Some(event);
        }
        None
    }
}

/// The stream [`Subscription::start`] returns.
struct LeaderWatch {
    slot: Arc<Slot>,
}

impl Stream for LeaderWatch {
    type Item = LeaderEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LeaderEvent>> {
        let mut view = self.slot.lock();
        if let Some(event) = view.next_event() {
            return Poll::Ready(Some(event));
        }
        if view.closed {
            return Poll::Ready(None);
        }
        view.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{FutureExt, StreamExt};

    fn elected(app: &str, unit: &str, fence: u64) -> LeaderEvent {
        LeaderEvent::Elected {
            application: app.into(),
            unit: unit.into(),
            fence: Fence(fence),
        }
    }

    fn vacated(app: &str) -> LeaderEvent {
        LeaderEvent::Vacated {
            application: app.into(),
        }
    }

    fn drain(stream: &mut LeaderStream) -> Vec<LeaderEvent> {
        let mut events = Vec::new();
        while let Some(Some(event)) = stream.next().now_or_never() {
            events.push(event);
        }
        events
    }

    #[test]
    fn snapshot_first_then_changes_in_order() {
        let hub = WatchHub::new();
        let leaders = BTreeMap::from([(
            "a".to_owned(),
            Leader {
                unit: "a/0".into(),
                fence: Fence(1),
            },
        )]);
        let mut stream = hub.subscribe("ns", None).start(leaders.clone(), None);
        hub.publish("ns", Change::vacated("a", Fence(1)));
        hub.publish("ns", Change::elected("b", "b/0", Fence(2)));
        hub.publish("other", Change::elected("c", "c/0", Fence(3)));
        assert_eq!(
            drain(&mut stream),
            [
                LeaderEvent::Snapshot { leaders },
                vacated("a"),
                elected("b", "b/0", 2)
            ]
        );
    }

    #[test]
    fn stale_and_repeated_changes_are_dropped() {
        let hub = WatchHub::new();
        let mut stream = hub.subscribe("ns", None).start(BTreeMap::new(), None);
        assert_eq!(drain(&mut stream).len(), 1);
        hub.publish("ns", Change::elected("a", "a/0", Fence(5)));
        hub.publish("ns", Change::elected("a", "a/0", Fence(5)));
        hub.publish("ns", Change::elected("a", "a/9", Fence(4)));
        hub.publish("ns", Change::vacated("a", Fence(4)));
        assert_eq!(drain(&mut stream), [elected("a", "a/0", 5)]);
        hub.publish("ns", Change::vacated("a", Fence(5)));
        hub.publish("ns", Change::vacated("a", Fence(5)));
        hub.publish("ns", Change::elected("a", "a/0", Fence(5)));
        assert_eq!(drain(&mut stream), [vacated("a")]);
    }

    #[test]
    fn latest_state_wins_with_one_pending_state_per_application() {
        let hub = WatchHub::new();
        let mut stream = hub.subscribe("ns", None).start(BTreeMap::new(), None);
        for i in 0..1_000u64 {
            let app = format!("app{}", i % 10);
            hub.publish(
                "ns",
                Change::elected(&app, format!("{app}/0"), Fence(2 * i + 1)),
            );
            hub.publish("ns", Change::vacated(&app, Fence(2 * i + 1)));
            hub.publish(
                "ns",
                Change::elected(&app, format!("{app}/1"), Fence(2 * i + 2)),
            );
        }
        {
            let slot = hub.slots("ns").pop().unwrap();
            let view = slot.lock();
            assert_eq!(view.queue.len(), 10);
            assert_eq!(view.known.len(), 10);
        }
        let events = drain(&mut stream);
        assert_eq!(events.len(), 11, "{events:?}");
        for i in 990..1_000u64 {
            let app = format!("app{}", i % 10);
            assert!(events.contains(&elected(&app, &format!("{app}/1"), 2 * i + 2)));
        }
    }

    #[test]
    fn a_term_that_came_and_went_unseen_is_not_reported() {
        let hub = WatchHub::new();
        let mut stream = hub.subscribe("ns", None).start(BTreeMap::new(), None);
        drain(&mut stream);
        hub.publish("ns", Change::elected("a", "a/0", Fence(1)));
        hub.publish("ns", Change::vacated("a", Fence(1)));
        assert_eq!(drain(&mut stream), []);
    }

    #[test]
    fn early_changes_below_the_floor_are_dropped() {
        let hub = WatchHub::new();
        let subscription = hub.subscribe("ns", None);
        // Arrived after subscribing but describe terms older than the snapshot.
        hub.publish("ns", Change::elected("old", "old/0", Fence(3)));
        hub.publish("ns", Change::elected("new", "new/0", Fence(12)));
        let mut stream = subscription.start(BTreeMap::new(), Some(Fence(10)));
        assert_eq!(
            drain(&mut stream),
            [
                LeaderEvent::Snapshot {
                    leaders: BTreeMap::new()
                },
                elected("new", "new/0", 12)
            ]
        );
    }

    #[test]
    fn one_application_filter_and_resync() {
        let hub = WatchHub::new();
        let mut one = hub.subscribe("ns", Some("a")).start(BTreeMap::new(), None);
        let mut all = hub.subscribe("ns", None).start(BTreeMap::new(), None);
        drain(&mut one);
        drain(&mut all);
        hub.publish("ns", Change::elected("a", "a/0", Fence(1)));
        hub.publish("ns", Change::elected("b", "b/0", Fence(2)));
        assert_eq!(drain(&mut one), [elected("a", "a/0", 1)]);
        assert_eq!(drain(&mut all).len(), 2);
        // The feed was lost; a re-read shows a vacated and a new term elsewhere.
        let leaders = BTreeMap::from([(
            "c".to_owned(),
            Leader {
                unit: "c/0".into(),
                fence: Fence(3),
            },
        )]);
        hub.resync("ns", &leaders);
        assert_eq!(drain(&mut one), [vacated("a")]);
        let mut events = drain(&mut all);
        events.sort_by(|x, y| x.application().cmp(&y.application()));
        assert_eq!(events, [vacated("a"), vacated("b"), elected("c", "c/0", 3)]);
        // A resync that changes nothing reports nothing.
        hub.resync("ns", &leaders);
        assert_eq!(drain(&mut all), []);
    }

    #[test]
    fn dropping_the_stream_frees_its_slot_and_dropping_the_hub_ends_streams() {
        let hub = WatchHub::new();
        let stream = hub.subscribe("ns", None).start(BTreeMap::new(), None);
        assert_eq!((hub.watchers(), hub.watchers_of("ns")), (1, 1));
        drop(stream);
        assert_eq!((hub.watchers(), hub.watchers_of("ns")), (0, 0));
        assert!(hub.watched_namespaces().is_empty());
        let mut stream = hub.subscribe("ns", None).start(BTreeMap::new(), None);
        drop(hub);
        assert!(matches!(
            stream.next().now_or_never(),
            Some(Some(LeaderEvent::Snapshot { .. }))
        ));
        assert_eq!(stream.next().now_or_never(), Some(None));
    }
}
