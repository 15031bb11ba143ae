//! Waking blocked waiters (B2–B5) without polling.
//!
//! One subscriber task per connection, shared by every namespace handle derived from it
//! (S3), started with the first wait, listens on the release channels of the namespaces that
//! have waiters, over its own connection, and bumps a per-application [`watch`] counter for
//! each message. Channels are subscribed while a namespace has waiters and unsubscribed
//! when its last waiter goes. A waiter registers before it looks at the lease and looks only
//! while its channel is subscribed, so a release after the look always reaches it; when the
//! subscription drops, every channel's epoch changes and every waiter looks again once it is
//! back. Expiries need no message: the look returns the time left and the waiter sleeps
//! exactly that long.
//!
//! The same subscription carries the namespace's watches (O4): a channel stays subscribed
//! while it has waiters or watchers, and after every (re)subscription the subscriber
//! resynchronises each watched namespace before it reads another message (watch.rs).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Client, PushInfo, PushKind};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::watch::{Message, Watched};

/// How often an idle subscription proves the server still answers, so a half-open
/// connection is noticed and replaced (then waiters look again).
const KEEPALIVE: Duration = Duration::from_secs(10);

/// What happened to one application since a waiter last looked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Events {
    /// Releases (revoke, unpin of an expired lease).
    pub(crate) released: u64,
    /// Changes that call for another look (unpin restarted expiry).
    pub(crate) changed: u64,
}

/// The state of one channel's subscription.
#[derive(Debug, Clone, Default)]
pub(crate) struct SubState {
    /// Bumped on every successful (re)subscription of the channel.
    pub(crate) epoch: u64,
    /// True while subscribed.
    pub(crate) connected: bool,
    /// The server's last refusal that retrying cannot mend (e.g. `NOPERM` on the channel):
    /// waiters fail with it rather than wait forever. Cleared by the next subscription.
    pub(crate) refused: Option<leadership_core::Error>,
}

struct AppEntry {
    tx: watch::Sender<Events>,
    waiters: usize,
}

/// The waiters and watchers of one namespace's channel.
struct Channel {
    apps: HashMap<String, AppEntry>,
    state: watch::Sender<SubState>,
    /// The namespace's watch, while it has watchers.
    watched: Option<Watched>,
    watchers: usize,
}

impl Channel {
    fn new() -> Channel {
        Channel {
            apps: HashMap::new(),
            state: watch::Sender::new(SubState::default()),
            watched: None,
            watchers: 0,
        }
    }

    fn is_idle(&self) -> bool {
        self.apps.is_empty() && self.watchers == 0
    }
}

struct Shared {
    channels: Mutex<HashMap<String, Channel>>,
    /// Wakes the subscriber when a channel gains its first or loses its last waiter.
    resync: Notify,
}

impl Shared {
    fn channels(&self) -> MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn dispatch(&self, channel: &str, payload: &[u8]) {
        let Some(message) = Message::parse(payload) else {
            return;
        };
        let channels = self.channels();
        let Some(channel) = channels.get(channel) else {
            return;
        };
        if let Some(watched) = &channel.watched {
            watched.feed.on_message(&message);
        }
        let (app, released) = match message {
            Message::Vacated { application, .. } => (application, true),
            Message::Changed { application } => (application, false),
            Message::Elected { .. } => return,
        };
        if let Some(entry) = channel.apps.get(app) {
            entry.tx.send_modify(|events| {
                if released {
                    events.released += 1;
                } else {
                    events.changed += 1;
                }
            });
        }
    }

    /// Marks `names` as subscribed (or refused) on the current connection.
    fn set_state(&self, names: &[String], update: impl Fn(&mut SubState)) {
        let channels = self.channels();
        for name in names {
            if let Some(channel) = channels.get(name) {
                channel.state.send_modify(&update);
            }
        }
    }

    fn set_all(&self, update: impl Fn(&mut SubState)) {
        for channel in self.channels().values() {
            channel.state.send_modify(&update);
        }
    }
}

/// Where the subscriber connects.
#[derive(Clone)]
pub(crate) enum Source {
    /// One server: `SUBSCRIBE` on its own connection.
    Single(Box<Client>),
    /// The primary the sentinels name at each (re)connection: `SUBSCRIBE`.
    Sentinel(crate::conn::SentinelConn),
    /// A cluster: `SSUBSCRIBE` over a cluster connection of its own (RESP3, pushes), which
    /// sends each channel's subscription to the master of the channel's slot, the
    /// namespace's, so it follows the slot to whichever master serves it.
    Cluster(Arc<dyn Fn() -> ClusterClientBuilder + Send + Sync>),
}

impl Source {
    /// How often an idle subscription is pinged, and how long the answer may take.
    ///
    /// Behind Sentinel a primary that stops answering is replaced within seconds, and
    /// messages published on the new one never reach a subscriber still on the old one: it
    /// pings every second and gives up after a quarter of the operation timeout (at least
    /// 500 ms), so waiters look again soon after a failover.
    fn keepalive(&self, timeout: Duration) -> (Duration, Duration) {
        match self {
            Source::Sentinel(_) => (
                SENTINEL_KEEPALIVE,
                (timeout / 4).max(Duration::from_millis(500)),
            ),
            Source::Single(_) | Source::Cluster(_) => (KEEPALIVE, timeout),
        }
    }
}

/// How often a subscription behind Sentinel proves its server still answers.
const SENTINEL_KEEPALIVE: Duration = Duration::from_secs(1);

/// The registry of waiters and the subscriber task of one connection.
pub(crate) struct Waiters {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
    source: Source,
    timeout: Duration,
}

impl Waiters {
    pub(crate) fn new(source: Source, timeout: Duration) -> Self {
        Waiters {
            shared: Arc::new(Shared {
                channels: Mutex::new(HashMap::new()),
                resync: Notify::new(),
            }),
            task: Mutex::new(None),
            source,
            timeout,
        }
    }

    /// Registers a waiter on `application` of the namespace whose release channel is
    /// `channel`, and starts the subscriber if it does not run; dropping the registration
    /// removes it (B3).
    pub(crate) fn register(&self, channel: &str, application: &str) -> Registration {
        let (events, state) = {
            let mut channels = self.shared.channels();
            let entry = channels.entry(channel.to_owned()).or_insert_with(|| {
                self.shared.resync.notify_one();
                Channel::new()
            });
            let app = entry
                .apps
                .entry(application.to_owned())
                .or_insert_with(|| AppEntry {
                    tx: watch::Sender::new(Events::default()),
                    waiters: 0,
                });
            app.waiters += 1;
            (app.tx.subscribe(), entry.state.subscribe())
        };
        self.ensure_subscriber();
        Registration {
            shared: self.shared.clone(),
            channel: channel.to_owned(),
            application: application.to_owned(),
            events,
            state,
        }
    }

    fn ensure_subscriber(&self) {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if task.as_ref().is_none_or(|t| t.is_finished()) {
            self.shared.set_all(|s| s.connected = false);
            *task = Some(tokio::spawn(run_subscriber(
                self.shared.clone(),
                self.source.clone(),
                self.timeout,
            )));
        }
    }

    /// Registers a watcher of the namespace whose channel is `channel`, starting its watch
    /// with `start` if it has none, and the subscriber if it does not run; dropping the
    /// registration removes it, and the last one ends the watch (O4).
    pub(crate) fn watch(
        &self,
        channel: &str,
        start: impl FnOnce() -> Watched,
    ) -> WatchRegistration {
        let (feed, state) = {
            let mut channels = self.shared.channels();
            let entry = channels.entry(channel.to_owned()).or_insert_with(|| {
                self.shared.resync.notify_one();
                Channel::new()
            });
            entry.watchers += 1;
            let watched = entry.watched.get_or_insert_with(start);
            (watched.feed.clone(), entry.state.subscribe())
        };
        self.ensure_subscriber();
        WatchRegistration {
            shared: self.shared.clone(),
            channel: channel.to_owned(),
            feed,
            state,
        }
    }

    /// Whether `channel` has a watch (for the tests' view of what a dropped stream leaves).
    pub(crate) fn watched(&self, channel: &str) -> bool {
        self.shared
            .channels()
            .get(channel)
            .is_some_and(|c| c.watched.is_some())
    }

    /// Waiters currently registered on `channel`'s applications.
    pub(crate) fn registered(&self, channel: &str) -> usize {
        self.shared
            .channels()
            .get(channel)
            .map_or(0, |c| c.apps.values().map(|e| e.waiters).sum())
    }
}

impl Drop for Waiters {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

/// One waiter's interest in one application.
pub(crate) struct Registration {
    shared: Arc<Shared>,
    channel: String,
    application: String,
    /// Releases and changes of the application.
    pub(crate) events: watch::Receiver<Events>,
    /// The subscription of the namespace's channel.
    pub(crate) state: watch::Receiver<SubState>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut channels = self.shared.channels();
        let Some(channel) = channels.get_mut(&self.channel) else {
            return;
        };
        if let Some(entry) = channel.apps.get_mut(&self.application) {
            entry.waiters = entry.waiters.saturating_sub(1);
            if entry.waiters == 0 {
                channel.apps.remove(&self.application);
            }
        }
        if channel.is_idle() {
            channels.remove(&self.channel);
            self.shared.resync.notify_one();
        }
    }
}

/// One watcher's interest in one namespace.
pub(crate) struct WatchRegistration {
    shared: Arc<Shared>,
    channel: String,
    /// The namespace's watch.
    pub(crate) feed: Arc<crate::watch::Feed>,
    /// The subscription of the namespace's channel.
    pub(crate) state: watch::Receiver<SubState>,
}

impl Drop for WatchRegistration {
    fn drop(&mut self) {
        let mut channels = self.shared.channels();
        let Some(channel) = channels.get_mut(&self.channel) else {
            return;
        };
        channel.watchers = channel.watchers.saturating_sub(1);
        if channel.watchers == 0 {
            channel.watched = None;
        }
        if channel.is_idle() {
            channels.remove(&self.channel);
            self.shared.resync.notify_one();
        }
    }
}

async fn run_subscriber(shared: Arc<Shared>, source: Source, timeout: Duration) {
    let mut backoff = crate::retry::background_backoff();
    loop {
        match connect(&source, timeout).await {
            Ok((sink, stream)) => {
                backoff.reset();
                listen(&shared, sink, stream, source.keepalive(timeout)).await;
                shared.set_all(|s| s.connected = false);
                tracing::debug!("redis release subscription lost; resubscribing");
            }
            Err(error) => {
                tracing::debug!(%error, "redis release subscription failed; retrying");
                let error = crate::error::map_redis_error("subscribe", error);
                if !error.is_retryable() {
                    shared.set_all(|s| s.refused = Some(error.clone()));
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
}

/// The subscribing half of a subscriber connection.
enum Sink {
    Plain(PubSubSink),
    Sharded(ClusterConnection),
}

impl Sink {
    async fn subscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Sink::Plain(sink) => sink.subscribe(channels).await,
            // One at a time: channels of different namespaces are in different slots.
            Sink::Sharded(conn) => {
                for channel in channels {
                    conn.ssubscribe(channel).await?;
                }
                Ok(())
            }
        }
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Sink::Plain(sink) => sink.unsubscribe(channels).await,
            Sink::Sharded(conn) => {
                for channel in channels {
                    conn.sunsubscribe(channel).await?;
                }
                Ok(())
            }
        }
    }

    async fn ping(&mut self) -> redis::RedisResult<()> {
        match self {
            Sink::Plain(sink) => sink.ping::<redis::Value>().await.map(drop),
            Sink::Sharded(conn) => redis::cmd("PING")
                .query_async::<redis::Value>(conn)
                .await
                .map(drop),
        }
    }
}

/// The receiving half of a subscriber connection.
enum Stream {
    Plain(PubSubStream),
    Sharded(mpsc::UnboundedReceiver<PushInfo>),
}

/// What the receiving half delivered.
enum Incoming {
    Message {
        channel: Vec<u8>,
        payload: Vec<u8>,
    },
    /// Not for us (a subscription's confirmation).
    Other,
    /// A subscription may have lapsed and messages may be lost: the cluster connection
    /// dropped a node's connection, or a node unsubscribed a channel whose slot moved away.
    Lost,
}

impl Stream {
    async fn next(&mut self, shared: &Shared) -> Option<Incoming> {
        match self {
            Stream::Plain(stream) => stream.next().await.map(|message| Incoming::Message {
                channel: message.get_channel_name().as_bytes().to_vec(),
                payload: message.get_payload_bytes().to_vec(),
            }),
            Stream::Sharded(pushes) => pushes.recv().await.map(|push| sharded(shared, push)),
        }
    }
}

/// Reads one push of the cluster subscriber connection.
fn sharded(shared: &Shared, push: PushInfo) -> Incoming {
    let bytes = |value: Option<&redis::Value>| match value {
        Some(redis::Value::BulkString(bytes)) => Some(bytes.clone()),
        Some(redis::Value::SimpleString(text)) => Some(text.as_bytes().to_vec()),
        _ => None,
    };
    match push.kind {
        PushKind::SMessage | PushKind::Message => {
            match (bytes(push.data.first()), bytes(push.data.get(1))) {
                (Some(channel), Some(payload)) => Incoming::Message { channel, payload },
                _ => Incoming::Other,
            }
        }
        PushKind::Disconnection => Incoming::Lost,
        PushKind::SUnsubscribe => {
            // Ours (the channel lost its last waiter) or the server's (the slot moved).
            let wanted = bytes(push.data.first())
                .and_then(|name| String::from_utf8(name).ok())
                .is_some_and(|name| shared.channels().contains_key(&name));
            if wanted {
                Incoming::Lost
            } else {
                Incoming::Other
            }
        }
        _ => Incoming::Other,
    }
}

async fn connect(source: &Source, timeout: Duration) -> redis::RedisResult<(Sink, Stream)> {
    let connecting = async {
        let client = match source {
            Source::Single(client) => (**client).clone(),
            Source::Sentinel(sentinel) => sentinel.primary_client().await?,
            Source::Cluster(builder) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let client = builder()
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(tx)
                    .build()?;
                let conn = client.get_async_connection().await?;
                return Ok((Sink::Sharded(conn), Stream::Sharded(rx)));
            }
        };
        let (sink, stream) = client.get_async_pubsub().await?.split();
        Ok((Sink::Plain(sink), Stream::Plain(stream)))
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| timed_out())?
}

/// Keeps the subscriptions in line with the channels that have waiters and dispatches
/// messages, until the connection ends or stops answering.
async fn listen(
    shared: &Shared,
    mut sink: Sink,
    mut stream: Stream,
    (keepalive, timeout): (Duration, Duration),
) {
    let mut subscribed = HashSet::new();
    loop {
        if let Err(error) = resync(shared, &mut sink, &mut subscribed, timeout).await {
            tracing::debug!(%error, "redis release (un)subscribe failed; reconnecting");
            return;
        }
        tokio::select! {
            message = stream.next(shared) => match message {
                Some(Incoming::Message { channel, payload }) => {
                    if let Ok(channel) = std::str::from_utf8(&channel) {
                        shared.dispatch(channel, &payload);
                    }
                }
                Some(Incoming::Other) => {}
                Some(Incoming::Lost) | None => return,
            },
            () = shared.resync.notified() => {}
            () = tokio::time::sleep(keepalive) => {
                let ping = tokio::time::timeout(timeout, sink.ping()).await;
                if !matches!(ping, Ok(Ok(()))) {
                    return;
                }
            }
        }
    }
}

/// Subscribes the channels that gained waiters and unsubscribes those that lost them.
async fn resync(
    shared: &Shared,
    sink: &mut Sink,
    subscribed: &mut HashSet<String>,
    timeout: Duration,
) -> redis::RedisResult<()> {
    let (wanted, unwanted): (Vec<String>, Vec<String>) = {
        let channels = shared.channels();
        let wanted = channels
            .keys()
            .filter(|name| !subscribed.contains(*name))
            .cloned()
            .collect();
        let unwanted = subscribed
            .iter()
            .filter(|name| !channels.contains_key(*name))
            .cloned()
            .collect();
        // A channel that lost its last waiter and gained a new one before we unsubscribed
        // it never stopped being subscribed: its new waiters may look at once.
        for (name, channel) in channels.iter() {
            if subscribed.contains(name) && !channel.state.borrow().connected {
                channel.state.send_modify(|s| {
                    s.epoch += 1;
                    s.connected = true;
                    s.refused = None;
                });
            }
        }
        (wanted, unwanted)
    };
    if !wanted.is_empty() {
        let reply = tokio::time::timeout(timeout, sink.subscribe(&wanted))
            .await
            .map_err(|_| timed_out())?;
        if let Err(error) = reply {
            let mapped = crate::error::map_redis_error("subscribe", error.clone());
            if !mapped.is_retryable() {
                shared.set_state(&wanted, |s| s.refused = Some(mapped.clone()));
            }
            return Err(error);
        }
        subscribed.extend(wanted.iter().cloned());
        shared.set_state(&wanted, |s| {
            s.epoch += 1;
            s.connected = true;
            s.refused = None;
        });
        // Messages sent while the channels were not subscribed are lost: bring each watched
        // namespace to a fresh snapshot before reading the next message (O4).
        let feeds: Vec<_> = {
            let channels = shared.channels();
            wanted
                .iter()
                .filter_map(|name| channels.get(name)?.watched.as_ref())
                .map(|watched| watched.feed.clone())
                .collect()
        };
        let resyncs = futures::future::join_all(feeds.iter().map(|feed| feed.resync())).await;
        if let Some(Err(error)) = resyncs.into_iter().find(Result::is_err) {
            tracing::debug!(%error, "redis watch resync failed; reconnecting");
            return Err(std::io::Error::other("watch resync failed").into());
        }
    }
    if !unwanted.is_empty() {
        tokio::time::timeout(timeout, sink.unsubscribe(&unwanted))
            .await
            .map_err(|_| timed_out())??;
        for name in &unwanted {
            subscribed.remove(name);
        }
    }
    Ok(())
}
