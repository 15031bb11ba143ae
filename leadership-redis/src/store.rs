//! The store: the leadership traits over the scripts.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use leadership_core::watch::{LeaderStream, WatchHub, Watcher};
use leadership_core::{
    CancellationToken, Checker, Claimer, Error, Fence, Pinner, Policy, Reader, Result, Revoker,
    Token,
};
use redis::{ErrorKind, FromRedisValue, RedisResult, Script, ScriptInvocation, ServerErrorKind};

use crate::config::RedisStoreBuilder;
use crate::conn::Conn;
use crate::error::{BACKEND, BadReply, map_redis_error};
use crate::hints::{Commands, Held, Hints, pexpire_gt, renew_pipeline};
use crate::keys::Keys;
use crate::retry::{Retry, background_backoff, retrying};
use crate::scripts;
use crate::waiters::{Source, Waiters, WatchRegistration};
use crate::watch::Watched;

/// How often one request loads its script again after `NOSCRIPT` (see `with_script`).
const MAX_SCRIPT_LOADS: usize = 3;
/// A leadership store over Redis 7.
///
/// Cheap to clone: clones, and the handles [`RedisStore::namespace`] derives for other
/// namespaces, share one auto-reconnecting connection and one release subscriber (S3). A check is one `GET`; a
/// claim, extension or revoke is one script round trip, except a renewal by a handle that
/// holds the lease: one `PEXPIRE … GT` (with a `GET` in the same round trip once a second,
/// to read the fence again), falling back to the script when it does not extend. The
/// server's clock alone decides expiry. Durations are rounded up to whole milliseconds (the
/// store's granularity, V3).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

/// What every namespace handle over one connection shares (S3): the command connection,
/// the release subscriber, the options, and the renewal hints (keyed by lease key, which
/// holds the namespace).
pub(crate) struct Connection {
    conn: Conn,
    /// The scripts that publish, with `PUBLISH` or (cluster) `SPUBLISH`.
    scripts: &'static scripts::Publishing,
    endpoint: String,
    timeout: Duration,
    policy: Arc<dyn Policy>,
    /// One subscriber connection for the waiters and watchers of every namespace.
    waiters: Waiters,
    /// The watchers of every namespace (O3), fed from `waiters`' subscription.
    hub: WatchHub,
    /// Leases this connection's handles were granted or last saw held by the claiming unit,
    /// by lease key, so that their renewal can take a fast path (see [`Inner::claim`]). A
    /// hint only: the server decides every claim.
    hints: Hints,
    /// The highest fence any handle of this connection has been given or has read: a new
    /// term's fence is above it, so fences keep increasing even after a failover to a
    /// replica that missed the last term and whose clock is behind (F1).
    highest_fence: AtomicU64,
    /// Replicas every claim waits for (`WAIT`), 0 for none; see
    /// [`RedisStoreBuilder::wait_for_replicas`].
    wait_replicas: u32,
}

impl Connection {
    pub(crate) fn new(
        source: Source,
        conn: Conn,
        endpoint: String,
        timeout: Duration,
        policy: Arc<dyn Policy>,
        wait_replicas: u32,
    ) -> Self {
        let scripts = match conn {
            Conn::Cluster(_) => &*scripts::SHARDED,
            Conn::Single(_) | Conn::Sentinel(_) => &*scripts::PLAIN,
        };
        Connection {
            conn,
            scripts,
            endpoint,
            timeout,
            policy,
            waiters: Waiters::new(source, timeout),
            hub: WatchHub::new(),
            hints: Hints::new(),
            highest_fence: AtomicU64::new(0),
            wait_replicas,
        }
    }

    fn saw(&self, fence: Fence) {
        // Checks call this on every read: write the shared line only when the fence is new.
        if fence.get() > self.highest_fence.load(Ordering::Relaxed) {
            self.highest_fence.fetch_max(fence.get(), Ordering::Relaxed);
        }
    }
}

/// One namespace over a shared [`Connection`].
pub(crate) struct Inner {
    shared: Arc<Connection>,
    keys: Keys,
    namespace: String,
}

/// The longest lease: 9,000,000,000 s (about 285 years), as etcd's. It keeps `now + duration`
/// exact in the scripts' Lua numbers (doubles) and within Redis's expire range.
const MAX_LEASE_MILLIS: u64 = 9_000_000_000_000;

/// A lease duration in whole milliseconds, the store's granularity: rounded up, never down (V3).
///
/// # Errors
/// [`Error::InvalidDuration`] past [`MAX_LEASE_MILLIS`]; reachable only with a policy that
/// allows more than the default hour.
fn lease_millis(duration: Duration) -> Result<u64> {
    match u64::try_from(duration.as_nanos().div_ceil(1_000_000)) {
        Ok(millis) if millis <= MAX_LEASE_MILLIS => Ok(millis),
        _ => Err(Error::InvalidDuration {
            duration,
            reason: "Redis leases last at most 9000000000 s (about 285 years)".into(),
        }),
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("endpoint", &self.inner.shared.endpoint)
            .field("namespace", &self.inner.namespace)
            .field("operation_timeout", &self.inner.shared.timeout)
            .field("policy", &self.inner.shared.policy)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn new(shared: Arc<Connection>, namespace: &str) -> Self {
        Inner {
            shared,
            keys: Keys::new(namespace),
            namespace: namespace.to_owned(),
        }
    }

    /// Runs `attempt` through the one retry path (S4, E1): retried on retryable errors
    /// within the operation timeout, then `Unavailable`.
    async fn within<T, F, Fut>(
        &self,
        operation: &'static str,
        retry: Retry,
        attempt: F,
    ) -> Result<T>
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut attempt = attempt;
        retrying(
            operation,
            self.shared.timeout,
            retry,
            |err| self.shared.conn.map_error(operation, err),
            || attempt(self.shared.conn.clone()),
        )
        .await
    }

    async fn eval<T: FromRedisValue>(
        &self,
        operation: &'static str,
        retry: Retry,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T> {
        self.within(operation, retry, |mut conn| async move {
            invocation.invoke_async(&mut conn).await
        })
        .await
    }

    async fn claim(&self, application: &str, unit: &str, duration: Duration) -> Result<Fence> {
        if self.shared.wait_replicas > 0 {
            // Every replicated claim, renewals too, runs the script with its WAIT: the
            // one-command fast paths of `claim_unreplicated` wait for no replica. Boxed, so
            // that the unreplicated path, the hot one, stays a small future.
            return Box::pin(self.claim_by_script(application, unit, duration, Instant::now()))
                .await;
        }
        self.claim_unreplicated(application, unit, duration).await
    }

    /// Runs `send`, a request that invokes `script` by its hash, through the one retry path;
    /// a server that lost its scripts (a restart, `SCRIPT FLUSH`, a replica just promoted)
    /// ran none of it, so the script is loaded and `send` runs again. In a cluster the load
    /// goes to the primaries the client knows of, which may lag a failover by a moment: it
    /// is tried a few times before the error stands.
    async fn with_script<T, F, Fut>(
        &self,
        operation: &'static str,
        script: &Script,
        send: F,
    ) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let send = &send;
        self.within(operation, Retry::Idempotent, |conn| async move {
            let mut loads = 0;
            loop {
                match send(conn.clone()).await {
                    Err(err)
                        if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
                            && loads < MAX_SCRIPT_LOADS =>
                    {
                        loads += 1;
                        script.load_async(&mut conn.clone()).await?;
                    }
                    answer => return answer,
                }
            }
        })
        .await
    }

    async fn claim_unreplicated(
        &self,
        application: &str,
        unit: &str,
        duration: Duration,
    ) -> Result<Fence> {
        let started = Instant::now();
        if let Some(hint) = self
            .keys
            .with_lease(application, unit, |key| self.shared.hints.get(key))
        {
            // A hint exists only for names this handle's policy accepted before: the
            // duration is all there is left to check.
            self.shared.policy.check_duration(duration)?;
            let millis = lease_millis(duration)?;
            if hint.fresh(started) {
                let extended = if hint.millis == millis {
                    let commands = self.renewal_commands(&hint, application, unit);
                    self.extend(&commands.pexpire).await?
                } else {
                    let pexpire = self
                        .keys
                        .with_lease(application, unit, |key| pexpire_gt(key, millis));
                    self.extend(&pexpire).await?
                };
                if extended {
                    return Ok(hint.fence);
                }
            } else if hint.millis == millis {
                // The tracker's steady state: a renewal once per guarantee finds the hint
                // stale; the lease's prebuilt pipeline extends it and reads the fence.
                let commands = self.renewal_commands(&hint, application, unit);
                if let Some(fence) = Box::pin(self.renew(&commands.renew)).await? {
                    let kept = self.keys.with_lease(application, unit, |key| {
                        self.shared.hints.refresh(key, fence, started)
                    });
                    if !kept {
                        // Cleared meanwhile: put the hint back, its commands as they were.
                        let held = hint.verified_again(fence, started);
                        let key = self.keys.lease(application, unit);
                        self.shared.hints.insert(key, held);
                    }
                    return Ok(fence);
                }
            } else {
                let key = self.keys.lease(application, unit);
                if let Some(fence) = Box::pin(self.renew(&renew_pipeline(&key, millis))).await? {
                    self.remember(key, fence, started, millis);
                    return Ok(fence);
                }
            }
        }
        // Boxed, so that the fast path above, the hot one, stays a small future.
        Box::pin(self.claim_by_script(application, unit, duration, started)).await
    }

    /// `hint`'s renewal commands; the lease key is built only if no renewal built them yet.
    fn renewal_commands<'h>(&self, hint: &'h Held, application: &str, unit: &str) -> &'h Commands {
        match hint.built() {
            Some(commands) => commands,
            None => self
                .keys
                .with_lease(application, unit, |key| hint.commands(key)),
        }
    }

    /// The holder's renewal when its hint is no longer fresh: `pipe` is `PEXPIRE key ms GT`
    /// and `GET key` ([`renew_pipeline`]) in one round trip, which extends the unit's lease and
    /// reads its fence. `None` unless the key was extended and is still there (gone, pinned,
    /// or already expiring later): the claim script decides then. Were the unit to revoke and
    /// claim again through another handle between the two commands, `GET` reads the new
    /// term's fence; the unit then revoked itself, which C4 allows to end the lease early.
    async fn renew(&self, pipe: &redis::Pipeline) -> Result<Option<Fence>> {
        let (extended, fence): (i64, Option<u64>) = self
            .within("claim", Retry::Idempotent, |mut conn| async move {
                pipe.query_async(&mut conn).await
            })
            .await?;
        Ok(match fence {
            Some(fence) if extended == 1 => Some(Fence(fence)),
            _ => None,
        })
    }

    /// Remembers that `key`'s lease is held with `fence`, as read by a call that started at
    /// `verified` and extended the lease by `millis`.
    fn remember(&self, key: String, fence: Fence, verified: Instant, millis: u64) {
        self.shared
            .hints
            .insert(key, Held::new(fence, verified, millis));
    }

    /// Any claim as one script: a new term (C1), the holder's extension (C2, pinned or not,
    /// reading the fence), or a denial (C3); with `wait_for_replicas(n)`, `Ok` only once
    /// `n` replicas acknowledged it. `started`: when the claim call started.
    async fn claim_by_script(
        &self,
        application: &str,
        unit: &str,
        duration: Duration,
        started: Instant,
    ) -> Result<Fence> {
        self.shared
            .policy
            .check_claim(application, unit, duration)?;
        let millis = lease_millis(duration)?;
        let key = self.keys.lease(application, unit);
        let script = &self.shared.scripts.claim;
        let mut evalsha = redis::cmd("EVALSHA");
        // `owners` is declared, not only named in the script: while a cluster moves the
        // namespace's slot, a claim whose declared keys are all gone from the old master is
        // redirected (ASK) to the new one, and one whose keys are split gets TRYAGAIN
        // (retried); were only the new lease key declared, the claim would be redirected to
        // a new master that has no owner yet and granted beside the holder (C3).
        evalsha
            .arg(script.get_hash())
            .arg(2)
            .arg(&key)
            .arg(&self.keys.owners)
            .arg(millis)
            .arg(&self.keys.prefix)
            .arg(application)
            .arg(unit)
            .arg(self.shared.highest_fence.load(Ordering::Relaxed));
        let wanted = self.shared.wait_replicas;
        let (fence, acked): (u64, u32) = if wanted == 0 {
            let evalsha = &evalsha;
            let fence = self
                .with_script("claim", script, |mut conn| async move {
                    evalsha.query_async(&mut conn).await
                })
                .await?;
            (fence, 0)
        } else {
            // The script and `WAIT` in one pipeline travel down one connection in order, so
            // the `WAIT` counts this very write. (`WAIT` counts the replicas that
            // acknowledged every write *of its connection*; sent on its own after a
            // reconnect, it would ask about a connection that wrote nothing and succeed at
            // once.) Within one attempt of the retry path and the response timeout behind
            // Sentinel (a quarter of the operation timeout), so the count comes back.
            let wait_for = (self.shared.timeout / 5).max(Duration::from_millis(100));
            let mut pipe = redis::pipe();
            pipe.add_command(evalsha)
                .cmd("WAIT")
                .arg(wanted)
                .arg(u64::try_from(wait_for.as_millis()).unwrap_or(u64::MAX));
            let pipe = &pipe;
            self.with_script("claim", script, |mut conn| async move {
                pipe.query_async(&mut conn).await
            })
            .await?
        };
        if fence == 0 {
            self.shared.hints.remove(&key);
            return Err(Error::ClaimDenied);
        }
        let fence = Fence(fence);
        self.shared.saw(fence);
        if acked < wanted {
            // It applied on the primary (E2: retrying is safe), but a failover now could lose
            // it.
            return Err(Error::unavailable(
                BACKEND,
                "claim",
                crate::error::NotReplicated { wanted, acked },
            ));
        }
        self.remember(key, fence, started, millis);
        Ok(fence)
    }

    /// The holder's renewal while its hint is fresh: one `PEXPIRE key ms GT`, the cheapest
    /// write there is. `true` if it extended the lease key, which exists exactly while the
    /// unit leads, to `now + ms` (C2: `GT` never shortens). `false` (the key is gone, pinned,
    /// or already expires at or after `now + ms`): the caller runs the claim script instead.
    async fn extend(&self, pexpire: &redis::Cmd) -> Result<bool> {
        let extended: i64 = self
            .within("claim", Retry::Idempotent, |mut conn| async move {
                pexpire.query_async(&mut conn).await
            })
            .await?;
        Ok(extended == 1)
    }

    /// The command a token of `unit` for `application` sends, `GET <lease key>`, or why the
    /// names are invalid; worked out once per token (K2: a token is checked many times).
    fn token_get(&self, application: &str, unit: &str) -> Result<redis::Cmd> {
        self.shared.policy.check_member(application, unit)?;
        let mut get = redis::cmd("GET");
        get.arg(self.keys.lease(application, unit));
        Ok(get)
    }

    async fn check(&self, application: &str, unit: &str, get: &redis::Cmd) -> Result<Fence> {
        // The lease key exists exactly while the unit leads (Redis expires it on the
        // server's clock), so a check is one plain GET.
        let fence: Option<u64> = self
            .within("check", Retry::Idempotent, |mut conn| async move {
                get.query_async(&mut conn).await
            })
            .await?;
        match fence {
            Some(fence) => {
                self.shared.saw(Fence(fence));
                Ok(Fence(fence))
            }
            None => Err(Error::not_leader(unit, application)),
        }
    }

    /// The state of `application` for a waiter: `None` if vacant, else how long until it
    /// expires (`Some(None)` while pinned).
    async fn inspect(&self, application: &str) -> Result<Option<Option<Duration>>> {
        let mut invocation = scripts::INSPECT.prepare_invoke();
        invocation
            .key(&self.keys.owners)
            .arg(application)
            .arg(self.keys.lease_of(application));
        Ok(
            match self
                .eval::<i64>("block", Retry::Idempotent, &invocation)
                .await?
            {
                -1 => Some(None),
                millis if millis > 0 => Some(Some(Duration::from_millis(millis.unsigned_abs()))),
                _ => None,
            },
        )
    }

    async fn block(&self, application: &str, cancel: CancellationToken) -> Result<()> {
        self.shared.policy.check_application(application)?;
        if cancel.is_cancelled() {
            return Err(Error::BlockCancelled);
        }
        let mut registration = self
            .shared
            .waiters
            .register(&self.keys.channel, application);
        let mut backoff = background_backoff();
        loop {
            // Look only while subscribed: a release after the look is then never missed.
            loop {
                let state = registration.state.borrow_and_update().clone();
                if state.connected {
                    break;
                }
                if let Some(refused) = state.refused {
                    return Err(refused);
                }
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Err(Error::BlockCancelled),
                    changed = registration.state.changed() => if changed.is_err() {
                        return Err(Error::Stopped { what: "redis release subscriber" });
                    },
                }
            }
            let seen = *registration.events.borrow_and_update();
            let state = tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(Error::BlockCancelled),
                state = self.inspect(application) => state,
            };
            let sleep_for = match state {
                Ok(None) => return Ok(()),
                Ok(Some(left)) => {
                    backoff.reset();
                    // A millisecond past the server's expiry, so one look usually suffices.
                    left.map(|left| left + Duration::from_millis(1))
                }
                // Never Ok because of an error (B5): an outage is waited out, a refusal that
                // retrying cannot mend (permissions, a broken script) is returned.
                Err(error) if !error.is_retryable() => return Err(error),
                Err(error) => {
                    tracing::debug!(%error, application, "redis block look failed; retrying");
                    Some(backoff.next_delay())
                }
            };
            let timer = async {
                match sleep_for {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(Error::BlockCancelled),
                changed = registration.events.changed() => {
                    if changed.is_err() {
                        return Err(Error::Stopped { what: "redis release subscriber" });
                    }
                    if registration.events.borrow().released != seen.released {
                        return Ok(());
                    }
                }
                changed = registration.state.changed() => if changed.is_err() {
                    return Err(Error::Stopped { what: "redis release subscriber" });
                },
                () = timer => {}
            }
        }
    }

    /// Registers the watcher (subscribing the namespace's channel if it is the first), then,
    /// once subscribed, reads the snapshot: a change after the read is then never missed, and
    /// one before it, arriving late, is below the snapshot's floor (O1, O4).
    async fn watch(&self, application: Option<&str>) -> Result<LeaderStream> {
        let shared = &self.shared;
        let registration = shared.waiters.watch(&self.keys.channel, || {
            Watched::start(
                &self.namespace,
                self.keys.clone(),
                shared.hub.clone(),
                shared.conn.clone(),
                shared.timeout,
            )
        });
        let subscription = shared.hub.subscribe(&self.namespace, application);
        let mut state = registration.state.clone();
        let feed = &registration.feed;
        // One bound for waiting on the subscription and reading the snapshot (E1).
        let snapshot = leadership_core::retry::timeout(BACKEND, "watch", shared.timeout, async {
            loop {
                let now = state.borrow_and_update().clone();
                if now.connected {
                    break;
                }
                if let Some(refused) = now.refused {
                    return Err(refused);
                }
                if state.changed().await.is_err() {
                    return Err(Error::Stopped {
                        what: "redis release subscriber",
                    });
                }
            }
            feed.snapshot().await
        })
        .await?;
        registration.feed.learn(&snapshot);
        let stream = subscription.start(snapshot.leaders, Some(snapshot.floor));
        Ok(Box::pin(Watching {
            stream,
            _registration: registration,
        }))
    }

    async fn revoke(&self, application: &str, unit: &str) -> Result<()> {
        self.shared.policy.check_member(application, unit)?;
        let key = self.keys.lease(application, unit);
        self.shared.hints.remove(&key);
        let mut invocation = self.shared.scripts.revoke.prepare_invoke();
        invocation
            .key(key)
            .key(&self.keys.owners)
            .key(&self.keys.pinexp)
            .arg(application)
            .arg(self.keys.lease_of(application))
            .arg(&self.keys.channel);
        match self
            .eval::<i64>("revoke", Retry::Idempotent, &invocation)
            .await?
        {
            0 => Err(Error::ClaimNotHeld),
            _ => Ok(()),
        }
    }

    async fn pin(&self, application: &str, entity: &str, script: &Script) -> Result<()> {
        self.shared.policy.check_pin(application, entity)?;
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.keys.pins(application))
            .key(&self.keys.pinned)
            .key(&self.keys.owners)
            .key(&self.keys.pinexp)
            .arg(application)
            .arg(entity)
            .arg(self.keys.lease_of(application))
            .arg(&self.keys.channel);
        self.eval::<i64>("pin", Retry::Idempotent, &invocation)
            .await
            .map(drop)
    }

    async fn pinned(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let mut invocation = scripts::PINNED.prepare_invoke();
        invocation
            .key(&self.keys.pinned)
            .arg(&self.keys.pins_prefix);
        let pairs: Vec<(String, Vec<String>)> =
            self.eval("pinned", Retry::Idempotent, &invocation).await?;
        Ok(pairs
            .into_iter()
            .filter(|(_, entities)| !entities.is_empty())
            .map(|(application, mut entities)| {
                entities.sort();
                (application, entities)
            })
            .collect())
    }

    async fn leaders(&self) -> Result<BTreeMap<String, String>> {
        let mut invocation = scripts::LEADERS.prepare_invoke();
        invocation
            .key(&self.keys.owners)
            .arg(&self.keys.lease_prefix);
        let pairs: Vec<(String, String)> =
            self.eval("leaders", Retry::Idempotent, &invocation).await?;
        Ok(pairs.into_iter().collect())
    }

    async fn guarded<T: FromRedisValue>(
        &self,
        application: &str,
        unit: &str,
        fence: Fence,
        (script, retry): (&Script, Retry),
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T> {
        self.shared.policy.check_member(application, unit)?;
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.keys.lease(application, unit))
            .arg(fence.get());
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let reply: redis::Value = self.eval("guarded write", retry, &invocation).await?;
        let redis::Value::Array(mut items) = reply else {
            return Err(bad_reply("guarded write", "not an array"));
        };
        let result = if items.len() > 1 {
            items.swap_remove(1)
        } else {
            redis::Value::Nil
        };
        match items.first() {
            Some(redis::Value::Int(1)) => {}
            Some(redis::Value::Int(0)) => return Err(Error::not_leader(unit, application)),
            _ => return Err(bad_reply("guarded write", "no guard status")),
        }
        T::from_redis_value(result).map_err(|e| map_redis_error("guarded write", e.into()))
    }
}

fn bad_reply(operation: &'static str, what: &str) -> Error {
    Error::backend(BACKEND, operation, BadReply(what.to_owned()))
}

impl RedisStore {
    /// Parses `url` into options that can still be changed before connecting: credentials,
    /// database, namespace, timeouts, policy, TLS roots.
    ///
    /// `url` is `redis://[user:password@]host[:port][/db][?namespace=NS&timeout=DURATION]`,
    /// or `rediss://…` for TLS, in the one URL grammar of every store (S1, S2): user,
    /// password and parameters are percent-decoded, the timeout is humane (`500ms`, `1.5s`,
    /// `1m`), and any other parameter is an error naming it.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] naming what is wrong (the password redacted).
    pub fn builder(url: &str) -> Result<RedisStoreBuilder> {
        RedisStoreBuilder::from_url(url)
    }

    /// Connects to `url` (see [`RedisStore::builder`]) with the default options.
    ///
    /// # Errors
    /// As [`RedisStore::builder`] and [`RedisStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder(url)?.connect().await
    }

    pub(crate) fn open(shared: Connection, namespace: &str) -> Self {
        RedisStore {
            inner: Arc::new(Inner::new(Arc::new(shared), namespace)),
        }
    }

    /// A handle for namespace `name` over this handle's connection and release subscriber
    /// (S3): a controller with thousands of models opens one command connection and one
    /// subscriber connection, not thousands. Handles of different namespaces share nothing
    /// else (N1).
    pub fn namespace(&self, name: &str) -> RedisStore {
        RedisStore {
            inner: Arc::new(Inner::new(self.inner.shared.clone(), name)),
        }
    }

    /// This handle's namespace (N1).
    pub fn namespace_name(&self) -> &str {
        &self.inner.namespace
    }

    /// How long any operation of this handle may take, retries included, before it fails
    /// with `Unavailable` (E1, S4).
    pub fn operation_timeout(&self) -> Duration {
        self.inner.shared.timeout
    }

    /// How many calls are blocked in `block_until_leadership_released` in this handle's
    /// namespace (over its connection). A cancelled or dropped wait leaves nothing behind (B3).
    pub fn blocked_waiters(&self) -> usize {
        self.inner
            .shared
            .waiters
            .registered(&self.inner.keys.channel)
    }

    /// How many streams watch this handle's namespace (over its connection), and whether the
    /// namespace's watch (its terms and expiry timer) is running. A dropped stream leaves
    /// nothing behind (O4): the last one ends the watch and unsubscribes the channel unless
    /// waiters still use it.
    pub fn watchers(&self) -> (usize, bool) {
        (
            self.inner.shared.hub.watchers_of(&self.inner.namespace),
            self.inner.shared.waiters.watched(&self.inner.keys.channel),
        )
    }

    /// The key prefix of this namespace, `leadership:{n<ns>}:`. Keys for guarded writes
    /// that start with it share the namespace's hash tag, so they live in the same cluster
    /// slot as the lease.
    pub fn key_prefix(&self) -> &str {
        &self.inner.keys.prefix
    }

    /// Sets `key` to `value` only if `unit` leads `application` with `fence`, atomically
    /// (F2). A stale leader's write fails once a new term has begun.
    ///
    /// # Errors
    /// [`Error::NotLeader`] if the unit does not lead with that fence; `Invalid*`;
    /// [`Error::Unavailable`]; [`Error::Backend`].
    pub async fn guarded_set(
        &self,
        application: &str,
        unit: &str,
        fence: Fence,
        key: &str,
        value: impl AsRef<[u8]>,
    ) -> Result<()> {
        self.inner
            .guarded::<redis::Value>(
                application,
                unit,
                fence,
                (&scripts::GUARDED_SET, Retry::Idempotent),
                &[key],
                &[value.as_ref()],
            )
            .await
            .map(drop)
    }

    /// Deletes `key` only if `unit` leads `application` with `fence` (F2). Returns whether
    /// the key existed (after a retry over a dropped connection, whether it still existed
    /// for the attempt that answered).
    ///
    /// # Errors
    /// As [`RedisStore::guarded_set`].
    pub async fn guarded_del(
        &self,
        application: &str,
        unit: &str,
        fence: Fence,
        key: &str,
    ) -> Result<bool> {
        self.inner
            .guarded::<i64>(
                application,
                unit,
                fence,
                (&scripts::GUARDED_DEL, Retry::Idempotent),
                &[key],
                &[],
            )
            .await
            .map(|deleted| deleted > 0)
    }

    /// Runs a Lua script body atomically, only if `unit` leads `application` with `fence`
    /// (F2). The body sees its own `KEYS` and `ARGV` (from `keys` and `args`) and may
    /// `return` a value, converted to `T`.
    ///
    /// Each distinct body is one script on the server (loaded once, by its hash); build a
    /// [`GuardedScript`] once and reuse it.
    ///
    /// Runs at most once: the body may not be idempotent, so it is retried (S4) only after
    /// errors that prove it did not run (no connection, a server loading or failing over).
    /// A connection that drops after the script was sent gives [`Error::Unavailable`] at
    /// once; whether the body ran is then unknown, as for any write to a remote store.
    ///
    /// # Errors
    /// As [`RedisStore::guarded_set`]; a failing body gives [`Error::Backend`].
    pub async fn guarded_script<T: FromRedisValue>(
        &self,
        application: &str,
        unit: &str,
        fence: Fence,
        script: &GuardedScript,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T> {
        self.inner
            .guarded(
                application,
                unit,
                fence,
                (&script.0, Retry::AtMostOnce),
                keys,
                args,
            )
            .await
    }
}

/// A Lua script body wrapped in the leadership guard, for [`RedisStore::guarded_script`].
#[derive(Clone)]
pub struct GuardedScript(Script);

impl GuardedScript {
    /// Wraps `body`, e.g. `"return redis.call('INCRBY', KEYS[1], ARGV[1])"`.
    pub fn new(body: &str) -> Self {
        GuardedScript(scripts::guarded(body))
    }
}

impl fmt::Debug for GuardedScript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("GuardedScript")
            .field(&self.0.get_hash())
            .finish()
    }
}

#[async_trait]
impl Claimer for RedisStore {
    async fn claim_leadership(
        &self,
        application: &str,
        unit: &str,
        duration: Duration,
    ) -> Result<Fence> {
        self.inner.claim(application, unit, duration).await
    }

    async fn block_until_leadership_released(
        &self,
        application: &str,
        cancel: CancellationToken,
    ) -> Result<()> {
        self.inner.block(application, cancel).await
    }
}

impl Checker for RedisStore {
    fn leadership_check(&self, application: &str, unit: &str) -> Box<dyn Token> {
        Box::new(RedisToken {
            inner: self.inner.clone(),
            get: self.inner.token_get(application, unit),
            application: application.to_owned(),
            unit: unit.to_owned(),
        })
    }
}

struct RedisToken {
    inner: Arc<Inner>,
    /// The lease key's `GET`, or the validation error every check returns.
    get: Result<redis::Cmd>,
    application: String,
    unit: String,
}

#[async_trait]
impl Token for RedisToken {
    async fn check(&self) -> Result<Fence> {
        match &self.get {
            Ok(get) => self.inner.check(&self.application, &self.unit, get).await,
            Err(invalid) => Err(invalid.clone()),
        }
    }
}

#[async_trait]
impl Watcher for RedisStore {
    async fn watch_leaders(&self) -> Result<LeaderStream> {
        self.inner.watch(None).await
    }

    async fn watch_leader(&self, application: &str) -> Result<LeaderStream> {
        self.inner.shared.policy.check_application(application)?;
        self.inner.watch(Some(application)).await
    }
}

/// A watcher's stream: the hub's, holding the namespace's watch while it lives.
struct Watching {
    stream: LeaderStream,
    _registration: WatchRegistration,
}

impl futures::Stream for Watching {
    type Item = leadership_core::LeaderEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.stream.as_mut().poll_next(cx)
    }
}

#[async_trait]
impl Revoker for RedisStore {
    async fn revoke_leadership(&self, application: &str, unit: &str) -> Result<()> {
        self.inner.revoke(application, unit).await
    }
}

#[async_trait]
impl Pinner for RedisStore {
    async fn pin_leadership(&self, application: &str, entity: &str) -> Result<()> {
        self.inner.pin(application, entity, &scripts::PIN).await
    }

    async fn unpin_leadership(&self, application: &str, entity: &str) -> Result<()> {
        self.inner
            .pin(application, entity, &self.inner.shared.scripts.unpin)
            .await
    }

    async fn pinned_leadership(&self) -> Result<BTreeMap<String, Vec<String>>> {
        self.inner.pinned().await
    }
}

#[async_trait]
impl Reader for RedisStore {
    async fn leaders(&self) -> Result<BTreeMap<String, String>> {
        self.inner.leaders().await
    }
}
