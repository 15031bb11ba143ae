//! What the conformance suite needs to run against this store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use leadership_core::conformance::{Profile, StoreFactory};
use leadership_core::{Leadership, Policy};

use crate::MemoryStore;

/// The memory store's timing promises for the conformance suite.
///
/// The store itself is exact: a lease expires at exactly its nominal expiry and the timer wakes
/// waiters at that instant, so its own slack is zero. The slacks here are allowance for the
/// test's own scheduling on a loaded two-core CI machine (a task may wait for a worker thread
/// for tens of milliseconds), not for the store.
pub fn conformance_profile() -> Profile {
    Profile {
        min_duration: Duration::from_millis(200),
        expiry_slack: Duration::from_millis(250),
        notify_latency: Duration::from_millis(250),
    }
}

/// Opens namespaces of one fresh [`MemoryStore`] for the conformance suite.
#[derive(Debug, Clone, Default)]
pub struct MemoryFactory {
    store: MemoryStore,
}

impl MemoryFactory {
    /// A factory over a new, empty store.
    pub fn new() -> MemoryFactory {
        MemoryFactory::default()
    }

    /// A factory over `store`.
    pub fn with_store(store: MemoryStore) -> MemoryFactory {
        MemoryFactory { store }
    }
}

#[async_trait]
impl StoreFactory for MemoryFactory {
    async fn open(&self, namespace: &str) -> Arc<dyn Leadership> {
        Arc::new(self.store.namespace(namespace))
    }

    async fn open_with_policy(
        &self,
        namespace: &str,
        policy: Arc<dyn Policy>,
    ) -> Arc<dyn Leadership> {
        Arc::new(self.store.namespace_with_policy(namespace, policy))
    }

    fn profile(&self) -> Profile {
        conformance_profile()
    }

    fn hostile_cases(&self) -> u32 {
        512
    }
}
