//! Following who leads (O1–O4): one etcd watch per namespace of a client feeds the hub.
//!
//! A [`Feed`] owns the namespace's only prefix watch over its leader keys (S3, O4). It keeps
//! the leaders it has seen, as of the last revision it processed, and publishes every change
//! to the hub under the same lock under which a new watcher subscribes and takes that state as
//! its snapshot, so no watcher sees a change twice, misses one, or sees one from before its
//! snapshot (the memory store's rule, with the feed's state in place of the store's).
//!
//! - A put that creates a leader key starts a term: `Elected`, fence = its create revision.
//!   A put that keeps the create revision (an extension, a pin or unpin moving the key between
//!   leases) is no change of leadership and publishes nothing.
//! - A delete (revoke, lease expiry, an unpin after the claimed expiry) ends the term the feed
//!   knew for that key: `Vacated` with that term's fence.
//! - A broken watch resumes from the next revision, so nothing is missed; a compacted one
//!   (the missed revisions are gone) re-reads the leaders, brings every watcher to them with
//!   [`WatchHub::resync`], and watches from the read's revision + 1. Errors are retried with
//!   backoff until the feed stops: they never end a stream.
//! - The feed starts with the namespace's first watcher and stops when the last watcher's
//!   stream is dropped (a drop guard in every stream counts them).

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, EventType, GetOptions, WatchOptions, WatchResponse};
use futures_core::Stream;
use leadership_core::retry::Backoff;
use leadership_core::watch::{Change, WatchHub};
use leadership_core::{CancellationToken, Error, Leader, LeaderEvent, LeaderStream, Result};
use leadership_core::{Watcher, retry};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::BACKEND;
use crate::error::map_err;
use crate::keys::Keys;
use crate::store::{EtcdStore, Shared};
use crate::txn::{fence_of, header_revision};

/// Pauses between a feed's failed attempts to read or watch: short at first, then at most
/// this long, so a feed that lost its member comes back within about this much of the
/// member (or another one) answering again.
const FEED_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));

/// The running feeds of one client, by namespace.
#[derive(Default)]
pub(crate) struct Feeds {
    by_namespace: Mutex<HashMap<String, Arc<Feed>>>,
    /// Watches that found their next revision compacted, over the client's life.
    compactions: Arc<AtomicUsize>,
}

impl Feeds {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Feed>>> {
        self.by_namespace
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How many namespaces have a running feed (one etcd watch each).
    pub(crate) fn running(&self) -> usize {
        self.lock().len()
    }

    /// How many times a watch of this client found its revisions compacted and re-read.
    pub(crate) fn compactions(&self) -> usize {
        self.compactions.load(Ordering::Relaxed)
    }

    /// Stops every feed: the client is going away.
    pub(crate) fn stop_all(&self) {
        for feed in self.lock().values() {
            feed.stop.cancel();
        }
    }
}

/// One namespace's watch and what it has seen.
pub(crate) struct Feed {
    state: Mutex<FeedState>,
    /// Woken whenever `state` moves on, for watchers waiting to join.
    moved: Notify,
    stop: CancellationToken,
    /// Streams (and joins under way) that use this feed; changed under the `Feeds` lock.
    watchers: AtomicUsize,
}

#[derive(Default)]
struct FeedState {
    /// False until the first read, and while re-reading after a compaction.
    synced: bool,
    /// The last revision whose changes are in `leaders` (and were published).
    revision: i64,
    leaders: BTreeMap<String, Leader>,
}

impl Feed {
    fn lock(&self) -> MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a feed task needs: no handle, so a feed never keeps its client's handles alive.
struct FeedTask {
    client: Client,
    keys: Keys,
    namespace: String,
    hub: WatchHub,
    feed: Arc<Feed>,
    timeout: Duration,
    compactions: Arc<AtomicUsize>,
}

/// How a watch ended.
enum WatchEnd {
    /// The revisions it needed were compacted: re-read.
    Compacted,
    /// It broke (connection lost, member gone, cancelled by the server): resume.
    Broken(Error),
}

impl FeedTask {
    async fn run(self) {
        let stop = self.feed.stop.clone();
        tokio::select! {
            () = stop.cancelled() => {}
            () = self.follow() => {}
        }
    }

    async fn follow(&self) {
        let mut backoff = Backoff::new(FEED_BACKOFF.0, FEED_BACKOFF.1);
        let mut resync = true;
        loop {
            if resync {
                match read_leaders(&self.client, &self.keys, self.timeout).await {
                    Ok((leaders, revision)) => {
                        self.resync(leaders, revision);
                        resync = false;
                    }
                    Err(err) => {
                        tracing::debug!(error = %err.one_line(), namespace = %self.namespace, "etcd watch: cannot read the leaders; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                }
            }
            let from = self.feed.lock().revision + 1;
            match self.watch_from(from, &mut backoff).await {
                WatchEnd::Compacted => {
                    self.compactions.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(namespace = %self.namespace, from, "etcd watch: compacted; re-reading the leaders");
                    resync = true;
                }
                WatchEnd::Broken(err) => {
                    tracing::debug!(error = %err.one_line(), namespace = %self.namespace, from, "etcd watch: broken; resuming");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// Brings the feed and every watcher of the namespace to `leaders` as of `revision`.
    fn resync(&self, leaders: BTreeMap<String, Leader>, revision: i64) {
        {
            let mut state = self.feed.lock();
            self.hub.resync(&self.namespace, &leaders);
            *state = FeedState {
                synced: true,
                revision,
                leaders,
            };
        }
        self.feed.moved.notify_waiters();
    }

    /// Watches the leader keys from `from` until the watch ends.
    async fn watch_from(&self, from: i64, backoff: &mut Backoff) -> WatchEnd {
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut watch_client = self.client.watch_client();
        let opened = retry::timeout(BACKEND, "watch", self.timeout, async {
            watch_client
                .watch(self.keys.leaders(), Some(options))
                .await
                .map_err(|e| map_err("watch", e))
        })
        .await;
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(err) => return WatchEnd::Broken(err),
        };
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    return WatchEnd::Broken(Error::unavailable(
                        BACKEND,
                        "watch",
                        leadership_core::Cause::message("the watch stream ended"),
                    ));
                }
                Err(err) => return WatchEnd::Broken(map_err("watch", err)),
            };
            if response.compact_revision() > 0 {
                return WatchEnd::Compacted;
            }
            if response.canceled() {
                let reason = response.cancel_reason().to_owned();
                return WatchEnd::Broken(Error::unavailable(
                    BACKEND,
                    "watch",
                    leadership_core::Cause::message(format!("watch cancelled: {reason}")),
                ));
            }
            self.apply(&response);
            backoff.reset();
        }
    }

    /// Publishes the terms that started and ended in `response`, in order.
    fn apply(&self, response: &WatchResponse) {
        {
            let mut state = self.feed.lock();
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let Some(application) = self.keys.application_of_leader(kv.key()) else {
                    continue;
                };
                match event.event_type() {
                    EventType::Put => {
                        let (Ok(fence), Ok(unit)) =
                            (fence_of(kv.create_revision()), kv.value_str())
                        else {
                            continue;
                        };
                        if state
                            .leaders
                            .get(&application)
                            .is_some_and(|leader| leader.fence == fence)
                        {
                            // The same term: an extension, or a pin moving the key.
                            continue;
                        }
                        self.hub
                            .publish(&self.namespace, Change::elected(&application, unit, fence));
                        let unit = unit.to_owned();
                        state.leaders.insert(application, Leader { unit, fence });
                    }
                    EventType::Delete => {
                        if let Some(ended) = state.leaders.remove(&application) {
                            self.hub.publish(
                                &self.namespace,
                                Change::vacated(application, ended.fence),
                            );
                        }
                    }
                }
            }
            // Only events move the revision on: a response's header revision can run ahead of
            // the events sent so far while the watch catches up from the past.
            if let Some(last) = response.events().last().and_then(|e| e.kv()) {
                state.revision = state.revision.max(last.mod_revision());
            }
        }
        self.feed.moved.notify_waiters();
    }
}

/// Every leader of the namespace with its term's fence, and the revision of the read: one
/// linearizable read, retried within `timeout`.
async fn read_leaders(
    client: &Client,
    keys: &Keys,
    timeout: Duration,
) -> Result<(BTreeMap<String, Leader>, i64)> {
    let response = retry::within(BACKEND, "watch", timeout, || {
        let mut kv = client.kv_client();
        let prefix = keys.leaders();
        async move {
            kv.get(prefix, Some(GetOptions::new().with_prefix()))
                .await
                .map_err(|e| map_err("watch", e))
        }
    })
    .await?;
    let mut leaders = BTreeMap::new();
    for kv in response.kvs() {
        if let (Some(application), Ok(unit), Ok(fence)) = (
            keys.application_of_leader(kv.key()),
            kv.value_str(),
            fence_of(kv.create_revision()),
        ) {
            let unit = unit.to_owned();
            leaders.insert(application, Leader { unit, fence });
        }
    }
    Ok((leaders, header_revision(response.header())))
}

/// Counts one watcher of a feed while it lives; the last one out stops the feed.
struct FeedGuard {
    shared: Weak<Shared>,
    namespace: String,
    feed: Arc<Feed>,
}

impl Drop for FeedGuard {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            self.feed.stop.cancel();
            return;
        };
        let mut feeds = shared.feeds.lock();
        if self.feed.watchers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.feed.stop.cancel();
            if feeds
                .get(&self.namespace)
                .is_some_and(|running| Arc::ptr_eq(running, &self.feed))
            {
                feeds.remove(&self.namespace);
            }
        }
    }
}

/// A watcher's stream: the hub's, plus the guard that keeps the feed running for it.
struct Followed {
    stream: LeaderStream,
    _guard: FeedGuard,
}

impl Stream for Followed {
    type Item = LeaderEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LeaderEvent>> {
        self.stream.as_mut().poll_next(cx)
    }
}

impl EtcdStore {
    /// The namespace's feed, started if this is its first watcher, counting one more.
    fn join_feed(&self) -> FeedGuard {
        let shared = &self.inner.shared;
        let namespace = &self.inner.namespace;
        let mut feeds = shared.feeds.lock();
        let feed = feeds
            .entry(namespace.clone())
            .or_insert_with(|| {
                let feed = Arc::new(Feed {
                    state: Mutex::new(FeedState::default()),
                    moved: Notify::new(),
                    stop: CancellationToken::new(),
                    watchers: AtomicUsize::new(0),
                });
                let task = FeedTask {
                    client: shared.client.clone(),
                    keys: self.inner.keys.clone(),
                    namespace: namespace.clone(),
                    hub: shared.hub.clone(),
                    feed: feed.clone(),
                    timeout: shared.timeout,
                    compactions: shared.feeds.compactions.clone(),
                };
                tokio::spawn(task.run());
                feed
            })
            .clone();
        feed.watchers.fetch_add(1, Ordering::AcqRel);
        FeedGuard {
            shared: Arc::downgrade(shared),
            namespace: namespace.clone(),
            feed,
        }
    }

    /// A watcher of this namespace (one application, or all).
    ///
    /// The snapshot is the feed's state, taken under the lock the feed publishes under, once
    /// the feed has caught up with a linearizable read made now: its revision reached the
    /// read's, or its leaders equal the read's. So the snapshot holds every term that started
    /// before the call (O1), and every later event comes after it.
    async fn follow(&self, application: Option<&str>) -> Result<LeaderStream> {
        let guard = self.join_feed();
        let shared = &self.inner.shared;
        let (now, revision) =
            read_leaders(&shared.client, &self.inner.keys, shared.timeout).await?;
        let deadline = Instant::now() + shared.timeout;
        let feed = guard.feed.clone();
        loop {
            let moved = feed.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            {
                let state = feed.lock();
                if state.synced && (state.revision >= revision || state.leaders == now) {
                    let subscription = shared.hub.subscribe(&self.inner.namespace, application);
                    let stream = subscription.start(state.leaders.clone(), None);
                    return Ok(Box::pin(Followed {
                        stream,
                        _guard: guard,
                    }));
                }
            }
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return Err(Error::unavailable(
                    BACKEND,
                    "watch",
                    retry::TimedOut(shared.timeout),
                ));
            }
        }
    }

    /// How many etcd watches this handle's client runs for watchers: one per namespace with
    /// at least one live stream (S3, O4). For tests.
    #[doc(hidden)]
    pub fn running_watches(&self) -> usize {
        self.inner.shared.feeds.running()
    }

    /// How many times a watch of this handle's client found the revisions it needed
    /// compacted, and re-read the leaders instead (O4). For tests.
    #[doc(hidden)]
    pub fn watch_compactions(&self) -> usize {
        self.inner.shared.feeds.compactions()
    }
}

#[async_trait]
impl Watcher for EtcdStore {
    async fn watch_leaders(&self) -> Result<LeaderStream> {
        self.follow(None).await
    }

    async fn watch_leader(&self, application: &str) -> Result<LeaderStream> {
        self.inner.shared.policy.check_application(application)?;
        self.follow(Some(application)).await
    }
}
