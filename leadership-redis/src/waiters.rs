//! Waking blocked waiters (B2–B5) without polling.
//!
//! One subscriber task per store handle, started with the first wait, listens on the
//! namespace's release channel over its own connection and bumps a per-application
//! [`watch`] counter for each message. A waiter registers before it looks at the lease and
//! looks only while the subscription is up, so a release after the look always reaches it;
//! when the subscription drops, the subscriber's epoch changes and every waiter looks again
//! once it is back. Expiries need no message: the look returns the time left and the waiter
//! sleeps exactly that long.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use redis::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

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

/// The subscriber's connection state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SubState {
    /// Bumped on every successful (re)subscription.
    pub(crate) epoch: u64,
    /// True while subscribed.
    pub(crate) connected: bool,
}

struct AppEntry {
    tx: watch::Sender<Events>,
    waiters: usize,
}

struct Shared {
    apps: Mutex<HashMap<String, AppEntry>>,
    state: watch::Sender<SubState>,
}

impl Shared {
    fn apps(&self) -> MutexGuard<'_, HashMap<String, AppEntry>> {
        self.apps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn dispatch(&self, payload: &[u8]) {
        let Some((&kind, app)) = payload.split_first() else {
            return;
        };
        let Ok(app) = std::str::from_utf8(app) else {
            return;
        };
        let apps = self.apps();
        let Some(entry) = apps.get(app) else {
            return;
        };
        entry.tx.send_modify(|events| match kind {
            b'R' => events.released += 1,
            _ => events.changed += 1,
        });
    }
}

/// The registry of waiters and the subscriber task of one store handle.
pub(crate) struct Waiters {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
    client: Client,
    channel: String,
    timeout: Duration,
}

impl Waiters {
    pub(crate) fn new(client: Client, channel: String, timeout: Duration) -> Self {
        Waiters {
            shared: Arc::new(Shared {
                apps: Mutex::new(HashMap::new()),
                state: watch::Sender::new(SubState::default()),
            }),
            task: Mutex::new(None),
            client,
            channel,
            timeout,
        }
    }

    /// Registers a waiter on `application`; dropping the registration removes it (B3).
    pub(crate) fn register(&self, application: &str) -> Registration {
        let mut apps = self.shared.apps();
        let entry = apps
            .entry(application.to_owned())
            .or_insert_with(|| AppEntry {
                tx: watch::Sender::new(Events::default()),
                waiters: 0,
            });
        entry.waiters += 1;
        Registration {
            shared: self.shared.clone(),
            application: application.to_owned(),
            events: entry.tx.subscribe(),
        }
    }

    /// The subscriber's state; starts the subscriber if it does not run.
    pub(crate) fn subscription(&self) -> watch::Receiver<SubState> {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if task.as_ref().is_none_or(|t| t.is_finished()) {
            self.shared.state.send_modify(|s| s.connected = false);
            *task = Some(tokio::spawn(run_subscriber(
                self.shared.clone(),
                self.client.clone(),
                self.channel.clone(),
                self.timeout,
            )));
        }
        self.shared.state.subscribe()
    }

    /// Waiters currently registered, over all applications.
    pub(crate) fn registered(&self) -> usize {
        self.shared.apps().values().map(|e| e.waiters).sum()
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
    application: String,
    pub(crate) events: watch::Receiver<Events>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut apps = self.shared.apps();
        if let Some(entry) = apps.get_mut(&self.application) {
            entry.waiters = entry.waiters.saturating_sub(1);
            if entry.waiters == 0 {
                apps.remove(&self.application);
            }
        }
    }
}

/// Jittered exponential backoff, 50 ms to 2 s.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(2);

    pub(crate) fn new() -> Self {
        Backoff { next: Self::MIN }
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::MIN;
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next.mul_f64(0.5 + rand::random::<f64>() / 2.0);
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

async fn run_subscriber(shared: Arc<Shared>, client: Client, channel: String, timeout: Duration) {
    let mut backoff = Backoff::new();
    loop {
        match subscribe(&client, &channel, timeout).await {
            Ok(pubsub) => {
                backoff.reset();
                shared.state.send_modify(|s| {
                    s.epoch += 1;
                    s.connected = true;
                });
                listen(&shared, pubsub, timeout).await;
                shared.state.send_modify(|s| s.connected = false);
                tracing::debug!("redis release subscription lost; resubscribing");
            }
            Err(error) => {
                tracing::debug!(%error, "redis release subscription failed; retrying");
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn subscribe(
    client: &Client,
    channel: &str,
    timeout: Duration,
) -> Result<redis::aio::PubSub, redis::RedisError> {
    let timed_out = || redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
    let mut pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
        .await
        .map_err(|_| timed_out())??;
    tokio::time::timeout(timeout, pubsub.subscribe(channel))
        .await
        .map_err(|_| timed_out())??;
    Ok(pubsub)
}

/// Dispatches messages until the connection ends or stops answering.
async fn listen(shared: &Shared, pubsub: redis::aio::PubSub, timeout: Duration) {
    let (mut sink, mut stream) = pubsub.split();
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => shared.dispatch(message.get_payload_bytes()),
                None => return,
            },
            () = tokio::time::sleep(KEEPALIVE) => {
                let ping = tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await;
                if !matches!(ping, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}
