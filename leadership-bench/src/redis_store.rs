//! The Redis store, against `SET`/`GET` over the same client crate, `redis-benchmark`, and
//! the `rslock` peer.

use std::future::Future;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use leadership_core::Leadership;
use leadership_redis::RedisStore;
use leadership_testkit::harness::RedisServer;
use redis::aio::ConnectionManager;

use crate::driver::{INTERLEAVED_REPS, Op, interleaved, op, pair};
use crate::report::Row;
use crate::scenarios::{Sizes, new_terms, revoke_all, terms_started_and_ended};
use crate::stats::human_rate;
use crate::target::{Baseline, Bench, BenchResult, Targets, fresh_namespace};

/// The issue's targets for Redis, one server or a cluster.
pub const TARGETS: Targets = Targets {
    renew_ratio: 0.8,
    first_claim_ratio: None,
    check_ratio: 0.9,
    ratio_text: |min| format!("≥ {min:.2}"),
    handover_revoke_p99: Duration::from_millis(20),
    handover_crash_p99: Duration::from_millis(50),
};

/// A Redis server (ours, or the one `--redis-url` names) under benchmark.
pub struct RedisBench {
    url: String,
    /// Kept alive for the run; killed on drop.
    _server: Option<RedisServer>,
}

impl RedisBench {
    /// Starts a private redis-server through the testkit harness unless `url` is given.
    pub fn start(url: Option<String>) -> BenchResult<RedisBench> {
        if let Some(url) = url {
            return Ok(RedisBench { url, _server: None });
        }
        let server = RedisServer::start().map_err(|e| format!("cannot start redis-server: {e}"))?;
        Ok(RedisBench {
            url: server.url(),
            _server: Some(server),
        })
    }

    /// A new connection manager from the redis crate, as the store makes.
    pub async fn connection(&self) -> BenchResult<ConnectionManager> {
        let client =
            redis::Client::open(self.url.as_str()).map_err(|e| format!("redis client: {e}"))?;
        ConnectionManager::new(client).await.map_err(|e| {
            format!(
                "redis connection to {}: {e}",
                leadership_core::redact_url(&self.url)
            )
        })
    }

    fn host_port(&self) -> Option<(String, String)> {
        let rest = self.url.split("://").nth(1)?;
        let rest = rest.rsplit('@').next()?;
        let host_port = rest.split('/').next()?;
        let (host, port) = host_port.rsplit_once(':')?;
        Some((host.to_owned(), port.to_owned()))
    }
}

#[async_trait]
impl Bench for RedisBench {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn open(&self, namespace: &str) -> BenchResult<Arc<dyn Leadership>> {
        let store = RedisStore::builder(&self.url)
            .map_err(|e| format!("redis store: {e}"))?
            .namespace(namespace)
            .connect()
            .await
            .map_err(|e| format!("redis store: {e}"))?;
        Ok(Arc::new(store))
    }

    async fn baseline(&self) -> BenchResult<Baseline> {
        Ok(Baseline::Redis(self.connection().await?))
    }

    async fn server_subscriptions(&self) -> Option<String> {
        let mut conn = self.connection().await.ok()?;
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut conn)
            .await
            .ok()?;
        let subs: Vec<&str> = list
            .lines()
            .filter_map(|line| line.split_whitespace().find(|f| f.starts_with("sub=")))
            .collect();
        Some(format!(
            "CLIENT LIST TYPE pubsub: {} connection(s), {}",
            subs.len(),
            subs.join(" ")
        ))
    }

    fn targets(&self) -> Targets {
        TARGETS
    }

    fn crash_lease(&self) -> Duration {
        Duration::from_millis(300)
    }

    fn settle(&self) -> Duration {
        Duration::from_millis(30)
    }

    fn cadence_renew_ratio(&self) -> Option<f64> {
        Some(0.8)
    }

    fn scale_guarantee(&self) -> Duration {
        Duration::from_secs(2)
    }

    fn server_pid(&self) -> Option<u32> {
        self._server.as_ref().and_then(|server| server.pid())
    }

    fn child_args(&self) -> Vec<String> {
        vec![
            "--store".to_owned(),
            "redis".to_owned(),
            "--redis-url".to_owned(),
            self.url.clone(),
        ]
    }
}

/// `redis-benchmark -t set` at `callers` connections, as an outside reference for `SET`.
pub async fn redis_benchmark(bench: &RedisBench, sizes: Sizes, callers: usize) -> Row {
    let mut row = Row::new("redis", "redis-benchmark -t set");
    row.callers = Some(callers);
    let Some((host, port)) = bench.host_port() else {
        return row.with_note("cannot tell host and port from the URL");
    };
    let requests = if sizes.round < Duration::from_secs(1) {
        20_000
    } else {
        200_000
    };
    let args = [
        "-h".to_owned(),
        host,
        "-p".to_owned(),
        port,
        "-t".to_owned(),
        "set".to_owned(),
        "-c".to_owned(),
        callers.to_string(),
        "-n".to_owned(),
        requests.to_string(),
        "-q".to_owned(),
    ];
    let output =
        tokio::task::spawn_blocking(move || Command::new("redis-benchmark").args(args).output())
            .await;
    let text = match output {
        Ok(Ok(out)) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(Ok(out)) => return row.with_note(format!("redis-benchmark failed: {}", out.status)),
        Ok(Err(e)) => return row.with_note(format!("redis-benchmark not run: {e}")),
        Err(e) => return row.with_note(format!("redis-benchmark not run: {e}")),
    };
    // The last carriage-return-separated part holds the summary:
    // `SET: 123456.79 requests per second, p50=0.215 msec`.
    let summary = text.rsplit('\r').next().unwrap_or(&text).trim().to_owned();
    let rate = summary
        .split_once(':')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok());
    row.value = Some(match rate {
        Some(rate) => format!(
            "{} SET/s ({callers} connections, {requests} requests): {summary}",
            human_rate(rate)
        ),
        None => summary.clone(),
    });
    row.number = rate;
    row.with_note("an outside reference for SET at the same concurrency (its own connections and pipelining-free loop)")
}

/// One rslock cycle on `resource`: lock, then unlock; `false` if the lock failed.
async fn rslock_cycle(locks: &rslock::LockManager, resource: &str, lease: Duration) -> bool {
    match locks.lock(resource, lease).await {
        Ok(lock) => {
            locks.unlock(&lock).await;
            true
        }
        Err(_) => false,
    }
}

/// A `SET` of a fresh key under `prefix` per call, from `conn`: the baseline of the
/// first-claim row and of the new-term floors.
fn set_op(conn: &ConnectionManager, prefix: &str) -> Op {
    let (conn, next, prefix) = (conn.clone(), Arc::new(AtomicU64::new(0)), prefix.to_owned());
    op(move |_| {
        let (mut conn, next, prefix) = (conn.clone(), Arc::clone(&next), prefix.clone());
        async move {
            let i = next.fetch_add(1, Ordering::Relaxed);
            redis::cmd("SET")
                .arg(format!("{prefix}s{i}"))
                .arg(format!("u{i}/0"))
                .query_async::<()>(&mut conn)
                .await
                .is_ok()
        }
    })
}

/// rslock's lock + unlock of a fresh resource of namespace `ns` per call, on its own
/// client: the peer, the baseline of the peer row and of the claim + revoke floors.
fn rslock_op(bench: &RedisBench, ns: &str) -> BenchResult<Op> {
    let client =
        redis::Client::open(bench.url.as_str()).map_err(|e| format!("redis client: {e}"))?;
    let locks = rslock::LockManager::from_clients(vec![client]);
    let (next, prefix) = (Arc::new(AtomicU64::new(0)), format!("bench:{ns}:lock:"));
    Ok(op(move |_| {
        let (locks, next, prefix) = (locks.clone(), Arc::clone(&next), prefix.clone());
        async move {
            let i = next.fetch_add(1, Ordering::Relaxed);
            rslock_cycle(&locks, &format!("{prefix}{i}"), Duration::from_secs(30)).await
        }
    }))
}

/// The floor of any renewal on Redis: its one command, `PEXPIRE key ms GT`, sent raw from the
/// same client, against `SET` (as in the renewal scenario), over 1,000 keys each. An `info`
/// row beside the renewal's: the store's overhead is the gap between the two ratios.
pub async fn pexpire_floor(bench: &RedisBench, sizes: Sizes, callers: usize) -> BenchResult<Row> {
    const KEYS: u64 = 1_000;
    let ns = fresh_namespace("floor");
    let conn = bench.connection().await?;
    let set_keys: Arc<Vec<String>> =
        Arc::new((0..KEYS).map(|i| format!("bench:{ns}:set:{i}")).collect());
    let ttl_keys: Arc<Vec<String>> =
        Arc::new((0..KEYS).map(|i| format!("bench:{ns}:ttl:{i}")).collect());
    let mut setup = conn.clone();
    for key in ttl_keys.iter() {
        // A lease-like key: a value and a TTL for PEXPIRE … GT to extend.
        redis::cmd("SET")
            .arg(key)
            .arg("1")
            .arg("PX")
            .arg(60_000)
            .query_async::<()>(&mut setup)
            .await
            .map_err(|e| format!("setup SET: {e}"))?;
    }
    let (base_conn, subj_conn) = (conn.clone(), conn);
    let (base, subj) = pair(
        callers,
        sizes.round,
        move |seq| {
            let (mut conn, keys) = (base_conn.clone(), Arc::clone(&set_keys));
            async move {
                let key = &keys[(seq % KEYS) as usize];
                redis::cmd("SET")
                    .arg(key)
                    .arg("unit/0")
                    .query_async::<()>(&mut conn)
                    .await
                    .is_ok()
            }
        },
        move |seq| {
            let (mut conn, keys) = (subj_conn.clone(), Arc::clone(&ttl_keys));
            async move {
                let key = &keys[(seq % KEYS) as usize];
                redis::cmd("PEXPIRE")
                    .arg(key)
                    .arg(60_000)
                    .arg("GT")
                    .query_async::<i64>(&mut conn)
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    Ok(Row::pair(
        "redis",
        "ref: renewal's command",
        callers,
        (&base, &subj),
        ("PEXPIRE … GT, raw", "SET"),
    )
    .noting(
        ("PEXPIRE", "SET commands"),
        Some(
            "the one command of a hot renewal, sent raw from the same client: the floor of the renewal ratio"
                .to_owned(),
        ),
    ))
}

/// The least a fenced new term costs on Redis: one script that checks the key is free, bumps
/// the application's fence counter and sets the key with its expiry (`EXISTS`, `INCR`,
/// `SET … PX`). Any design with fences (F1) and an atomic claim (C1) makes at least this one
/// call; ours also seeds the fence from server time, records the owner, looks for pins and
/// tells watchers.
static FLOOR_CLAIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local f = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], f, 'PX', ARGV[1])
return f
",
    )
});

/// The least a fenced revoke costs: delete the key if it still holds the term's fence.
static FLOOR_REVOKE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// The least a new term costs under this project's contract on Redis, in the leanest layout
/// there is: one hash per namespace whose field `app` holds `<fence>:<unit>` (the index of
/// holders `leaders()` reads, L1, and the last fence, F1) and whose field `p:<app>` marks a
/// pin waiting on the application (P4), read together by one `HMGET`; a holder's live lease
/// denies (C3); `TIME` seeds the fence (F1: fences never go back, also without persistence);
/// the lease key gets the fence with its expiry, or none while pinned (P4); `PUBLISH` tells
/// watchers (O1). Five calls on a never-held application, against [`FLOOR_CLAIM`]'s three.
/// KEYS: lease, terms. ARGV: duration ms, app, unit, channel, the application's lease prefix.
static CONTRACT_CLAIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local term = redis.call('HMGET', KEYS[2], ARGV[2], 'p:' .. ARGV[2])
local last = 0
if term[1] then
  local c = string.find(term[1], ':', 1, true)
  last = tonumber(string.sub(term[1], 1, c - 1))
  if redis.call('EXISTS', ARGV[5] .. string.sub(term[1], c + 1)) == 1 then return 0 end
end
local t = redis.call('TIME')
local f = string.format('%.0f', math.max(last + 1, tonumber(t[1]) * 1000000 + tonumber(t[2])))
redis.call('HSET', KEYS[2], ARGV[2], f .. ':' .. ARGV[3])
if term[2] then
  redis.call('SET', KEYS[1], f)
else
  redis.call('SET', KEYS[1], f, 'PX', ARGV[1])
end
redis.call('PUBLISH', ARGV[4], 'E' .. f .. ':' .. ARGV[1] .. ':' .. ARGV[3] .. ARGV[2])
return tonumber(f)
",
    )
});

/// The least a revoke costs under the contract: delete the lease key if it still holds the
/// term's fence (R1, R2) and tell watchers (O1). The hash keeps `<fence>:<unit>`: the fence
/// must outlive the term (F1), and `leaders()` skips a holder whose lease key is gone.
/// KEYS: lease. ARGV: fence, channel, app.
static CONTRACT_REVOKE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], 'V' .. ARGV[1] .. ':' .. ARGV[3])
return 1
",
    )
});

/// The lease key of `app`'s unit `unit`, laid out as the store lays its own.
fn contract_lease(prefix: &str, app: &str, unit: &str) -> String {
    format!("{prefix}lease:{}:{app}{unit}", app.len())
}

/// A new term at the contract's floor ([`CONTRACT_CLAIM`]) for `app` by `unit`, sent raw
/// from the same client: its fence, or 0 if denied.
async fn contract_claim(
    conn: &mut ConnectionManager,
    prefix: &str,
    app: &str,
    unit: &str,
) -> redis::RedisResult<u64> {
    let lease_prefix = contract_lease(prefix, app, "");
    CONTRACT_CLAIM
        .key(format!("{lease_prefix}{unit}"))
        .key(format!("{prefix}terms"))
        .arg(30_000)
        .arg(app)
        .arg(unit)
        .arg(format!("{prefix}released"))
        .arg(&lease_prefix)
        .invoke_async(conn)
        .await
}

/// The revoke at the contract's floor ([`CONTRACT_REVOKE`]) of `app`'s unit `<app>/0` with
/// `fence`: 1 if it ended the term, 0 if the fence is not the term's.
async fn contract_revoke(
    conn: &mut ConnectionManager,
    prefix: &str,
    app: &str,
    fence: u64,
) -> redis::RedisResult<i64> {
    CONTRACT_REVOKE
        .key(contract_lease(prefix, app, &format!("{app}/0")))
        .arg(fence)
        .arg(format!("{prefix}released"))
        .arg(app)
        .invoke_async(conn)
        .await
}

/// A fenced new term at its floor ([`FLOOR_CLAIM`]) on fresh keys, sent raw from the same
/// client.
async fn floor_claim(conn: &mut ConnectionManager, key: &str, fence_key: &str) -> Option<u64> {
    FLOOR_CLAIM
        .key(key)
        .key(fence_key)
        .arg(30_000)
        .invoke_async::<u64>(conn)
        .await
        .ok()
        .filter(|&fence| fence > 0)
}

/// A fenced claim + revoke at its floor ([`FLOOR_CLAIM`], [`FLOOR_REVOKE`]) on fresh keys
/// under `prefix` (tagged `tag`), sent raw from the same client.
async fn floor_cycle(conn: &mut ConnectionManager, prefix: &str, tag: &str, i: u64) -> bool {
    let (key, fence_key) = (format!("{prefix}{tag}{i}"), format!("{prefix}{tag}f{i}"));
    let Some(fence) = floor_claim(conn, &key, &fence_key).await else {
        return false;
    };
    FLOOR_REVOKE
        .key(&key)
        .arg(fence)
        .invoke_async::<i64>(conn)
        .await
        .is_ok_and(|deleted| deleted == 1)
}

/// A raw operation on `conn` over a fresh application number per call.
fn numbered<F, Fut>(conn: &ConnectionManager, prefix: &str, f: F) -> Op
where
    F: Fn(ConnectionManager, String, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let (conn, prefix, next) = (conn.clone(), prefix.to_owned(), Arc::new(AtomicU64::new(0)));
    op(move |_| {
        f(
            conn.clone(),
            prefix.clone(),
            next.fetch_add(1, Ordering::Relaxed),
        )
    })
}

/// A new term, four ways, in one interleaved measurement (same moments, same server, each
/// on its own keys), against `SET` of a fresh key (the first-claim row's baseline):
/// - the floor of a fenced new term ([`FLOOR_CLAIM`]: EXISTS, INCR, SET PX), which keeps
///   less than the contract (no time seed, no index, no pins, no watch);
/// - the floor of a new term under this project's contract ([`CONTRACT_CLAIM`]: the fewest
///   server calls that keep C3, F1, L1, P4 and O1, in the leanest layout);
/// - our first claim.
///
/// Three rows: each floor against `SET` (where one is under the first-claim target, no
/// store that keeps what it keeps reaches that target on this server), and ours against the
/// contract's floor (how much of the gap is our layout). Raw sides are sent from one
/// client; ours from the store's own.
pub async fn new_term_rows(
    bench: &RedisBench,
    sizes: Sizes,
    callers: usize,
) -> BenchResult<Vec<Row>> {
    let ns = fresh_namespace("term");
    let store = bench.open(&ns).await?;
    let conn = bench.connection().await?;
    let prefix = format!("bench:{{{ns}}}:");
    let (ours, claimed) = new_terms(&store, "f", Duration::from_secs(30));
    let subjects = [
        set_op(&conn, &prefix),
        numbered(&conn, &prefix, |mut conn, prefix, i| async move {
            let (key, fence_key) = (format!("{prefix}l{i}"), format!("{prefix}f{i}"));
            floor_claim(&mut conn, &key, &fence_key).await.is_some()
        }),
        numbered(&conn, &prefix, |mut conn, prefix, i| async move {
            let app = format!("a{i}");
            contract_claim(&mut conn, &prefix, &app, &format!("{app}/0"))
                .await
                .is_ok_and(|fence| fence > 0)
        }),
        ours,
    ];
    let [set, fenced, contract, ours] =
        &interleaved(callers, sizes.round, INTERLEAVED_REPS, &subjects).await;
    revoke_all(store, "f", claimed.load(Ordering::Relaxed)).await;

    let same_run = "measured interleaved with the other rows of this new term (A B C D D C B A)";
    let contract_label = "HMGET+TIME+HSET+SET PX+PUBLISH script";
    let fenced_row = Row::pair(
        "redis",
        "ref: fenced new term's floor",
        callers,
        (set, fenced),
        ("EXISTS+INCR+SET PX script", "SET"),
    )
    .noting(
        ("floor scripts", "SETs"),
        Some(format!(
            "the least a fenced new term costs (one script: EXISTS, INCR, SET PX), raw from the \
             same client; it keeps less than the contract (no time seed, no index, no pins, no \
             watch); {same_run}"
        )),
    );
    let contract_row = Row::pair(
        "redis",
        "ref: contract's new-term floor",
        callers,
        (set, contract),
        (contract_label, "SET"),
    )
    .noting(
        ("floor scripts", "SETs"),
        Some(format!(
            "the least a new term costs under the contract (C3, F1's time seed, L1's index, \
             P4, O1) in the leanest layout, raw from the same client: where it is under the \
             first-claim target, the contract stops that target; {same_run}"
        )),
    );
    let ours_row = Row::pair(
        "redis",
        "ref: first claim vs contract's new-term floor",
        callers,
        (contract, ours),
        ("claim (new term)", contract_label),
    )
    .noting(
        ("claims", "floor scripts"),
        Some(format!(
            "our first claim against the contract's floor: the rest of the first-claim gap is \
             our layout (two hashes, the pins set read on its own, a GET first); {same_run}"
        )),
    );
    Ok(vec![fenced_row, contract_row, ours_row])
}

/// A term's start and end, four ways, in one interleaved measurement (same moments, same
/// server, each on its own keys):
/// - the peer: rslock's lock + unlock (Redlock on one server), on its own client;
/// - the floor of a fenced claim + revoke (two scripts), raw;
/// - the floor under the contract ([`CONTRACT_CLAIM`], then [`CONTRACT_REVOKE`]: GET, DEL,
///   PUBLISH), raw;
/// - our claim + revoke.
///
/// Four rows: ours against rslock (the peer row), each floor against rslock (where one is
/// under the peer target, no store that keeps what it keeps reaches it on this server), and
/// ours against the contract's floor.
pub async fn claim_revoke_rows(
    bench: &RedisBench,
    sizes: Sizes,
    callers: usize,
) -> BenchResult<Vec<Row>> {
    let ns = fresh_namespace("cycle");
    let store = bench.open(&ns).await?;
    let conn = bench.connection().await?;
    let prefix = format!("bench:{{{ns}}}:");
    let subjects = [
        rslock_op(bench, &ns)?,
        numbered(&conn, &prefix, |mut conn, prefix, i| async move {
            floor_cycle(&mut conn, &prefix, "c", i).await
        }),
        numbered(&conn, &prefix, |mut conn, prefix, i| async move {
            let app = format!("c{i}");
            match contract_claim(&mut conn, &prefix, &app, &format!("{app}/0")).await {
                Ok(fence) if fence > 0 => contract_revoke(&mut conn, &prefix, &app, fence)
                    .await
                    .is_ok_and(|ended| ended == 1),
                _ => false,
            }
        }),
        terms_started_and_ended(&store, "p", Duration::from_secs(30)),
    ];
    let [rslock, fenced, contract, ours] =
        &interleaved(callers, sizes.round, INTERLEAVED_REPS, &subjects).await;

    let same_run = "measured interleaved with the other rows of this cycle (A B C D D C B A)";
    let contract_label = "contract floor claim + revoke scripts";
    let peer = Row::pair(
        "redis",
        "peer: claim+revoke",
        callers,
        (rslock, ours),
        ("claim + revoke", "rslock lock+unlock"),
    )
    .noting(("ours", "rslock cycles"), Some(same_run.to_owned()))
    .held_to(1.0, ours.errors);
    let fenced_row = Row::pair(
        "redis",
        "ref: fenced claim+revoke floor",
        callers,
        (rslock, fenced),
        ("floor claim + revoke scripts", "rslock lock+unlock"),
    )
    .noting(
        ("floor cycles", "rslock cycles"),
        Some(format!(
            "the least a fenced term's start and end cost (two scripts), raw from the same \
             client; it keeps less than the contract; {same_run}"
        )),
    );
    let contract_row = Row::pair(
        "redis",
        "ref: contract's claim+revoke floor",
        callers,
        (rslock, contract),
        (contract_label, "rslock lock+unlock"),
    )
    .noting(
        ("floor cycles", "rslock cycles"),
        Some(format!(
            "the least a term's start and end cost under the contract (five calls, then GET, \
             DEL, PUBLISH), raw from the same client: where it is under the claim+revoke \
             target, the contract stops that target; {same_run}"
        )),
    );
    let ours_row = Row::pair(
        "redis",
        "ref: claim+revoke vs contract's floor",
        callers,
        (contract, ours),
        ("claim + revoke", contract_label),
    )
    .noting(
        ("ours", "floor cycles"),
        Some(format!(
            "our claim + revoke against the contract's floor: the rest of the peer row's gap \
             is our layout; {same_run}"
        )),
    );
    Ok(vec![peer, fenced_row, contract_row, ours_row])
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    async fn claim(conn: &mut ConnectionManager, prefix: &str, app: &str, unit: &str) -> u64 {
        contract_claim(conn, prefix, app, unit)
            .await
            .expect("the contract floor's claim script runs")
    }

    async fn revoke(conn: &mut ConnectionManager, prefix: &str, app: &str, fence: u64) -> i64 {
        contract_revoke(conn, prefix, app, fence)
            .await
            .expect("the contract floor's revoke script runs")
    }

    async fn cmd<T: redis::FromRedisValue>(conn: &mut ConnectionManager, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(conn).await.expect("a plain command runs")
    }

    /// The contract's floor rows stand for "no store that keeps the contract does better",
    /// so the floor's scripts must keep it: C3 (a held lease denies another unit), F1 (a
    /// fence seeded from server time, above the last one kept past the term), L1 (the hash
    /// names the holder), P4 (a waiting pin leaves the lease without expiry), R1 (the
    /// holder's revoke ends the term) and O1 (a message when a term starts and ends).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_contract_floor_keeps_what_it_stands_for() {
        let server = leadership_testkit::harness::RedisServer::start()
            .expect("redis-server must be installed (scripts/setup installs it)");
        let client = redis::Client::open(server.url()).expect("a Redis URL");
        let mut conn = ConnectionManager::new(client.clone())
            .await
            .expect("a connection");
        let prefix = "bench:{t}:";
        let mut pubsub = client
            .get_async_pubsub()
            .await
            .expect("a pub/sub connection");
        pubsub
            .subscribe(format!("{prefix}released"))
            .await
            .expect("subscribed");

        let (secs, micros): (u64, u64) = cmd(&mut conn, &["TIME"]).await;
        let first = claim(&mut conn, prefix, "a", "a/0").await;
        assert!(
            first >= secs * 1_000_000 + micros,
            "F1: seeded from server time"
        );
        assert_eq!(claim(&mut conn, prefix, "a", "b/0").await, 0, "C3");
        let term: String = cmd(&mut conn, &["HGET", "bench:{t}:terms", "a"]).await;
        assert_eq!(
            term,
            format!("{first}:a/0"),
            "L1: the hash names the holder"
        );
        let ttl: i64 = cmd(&mut conn, &["PTTL", "bench:{t}:lease:1:aa/0"]).await;
        assert!(ttl > 0 && ttl <= 30_000, "the lease expires: {ttl}");

        assert_eq!(
            revoke(&mut conn, prefix, "a", first + 1).await,
            0,
            "a stale fence"
        );
        assert_eq!(revoke(&mut conn, prefix, "a", first).await, 1, "R1");
        let second = claim(&mut conn, prefix, "a", "b/0").await;
        assert!(second > first, "F1: {second} after {first}");

        // A last fence ahead of the clock (a failover to a server whose clock is behind).
        let ahead = (secs + 3_600) * 1_000_000;
        let _: i64 = cmd(
            &mut conn,
            &["HSET", "bench:{t}:terms", "d", &format!("{ahead}:x/0")],
        )
        .await;
        assert_eq!(
            claim(&mut conn, prefix, "d", "d/0").await,
            ahead + 1,
            "F1: above the last"
        );

        let _: i64 = cmd(&mut conn, &["HSET", "bench:{t}:terms", "p:c", "1"]).await;
        assert!(claim(&mut conn, prefix, "c", "c/0").await > 0);
        let ttl: i64 = cmd(&mut conn, &["PTTL", "bench:{t}:lease:1:cc/0"]).await;
        assert_eq!(ttl, -1, "P4: a waiting pin pins the new lease");

        let mut messages = pubsub.on_message();
        let mut kinds = String::new();
        for _ in 0..5 {
            let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .expect("O1: a message for each start and end")
                .expect("the subscription is open");
            let payload: String = message.get_payload().expect("a text payload");
            kinds.push_str(&payload[..1]);
        }
        assert_eq!(
            kinds, "EVEEE",
            "O1: started, ended, started, started, started"
        );
    }
}
