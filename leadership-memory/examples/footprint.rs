//! Measures the resident memory per lease: `cargo run --release -p leadership-memory --example
//! footprint [LEASES]` (Linux: reads /proc/self/statm).

use std::time::{Duration, Instant};

use leadership_core::{Checker, Claimer};
use leadership_memory::MemoryStore;

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let leases: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let store = MemoryStore::new();
    let ns = store.namespace("footprint");
    let names: Vec<(String, String)> = (0..leases)
        .map(|n| (format!("app{n}"), format!("app{n}/0")))
        .collect();
    let before = resident_bytes().unwrap_or(0);
    let started = Instant::now();
    for (application, unit) in &names {
        if let Err(err) = ns
            .claim_leadership(application, unit, Duration::from_secs(3600))
            .await
        {
            eprintln!("claim failed: {err}");
            return;
        }
    }
    let claimed = started.elapsed();
    let after = resident_bytes().unwrap_or(0);
    let started = Instant::now();
    for (application, unit) in &names {
        if ns
            .leadership_check(application, unit)
            .check()
            .await
            .is_err()
        {
            eprintln!("check failed for {application}");
            return;
        }
    }
    let checked = started.elapsed();
    let stats = store.stats();
    println!(
        "{leases} leases: {} bytes/lease resident ({} MiB), claims {:?}/op, checks {:?}/op, {stats:?}",
        (after - before) / leases as u64,
        (after - before) >> 20,
        claimed / leases as u32,
        checked / leases as u32,
    );
}
