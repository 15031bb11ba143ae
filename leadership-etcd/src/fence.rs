//! Guarded writes: etcd transactions that apply only while a unit leads with a fence (F2).

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse, TxnResponse};
use leadership_core::{Error, Fence, Result};

use crate::BACKEND;
use crate::error::map_err;
use crate::store::EtcdStore;

impl EtcdStore {
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
        self.inner.shared.policy.check_member(application, unit)?;
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
        let response = self
            .run("guarded write", || {
                let mut kv = self.inner.shared.client.kv_client();
                let outer = outer.clone();
                async move { kv.txn(outer).await.map_err(|e| map_err("guarded write", e)) }
            })
            .await?;
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
}
