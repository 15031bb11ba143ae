//! The etcd store: claims, checks, revokes, pins, reads and blocks over etcd v3.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue,
    LeaseKeepAliveStream, LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse,
    TxnResponse, WatchFilterType, WatchOptions,
};
use leadership_core::{
    CancellationToken, Checker, Claimer, Error, Fence, Pinner, Policy, Reader, Result, Revoker,
    Token,
};
use tokio::time::Instant;

use crate::BACKEND;
use crate::config::{EtcdConfig, config_error};
use crate::error::{Detail, TimedOut, is_auth_error, is_lease_not_found, is_transient, map_err};
use crate::keys::Keys;

/// HTTP/2 pings find a dead or frozen member under an idle watch within about this long.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Compare-and-swap loops give up after this many lost races (only reachable under heavy
/// contention on one application's pins).
const MAX_RACES: usize = 16;

const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// An open keep-alive stream for one lease: a renewal is one message each way on it.
type Keeper = (LeaseKeeper, LeaseKeepAliveStream);

/// Lease ids issued with a term by this handle, so the holder renews in one round trip.
#[derive(Debug, Clone)]
struct Held {
    unit: String,
    lease: i64,
    /// The TTL the lease was requested with, and the TTL etcd granted (it raises TTLs below
    /// its minimum, 1.5 × the election timeout).
    requested: i64,
    granted: i64,
    fence: Fence,
    /// The lease's keep-alive stream, opened by the first renewal and kept while the lease
    /// lives; closed when this entry goes.
    keeper: Arc<tokio::sync::Mutex<Option<Keeper>>>,
}

impl Held {
    fn new(unit: &str, lease: i64, requested: i64, granted: i64, fence: Fence) -> Self {
        Held {
            unit: unit.to_owned(),
            lease,
            requested,
            granted,
            fence,
            keeper: Arc::default(),
        }
    }
}

struct Inner {
    client: Client,
    keys: Keys,
    timeout: Duration,
    policy: Arc<dyn Policy>,
    endpoints: Vec<String>,
    namespace: String,
    held: Mutex<HashMap<String, Held>>,
}

/// A leadership store over etcd v3 (see the crate docs for the data model).
///
/// Cheap to clone: clones share one connection. Create it inside a tokio runtime and use it
/// there.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.endpoints)
            .field("namespace", &self.inner.namespace)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// What the claim transaction found when the application was already held.
struct Found {
    lead: KeyValue,
    clock: Option<KeyValue>,
}

enum KeepAlive {
    Renewed,
    Gone,
}

impl EtcdStore {
    /// Connects and checks, once, that the cluster answers a linearizable read of this
    /// namespace within the operation timeout, so a wrong endpoint or password fails here
    /// rather than on first use.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if no member answers in time; [`Error::Backend`] for bad
    /// settings, a CA file that cannot be read, or refused credentials (the message says
    /// which).
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        if config.endpoints.is_empty() {
            return Err(config_error("no etcd endpoints given"));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.timeout)
            .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some((user, password)) = &config.credentials {
            options = options.with_user(user.clone(), password.clone());
        }
        let scheme = if config.tls { "https" } else { "http" };
        if config.tls {
            let mut tls = TlsOptions::new();
            if let Some(path) = &config.ca_file {
                let pem = std::fs::read(path).map_err(|e| {
                    Error::backend(
                        BACKEND,
                        "connect",
                        Detail {
                            message: format!("cannot read the CA file {}: {e}", path.display()),
                            source: None,
                        },
                    )
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            options = options.with_tls(tls);
        }
        let urls: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("{scheme}://{e}")
                }
            })
            .collect();
        let joined = config.endpoints.join(",");
        let user = config.credentials.as_ref().map(|(user, _)| user.clone());
        let connect_error = |err: etcd_client::Error| connect_error(err, &joined, user.as_deref());
        let timed_out = || {
            Error::unavailable(
                BACKEND,
                "connect",
                Detail {
                    message: format!(
                        "no etcd member at {joined} answered within {:?}",
                        config.timeout
                    ),
                    source: None,
                },
            )
        };
        let client = tokio::time::timeout(config.timeout, Client::connect(urls, Some(options)))
            .await
            .map_err(|_| timed_out())?
            .map_err(connect_error)?;
        let keys = Keys::new(&config.key_prefix, &config.namespace);
        let mut kv = client.kv_client();
        let probe = GetOptions::new().with_prefix().with_count_only();
        tokio::time::timeout(config.timeout, kv.get(keys.leaders(), Some(probe)))
            .await
            .map_err(|_| timed_out())?
            .map_err(connect_error)?;
        Ok(EtcdStore {
            inner: Arc::new(Inner {
                client,
                keys,
                timeout: config.timeout,
                policy: config.policy,
                endpoints: config.endpoints,
                namespace: config.namespace,
                held: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Connects to an `etcd://…` or `etcds://…` URL; see [`EtcdConfig::from_url`].
    ///
    /// # Errors
    /// As [`EtcdConfig::from_url`] and [`EtcdStore::connect`].
    pub async fn connect_url(url: &str) -> Result<Self> {
        Self::connect(EtcdConfig::from_url(url)?).await
    }

    /// The etcd client this store uses, for the application's own reads and writes.
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// The namespace of this handle.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The etcd key that holds `application`'s leader (its value is the holder unit, its
    /// create revision the fence).
    pub fn leader_key(&self, application: &str) -> String {
        self.inner.keys.leader(application)
    }

    /// The compares that hold exactly while `unit` leads `application` in the term `fence`
    /// (F2): the leader key's value is the unit and its create revision is the fence. Put
    /// them in the `when` of your own [`Txn`] (or use [`EtcdStore::guarded_txn`]).
    ///
    /// # Errors
    /// `Invalid*` if the policy rejects the names.
    pub fn leadership_compares(
        &self,
        application: &str,
        unit: &str,
        fence: Fence,
    ) -> Result<Vec<Compare>> {
        self.inner.policy.check_member(application, unit)?;
        let key = self.inner.keys.leader(application);
        let revision = i64::try_from(fence.get()).unwrap_or(i64::MAX);
        Ok(vec![
            Compare::value(key.clone(), CompareOp::Equal, unit),
            Compare::create_revision(key, CompareOp::Equal, revision),
        ])
    }

    /// Runs `txn` only while `unit` still leads `application` in the term `fence` (F2), in
    /// one etcd transaction: the leadership compares guard an outer transaction whose only
    /// operation is `txn`. Returns `txn`'s own response (its `succeeded()` reports *its*
    /// compares).
    ///
    /// # Errors
    /// [`Error::NotLeader`] if the unit does not lead with that fence (nothing was applied);
    /// `Invalid*`; [`Error::Unavailable`] / [`Error::Backend`] from etcd.
    pub async fn guarded_txn(
        &self,
        application: &str,
        unit: &str,
        fence: Fence,
        txn: Txn,
    ) -> Result<TxnResponse> {
        let guard = self.leadership_compares(application, unit, fence)?;
        let outer = Txn::new().when(guard).and_then(vec![TxnOp::txn(txn)]);
        let mut kv = self.inner.client.kv_client();
        let response = within(self.inner.timeout, "guarded write", kv.txn(outer)).await?;
        if !response.succeeded() {
            return Err(Error::not_leader(unit, application));
        }
        response
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Txn(inner) => Some(inner),
                _ => None,
            })
            .ok_or_else(|| {
                Error::backend(BACKEND, "guarded write", "etcd returned no nested response")
            })
    }

    /// Runs `attempt` until it succeeds, fails for good, or the operation timeout passes;
    /// retryable errors (a member going away mid-call) are retried with backoff.
    async fn run<T, F, Fut>(&self, operation: &'static str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let timeout = self.inner.timeout;
        let deadline = Instant::now() + timeout;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, attempt()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(err)) if err.is_retryable() => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return Err(err);
                    }
                    tokio::time::sleep(backoff.min(remaining)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Ok(Err(err)) => return Err(err),
                Err(_) => {
                    return Err(Error::unavailable(BACKEND, operation, TimedOut(timeout)));
                }
            }
        }
    }

    fn cached(&self, application: &str) -> Option<Held> {
        self.held().get(application).cloned()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.inner
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn remember(&self, application: &str, held: Held) {
        self.held().insert(application.to_owned(), held);
    }

    fn forget(&self, application: &str) {
        self.held().remove(application);
    }

    async fn claim_once(&self, application: &str, unit: &str, ttl: i64) -> Result<Fence> {
        if let Some(held) = self.cached(application)
            && held.unit == unit
            && (ttl == held.requested || ttl == held.granted)
        {
            // The term's lease is alive only while the term is (every move revokes the old
            // lease), so a successful keep-alive renews exactly this unit's term: expiry
            // becomes now + the granted TTL, which is ≥ the old expiry and ≥ now + ttl (C2).
            match self.keep_alive(&held).await? {
                KeepAlive::Renewed => return Ok(held.fence),
                KeepAlive::Gone => self.forget(application),
            }
        }
        self.claim_slow(application, unit, ttl).await
    }

    /// Renews `held`'s lease: on its open keep-alive stream if there is one, else by opening
    /// one (which renews too).
    async fn keep_alive(&self, held: &Held) -> Result<KeepAlive> {
        let mut slot = held.keeper.lock().await;
        // Taken out while in use: if this future is dropped mid-call, the stream goes with
        // it, so no later renewal can read this call's answer as its own.
        if let Some((mut keeper, mut stream)) = slot.take() {
            let renewed = async {
                keeper.keep_alive().await?;
                stream.message().await
            }
            .await;
            match renewed {
                Ok(Some(response)) if response.ttl() > 0 => {
                    *slot = Some((keeper, stream));
                    return Ok(KeepAlive::Renewed);
                }
                Ok(Some(_)) => return Ok(KeepAlive::Gone),
                // A broken stream (a member went away): open a new one below.
                Ok(None) | Err(_) => {}
            }
        }
        let mut leases = self.inner.client.lease_client();
        match leases.keep_alive(held.lease).await {
            Ok(keeper) => {
                *slot = Some(keeper);
                Ok(KeepAlive::Renewed)
            }
            Err(err) if is_lease_not_found(&err) => Ok(KeepAlive::Gone),
            Err(err) => Err(map_err("claim", err)),
        }
    }

    async fn claim_slow(&self, application: &str, unit: &str, ttl: i64) -> Result<Fence> {
        let keys = &self.inner.keys;
        let lead_key = keys.leader(application);
        let clock_key = keys.clock(application);
        let mut leases = self.inner.client.lease_client();
        let grant = leases
            .grant(ttl, None)
            .await
            .map_err(|e| map_err("claim", e))?;
        let lease = grant.id();
        let granted = grant.ttl();
        let mut kv = self.inner.client.kv_client();
        for _ in 0..MAX_RACES {
            let no_pins =
                Compare::version(keys.pins_of(application), CompareOp::Equal, 0).with_prefix();
            // Vacant: take it on the new lease; vacant but pinned (P4): take it off-lease and
            // start the term's clock on the new lease instead.
            let take = Txn::new()
                .when(vec![no_pins])
                .and_then(vec![TxnOp::put(
                    lead_key.clone(),
                    unit,
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else(vec![
                    TxnOp::put(lead_key.clone(), unit, None),
                    TxnOp::put(
                        clock_key.clone(),
                        "",
                        Some(PutOptions::new().with_lease(lease)),
                    ),
                ]);
            let claim = Txn::new()
                .when(vec![Compare::create_revision(
                    lead_key.clone(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then(vec![TxnOp::txn(take)])
                .or_else(vec![
                    TxnOp::get(lead_key.clone(), None),
                    TxnOp::get(clock_key.clone(), None),
                ]);
            let response = kv.txn(claim).await.map_err(|e| map_err("claim", e))?;
            if response.succeeded() {
                // Every write of a txn carries the txn's revision: the leader key's create
                // revision, this term's fence (F1).
                let fence = fence_of(header_revision(response.header()))?;
                self.remember(application, Held::new(unit, lease, ttl, granted, fence));
                return Ok(fence);
            }
            let Some(found) = found_in(&response) else {
                // Released between the compare and the read: try again.
                continue;
            };
            if found.lead.value() != unit.as_bytes() {
                self.revoke_in_background(lease);
                return Err(Error::ClaimDenied);
            }
            match self
                .extend(application, unit, ttl, lease, granted, &found)
                .await?
            {
                Some(fence) => return Ok(fence),
                None => continue,
            }
        }
        self.revoke_in_background(lease);
        Err(contention("claim"))
    }

    /// The holder's claim without a cached lease: expiry = max(old, now + ttl) (C2). `lease`
    /// is a fresh lease of `ttl`; it replaces the term's lease only if that one ends sooner.
    /// `None` if the state changed under us.
    async fn extend(
        &self,
        application: &str,
        unit: &str,
        ttl: i64,
        lease: i64,
        granted: i64,
        found: &Found,
    ) -> Result<Option<Fence>> {
        let fence = fence_of(found.lead.create_revision())?;
        let pinned = found.lead.lease() == 0;
        // The lease that carries the claimed expiry: the leader key's, or the clock's while
        // pinned; none if a pinned term's claimed expiry has passed.
        let current = if pinned {
            found.clock.as_ref().map(KeyValue::lease)
        } else {
            Some(found.lead.lease())
        };
        if let Some(current) = current {
            let mut leases = self.inner.client.lease_client();
            match leases.time_to_live(current, None).await {
                Ok(status) if status.ttl() >= ttl => {
                    // etcd truncates the remaining TTL to whole seconds, so the true expiry
                    // is at least now + ttl already.
                    self.revoke_in_background(lease);
                    let granted = status.granted_ttl();
                    self.remember(
                        application,
                        Held::new(unit, current, granted, granted, fence),
                    );
                    return Ok(Some(fence));
                }
                Ok(_) => {}
                Err(err) if is_lease_not_found(&err) => {}
                Err(err) => return Err(map_err("claim", err)),
            }
        }
        let keys = &self.inner.keys;
        let lead_key = keys.leader(application);
        let clock_key = keys.clock(application);
        let mut when = vec![
            Compare::value(lead_key.clone(), CompareOp::Equal, unit),
            Compare::create_revision(
                lead_key.clone(),
                CompareOp::Equal,
                found.lead.create_revision(),
            ),
            Compare::lease(lead_key.clone(), CompareOp::Equal, found.lead.lease()),
        ];
        let then = if pinned {
            when.push(match &found.clock {
                Some(clock) => Compare::lease(clock_key.clone(), CompareOp::Equal, clock.lease()),
                None => Compare::create_revision(clock_key.clone(), CompareOp::Equal, 0),
            });
            TxnOp::put(clock_key, "", Some(PutOptions::new().with_lease(lease)))
        } else {
            // A put keeps the key's create revision: the fence does not change.
            TxnOp::put(lead_key, unit, Some(PutOptions::new().with_lease(lease)))
        };
        let mut kv = self.inner.client.kv_client();
        let response = kv
            .txn(Txn::new().when(when).and_then(vec![then]))
            .await
            .map_err(|e| map_err("claim", e))?;
        if !response.succeeded() {
            return Ok(None);
        }
        self.remember(application, Held::new(unit, lease, ttl, granted, fence));
        if let Some(old) = current {
            // The old lease must die so that no handle renews the term through it.
            self.revoke_lease(old).await?;
        }
        Ok(Some(fence))
    }

    async fn revoke_lease(&self, lease: i64) -> Result<()> {
        let mut leases = self.inner.client.lease_client();
        match leases.revoke(lease).await {
            Ok(_) => Ok(()),
            Err(err) if is_lease_not_found(&err) => Ok(()),
            Err(err) => {
                self.revoke_in_background(lease);
                Err(map_err("revoke", err))
            }
        }
    }

    /// Revokes a lease we no longer need without waiting; it would expire on its own anyway.
    fn revoke_in_background(&self, lease: i64) {
        let store = self.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut leases = store.inner.client.lease_client();
            let _ = tokio::time::timeout(store.inner.timeout, leases.revoke(lease)).await;
        });
    }

    /// One read of the leader key and the clock key.
    async fn read_term(&self, application: &str, operation: &'static str) -> Result<Option<Found>> {
        let keys = &self.inner.keys;
        let read = Txn::new().and_then(vec![
            TxnOp::get(keys.leader(application), None),
            TxnOp::get(keys.clock(application), None),
        ]);
        let mut kv = self.inner.client.kv_client();
        let response = kv.txn(read).await.map_err(|e| map_err(operation, e))?;
        Ok(found_in(&response))
    }

    async fn revoke_once(&self, application: &str, unit: &str) -> Result<()> {
        // The term being revoked, once found: after that, only this term matters.
        let mut term: Option<i64> = None;
        for _ in 0..MAX_RACES {
            let found = self.read_term(application, "revoke").await?;
            let found = match (found, term) {
                (Some(found), Some(term)) if found.lead.create_revision() != term => None,
                (found, _) => found,
            };
            let Some(found) = found else {
                // Vacant (R3), or our term ended and another began after it.
                self.forget(application);
                return Ok(());
            };
            if found.lead.value() != unit.as_bytes() {
                return Err(Error::ClaimNotHeld);
            }
            term = Some(found.lead.create_revision());
            let lease = found.lead.lease();
            if lease != 0 {
                // Revoking the term's lease deletes the leader key in the same step, which
                // wakes every watcher (R1). Read again: a pin may have moved the key off the
                // lease just before.
                self.revoke_lease(lease).await?;
                continue;
            }
            let keys = &self.inner.keys;
            let lead_key = keys.leader(application);
            let delete = Txn::new()
                .when(vec![
                    Compare::create_revision(
                        lead_key.clone(),
                        CompareOp::Equal,
                        found.lead.create_revision(),
                    ),
                    Compare::lease(lead_key.clone(), CompareOp::Equal, 0),
                ])
                .and_then(vec![
                    TxnOp::delete(lead_key, None),
                    TxnOp::delete(keys.clock(application), None),
                ]);
            let mut kv = self.inner.client.kv_client();
            let response = kv.txn(delete).await.map_err(|e| map_err("revoke", e))?;
            if response.succeeded() {
                self.forget(application);
                if let Some(clock) = &found.clock {
                    self.revoke_lease(clock.lease()).await?;
                }
                return Ok(());
            }
        }
        Err(contention("revoke"))
    }

    async fn pin_once(&self, application: &str, entity: &str) -> Result<()> {
        let keys = &self.inner.keys;
        let lead_key = keys.leader(application);
        let pin = TxnOp::put(keys.pin(application, entity), "", None);
        let mut kv = self.inner.client.kv_client();
        for _ in 0..MAX_RACES {
            let response = kv
                .get(lead_key.clone(), None)
                .await
                .map_err(|e| map_err("pin", e))?;
            let txn = match response.kvs().first() {
                // Vacant: the pin waits for the next claimant (P4).
                None => Txn::new()
                    .when(vec![Compare::create_revision(
                        lead_key.clone(),
                        CompareOp::Equal,
                        0,
                    )])
                    .and_then(vec![pin.clone()]),
                // Held on its lease: move the key off the lease so it cannot expire (P1),
                // and keep the lease on a clock key so that the claimed expiry goes on
                // counting on etcd's clock (P3).
                Some(lead) if lead.lease() != 0 => Txn::new()
                    .when(vec![Compare::mod_revision(
                        lead_key.clone(),
                        CompareOp::Equal,
                        lead.mod_revision(),
                    )])
                    .and_then(vec![
                        pin.clone(),
                        TxnOp::put(lead_key.clone(), lead.value(), None),
                        TxnOp::put(
                            keys.clock(application),
                            "",
                            Some(PutOptions::new().with_lease(lead.lease())),
                        ),
                    ]),
                Some(lead) => Txn::new()
                    .when(vec![Compare::mod_revision(
                        lead_key.clone(),
                        CompareOp::Equal,
                        lead.mod_revision(),
                    )])
                    .and_then(vec![pin.clone()]),
            };
            if kv
                .txn(txn)
                .await
                .map_err(|e| map_err("pin", e))?
                .succeeded()
            {
                return Ok(());
            }
        }
        Err(contention("pin"))
    }

    async fn unpin_once(&self, application: &str, entity: &str) -> Result<()> {
        let keys = &self.inner.keys;
        let mut kv = self.inner.client.kv_client();
        kv.delete(keys.pin(application, entity), None)
            .await
            .map_err(|e| map_err("unpin", e))?;
        let lead_key = keys.leader(application);
        let clock_key = keys.clock(application);
        let pins = keys.pins_of(application);
        for _ in 0..MAX_RACES {
            let read = Txn::new().and_then(vec![
                TxnOp::get(lead_key.clone(), None),
                TxnOp::get(clock_key.clone(), None),
                TxnOp::get(
                    pins.clone(),
                    Some(GetOptions::new().with_prefix().with_count_only()),
                ),
            ]);
            let response = kv.txn(read).await.map_err(|e| map_err("unpin", e))?;
            let gets = gets_of(&response);
            let pin_count = gets.get(2).map_or(0, |g| g.count());
            let Some(lead) = gets.first().and_then(|g| g.kvs().first()) else {
                return Ok(());
            };
            if pin_count > 0 || lead.lease() != 0 {
                return Ok(());
            }
            let clock = gets.get(1).and_then(|g| g.kvs().first());
            let mut when = vec![
                Compare::mod_revision(lead_key.clone(), CompareOp::Equal, lead.mod_revision()),
                Compare::version(pins.clone(), CompareOp::Equal, 0).with_prefix(),
            ];
            let then = match clock {
                // Expiry resumes at the claimed expiry: back onto the term's lease (P3).
                Some(clock) => {
                    when.push(Compare::mod_revision(
                        clock_key.clone(),
                        CompareOp::Equal,
                        clock.mod_revision(),
                    ));
                    vec![
                        TxnOp::put(
                            lead_key.clone(),
                            lead.value(),
                            Some(PutOptions::new().with_lease(clock.lease())),
                        ),
                        TxnOp::delete(clock_key.clone(), None),
                    ]
                }
                // The claimed expiry passed while pinned: the lease ends at once (P3).
                None => {
                    when.push(Compare::create_revision(
                        clock_key.clone(),
                        CompareOp::Equal,
                        0,
                    ));
                    vec![TxnOp::delete(lead_key.clone(), None)]
                }
            };
            let done = kv
                .txn(Txn::new().when(when).and_then(then))
                .await
                .map_err(|e| map_err("unpin", e))?
                .succeeded();
            if done {
                return Ok(());
            }
        }
        Err(contention("unpin"))
    }

    async fn check_once(&self, application: &str, unit: &str) -> Result<Fence> {
        let mut kv = self.inner.client.kv_client();
        let response = kv
            .get(self.inner.keys.leader(application), None)
            .await
            .map_err(|e| map_err("check", e))?;
        match response.kvs().first() {
            Some(lead) if lead.value() == unit.as_bytes() => fence_of(lead.create_revision()),
            _ => Err(Error::not_leader(unit, application)),
        }
    }

    /// Waits for the term seen by the first read to end: a watch from the read's revision + 1
    /// sees every later change (no gap); after a broken watch or a compaction, a fresh read
    /// tells whether the term ended meanwhile (B2, B5).
    async fn wait_released(&self, application: &str) -> Result<()> {
        let key = self.inner.keys.leader(application);
        let timeout = self.inner.timeout;
        let mut term: Option<i64> = None;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let mut kv = self.inner.client.kv_client();
            let read = match within(timeout, "block", kv.get(key.clone(), None)).await {
                Ok(read) => read,
                Err(err) if err.is_retryable() => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                Err(err) => return Err(err),
            };
            let Some(lead) = read.kvs().first() else {
                return Ok(());
            };
            if term.is_some_and(|seen| seen != lead.create_revision()) {
                return Ok(());
            }
            term = Some(lead.create_revision());
            let from = header_revision(read.header()) + 1;
            match self.watch_for_delete(&key, from).await {
                Ok(true) => return Ok(()),
                Ok(false) => backoff = FIRST_BACKOFF,
                Err(err) if err.is_retryable() => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// `Ok(true)` once the key is deleted; `Ok(false)` if the watch must be started again
    /// from a fresh read (compacted or cancelled by the server).
    async fn watch_for_delete(&self, key: &str, from: i64) -> Result<bool> {
        let options = WatchOptions::new()
            .with_start_revision(from)
            .with_filters(vec![WatchFilterType::NoPut]);
        let mut watch_client = self.inner.client.watch_client();
        let mut stream = within(
            self.inner.timeout,
            "block",
            watch_client.watch(key, Some(options)),
        )
        .await?;
        loop {
            let message = stream.message().await.map_err(|e| map_err("block", e))?;
            let Some(response) = message else {
                return Err(Error::unavailable(
                    BACKEND,
                    "block",
                    "the watch stream ended",
                ));
            };
            if response
                .events()
                .iter()
                .any(|event| event.event_type() == EventType::Delete)
            {
                return Ok(true);
            }
            if response.canceled() || response.compact_revision() > 0 {
                return Ok(false);
            }
        }
    }
}

/// Awaits an etcd call with a timeout, mapping both failures.
async fn within<T>(
    timeout: Duration,
    operation: &'static str,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(|e| map_err(operation, e)),
        Err(_) => Err(Error::unavailable(BACKEND, operation, TimedOut(timeout))),
    }
}

/// A connect-time failure, saying what went wrong in words.
fn connect_error(err: etcd_client::Error, endpoints: &str, user: Option<&str>) -> Error {
    if is_auth_error(&err) {
        let who = user.unwrap_or("");
        let message = format!(
            "etcd at {endpoints} refused user {who:?}: wrong user or password, or auth is \
             not set up for it"
        );
        let detail = Detail {
            message,
            source: Some(err),
        };
        return Error::backend(BACKEND, "connect", detail);
    }
    let transient = is_transient(&err);
    let detail = Detail {
        message: format!("cannot reach etcd at {endpoints}"),
        source: Some(err),
    };
    if transient {
        Error::unavailable(BACKEND, "connect", detail)
    } else {
        Error::backend(BACKEND, "connect", detail)
    }
}

fn contention(operation: &'static str) -> Error {
    Error::unavailable(
        BACKEND,
        operation,
        "lost too many races with concurrent changes; try again",
    )
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, etcd_client::ResponseHeader::revision)
}

fn fence_of(revision: i64) -> Result<Fence> {
    u64::try_from(revision)
        .ok()
        .filter(|&r| r > 0)
        .map(Fence)
        .ok_or_else(|| Error::backend(BACKEND, "claim", "etcd returned no revision"))
}

fn gets_of(response: &TxnResponse) -> Vec<etcd_client::GetResponse> {
    response
        .op_responses()
        .into_iter()
        .filter_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get),
            _ => None,
        })
        .collect()
}

/// The leader and clock keys from a transaction whose branch read them, in that order.
fn found_in(response: &TxnResponse) -> Option<Found> {
    let gets = gets_of(response);
    let lead = gets.first()?.kvs().first()?.clone();
    let clock = gets.get(1).and_then(|g| g.kvs().first()).cloned();
    Some(Found { lead, clock })
}

/// Whole seconds, rounded up: etcd leases have a granularity of one second (V3).
fn ttl_seconds(duration: Duration) -> i64 {
    let secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

#[async_trait]
impl Claimer for EtcdStore {
    async fn claim_leadership(
        &self,
        application: &str,
        unit: &str,
        duration: Duration,
    ) -> Result<Fence> {
        self.inner.policy.check_claim(application, unit, duration)?;
        let ttl = ttl_seconds(duration);
        self.run("claim", || self.claim_once(application, unit, ttl))
            .await
    }

    async fn block_until_leadership_released(
        &self,
        application: &str,
        cancel: CancellationToken,
    ) -> Result<()> {
        self.inner.policy.check_application(application)?;
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(Error::BlockCancelled),
            result = self.wait_released(application) => result,
        }
    }
}

/// A token from [`EtcdStore`]: every check is one linearizable read (K1).
struct EtcdToken {
    store: EtcdStore,
    application: String,
    unit: String,
}

#[async_trait]
impl Token for EtcdToken {
    async fn check(&self) -> Result<Fence> {
        let store = &self.store;
        store
            .inner
            .policy
            .check_member(&self.application, &self.unit)?;
        store
            .run("check", || store.check_once(&self.application, &self.unit))
            .await
    }
}

impl Checker for EtcdStore {
    fn leadership_check(&self, application: &str, unit: &str) -> Box<dyn Token> {
        Box::new(EtcdToken {
            store: self.clone(),
            application: application.to_owned(),
            unit: unit.to_owned(),
        })
    }
}

#[async_trait]
impl Revoker for EtcdStore {
    async fn revoke_leadership(&self, application: &str, unit: &str) -> Result<()> {
        self.inner.policy.check_member(application, unit)?;
        self.run("revoke", || self.revoke_once(application, unit))
            .await
    }
}

#[async_trait]
impl Pinner for EtcdStore {
    async fn pin_leadership(&self, application: &str, entity: &str) -> Result<()> {
        self.inner.policy.check_pin(application, entity)?;
        self.run("pin", || self.pin_once(application, entity)).await
    }

    async fn unpin_leadership(&self, application: &str, entity: &str) -> Result<()> {
        self.inner.policy.check_pin(application, entity)?;
        self.run("unpin", || self.unpin_once(application, entity))
            .await
    }

    async fn pinned_leadership(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let keys = &self.inner.keys;
        let response = self
            .run("pinned", || async {
                let mut kv = self.inner.client.kv_client();
                kv.get(
                    keys.pins(),
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                )
                .await
                .map_err(|e| map_err("pinned", e))
            })
            .await?;
        let mut pinned: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for kv in response.kvs() {
            if let Some((application, entity)) = keys.parse_pin(kv.key()) {
                pinned.entry(application).or_default().push(entity);
            }
        }
        for entities in pinned.values_mut() {
            entities.sort();
        }
        Ok(pinned)
    }
}

#[async_trait]
impl Reader for EtcdStore {
    async fn leaders(&self) -> Result<BTreeMap<String, String>> {
        let keys = &self.inner.keys;
        let response = self
            .run("leaders", || async {
                let mut kv = self.inner.client.kv_client();
                kv.get(keys.leaders(), Some(GetOptions::new().with_prefix()))
                    .await
                    .map_err(|e| map_err("leaders", e))
            })
            .await?;
        let mut leaders = BTreeMap::new();
        for kv in response.kvs() {
            if let (Some(application), Ok(unit)) =
                (keys.application_of_leader(kv.key()), kv.value_str())
            {
                leaders.insert(application, unit.to_owned());
            }
        }
        Ok(leaders)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_to_whole_seconds() {
        assert_eq!(ttl_seconds(Duration::from_millis(1)), 1);
        assert_eq!(ttl_seconds(Duration::from_secs(1)), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(ttl_seconds(Duration::from_secs(3600)), 3600);
    }
}
