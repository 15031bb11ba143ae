//! Scenario 6: the memory store's resident memory per lease. Runs in a child process of its
//! own, so that nothing else the runner did sits in the measured RSS.

use std::time::Duration;

use leadership_core::Claimer;
use leadership_memory::MemoryStore;

use crate::report::{Row, Verdict};
use crate::sys::{self, human_bytes};
use crate::target::BenchResult;

/// The bound on memory per lease at a million leases.
const MAX_BYTES_PER_LEASE: f64 = 256.0;

/// Holds `leases` leases in one memory store and reports the RSS they take.
pub async fn memory_per_lease(leases: usize) -> BenchResult<Row> {
    let store = MemoryStore::new();
    let handle = store.namespace("footprint");
    // Starts the store's timer and touches every code path once before the first reading.
    handle
        .claim_leadership("warmup", "warmup/0", Duration::from_secs(1800))
        .await
        .map_err(|e| format!("warm-up claim: {e}"))?;
    let before = sys::rss().ok_or("cannot read VmRSS from /proc/self/status")?;
    for i in 0..leases {
        let (app, unit) = (format!("m{i}"), format!("m{i}/0"));
        handle
            .claim_leadership(&app, &unit, Duration::from_secs(1800))
            .await
            .map_err(|e| format!("claim of {app}: {e}"))?;
    }
    let after = sys::rss().ok_or("cannot read VmRSS from /proc/self/status")?;
    let held = store.stats();
    let per_lease = after.saturating_sub(before) as f64 / leases.max(1) as f64;
    let mut row = Row::new("memory", format!("memory at {leases} leases"));
    row.value = Some(format!(
        "{per_lease:.0} B/lease (RSS {} → {}, +{})",
        human_bytes(before),
        human_bytes(after),
        human_bytes(after.saturating_sub(before))
    ));
    row.number = Some(per_lease);
    row.target = Some(format!("≤ {MAX_BYTES_PER_LEASE:.0} B/lease"));
    row.verdict = Verdict::of(per_lease <= MAX_BYTES_PER_LEASE);
    row.note = Some(format!(
        "RSS growth of a fresh process while one MemoryStore took {leases} claims (names m<i>, units m<i>/0, 30 min leases); store stats after: {held:?}"
    ));
    drop(handle);
    drop(store);
    Ok(row)
}
