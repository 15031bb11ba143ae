//! Throughput and latency of the store against plain redis commands from the same client
//! crate, at the same concurrency, in the same run:
//!
//! - holder renewal claims (`claim_leadership` by the leader) vs plain `SET`;
//! - token checks vs plain `GET`.
//!
//! Operations go round-robin over 1,000 applications and 1,000 baseline keys, as in
//! leadership-bench.
//!
//! ```text
//! cargo run --release -p leadership-redis --example redis_throughput -- [seconds per phase] [callers]
//! ```
//!
//! Uses `LEADERSHIP_REDIS_URL` if set, else starts a private redis-server. Besides rates and
//! latencies it prints the CPU time each operation cost the client (this process, from
//! /proc, 10 ms ticks) and the server (`INFO cpu`): on a loaded machine these move far less
//! than the rates.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use leadership_core::{Checker, Claimer, Token};
use leadership_redis::RedisStore;
use leadership_testkit::harness::RedisServer;
use redis::aio::ConnectionManager;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Set,
    Claim,
    Get,
    Check,
}

#[derive(Default)]
struct Stats {
    ops: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    /// CPU time this process (the client) and the server spent during the phase.
    client_cpu: Duration,
    server_cpu: Duration,
}

impl Stats {
    fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        f64::from(self.latencies_us[index]) / 1000.0
    }
}

/// Operations spread round-robin over this many applications (and baseline keys), as in
/// leadership-bench, so that no lease is renewed twice within the same millisecond.
const APPLICATIONS: usize = 1000;

/// One application's names, its baseline key, and a token made once (K2).
struct Target {
    app: String,
    unit: String,
    key: String,
    token: Box<dyn Token>,
}

async fn run_phase(
    op: Op,
    callers: usize,
    length: Duration,
    store: &RedisStore,
    conn: &ConnectionManager,
    targets: &Arc<Vec<Target>>,
) -> Stats {
    let start = Instant::now();
    let deadline = start + length;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(callers);
    for _ in 0..callers {
        let store = store.clone();
        let mut conn = conn.clone();
        let targets = Arc::clone(targets);
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let Target {
                    app,
                    unit,
                    key,
                    token,
                } = &targets[next.fetch_add(1, Ordering::Relaxed) % targets.len()];
                let t = Instant::now();
                match op {
                    Op::Set => redis::cmd("SET")
                        .arg(key)
                        .arg(unit)
                        .query_async::<()>(&mut conn)
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string()),
                    Op::Get => redis::cmd("GET")
                        .arg(key)
                        .query_async::<Option<String>>(&mut conn)
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string()),
                    Op::Claim => store
                        .claim_leadership(app, unit, Duration::from_secs(60))
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string()),
                    Op::Check => token.check().await.map(drop).map_err(|e| e.to_string()),
                }
                .unwrap_or_else(|e| panic!("{op:?} failed: {e}"));
                latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            latencies
        }));
    }
    let mut stats = Stats::default();
    for task in tasks {
        stats.latencies_us.extend(task.await.expect("caller task"));
    }
    stats.elapsed = start.elapsed();
    stats.ops = stats.latencies_us.len() as u64;
    stats
}

fn merge(into: &mut Stats, from: Stats) {
    into.ops += from.ops;
    into.elapsed += from.elapsed;
    into.latencies_us.extend(from.latencies_us);
    into.client_cpu += from.client_cpu;
    into.server_cpu += from.server_cpu;
}

/// CPU time (user + system) of this process so far, from /proc (clock ticks of 10 ms).
fn client_cpu() -> Duration {
    leadership_testkit::harness::cpu_time(std::process::id()).unwrap_or_default()
}

/// The server's CPU time so far (`INFO cpu`: used_cpu_user + used_cpu_sys, µs precision).
async fn server_cpu(conn: &ConnectionManager) -> Duration {
    let mut conn = conn.clone();
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    let seconds: f64 = info
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| *name == "used_cpu_user" || *name == "used_cpu_sys")
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .sum();
    Duration::from_secs_f64(seconds)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let callers: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(64);
    let length = Duration::from_secs_f64(seconds);

    let (_server, url) = match std::env::var("LEADERSHIP_REDIS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
            let url = server.url();
            (Some(server), url)
        }
    };
    let store = RedisStore::builder(&url)
        .unwrap_or_else(|e| panic!("{e}"))
        .namespace(format!("bench-{}", std::process::id()))
        .connect()
        .await
        .expect("connect");
    let client = redis::Client::open(url.as_str()).expect("client");
    let conn = ConnectionManager::new(client)
        .await
        .expect("baseline connection");

    // Every application is led by its unit 0; the timed claims are the holder's renewals.
    let mut targets = Vec::with_capacity(APPLICATIONS);
    let mut setup = conn.clone();
    for i in 0..APPLICATIONS {
        let (app, unit) = (format!("app{i}"), format!("app{i}/0"));
        store
            .claim_leadership(&app, &unit, Duration::from_secs(60))
            .await
            .expect("initial claim");
        let key = format!("bench:key:{i}");
        redis::cmd("SET")
            .arg(&key)
            .arg(&unit)
            .query_async::<()>(&mut setup)
            .await
            .expect("baseline key");
        let token = store.leadership_check(&app, &unit);
        targets.push(Target {
            app,
            unit,
            key,
            token,
        });
    }
    let targets = Arc::new(targets);
    // Warm up (script cache, connections), then alternate phases twice so drift in machine
    // load hits both sides alike.
    for op in [Op::Set, Op::Claim, Op::Get, Op::Check] {
        run_phase(
            op,
            callers,
            Duration::from_millis(300),
            &store,
            &conn,
            &targets,
        )
        .await;
    }
    let mut results: Vec<(Op, Stats)> = [Op::Set, Op::Claim, Op::Get, Op::Check]
        .into_iter()
        .map(|op| (op, Stats::default()))
        .collect();
    for _round in 0..2 {
        for (op, total) in &mut results {
            let (client0, server0) = (client_cpu(), server_cpu(&conn).await);
            let mut stats = run_phase(*op, callers, length / 2, &store, &conn, &targets).await;
            stats.client_cpu = client_cpu().saturating_sub(client0);
            stats.server_cpu = server_cpu(&conn).await.saturating_sub(server0);
            merge(total, stats);
        }
    }
    for (_, stats) in &mut results {
        stats.latencies_us.sort_unstable();
    }

    println!(
        "redis throughput, {callers} concurrent callers, {seconds} s per operation, url {}",
        if _server.is_some() {
            "private redis-server"
        } else {
            "LEADERSHIP_REDIS_URL"
        }
    );
    println!(
        "{:<24} {:>12} {:>10} {:>10} {:>14} {:>14}",
        "operation", "ops/s", "p50 ms", "p99 ms", "client µs/op", "server µs/op"
    );
    let names = [
        (Op::Set, "plain SET"),
        (Op::Claim, "claim (holder renewal)"),
        (Op::Get, "plain GET"),
        (Op::Check, "token check"),
    ];
    for (op, stats) in &results {
        let name = names.iter().find(|(o, _)| o == op).map_or("?", |(_, n)| n);
        let per_op = |cpu: Duration| cpu.as_secs_f64() * 1e6 / stats.ops.max(1) as f64;
        println!(
            "{name:<24} {:>12.0} {:>10.3} {:>10.3} {:>14.2} {:>14.2}",
            stats.throughput(),
            stats.percentile(0.5),
            stats.percentile(0.99),
            per_op(stats.client_cpu),
            per_op(stats.server_cpu),
        );
    }
    let get = |op: Op| results.iter().find(|(o, _)| *o == op).map(|(_, s)| s);
    if let (Some(set), Some(claim), Some(get_), Some(check)) =
        (get(Op::Set), get(Op::Claim), get(Op::Get), get(Op::Check))
    {
        let claim_ratio = claim.throughput() / set.throughput();
        let check_ratio = check.throughput() / get_.throughput();
        println!(
            "claim / SET = {claim_ratio:.2} (target >= 0.80)   check / GET = {check_ratio:.2} (target >= 0.90)"
        );
    }
}
