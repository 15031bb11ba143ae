//! The in-process memory store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use leadership_core::Leadership;
use leadership_memory::MemoryStore;

use crate::target::{Baseline, Bench, BenchResult, Targets};

/// The memory store: one [`MemoryStore`] shared by every handle, as in one process.
pub struct MemoryBench {
    store: MemoryStore,
}

impl MemoryBench {
    /// A fresh store.
    pub fn new() -> MemoryBench {
        MemoryBench {
            store: MemoryStore::new(),
        }
    }
}

#[async_trait]
impl Bench for MemoryBench {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn open(&self, namespace: &str) -> BenchResult<Arc<dyn Leadership>> {
        Ok(Arc::new(self.store.namespace(namespace)))
    }

    async fn baseline(&self) -> BenchResult<Baseline> {
        Ok(Baseline::map())
    }

    fn targets(&self) -> Targets {
        Targets {
            renew_ratio: 1.0 / 3.0,
            first_claim_ratio: None,
            check_ratio: 1.0 / 3.0,
            ratio_text: |_| "≥ 0.33 (cost ≤ 3×)".to_owned(),
            handover_revoke_p99: Duration::from_millis(20),
            handover_crash_p99: Duration::from_millis(50),
        }
    }

    fn crash_lease(&self) -> Duration {
        Duration::from_millis(300)
    }

    fn settle(&self) -> Duration {
        Duration::from_millis(20)
    }

    fn scale_guarantee(&self) -> Duration {
        Duration::from_secs(2)
    }

    fn child_args(&self) -> Vec<String> {
        vec!["--store".to_owned(), "memory".to_owned()]
    }
}
