//! How long store operations wait while the timer works through a mass expiry.
//!
//! ```text
//! cargo run --release -p leadership-memory --example mass_expiry -- [leases] [keep]
//! ```
//!
//! Claims `leases` applications (default 2,000,000) for 3 s each and revokes them at once
//! (unless `keep` is given, then they expire), so their deadlines all come due together in
//! the timer's heap. Meanwhile a probe claims and revokes one application every 200 µs and
//! prints the worst time one claim + revoke took.

use std::time::{Duration, Instant};

use leadership_core::{Claimer, Revoker};
use leadership_memory::MemoryStore;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), leadership_core::Error> {
    let mut args = std::env::args().skip(1);
    let leases: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let revoke = args.next().is_none_or(|s| s != "keep");
    let store = MemoryStore::new().namespace("mass-expiry");
    let lease = Duration::from_secs(3);
    let started = Instant::now();
    for i in 0..leases {
        let (app, unit) = (format!("m{i}"), format!("m{i}/0"));
        store.claim_leadership(&app, &unit, lease).await?;
        if revoke {
            store.revoke_leadership(&app, &unit).await?;
        }
    }
    println!(
        "{leases} claims{} in {:.1} s; probing for 6 s",
        if revoke { " and revokes" } else { "" },
        started.elapsed().as_secs_f64()
    );
    let (mut worst, mut probes) = (Duration::ZERO, 0u32);
    let end = Instant::now() + Duration::from_secs(6);
    while Instant::now() < end {
        let t = Instant::now();
        store.claim_leadership("probe", "probe/0", lease).await?;
        store.revoke_leadership("probe", "probe/0").await?;
        worst = worst.max(t.elapsed());
        probes += 1;
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    println!("{probes} probes, worst claim + revoke {worst:?}");
    Ok(())
}
