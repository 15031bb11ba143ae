//! Following who leads (O1–O4) without keyspace notifications.
//!
//! The scripts publish on the namespace's channel when a term starts (`E`: fence, unit and
//! time to live) and when a revoke or an unpin ends one (`V`: fence). Expiries send nothing:
//! the [`Feed`] of a watched namespace knows each term's expiry from the snapshot and the `E`
//! messages, keeps them in one min-heap served by one timer task, and at an expiry instant
//! reads the lease key (`GET` + `PTTL`, one round trip for every term due). Only a term that
//! really ended is reported `Vacated`; an extended one is re-armed at its new expiry, a pinned
//! one waits for the unpin's `C` message. So renewals, the hot path, publish nothing.
//!
//! The subscriber task (waiters.rs) carries the channel for waiters and watchers alike, one
//! subscription per namespace, and resynchronises every watched namespace after it
//! (re)subscribes, before it reads any further message (O4).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use leadership_core::watch::{Change, Leader, WatchHub};
use leadership_core::{Fence, Result};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::keys::Keys;
use crate::retry::{Retry, retrying};
use crate::scripts;

/// A message on a namespace's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    /// `E<fence>:<ttl ms>:<unit length>:<unit><app>`: a term started; `ttl` is `None` while
    /// the lease is pinned.
    Elected {
        application: &'a str,
        unit: &'a str,
        fence: Fence,
        ttl: Option<Duration>,
    },
    /// `V<fence>:<app>`: the term `fence` ended (revoke, or the unpin of an expired lease).
    Vacated { application: &'a str, fence: Fence },
    /// `C<app>`: the lease's expiry changed (an unpin restarted it).
    Changed { application: &'a str },
}

impl<'a> Message<'a> {
    /// Parses a payload; `None` for anything else (a newer or older format).
    pub(crate) fn parse(payload: &'a [u8]) -> Option<Message<'a>> {
        let (&kind, rest) = payload.split_first()?;
        let rest = std::str::from_utf8(rest).ok()?;
        match kind {
            b'E' => {
                let (fence, rest) = rest.split_once(':')?;
                let (ttl, rest) = rest.split_once(':')?;
                let (len, rest) = rest.split_once(':')?;
                let len: usize = len.parse().ok()?;
                let (unit, application) = (rest.get(..len)?, rest.get(len..)?);
                let ttl: i64 = ttl.parse().ok()?;
                Some(Message::Elected {
                    application,
                    unit,
                    fence: Fence(fence.parse().ok()?),
                    ttl: u64::try_from(ttl).ok().map(Duration::from_millis),
                })
            }
            b'V' => {
                let (fence, application) = rest.split_once(':')?;
                Some(Message::Vacated {
                    application,
                    fence: Fence(fence.parse().ok()?),
                })
            }
            b'C' => Some(Message::Changed { application: rest }),
            _ => None,
        }
    }
}

/// Every held lease of a namespace at one instant, read by [`scripts::SNAPSHOT`].
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) leaders: BTreeMap<String, Leader>,
    /// Time left per application, `None` while pinned.
    pub(crate) ttls: HashMap<String, Option<Duration>>,
    /// The server's time in µs: every later term's fence is at or above it (F1's seed).
    pub(crate) floor: Fence,
    /// When the reply arrived: expiries count from here (never early).
    pub(crate) read_at: Instant,
}

/// One term a watched namespace knows of.
#[derive(Debug, Clone)]
struct Term {
    unit: String,
    fence: Fence,
    /// When to look whether it ended; `None` while pinned (or being looked at).
    due: Option<Instant>,
}

#[derive(Default)]
struct Terms {
    terms: HashMap<String, Term>,
    /// (due, application), lazily deleted: an entry counts only while it equals the term's
    /// `due`.
    heap: BinaryHeap<Reverse<(Instant, String)>>,
    /// Set by a resync: `E` messages read after it with a smaller fence describe terms the
    /// resync's snapshot already accounted for.
    floor: Option<Fence>,
}

impl Terms {
    fn arm(&mut self, application: &str, at: Option<Instant>) {
        if let Some(term) = self.terms.get_mut(application) {
            term.due = at;
            if let Some(at) = at {
                self.heap.push(Reverse((at, application.to_owned())));
            }
        }
    }

    /// Takes a term with a larger fence than the known one (or the first).
    fn learn(&mut self, application: &str, unit: &str, fence: Fence, at: Option<Instant>) {
        if self
            .terms
            .get(application)
            .is_some_and(|known| known.fence >= fence)
        {
            return;
        }
        self.terms.insert(
            application.to_owned(),
            Term {
                unit: unit.to_owned(),
                fence,
                due: None,
            },
        );
        self.arm(application, at);
    }

    /// The earliest instant a term is due, dropping stale heap entries.
    fn next_due(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, app))) = self.heap.peek() {
            if self.terms.get(app).and_then(|t| t.due) == Some(*at) {
                return Some(*at);
            }
            self.heap.pop();
        }
        None
    }

    /// The terms due at `now`, marked as being looked at.
    fn take_due(&mut self, now: Instant) -> Vec<(String, String, Fence)> {
        let mut due = Vec::new();
        while let Some(at) = self.next_due() {
            if at > now {
                break;
            }
            let Some(Reverse((_, app))) = self.heap.pop() else {
                break;
            };
            if let Some(term) = self.terms.get_mut(&app) {
                term.due = None;
                due.push((app, term.unit.clone(), term.fence));
            }
        }
        due
    }
}

/// What a watched namespace's watchers share: its terms and expiry timer (one task per
/// watched namespace, whatever the number of leases), fed by the subscriber.
pub(crate) struct Feed {
    namespace: String,
    keys: Keys,
    hub: WatchHub,
    manager: crate::conn::Conn,
    timeout: Duration,
    terms: Mutex<Terms>,
    /// Wakes the timer when an earlier expiry was armed.
    wake: Notify,
}

impl Feed {
    fn terms(&self) -> MutexGuard<'_, Terms> {
        self.terms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Handles one message of the namespace's channel, in the order the channel delivered
    /// them.
    pub(crate) fn on_message(&self, message: &Message<'_>) {
        let mut terms = self.terms();
        match *message {
            Message::Elected {
                application,
                unit,
                fence,
                ttl,
            } => {
                if terms.floor.is_some_and(|floor| fence < floor) {
                    return;
                }
                // A message is read after its script ran: counting the time to live from
                // now errs late, never early.
                terms.learn(
                    application,
                    unit,
                    fence,
                    ttl.map(|ttl| Instant::now() + ttl),
                );
                self.hub
                    .publish(&self.namespace, Change::elected(application, unit, fence));
            }
            Message::Vacated { application, fence } => {
                if terms
                    .terms
                    .get(application)
                    .is_some_and(|t| t.fence <= fence)
                {
                    terms.terms.remove(application);
                }
                self.hub
                    .publish(&self.namespace, Change::vacated(application, fence));
            }
            Message::Changed { application } => terms.arm(application, Some(Instant::now())),
        }
        drop(terms);
        self.wake.notify_one();
    }

    /// Reads every held lease with its fence and time to live (O1), within the operation
    /// timeout.
    pub(crate) async fn snapshot(&self) -> Result<Snapshot> {
        read_snapshot(&self.manager, &self.keys, self.timeout).await
    }

    /// Takes the terms of a snapshot this namespace's watchers start from (no hub call).
    pub(crate) fn learn(&self, snapshot: &Snapshot) {
        let mut terms = self.terms();
        for (app, leader) in &snapshot.leaders {
            let at = snapshot
                .ttls
                .get(app)
                .copied()
                .flatten()
                .map(|ttl| snapshot.read_at + ttl);
            terms.learn(app, &leader.unit, leader.fence, at);
        }
        drop(terms);
        self.wake.notify_one();
    }

    /// After the subscription was (re)made: reads the snapshot and brings every watcher to it
    /// (O4). The caller reads no message of the channel meanwhile, so the ones that follow
    /// come after the snapshot in the hub.
    pub(crate) async fn resync(&self) -> Result<()> {
        let snapshot = self.snapshot().await?;
        let mut terms = self.terms();
        // Terms the snapshot does not show ended before it: forget them; the hub vacates
        // those a watcher showed.
        terms.terms.retain(|app, term| {
            snapshot
                .leaders
                .get(app)
                .is_some_and(|l| l.fence <= term.fence)
        });
        terms.floor = Some(snapshot.floor);
        self.hub.resync(&self.namespace, &snapshot.leaders);
        drop(terms);
        self.learn(&snapshot);
        Ok(())
    }

    /// The timer: sleeps until the earliest expiry, then looks at every term due.
    async fn run_timer(self: Arc<Self>) {
        let mut backoff = crate::retry::background_backoff();
        loop {
            let next = self.terms().next_due();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => {}
                () = self.wake.notified() => continue,
            }
            let due = self.terms().take_due(Instant::now());
            if due.is_empty() {
                continue;
            }
            match self.look(&due).await {
                Ok(found) => {
                    backoff.reset();
                    self.settle(&due, &found);
                }
                Err(error) => {
                    tracing::debug!(%error, namespace = %self.namespace, "redis watch expiry look failed; retrying");
                    let at = Instant::now() + backoff.next_delay();
                    let mut terms = self.terms();
                    for (app, _, fence) in &due {
                        if terms.terms.get(app).is_some_and(|t| t.fence == *fence) {
                            terms.arm(app, Some(at));
                        }
                    }
                }
            }
        }
    }

    /// `GET` and `PTTL` of each due term's lease key, in one round trip.
    async fn look(&self, due: &[(String, String, Fence)]) -> Result<Vec<(Option<u64>, i64)>> {
        let mut pipe = redis::pipe();
        for (app, unit, _) in due {
            let key = self.keys.lease(app, unit);
            pipe.cmd("GET").arg(&key).cmd("PTTL").arg(&key);
        }
        let pipe = &pipe;
        let manager = &self.manager;
        retrying(
            "watch",
            self.timeout,
            Retry::Idempotent,
            |err| manager.map_error("watch", err),
            || {
                let mut conn = manager.clone();
                async move { pipe.query_async::<Vec<(Option<u64>, i64)>>(&mut conn).await }
            },
        )
        .await
    }

    /// Reports the terms that ended (O2: only after the read proved it) and re-arms the
    /// others at their new expiry (an extension) or not at all (pinned).
    fn settle(&self, due: &[(String, String, Fence)], found: &[(Option<u64>, i64)]) {
        let now = Instant::now();
        let mut terms = self.terms();
        for ((app, _, fence), (held, pttl)) in due.iter().zip(found) {
            if terms.terms.get(app).is_none_or(|t| t.fence != *fence) {
                continue;
            }
            match (*held == Some(fence.get()), *pttl) {
                (true, -1) => terms.arm(app, None),
                (true, left) if left > 0 => {
                    let left = Duration::from_millis(left.unsigned_abs() + 1);
                    terms.arm(app, Some(now + left));
                }
                _ => {
                    terms.terms.remove(app);
                    self.hub
                        .publish(&self.namespace, Change::vacated(app.as_str(), *fence));
                }
            }
        }
    }
}

/// A watched namespace's [`Feed`] and its timer task, which ends with it.
pub(crate) struct Watched {
    pub(crate) feed: Arc<Feed>,
    timer: JoinHandle<()>,
}

impl Watched {
    pub(crate) fn start(
        namespace: &str,
        keys: Keys,
        hub: WatchHub,
        manager: crate::conn::Conn,
        timeout: Duration,
    ) -> Watched {
        let feed = Arc::new(Feed {
            namespace: namespace.to_owned(),
            keys,
            hub,
            manager,
            timeout,
            terms: Mutex::new(Terms::default()),
            wake: Notify::new(),
        });
        let timer = tokio::spawn(feed.clone().run_timer());
        Watched { feed, timer }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

/// Reads the snapshot through the one retry path.
async fn read_snapshot(
    manager: &crate::conn::Conn,
    keys: &Keys,
    timeout: Duration,
) -> Result<Snapshot> {
    let mut invocation = scripts::SNAPSHOT.prepare_invoke();
    invocation.key(&keys.owners).arg(&keys.lease_prefix);
    let invocation = &invocation;
    let reply: Vec<String> = retrying(
        "watch",
        timeout,
        Retry::Idempotent,
        |err| manager.map_error("watch", err),
        || {
            let mut conn = manager.clone();
            async move { invocation.invoke_async(&mut conn).await }
        },
    )
    .await?;
    let read_at = Instant::now();
    let bad = || {
        leadership_core::Error::backend(
            crate::error::BACKEND,
            "watch",
            crate::error::BadReply("a malformed snapshot".to_owned()),
        )
    };
    let mut items = reply.into_iter();
    let floor = items
        .next()
        .and_then(|t| t.parse().ok())
        .map(Fence)
        .ok_or_else(bad)?;
    let mut snapshot = Snapshot {
        leaders: BTreeMap::new(),
        ttls: HashMap::new(),
        floor,
        read_at,
    };
    while let Some(app) = items.next() {
        let (Some(unit), Some(fence), Some(pttl)) = (items.next(), items.next(), items.next())
        else {
            return Err(bad());
        };
        let fence = fence.parse().map(Fence).map_err(|_| bad())?;
        let pttl: i64 = pttl.parse().map_err(|_| bad())?;
        snapshot.ttls.insert(
            app.clone(),
            u64::try_from(pttl).ok().map(Duration::from_millis),
        );
        snapshot.leaders.insert(app, Leader { unit, fence });
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_and_names_may_hold_separators() {
        assert_eq!(
            Message::parse(b"E17:200:7:a:b/1:2a:b"),
            Some(Message::Elected {
                application: "a:b",
                unit: "a:b/1:2",
                fence: Fence(17),
                ttl: Some(Duration::from_millis(200)),
            })
        );
        assert_eq!(
            Message::parse(b"E17:-1:3:a/0a"),
            Some(Message::Elected {
                application: "a",
                unit: "a/0",
                fence: Fence(17),
                ttl: None,
            })
        );
        assert_eq!(
            Message::parse(b"V9:x:y"),
            Some(Message::Vacated {
                application: "x:y",
                fence: Fence(9)
            })
        );
        assert_eq!(
            Message::parse(b"Capp"),
            Some(Message::Changed { application: "app" })
        );
        for bad in [&b""[..], b"Rapp", b"E1:2:9:a", b"Vx:a", b"E1:2:x:a"] {
            assert_eq!(Message::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_heap_serves_the_earliest_current_expiry() {
        let now = Instant::now();
        let mut terms = Terms::default();
        terms.learn("a", "a/0", Fence(1), Some(now + Duration::from_secs(3)));
        terms.learn("b", "b/0", Fence(1), Some(now + Duration::from_secs(1)));
        // An extension re-arms later; the old entry no longer counts.
        terms.arm("b", Some(now + Duration::from_secs(5)));
        assert_eq!(terms.next_due(), Some(now + Duration::from_secs(3)));
        // An older term never replaces a newer one.
        terms.learn("a", "a/9", Fence(0), Some(now));
        assert_eq!(terms.take_due(now + Duration::from_secs(3)).len(), 1);
        assert_eq!(terms.next_due(), Some(now + Duration::from_secs(5)));
        terms.arm("b", None);
        assert_eq!(terms.next_due(), None);
    }
}
