//! The conformance suite: one `pub async fn` per rule of DESIGN.md, run against every store.
//!
//! A store crate runs all of it with [`conformance_tests!`](crate::conformance_tests), which
//! expands into one `#[tokio::test]` per rule, named after the rule (`c2_extend_never_shortens`
//! …), so a failing test points at the rule it breaks. Each case opens its own namespace, so
//! cases run in parallel on one server and never wipe anything.
//!
//! The cases assert on error *variants* and on bounds taken from the store's [`Profile`],
//! never on speed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::Leadership;

/// What a store promises about time, so the suite can hold it to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// The shortest lease duration the suite may use; also the store's granularity if it
    /// rounds durations up (etcd: whole seconds).
    pub min_duration: Duration,
    /// How late after its nominal expiry a lease may still look held (C5).
    pub expiry_slack: Duration,
    /// How long after a revoke or expiry a blocked waiter may take to be released (B2).
    pub notify_latency: Duration,
}

/// Opens store handles for the suite: one per namespace (N1).
#[async_trait]
pub trait StoreFactory: Send + Sync {
    /// A handle on the store for `namespace`, which no other case uses.
    async fn open(&self, namespace: &str) -> Arc<dyn Leadership>;

    /// The store's timing promises.
    fn profile(&self) -> Profile;
}

/// A fresh namespace for one case: the case's name and a random suffix, so reruns against a
/// persistent server never meet old state.
pub fn unique_namespace(case: &str) -> String {
    format!("{case}-{:016x}", rand::random::<u64>())
}
