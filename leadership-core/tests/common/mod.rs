//! A minimal lease store on tokio's clock, for tracker tests under a paused clock.
//!
//! It keeps the contract the tracker relies on (C1–C5, R1–R3, B1–B2) and records every
//! grant and each lease's store-side expiry, so tests can compare the tracker's loss signal
//! with the moment another unit could take over.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use leadership_core::{
    Checker, Claimer, Error, Fence, LeaderStream, Pinner, Reader, Result, Revoker, Token, Watcher,
    async_trait,
};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Lease {
    pub holder: String,
    pub expiry: Instant,
    pub fence: Fence,
}

#[derive(Debug, Clone)]
pub struct Grant {
    pub unit: String,
    pub at: Instant,
    pub fence: Fence,
}

#[derive(Default)]
struct State {
    leases: HashMap<String, Lease>,
    last_fence: u64,
    grants: Vec<Grant>,
    /// Every expiry each lease ever had, by fence: the last one is when it ended.
    expiries: HashMap<u64, Instant>,
}

pub struct ModelStore {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

impl ModelStore {
    pub fn new() -> Self {
        ModelStore {
            state: Mutex::new(State::default()),
            changed: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("model lock")
    }

    /// Every new term, in order.
    pub fn grants(&self) -> Vec<Grant> {
        self.lock().grants.clone()
    }

    /// The store-side expiry a term ended (or will end) at, unless revoked.
    pub fn expiry_of(&self, fence: Fence) -> Option<Instant> {
        self.lock().expiries.get(&fence.get()).copied()
    }

    fn live(state: &State, application: &str, now: Instant) -> Option<Lease> {
        state
            .leases
            .get(application)
            .filter(|lease| now < lease.expiry)
            .cloned()
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

#[async_trait]
impl Claimer for ModelStore {
    async fn claim_leadership(
        &self,
        application: &str,
        unit: &str,
        duration: Duration,
    ) -> Result<Fence> {
        let now = Instant::now();
        let mut state = self.lock();
        match Self::live(&state, application, now) {
            Some(lease) if lease.holder == unit => {
                let expiry = lease.expiry.max(now + duration);
                state.expiries.insert(lease.fence.get(), expiry);
                if let Some(l) = state.leases.get_mut(application) {
                    l.expiry = expiry;
                }
                Ok(lease.fence)
            }
            Some(_) => Err(Error::ClaimDenied),
            None => {
                state.last_fence += 1;
                let fence = Fence(state.last_fence);
                let lease = Lease {
                    holder: unit.to_owned(),
                    expiry: now + duration,
                    fence,
                };
                state.expiries.insert(fence.get(), lease.expiry);
                state.leases.insert(application.to_owned(), lease);
                state.grants.push(Grant {
                    unit: unit.to_owned(),
                    at: now,
                    fence,
                });
                Ok(fence)
            }
        }
    }

    async fn block_until_leadership_released(
        &self,
        application: &str,
        cancel: CancellationToken,
    ) -> Result<()> {
        let mut changed = self.changed.subscribe();
        loop {
            let expiry = {
                let state = self.lock();
                match Self::live(&state, application, Instant::now()) {
                    None => return Ok(()),
                    Some(lease) => lease.expiry,
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return Err(Error::BlockCancelled),
                () = sleep_until(expiry) => {}
                _ = changed.changed() => {}
            }
        }
    }
}

struct ModelToken {
    lease: Option<Lease>,
    unit: String,
    application: String,
}

#[async_trait]
impl Token for ModelToken {
    async fn check(&self) -> Result<Fence> {
        match &self.lease {
            Some(lease) if lease.holder == self.unit && Instant::now() < lease.expiry => {
                Ok(lease.fence)
            }
            _ => Err(Error::not_leader(&self.unit, &self.application)),
        }
    }
}

impl Checker for ModelStore {
    fn leadership_check(&self, application: &str, unit: &str) -> Box<dyn Token> {
        // A snapshot is enough for these tests; they never check a token twice.
        Box::new(ModelToken {
            lease: Self::live(&self.lock(), application, Instant::now()),
            unit: unit.to_owned(),
            application: application.to_owned(),
        })
    }
}

#[async_trait]
impl Revoker for ModelStore {
    async fn revoke_leadership(&self, application: &str, unit: &str) -> Result<()> {
        let now = Instant::now();
        {
            let mut state = self.lock();
            match Self::live(&state, application, now) {
                None => return Ok(()),
                Some(lease) if lease.holder != unit => return Err(Error::ClaimNotHeld),
                Some(lease) => {
                    state.expiries.insert(lease.fence.get(), now);
                    state.leases.remove(application);
                }
            }
        }
        self.bump();
        Ok(())
    }
}

#[async_trait]
impl Pinner for ModelStore {
    async fn pin_leadership(&self, _application: &str, _entity: &str) -> Result<()> {
        Ok(())
    }

    async fn unpin_leadership(&self, _application: &str, _entity: &str) -> Result<()> {
        Ok(())
    }

    async fn pinned_leadership(&self) -> Result<BTreeMap<String, Vec<String>>> {
        Ok(BTreeMap::new())
    }
}

/// The model serves the tracker's tests, which never watch: a watch is refused, not faked.
#[async_trait]
impl Watcher for ModelStore {
    async fn watch_leaders(&self) -> Result<LeaderStream> {
        Err(Error::backend(
            "model",
            "watch",
            "the tracker's model store has no watches",
        ))
    }

    async fn watch_leader(&self, _application: &str) -> Result<LeaderStream> {
        Err(Error::backend(
            "model",
            "watch",
            "the tracker's model store has no watches",
        ))
    }
}

#[async_trait]
impl Reader for ModelStore {
    async fn leaders(&self) -> Result<BTreeMap<String, String>> {
        let now = Instant::now();
        Ok(self
            .lock()
            .leases
            .iter()
            .filter(|(_, lease)| now < lease.expiry)
            .map(|(app, lease)| (app.clone(), lease.holder.clone()))
            .collect())
    }
}
