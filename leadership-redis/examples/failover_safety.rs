//! Failover safety behind Redis Sentinel and in a Redis Cluster, measured (issue 18.5).
//!
//! ```text
//! cargo run -p leadership-redis --example failover_safety -- [ROUNDS] [--wait] [--cluster]
//! ```
//!
//! Starts a private Sentinel setup (a primary, a replica, three sentinels), or with
//! `--cluster` a private Redis Cluster of three masters with a replica each. Each round, a
//! unit claims a lease (a new term) and renews it at once, the primary (in a cluster: the
//! master of the namespace's slot) is killed with SIGKILL right after the renewal's `Ok`,
//! the sentinels (or the cluster) promote the replica, and a rival on the same connection
//! and one on a fresh connection try to claim. It counts:
//!
//! - C4 violations: a rival granted the lease while the first unit's claim still
//!   guaranteed it (the term or the renewal was lost with the primary: asynchronous
//!   replication);
//! - F1 violations: a rival's fence not above the first unit's;
//! - lost terms: the first unit's lease gone after the failover.
//!
//! `--wait` opens the stores with `wait_for_replicas(1)`: every claim waits for the replica's
//! acknowledgement (`WAIT 1`, in one pipeline with the claim) before it returns `Ok`
//! (behind Sentinel and in a cluster). The former primary is started again (it rejoins as
//! a replica) before the next round.

use std::time::{Duration, Instant};

use leadership_core::{Checker, Claimer, Revoker};
use leadership_redis::RedisStore;
use leadership_testkit::harness::RedisFailover;

const LEASE: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Counts {
    rounds: u32,
    claims_refused: u32,
    lost_terms: u32,
    c4_same_connection: u32,
    c4_fresh_connection: u32,
    f1_violations: u32,
    failover_ms: Vec<u128>,
}

async fn store(url: &str, namespace: &str, wait: bool) -> RedisStore {
    let mut builder = RedisStore::builder(url)
        .expect("sentinel url")
        .namespace(namespace);
    if wait {
        builder = builder.wait_for_replicas(1);
    }
    builder.connect().await.expect("connect through sentinel")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut rounds = 20;
    let mut wait = false;
    let mut cluster = false;
    for arg in args.by_ref() {
        match arg.as_str() {
            "--wait" => wait = true,
            "--cluster" => cluster = true,
            n => rounds = n.parse().expect("ROUNDS is a number"),
        }
    }
    let mut setup = if cluster {
        RedisFailover::cluster(3).expect("cluster setup")
    } else {
        RedisFailover::sentinel("leaders").expect("sentinel setup")
    };
    let url = setup.url();
    let namespace = format!("failover-{:x}", rand::random::<u32>());
    let holder = store(&url, &namespace, wait).await;
    let mut counts = Counts::default();

    for round in 0..rounds {
        let app = format!("app{round}");
        let (unit, rival_unit) = (format!("{app}/0"), format!("{app}/1"));
        // Looked up first, so the kill follows the renewal's `Ok` as closely as possible.
        let primary = setup
            .primary_for(holder.key_prefix())
            .expect("the primary of the namespace");
        let started = Instant::now();
        let claimed = holder.claim_leadership(&app, &unit, LEASE).await;
        let renewed = holder.claim_leadership(&app, &unit, LEASE).await;
        let (fence, _) = match (claimed, renewed) {
            (Ok(fence), Ok(renewed)) => (fence, renewed),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("round {round}: claim refused: {}", e.one_line());
                counts.claims_refused += 1;
                continue;
            }
        };
        let guaranteed_until = started + LEASE;
        setup.kill9(primary).expect("kill the primary");
        let killed = Instant::now();
        setup
            .wait_for_failover(holder.key_prefix(), primary)
            .expect("a replica promoted");

        let fresh = store(&url, &namespace, wait).await;
        let same = holder.namespace(&namespace);
        let check = holder.leadership_check(&app, &unit).check().await;
        counts.failover_ms.push(killed.elapsed().as_millis());
        if check.is_err() {
            counts.lost_terms += 1;
        }
        for (rival, c4) in [
            (&same, &mut counts.c4_same_connection),
            (&fresh, &mut counts.c4_fresh_connection),
        ] {
            if let Ok(rival_fence) = rival.claim_leadership(&app, &rival_unit, LEASE).await {
                if Instant::now() < guaranteed_until {
                    *c4 += 1;
                }
                if rival_fence <= fence {
                    counts.f1_violations += 1;
                }
                let _ = rival.revoke_leadership(&app, &rival_unit).await;
            }
        }
        let _ = holder.revoke_leadership(&app, &unit).await;
        setup
            .restore(primary)
            .expect("the former primary rejoins as a replica");
        counts.rounds += 1;
    }

    counts.failover_ms.sort_unstable();
    let median = counts
        .failover_ms
        .get(counts.failover_ms.len() / 2)
        .copied()
        .unwrap_or(0);
    let mode = format!(
        "{}-{}",
        setup.kind(),
        if wait { "wait-for-1-replica" } else { "async" }
    );
    println!(
        "mode={mode} rounds={} claims_refused={} lost_terms={} c4_violations_same_connection={} \
         c4_violations_fresh_connection={} f1_violations={} failover_median_ms={median}",
        counts.rounds,
        counts.claims_refused,
        counts.lost_terms,
        counts.c4_same_connection,
        counts.c4_fresh_connection,
        counts.f1_violations,
    );
}
