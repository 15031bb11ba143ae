//! Throughput of the etcd store against a plain etcd `put`, same client, same concurrency,
//! same run; and the handover latency after a revoke.
//!
//! ```text
//! cargo run --release -p leadership-etcd --example throughput
//! LEADERSHIP_ETCD_ENDPOINTS=127.0.0.1:2379 cargo run --release -p leadership-etcd --example throughput
//! ```
//!
//! Without `LEADERSHIP_ETCD_ENDPOINTS` it starts a private etcd member (testkit harness).
//! `LEADERSHIP_ETCD_PID` names an external member's process, for its CPU time.
//! `LEADERSHIP_BENCH_CALLERS` sets the concurrency (default 64).
//! `LEADERSHIP_BENCH_SECONDS` sets each phase's length (default 3); the phases run twice,
//! interleaved, so that a noisy machine hurts every phase alike. Two reference phases show
//! the floor of any design with one lease per term: a lease grant alone, and a grant followed
//! by a put of a new key on that lease. Next to rates and latencies it prints the CPU time
//! each operation cost this process (the client) and the etcd member, from /proc in 10 ms
//! ticks: on a loaded machine these move far less than rates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use leadership_core::{Claimer, Revoker};
use leadership_etcd::EtcdStore;
use leadership_etcd::etcd_client::{
    Client, Compare, CompareOp, LeaseClient, PutOptions, Txn, TxnOp,
};
use leadership_testkit::harness::EtcdServer;

/// Concurrent callers: `LEADERSHIP_BENCH_CALLERS`, default 64 (the issue's figure).
fn callers() -> usize {
    static CALLERS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CALLERS.get_or_init(|| {
        std::env::var("LEADERSHIP_BENCH_CALLERS")
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(64)
    })
}
/// Long enough that no lease expires during the run: expiry storms would slow later phases.
const LEASE: Duration = Duration::from_secs(120);
const ROUNDS: usize = 2;

#[derive(Default)]
struct Phase {
    name: &'static str,
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// CPU time this process (the client) and the etcd member spent during the phase.
    client_cpu: Duration,
    server_cpu: Duration,
}

impl Phase {
    fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(index).copied().unwrap_or_default()
    }

    fn absorb(&mut self, other: Phase) {
        self.name = other.name;
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.latencies.sort();
        self.client_cpu += other.client_cpu;
        self.server_cpu += other.server_cpu;
    }

    fn cpu_per_op(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.ops.max(1) as f64
    }

    fn print(&self) {
        println!(
            "{:<16} {:>8.0} ops/s   p50 {:>7.2} ms   p99 {:>7.2} ms   \
             cpu/op client {:>5.0} µs server {:>5.0} µs   ({} ops)",
            self.name,
            self.throughput(),
            self.percentile(0.50).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3,
            self.cpu_per_op(self.client_cpu),
            self.cpu_per_op(self.server_cpu),
            self.ops,
        );
    }
}

/// CPU time (user + system) of process `pid` so far (10 ms ticks, from /proc); zero if it
/// cannot be read.
fn cpu_of(pid: u32) -> Duration {
    leadership_testkit::harness::cpu_time(pid).unwrap_or_default()
}

/// The etcd member's pid, for its CPU time: the private member's, or
/// `LEADERSHIP_ETCD_PID` for an external one.
static SERVER_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

fn server_cpu() -> Duration {
    SERVER_PID.get().map_or(Duration::ZERO, |&pid| cpu_of(pid))
}

/// Runs `op(caller, iteration)` from [`callers()`] tasks for `length`.
async fn phase<F, Fut>(name: &'static str, length: Duration, op: F) -> Phase
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let (client0, server0) = (cpu_of(std::process::id()), server_cpu());
    let started = Instant::now();
    let deadline = started + length;
    let tasks: Vec<_> = (0..callers())
        .map(|caller| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    op(caller, i).await;
                    latencies.push(t.elapsed());
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("caller task"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Phase {
        name,
        ops: latencies.len(),
        elapsed,
        latencies,
        client_cpu: cpu_of(std::process::id()).saturating_sub(client0),
        server_cpu: server_cpu().saturating_sub(server0),
    }
}

/// Grants a lease of [`LEASE`]; its id.
async fn grant_lease(leases: &mut LeaseClient) -> i64 {
    leases
        .grant(LEASE.as_secs() as i64, None)
        .await
        .expect("grant")
        .id()
}

/// A phase of plain puts of `value_len` bytes at `key(caller, iteration)`.
async fn put_phase(
    name: &'static str,
    length: Duration,
    client: Client,
    value_len: usize,
    key: impl Fn(usize, usize) -> String + Send + Sync + 'static,
) -> Phase {
    phase(name, length, move |caller, i| {
        let (mut kv, key) = (client.kv_client(), key(caller, i));
        async move {
            kv.put(key, vec![b'u'; value_len], None).await.expect("put");
        }
    })
    .await
}

/// A waiting unit on its own connection: from just before the holder's revoke to the
/// waiter's successful claim, one application at a time.
async fn handover(store: &EtcdStore, endpoints: &[String]) -> Phase {
    const HANDOVERS: usize = 200;
    let config = EtcdStore::builder(&format!("etcd://{}", endpoints.join(",")))
        .expect("an etcd URL")
        .namespace(store.namespace_name());
    let waiting = config.connect().await.expect("connect the waiter");
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(HANDOVERS);
    for round in 0..HANDOVERS {
        let application = format!("handover{round}");
        store
            .claim_leadership(&application, &format!("{application}/0"), LEASE)
            .await
            .expect("holder claim");
        let waiter = {
            let (waiting, application) = (waiting.clone(), application.clone());
            tokio::spawn(async move {
                waiting
                    .block_until_leadership_released(&application, Default::default())
                    .await
                    .expect("block");
                waiting
                    .claim_leadership(&application, &format!("{application}/1"), LEASE)
                    .await
                    .expect("waiter claim");
                Instant::now()
            })
        };
        // Let the waiter reach its watch.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let revoked = Instant::now();
        store
            .revoke_leadership(&application, &format!("{application}/0"))
            .await
            .expect("revoke");
        let claimed = waiter.await.expect("waiter task");
        latencies.push(claimed - revoked);
    }
    latencies.sort();
    Phase {
        name: "handover",
        ops: HANDOVERS,
        elapsed: started.elapsed(),
        latencies,
        ..Phase::default()
    }
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("LEADERSHIP_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let length = Duration::from_secs(seconds);
    let (_server, endpoints) = match std::env::var("LEADERSHIP_ETCD_ENDPOINTS") {
        Ok(list) => {
            if let Some(pid) = std::env::var("LEADERSHIP_ETCD_PID")
                .ok()
                .and_then(|pid| pid.parse().ok())
            {
                let _ = SERVER_PID.set(pid);
            }
            (None, list.split(',').map(str::to_owned).collect::<Vec<_>>())
        }
        Err(_) => {
            let server = EtcdServer::start().expect("start a private etcd");
            if let Some(pid) = server.pid() {
                let _ = SERVER_PID.set(pid);
            }
            let endpoints = server.endpoints();
            (Some(server), endpoints)
        }
    };
    let namespace = format!("bench-{}", std::process::id());
    let store = EtcdStore::builder(&format!("etcd://{}", endpoints.join(",")))
        .expect("an etcd URL")
        .namespace(namespace)
        .connect()
        .await
        .expect("connect");
    println!(
        "etcd at {endpoints:?}, {} concurrent callers on one client, \
         {ROUNDS} × {seconds} s per phase",
        callers()
    );

    // Every caller leads its own application; renewals then go to the holder's lease.
    for caller in 0..callers() {
        store
            .claim_leadership(
                &format!("renew{caller}"),
                &format!("renew{caller}/0"),
                LEASE,
            )
            .await
            .expect("initial claim");
    }
    // The plain put writes a key and value of the same size as the leader key's.
    let value_len = "renew00/0".len();
    let key_len = store.leader_key("renew00").len();

    let mut put = Phase::default();
    let mut renewal = Phase::default();
    let mut first = Phase::default();
    let mut grant = Phase::default();
    let mut grant_put = Phase::default();
    let mut put_new = Phase::default();
    let mut grant_txn = Phase::default();
    for round in 0..ROUNDS {
        put.absorb(
            put_phase(
                "put",
                length,
                store.client(),
                value_len,
                move |caller, _| format!("{caller:0>key_len$}"),
            )
            .await,
        );

        let renewing = store.clone();
        renewal.absorb(
            phase("renewal", length, move |caller, _| {
                let store = renewing.clone();
                async move {
                    let application = format!("renew{caller}");
                    store
                        .claim_leadership(&application, &format!("{application}/0"), LEASE)
                        .await
                        .expect("renewal");
                }
            })
            .await,
        );

        let claiming = store.clone();
        first.absorb(
            phase("first claim", length, move |caller, i| {
                let store = claiming.clone();
                async move {
                    let application = format!("first{round}x{caller}x{i}");
                    store
                        .claim_leadership(&application, &format!("{application}/0"), LEASE)
                        .await
                        .expect("first claim");
                }
            })
            .await,
        );

        let client = store.client();
        grant.absorb(
            phase("(lease grant)", length, move |_, _| {
                let mut leases = client.lease_client();
                async move {
                    grant_lease(&mut leases).await;
                }
            })
            .await,
        );

        let client = store.client();
        grant_put.absorb(
            phase("(grant + put)", length, move |caller, i| {
                let (mut leases, mut kv) = (client.lease_client(), client.kv_client());
                async move {
                    let lease = grant_lease(&mut leases).await;
                    let key = format!("{round}x{caller}x{i:0>key_len$}");
                    let options = PutOptions::new().with_lease(lease);
                    kv.put(key, vec![b'u'; value_len], Some(options))
                        .await
                        .expect("put");
                }
            })
            .await,
        );

        put_new.absorb(
            put_phase(
                "(put new key)",
                length,
                store.client(),
                value_len,
                move |caller, i| format!("n{round}x{caller}x{i:0>key_len$}"),
            )
            .await,
        );

        let client = store.client();
        grant_txn.absorb(
            phase("(grant + txn)", length, move |caller, i| {
                let (mut leases, mut kv) = (client.lease_client(), client.kv_client());
                async move {
                    let lease = grant_lease(&mut leases).await;
                    let key = format!("t{round}x{caller}x{i:0>key_len$}");
                    let options = PutOptions::new().with_lease(lease);
                    let txn = Txn::new()
                        .when(vec![Compare::create_revision(
                            key.clone(),
                            CompareOp::Equal,
                            0,
                        )])
                        .and_then(vec![TxnOp::put(key, vec![b'u'; value_len], Some(options))]);
                    kv.txn(txn).await.expect("txn");
                }
            })
            .await,
        );
    }
    let handover = handover(&store, &endpoints).await;

    println!();
    for p in [
        &put, &renewal, &first, &grant, &grant_put, &put_new, &grant_txn, &handover,
    ] {
        p.print();
    }
    println!();
    println!(
        "renewal / put     = {:.2}  (target >= 0.80)",
        renewal.throughput() / put.throughput()
    );
    println!(
        "first claim / put = {:.2}  (target >= 0.45; grant + put / put = {:.2})",
        first.throughput() / put.throughput(),
        grant_put.throughput() / put.throughput()
    );
    println!(
        "handover p99      = {:.1} ms (target <= 50 ms)",
        handover.percentile(0.99).as_secs_f64() * 1e3
    );
}
