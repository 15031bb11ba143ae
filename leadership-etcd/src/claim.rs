//! Claims: the lease cache, renewals on a kept-alive lease, new terms and extensions (C1–C4).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use etcd_client::{
    Compare, CompareOp, KeyValue, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp,
};
use leadership_core::{Error, Fence, Result};

use crate::cas::{MAX_RACES, contention};
use crate::error::{is_lease_not_found, map_err};
use crate::store::EtcdStore;
use crate::txn::{Found, fence_of, found_in, header_revision};

/// An open keep-alive stream for one lease: a renewal is one message each way on it.
pub(crate) type Keeper = (LeaseKeeper, LeaseKeepAliveStream);

/// How many leases of revoked terms a handle keeps for its next terms; more are revoked.
const MAX_SPARE_LEASES: usize = 256;

/// A lease this handle granted (or was told of by a keep-alive), with its keep-alive stream.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    pub(crate) id: i64,
    /// The TTL the lease was requested with, and the TTL etcd granted (it raises TTLs below
    /// its minimum, 1.5 × the election timeout).
    pub(crate) requested: i64,
    pub(crate) granted: i64,
    /// The lease's keep-alive stream, opened by the first keep-alive and kept while the
    /// lease lives; closed when the last copy of this lease goes.
    pub(crate) keeper: Arc<tokio::sync::Mutex<Option<Keeper>>>,
}

impl Lease {
    fn new(id: i64, requested: i64, granted: i64) -> Self {
        Lease {
            id,
            requested,
            granted,
            keeper: Arc::default(),
        }
    }

    /// True if a keep-alive of this lease gives a term of `ttl` its expiry: now + the
    /// granted TTL, which is ≥ now + `ttl` (C4) and no later than a fresh lease of `ttl`
    /// would end (C5).
    fn fits(&self, ttl: i64) -> bool {
        ttl == self.requested || ttl == self.granted
    }
}

/// A lease kept from a revoked term, for a next term of any handle of the same connection.
#[derive(Debug)]
pub(crate) struct Spare {
    lease: Lease,
    /// When it was kept: the local clock only tells which spares have surely expired (and
    /// so are dropped with their keep-alive streams); a spare that is taken is renewed and
    /// checked on etcd before it carries a term.
    kept: Instant,
}

impl Spare {
    fn may_live(&self) -> bool {
        let granted = Duration::from_secs(u64::try_from(self.lease.granted).unwrap_or(0));
        self.kept.elapsed() < granted
    }
}

/// A term this handle claimed, on the lease it renews it with in one round trip.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) unit: String,
    pub(crate) fence: Fence,
    pub(crate) lease: Lease,
}

impl Held {
    /// The same term on the same lease.
    fn same_as(&self, other: &Held) -> bool {
        self.fence == other.fence && self.lease.id == other.lease.id
    }
}

pub(crate) enum KeepAlive {
    Renewed,
    Gone,
}

/// What the claim transaction on a vacant application did.
enum Take {
    Took(Fence),
    /// The application was not vacant: what the transaction read instead (`None` if it was
    /// released between the compare and the read).
    Found(Option<Found>),
    /// The lease ended before the transaction: no term was made.
    LeaseGone,
}

/// Whole seconds, rounded up: etcd leases have a granularity of one second (V3).
/// etcd's longest lease (`MaxLeaseTTL` in its lessor): about 285 years.
const MAX_LEASE_TTL_SECS: u64 = 9_000_000_000;

/// A lease duration rounded up to whole seconds (etcd's granularity, V3).
///
/// # Errors
/// [`Error::InvalidDuration`] past etcd's longest lease; reachable only with a policy that
/// allows more than the default hour.
pub(crate) fn ttl_seconds(duration: Duration) -> Result<i64> {
    let secs = duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0))
        .max(1);
    if secs > MAX_LEASE_TTL_SECS {
        return Err(Error::InvalidDuration {
            duration,
            reason: format!("etcd leases last at most {MAX_LEASE_TTL_SECS} s (about 285 years)"),
        });
    }
    i64::try_from(secs).map_err(|_| Error::InvalidDuration {
        duration,
        reason: "too long for an etcd lease".into(),
    })
}

impl EtcdStore {
    pub(crate) fn cached(&self, application: &str) -> Option<Held> {
        self.held().get(application).cloned()
    }

    pub(crate) fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.inner
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn remember(&self, application: &str, held: Held) {
        self.held().insert(application.to_owned(), held);
    }

    pub(crate) fn forget(&self, application: &str) {
        self.held().remove(application);
    }

    /// Forgets `held` if the cache still holds that very term on that lease (a newer entry,
    /// from a concurrent claim through this handle, stays).
    pub(crate) fn forget_term(&self, application: &str, held: &Held) {
        let mut cache = self.held();
        if cache.get(application).is_some_and(|now| now.same_as(held)) {
            cache.remove(application);
        }
    }

    fn spare(&self) -> std::sync::MutexGuard<'_, Vec<Spare>> {
        self.inner
            .shared
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `lease` for a later term of a handle of this connection (any namespace). Only
    /// for a lease that carries no key and that no handle can know of as a term's lease: one
    /// whose term this handle ended with a transaction that compared the lease (and forgot),
    /// or one that never carried a term. Other namespaces' handles never knew it: a lease
    /// carries terms of the one handle that granted or took it.
    pub(crate) fn keep_spare(&self, lease: Lease) {
        let mut spare = self.spare();
        spare.retain(Spare::may_live);
        if spare.len() < MAX_SPARE_LEASES {
            spare.push(Spare {
                lease,
                kept: Instant::now(),
            });
            return;
        }
        drop(spare);
        self.revoke_in_background(lease.id);
    }

    fn take_spare(&self, ttl: i64) -> Option<Lease> {
        let mut spare = self.spare();
        spare.retain(Spare::may_live);
        let at = spare.iter().rposition(|spare| spare.lease.fits(ttl))?;
        Some(spare.swap_remove(at).lease)
    }

    /// A spare lease that fits `ttl`, renewed now (so that a term put on it lasts its
    /// duration from this call, C4), if this connection keeps one.
    async fn renewed_spare(&self, ttl: i64) -> Result<Option<Lease>> {
        while let Some(lease) = self.take_spare(ttl) {
            if let KeepAlive::Renewed = self.keep_alive(&lease).await? {
                return Ok(Some(lease));
            }
        }
        Ok(None)
    }

    /// A lease for a new term of `ttl`: a spare one renewed now, so that the term's expiry
    /// counts from this call (C4), else a fresh grant.
    async fn term_lease(&self, ttl: i64) -> Result<Lease> {
        if let Some(lease) = self.renewed_spare(ttl).await? {
            return Ok(lease);
        }
        let mut leases = self.inner.shared.client.lease_client();
        let grant = leases
            .grant(ttl, None)
            .await
            .map_err(|e| map_err("claim", e))?;
        Ok(Lease::new(grant.id(), ttl, grant.ttl()))
    }

    pub(crate) async fn claim_once(
        &self,
        application: &str,
        unit: &str,
        ttl: i64,
    ) -> Result<Fence> {
        if let Some(held) = self.cached(application)
            && held.unit == unit
            && held.lease.fits(ttl)
        {
            // A cached lease carries this term until the term ends (every write that may end
            // the term or move it to another lease forgets it before it is sent, so one whose
            // reply is lost cannot leave it cached; a revoke that keeps the lease forgets the
            // term first, and any other end revokes it), so a successful
            // keep-alive renews exactly this unit's term: expiry becomes now + the granted
            // TTL, which is ≥ the old expiry and ≥ now + ttl (C2).
            match self.keep_alive(&held.lease).await? {
                // A revoke through this handle may have ended the term, and handed its lease
                // on to another term, while the keep-alive was in flight: the renewal counts
                // only if the cache still holds this very term on this lease.
                KeepAlive::Renewed
                    if self
                        .cached(application)
                        .is_some_and(|now| now.same_as(&held)) =>
                {
                    return Ok(held.fence);
                }
                KeepAlive::Renewed => {}
                KeepAlive::Gone => self.forget(application),
            }
        }
        self.claim_slow(application, unit, ttl).await
    }

    /// Renews `lease`: on its open keep-alive stream if there is one, else by opening one
    /// (which renews too).
    pub(crate) async fn keep_alive(&self, lease: &Lease) -> Result<KeepAlive> {
        let mut slot = lease.keeper.lock().await;
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
        let mut leases = self.inner.shared.client.lease_client();
        match leases.keep_alive(lease.id).await {
            Ok(keeper) => {
                *slot = Some(keeper);
                Ok(KeepAlive::Renewed)
            }
            Err(err) if is_lease_not_found(&err) => Ok(KeepAlive::Gone),
            Err(err) => Err(map_err("claim", err)),
        }
    }

    /// A claim without a renewable cached term. The application is read first, so a claim
    /// that is denied writes nothing: no lease granted, no transaction through raft (C3); at
    /// most a spare lease of the connection is renewed alongside the look. The first
    /// look is local ([`EtcdStore::looks_vacant`]): a vacant application (a new term, the
    /// common case) goes straight to its lease and transaction, with no linearizable read;
    /// a held one is read again linearizably, and only that read can deny. (A lagging member
    /// that says "vacant" while another unit holds the lease costs this claim a lease that
    /// is then kept as a spare; the transaction still denies it.)
    pub(crate) async fn claim_slow(
        &self,
        application: &str,
        unit: &str,
        ttl: i64,
    ) -> Result<Fence> {
        // Whatever the cache says of this application is not used from here, and the writes
        // below may end or move a cached term (an extension moves it to another lease): it
        // is forgotten before any of them is sent, and what succeeds is remembered. A write
        // whose reply is lost (E2) then cannot leave a term cached that the store no longer
        // has on that lease, which a later keep-alive would "renew" (C4).
        self.forget(application);
        // The look goes out together with the renewal of a spare lease, if the connection
        // keeps one: a keep-alive is no write (no raft entry, no revision), so a denied claim
        // still writes nothing, and a vacant application's term goes to its transaction one
        // round trip sooner. Without a spare, the grant (a write) waits for the look.
        let (vacant, spare) = tokio::join!(self.looks_vacant(application), self.renewed_spare(ttl));
        // A lease in hand for a new term, kept across lost races.
        let mut lease: Option<Lease> = spare?;
        let first = match vacant {
            Ok(true) => Ok(None),
            Ok(false) => self.read_term(application, "claim").await,
            Err(err) => Err(err),
        };
        let mut found = match first {
            Ok(found) => found,
            Err(err) => {
                if let Some(unused) = lease {
                    self.keep_spare(unused);
                }
                return Err(err);
            }
        };
        let outcome = async {
            for _ in 0..MAX_RACES {
                let Some(held) = found.take() else {
                    let term = match lease.take() {
                        Some(term) => term,
                        None => self.term_lease(ttl).await?,
                    };
                    match self.take_vacant(application, unit, &term).await? {
                        Take::Took(fence) => {
                            self.remember(
                                application,
                                Held {
                                    unit: unit.to_owned(),
                                    fence,
                                    lease: term,
                                },
                            );
                            return Ok(fence);
                        }
                        Take::Found(now) => {
                            lease = Some(term);
                            found = now;
                        }
                        Take::LeaseGone => {}
                    }
                    continue;
                };
                if held.lead.value() != unit.as_bytes() {
                    return Err(Error::ClaimDenied);
                }
                if let Some(fence) = self
                    .extend(application, unit, ttl, &mut lease, &held)
                    .await?
                {
                    return Ok(fence);
                }
                found = self.read_term(application, "claim").await?;
            }
            Err(contention("claim"))
        }
        .await;
        // A lease taken for a term that was not made: it carries no key, and no other
        // handle has seen it.
        if let Some(unused) = lease {
            self.keep_spare(unused);
        }
        outcome
    }

    /// Creates the leader key on `lease` if the application is vacant (C1): on the lease
    /// itself, or off-lease with the term's clock on the lease if it is pinned (P4).
    async fn take_vacant(&self, application: &str, unit: &str, lease: &Lease) -> Result<Take> {
        let keys = &self.inner.keys;
        let lead_key = keys.leader(application);
        let clock_key = keys.clock(application);
        let on_lease = || Some(PutOptions::new().with_lease(lease.id));
        let no_pins =
            Compare::version(keys.pins_of(application), CompareOp::Equal, 0).with_prefix();
        let take = Txn::new()
            .when(vec![no_pins])
            .and_then(vec![TxnOp::put(lead_key.clone(), unit, on_lease())])
            .or_else(vec![
                TxnOp::put(lead_key.clone(), unit, None),
                TxnOp::put(clock_key.clone(), "", on_lease()),
            ]);
        let claim = Txn::new()
            .when(vec![Compare::create_revision(
                lead_key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::txn(take)])
            .or_else(vec![
                TxnOp::get(lead_key, None),
                TxnOp::get(clock_key, None),
            ]);
        let mut kv = self.inner.shared.client.kv_client();
        let response = match kv.txn(claim).await {
            Ok(response) => response,
            // A spare lease that ended between its keep-alive and this transaction.
            Err(err) if is_lease_not_found(&err) => return Ok(Take::LeaseGone),
            Err(err) => return Err(map_err("claim", err)),
        };
        if !response.succeeded() {
            return Ok(Take::Found(found_in(&response)));
        }
        // Every write of a txn carries the txn's revision: the leader key's create revision,
        // this term's fence (F1).
        fence_of(header_revision(response.header())).map(Take::Took)
    }

    /// The holder's claim without a renewable cached term: expiry = max(old, now + ttl)
    /// (C2). The term moves onto a lease of `ttl` (the one in `lease`, or a new one) only if
    /// its own lease ends sooner. `None` if the state changed under us.
    pub(crate) async fn extend(
        &self,
        application: &str,
        unit: &str,
        ttl: i64,
        lease: &mut Option<Lease>,
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
            let mut leases = self.inner.shared.client.lease_client();
            match leases.time_to_live(current, None).await {
                // etcd truncates the remaining TTL to whole seconds, so the true expiry is
                // at least now + ttl already. The lease is not cached: it may be another
                // handle's, which may end the term and keep the lease for a later one.
                Ok(status) if status.ttl() >= ttl => return Ok(Some(fence)),
                Ok(_) => {}
                Err(err) if is_lease_not_found(&err) => {}
                Err(err) => return Err(map_err("claim", err)),
            }
        }
        let term = match lease.take() {
            Some(term) => term,
            None => self.term_lease(ttl).await?,
        };
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
        let on_lease = Some(PutOptions::new().with_lease(term.id));
        let then = if pinned {
            when.push(match &found.clock {
                Some(clock) => Compare::lease(clock_key.clone(), CompareOp::Equal, clock.lease()),
                None => Compare::create_revision(clock_key.clone(), CompareOp::Equal, 0),
            });
            TxnOp::put(clock_key, "", on_lease)
        } else {
            // A put keeps the key's create revision: the fence does not change.
            TxnOp::put(lead_key, unit, on_lease)
        };
        let mut kv = self.inner.shared.client.kv_client();
        let response = match kv.txn(Txn::new().when(when).and_then(vec![then])).await {
            Ok(response) => response,
            Err(err) if is_lease_not_found(&err) => return Ok(None),
            Err(err) => return Err(map_err("claim", err)),
        };
        if !response.succeeded() {
            *lease = Some(term);
            return Ok(None);
        }
        self.remember(
            application,
            Held {
                unit: unit.to_owned(),
                fence,
                lease: term,
            },
        );
        if let Some(old) = current {
            // The old lease must die so that no handle renews the term through it.
            self.revoke_lease(old).await?;
        }
        Ok(Some(fence))
    }

    pub(crate) async fn revoke_lease(&self, lease: i64) -> Result<()> {
        let mut leases = self.inner.shared.client.lease_client();
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
    pub(crate) fn revoke_in_background(&self, lease: i64) {
        let store = self.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut leases = store.inner.shared.client.lease_client();
            let _ = tokio::time::timeout(store.inner.shared.timeout, leases.revoke(lease)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_to_whole_seconds() {
        assert_eq!(ttl_seconds(Duration::from_millis(1)).ok(), Some(1));
        assert_eq!(ttl_seconds(Duration::from_secs(1)).ok(), Some(1));
        assert_eq!(ttl_seconds(Duration::from_millis(1001)).ok(), Some(2));
        assert_eq!(ttl_seconds(Duration::from_secs(3600)).ok(), Some(3600));
        assert_eq!(
            ttl_seconds(Duration::from_secs(MAX_LEASE_TTL_SECS)).ok(),
            Some(9_000_000_000)
        );
        for huge in [Duration::MAX, Duration::from_secs(MAX_LEASE_TTL_SECS + 1)] {
            assert!(
                matches!(ttl_seconds(huge), Err(Error::InvalidDuration { .. })),
                "{huge:?}"
            );
        }
    }
}
