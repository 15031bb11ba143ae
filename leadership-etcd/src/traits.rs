//! The leadership traits over the modules above.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::GetOptions;
use leadership_core::{
    CancellationToken, Checker, Claimer, Error, Fence, Pinner, Reader, Result, Revoker, Token,
};

use crate::claim::ttl_seconds;
use crate::error::map_err;
use crate::store::EtcdStore;
use crate::txn::fence_of;

#[async_trait]
impl Claimer for EtcdStore {
    async fn claim_leadership(
        &self,
        application: &str,
        unit: &str,
        duration: Duration,
    ) -> Result<Fence> {
        self.inner
            .shared
            .policy
            .check_claim(application, unit, duration)?;
        let ttl = ttl_seconds(duration)?;
        self.run("claim", || self.claim_once(application, unit, ttl))
            .await
    }

    async fn block_until_leadership_released(
        &self,
        application: &str,
        cancel: CancellationToken,
    ) -> Result<()> {
        self.inner.shared.policy.check_application(application)?;
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(Error::BlockCancelled),
            result = self.wait_released(application) => result,
        }
    }
}

/// A token from [`EtcdStore`]: every check is one linearizable read (K1).
pub(crate) struct EtcdToken {
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
            .shared
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
        self.inner.shared.policy.check_member(application, unit)?;
        self.run("revoke", || self.revoke_once(application, unit))
            .await
    }
}

#[async_trait]
impl Pinner for EtcdStore {
    async fn pin_leadership(&self, application: &str, entity: &str) -> Result<()> {
        self.inner.shared.policy.check_pin(application, entity)?;
        self.run("pin", || self.pin_once(application, entity)).await
    }

    async fn unpin_leadership(&self, application: &str, entity: &str) -> Result<()> {
        self.inner.shared.policy.check_pin(application, entity)?;
        self.run("unpin", || self.unpin_once(application, entity))
            .await
    }

    async fn pinned_leadership(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let keys = &self.inner.keys;
        let response = self
            .run("pinned", || async {
                let mut kv = self.inner.shared.client.kv_client();
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
                let mut kv = self.inner.shared.client.kv_client();
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

impl EtcdStore {
    async fn check_once(&self, application: &str, unit: &str) -> Result<Fence> {
        let mut kv = self.inner.shared.client.kv_client();
        let response = kv
            .get(self.inner.keys.leader(application), None)
            .await
            .map_err(|e| map_err("check", e))?;
        match response.kvs().first() {
            Some(lead) if lead.value() == unit.as_bytes() => fence_of(lead.create_revision()),
            _ => Err(Error::not_leader(unit, application)),
        }
    }
}
