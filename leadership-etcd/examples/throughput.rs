//! Throughput of the etcd store against a plain etcd `put`, same client, same concurrency,
//! same run.
//!
//! ```text
//! cargo run --release -p leadership-etcd --example throughput
//! LEADERSHIP_ETCD_ENDPOINTS=127.0.0.1:2379 cargo run --release -p leadership-etcd --example throughput
//! ```
//!
//! Without `LEADERSHIP_ETCD_ENDPOINTS` it starts a private etcd member (testkit harness).
//! `LEADERSHIP_BENCH_SECONDS` sets each phase's length (default 5).

use std::sync::Arc;
use std::time::{Duration, Instant};

use leadership_core::{Claimer, Revoker};
use leadership_etcd::{EtcdConfig, EtcdStore};
use leadership_testkit::harness::EtcdServer;

const CALLERS: usize = 64;
const LEASE: Duration = Duration::from_secs(60);

struct Phase {
    name: &'static str,
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Phase {
    fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(index).copied().unwrap_or_default()
    }

    fn print(&self) {
        println!(
            "{:<12} {:>9.0} ops/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} ops)",
            self.name,
            self.throughput(),
            self.percentile(0.50).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3,
            self.ops,
        );
    }
}

/// Runs `op(caller, iteration)` from `CALLERS` tasks for `length`.
async fn phase<F, Fut>(name: &'static str, length: Duration, op: F) -> Phase
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let deadline = started + length;
    let tasks: Vec<_> = (0..CALLERS)
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
    }
}

/// A waiting unit on its own connection: from just before the holder's revoke to the
/// waiter's successful claim, one application at a time.
async fn handover(store: &EtcdStore, endpoints: &[String]) -> Phase {
    const ROUNDS: usize = 200;
    let config = EtcdConfig::new(endpoints.to_vec()).namespace(store.namespace());
    let waiting = EtcdStore::connect(config).await.expect("connect the waiter");
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
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
        ops: ROUNDS,
        elapsed: started.elapsed(),
        latencies,
    }
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("LEADERSHIP_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let length = Duration::from_secs(seconds);
    let (_server, endpoints) = match std::env::var("LEADERSHIP_ETCD_ENDPOINTS") {
        Ok(list) => (None, list.split(',').map(str::to_owned).collect::<Vec<_>>()),
        Err(_) => {
            let server = EtcdServer::start().expect("start a private etcd");
            let endpoints = server.endpoints();
            (Some(server), endpoints)
        }
    };
    let namespace = format!("bench-{}", std::process::id());
    let store = EtcdStore::connect(EtcdConfig::new(endpoints.clone()).namespace(namespace))
        .await
        .expect("connect");
    println!(
        "etcd at {endpoints:?}, {CALLERS} concurrent callers on one client, {seconds} s per phase"
    );

    // Every caller leads its own application; renewals then go to the holder's lease.
    for caller in 0..CALLERS {
        store
            .claim_leadership(&format!("renew{caller}"), &format!("renew{caller}/0"), LEASE)
            .await
            .expect("initial claim");
    }
    // The plain put writes a key and value of the same size as the leader key's.
    let value_len = "renew00/0".len();
    let key_len = store.leader_key("renew00").len();

    let client = store.client();
    let put = phase("put", length, move |caller, _| {
        let mut kv = client.kv_client();
        async move {
            let key = format!("{caller:0>key_len$}");
            kv.put(key, vec![b'u'; value_len], None).await.expect("put");
        }
    })
    .await;

    let renewing = store.clone();
    let renewal = phase("renewal", length, move |caller, _| {
        let store = renewing.clone();
        async move {
            store
                .claim_leadership(&format!("renew{caller}"), &format!("renew{caller}/0"), LEASE)
                .await
                .expect("renewal");
        }
    })
    .await;

    let claiming = store.clone();
    let first = phase("first claim", length, move |caller, i| {
        let store = claiming.clone();
        async move {
            let application = format!("first{caller}x{i}");
            let unit = format!("{application}/0");
            store
                .claim_leadership(&application, &unit, Duration::from_secs(5))
                .await
                .expect("first claim");
        }
    })
    .await;

    let put_again = {
        let client = store.client();
        phase("put (again)", length, move |caller, _| {
            let mut kv = client.kv_client();
            async move {
                let key = format!("{caller:0>key_len$}");
                kv.put(key, vec![b'u'; value_len], None).await.expect("put");
            }
        })
        .await
    };

    let handover = handover(&store, &endpoints).await;

    println!();
    for p in [&put, &renewal, &first, &put_again, &handover] {
        p.print();
    }
    let baseline = (put.throughput() + put_again.throughput()) / 2.0;
    println!();
    println!(
        "renewal / put     = {:.2}  (target >= 0.80)",
        renewal.throughput() / baseline
    );
    println!(
        "first claim / put = {:.2}  (target >= 0.45)",
        first.throughput() / baseline
    );
}
