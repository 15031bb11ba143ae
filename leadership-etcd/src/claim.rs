//! Claims: the lease cache, renewals on a kept-alive lease, new terms and extensions (C1–C4).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

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

/// Lease ids issued with a term by this handle, so the holder renews in one round trip.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) unit: String,
    pub(crate) lease: i64,
    /// The TTL the lease was requested with, and the TTL etcd granted (it raises TTLs below
    /// its minimum, 1.5 × the election timeout).
    pub(crate) requested: i64,
    pub(crate) granted: i64,
    pub(crate) fence: Fence,
    /// The lease's keep-alive stream, opened by the first renewal and kept while the lease
    /// lives; closed when this entry goes.
    pub(crate) keeper: Arc<tokio::sync::Mutex<Option<Keeper>>>,
}

impl Held {
    pub(crate) fn new(unit: &str, lease: i64, requested: i64, granted: i64, fence: Fence) -> Self {
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

pub(crate) enum KeepAlive {
    Renewed,
    Gone,
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

    pub(crate) async fn claim_once(
        &self,
        application: &str,
        unit: &str,
        ttl: i64,
    ) -> Result<Fence> {
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
    pub(crate) async fn keep_alive(&self, held: &Held) -> Result<KeepAlive> {
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
        let mut leases = self.inner.shared.client.lease_client();
        match leases.keep_alive(held.lease).await {
            Ok(keeper) => {
                *slot = Some(keeper);
                Ok(KeepAlive::Renewed)
            }
            Err(err) if is_lease_not_found(&err) => Ok(KeepAlive::Gone),
            Err(err) => Err(map_err("claim", err)),
        }
    }

    pub(crate) async fn claim_slow(
        &self,
        application: &str,
        unit: &str,
        ttl: i64,
    ) -> Result<Fence> {
        let keys = &self.inner.keys;
        let lead_key = keys.leader(application);
        let clock_key = keys.clock(application);
        let mut leases = self.inner.shared.client.lease_client();
        let grant = leases
            .grant(ttl, None)
            .await
            .map_err(|e| map_err("claim", e))?;
        let lease = grant.id();
        let granted = grant.ttl();
        let mut kv = self.inner.shared.client.kv_client();
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
    pub(crate) async fn extend(
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
            let mut leases = self.inner.shared.client.lease_client();
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
        let mut kv = self.inner.shared.client.kv_client();
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
