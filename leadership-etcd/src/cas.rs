//! The compare-and-swap loops of revoke and pins (R1–R3, P1–P6).

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use leadership_core::{Error, Result};

use crate::BACKEND;
use crate::claim::Held;
use crate::error::map_err;
use crate::store::EtcdStore;
use crate::txn::{Found, found_in, gets_of};

/// Compare-and-swap loops give up after this many lost races (only reachable under heavy
/// contention on one application's pins).
pub(crate) const MAX_RACES: usize = 16;

pub(crate) fn contention(operation: &'static str) -> Error {
    Error::unavailable(
        BACKEND,
        operation,
        "lost too many races with concurrent changes; try again",
    )
}

impl EtcdStore {
    /// One read of the leader key and the clock key.
    pub(crate) async fn read_term(
        &self,
        application: &str,
        operation: &'static str,
    ) -> Result<Option<Found>> {
        let keys = &self.inner.keys;
        let read = Txn::new().and_then(vec![
            TxnOp::get(keys.leader(application), None),
            TxnOp::get(keys.clock(application), None),
        ]);
        let mut kv = self.inner.shared.client.kv_client();
        let response = kv.txn(read).await.map_err(|e| map_err(operation, e))?;
        Ok(found_in(&response))
    }

    /// Whether the application looks vacant to the member that answers, read locally
    /// (serializable: no round through raft) and counting the leader key only.
    ///
    /// Only a vacant answer is acted on, and only by the claim's transaction, which compares
    /// the leader key itself: a stale "vacant" from a lagging member cannot grant beside a
    /// holder (C3, C6); the transaction then fails and returns the holder. Any other answer
    /// is read again linearizably ([`EtcdStore::read_term`]) before it decides anything.
    pub(crate) async fn looks_vacant(&self, application: &str) -> Result<bool> {
        let mut kv = self.inner.shared.client.kv_client();
        let options = GetOptions::new().with_serializable().with_count_only();
        let response = kv
            .get(self.inner.keys.leader(application), Some(options))
            .await
            .map_err(|e| map_err("claim", e))?;
        Ok(response.count() == 0)
    }

    pub(crate) async fn revoke_once(&self, application: &str, unit: &str) -> Result<()> {
        if let Some(held) = self.cached(application)
            && held.unit == unit
            && self.revoke_cached(application, &held).await?
        {
            return Ok(());
        }
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
            if self.delete_term(application, &found).await? {
                return Ok(());
            }
        }
        Err(contention("revoke"))
    }

    /// The holder's revoke of the term this handle claimed, in one transaction: it deletes
    /// the leader key (which wakes every watcher, R1) only while the key is still this term's
    /// on this term's lease. The lease then carries nothing, and only this handle knows it
    /// as a term's lease, so it is kept for this handle's next term. False if the term is
    /// not (or no longer) on that lease: pinned, moved, ended.
    async fn revoke_cached(&self, application: &str, held: &Held) -> Result<bool> {
        let keys = &self.inner.keys;
        let lead_key = keys.leader(application);
        let fence = i64::try_from(held.fence.get()).unwrap_or(i64::MAX);
        let delete = Txn::new()
            .when(vec![
                Compare::value(lead_key.clone(), CompareOp::Equal, held.unit.as_str()),
                Compare::create_revision(lead_key.clone(), CompareOp::Equal, fence),
                Compare::lease(lead_key.clone(), CompareOp::Equal, held.lease.id),
            ])
            .and_then(vec![
                TxnOp::delete(lead_key, None),
                TxnOp::delete(keys.clock(application), None),
            ]);
        // Forgotten before the delete is sent: if its reply is lost after it applied (E2),
        // the cache must not keep a term that no longer exists on a lease that still lives
        // (kept for the next term), or the holder's next claim would "renew" it by a
        // keep-alive while the application is vacant (C4).
        self.forget_term(application, held);
        let mut kv = self.inner.shared.client.kv_client();
        let response = kv.txn(delete).await.map_err(|e| map_err("revoke", e))?;
        if !response.succeeded() {
            return Ok(false);
        }
        self.keep_spare(held.lease.clone());
        Ok(true)
    }

    /// Deletes the term `found` if it is still as found: its create revision, its leader
    /// key's lease and, while pinned, its clock's lease. Then the term's lease ends too,
    /// unless it is the one this handle claimed the term on (kept for a later term): another
    /// handle may renew it. False if the term changed under us.
    async fn delete_term(&self, application: &str, found: &Found) -> Result<bool> {
        let keys = &self.inner.keys;
        let lead_key = keys.leader(application);
        let clock_key = keys.clock(application);
        let mut when = vec![
            Compare::create_revision(
                lead_key.clone(),
                CompareOp::Equal,
                found.lead.create_revision(),
            ),
            Compare::lease(lead_key.clone(), CompareOp::Equal, found.lead.lease()),
        ];
        let lease = if found.lead.lease() != 0 {
            Some(found.lead.lease())
        } else {
            when.push(match &found.clock {
                Some(clock) => Compare::lease(clock_key.clone(), CompareOp::Equal, clock.lease()),
                None => Compare::create_revision(clock_key.clone(), CompareOp::Equal, 0),
            });
            found.clock.as_ref().map(|clock| clock.lease())
        };
        let delete = Txn::new().when(when).and_then(vec![
            TxnOp::delete(lead_key, None),
            TxnOp::delete(clock_key, None),
        ]);
        // Forgotten before the delete is sent, as in `revoke_cached`.
        let cached = self.cached(application);
        self.forget(application);
        let mut kv = self.inner.shared.client.kv_client();
        let response = kv.txn(delete).await.map_err(|e| map_err("revoke", e))?;
        if !response.succeeded() {
            return Ok(false);
        }
        match (lease, cached) {
            (Some(lease), Some(held)) if held.lease.id == lease => self.keep_spare(held.lease),
            (Some(lease), _) => self.revoke_lease(lease).await?,
            (None, _) => {}
        }
        Ok(true)
    }

    pub(crate) async fn pin_once(&self, application: &str, entity: &str) -> Result<()> {
        let keys = &self.inner.keys;
        let lead_key = keys.leader(application);
        let pin = TxnOp::put(keys.pin(application, entity), "", None);
        let mut kv = self.inner.shared.client.kv_client();
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

    pub(crate) async fn unpin_once(&self, application: &str, entity: &str) -> Result<()> {
        let keys = &self.inner.keys;
        let mut kv = self.inner.shared.client.kv_client();
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
}
