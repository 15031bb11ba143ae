//! What the runner needs from each store: handles, the raw-store baseline, sizes and targets.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use leadership_core::Leadership;

/// A runner error: a message for the table (the runner exits non-zero on one).
pub type BenchError = String;
/// A runner result.
pub type BenchResult<T> = Result<T, BenchError>;

/// The cheapest write and read of a store, from the same client crate the store uses.
///
/// One value per scenario, so the variants' sizes do not matter; boxing the large one would
/// add an allocation to every cloned etcd baseline call that the store's calls do not pay.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Baseline {
    /// The memory store's baseline: a `Mutex<HashMap>`.
    Map(Arc<Mutex<HashMap<String, String>>>),
    /// Redis `SET` / `GET` over the redis crate's `ConnectionManager`, as the store uses.
    Redis(redis::aio::ConnectionManager),
    /// The same through the redis crate's cluster client, as a `redis+cluster://` store uses.
    RedisCluster(redis::cluster_async::ClusterConnection),
    /// etcd `put` / range over the store's own etcd-client.
    Etcd(crate::etcd_store::KvClient),
}

impl Baseline {
    /// A new, empty `Mutex<HashMap>` baseline.
    pub fn map() -> Baseline {
        Baseline::Map(Arc::default())
    }

    /// What [`Baseline::write`] does, for the table.
    pub fn write_label(&self) -> &'static str {
        match self {
            Baseline::Map(_) => "HashMap insert",
            Baseline::Redis(_) | Baseline::RedisCluster(_) => "SET",
            Baseline::Etcd(_) => "etcd put",
        }
    }

    /// What [`Baseline::read`] does, for the table.
    pub fn read_label(&self) -> &'static str {
        match self {
            Baseline::Map(_) => "HashMap get",
            Baseline::Redis(_) | Baseline::RedisCluster(_) => "GET",
            Baseline::Etcd(_) => "etcd range",
        }
    }

    /// Writes `value` at `key`; `false` on error.
    pub async fn write(&self, key: &str, value: &str) -> bool {
        match self {
            Baseline::Map(map) => {
                let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
                black_box(map.insert(key.to_owned(), value.to_owned()));
                true
            }
            Baseline::Redis(_) | Baseline::RedisCluster(_) => {
                let mut set = redis::cmd("SET");
                set.arg(key).arg(value);
                self.redis::<()>(&set).await
            }
            Baseline::Etcd(kv) => kv.clone().put(key, value, None).await.is_ok(),
        }
    }

    /// What [`Baseline::prepare_expiring`] writes, for the table.
    pub fn expiring_label(&self) -> &'static str {
        match self {
            Baseline::Redis(_) | Baseline::RedisCluster(_) => "SET PX",
            _ => self.write_label(),
        }
    }

    /// A write of `value` at `key` that expires after `ttl`, a lease in its raw form (Redis
    /// `SET key value PX ms`), prepared once per key as the library prepares each lease's
    /// renewal commands; the memory and etcd baselines write as [`Baseline::write`] does.
    pub fn prepare_expiring(&self, key: &str, value: &str, ttl: Duration) -> Prepared {
        match self {
            Baseline::Redis(_) | Baseline::RedisCluster(_) => {
                let mut set = redis::cmd("SET");
                set.arg(key)
                    .arg(value)
                    .arg("PX")
                    .arg(ttl.as_millis() as u64);
                Prepared::Redis(Arc::new(set))
            }
            _ => Prepared::Write(key.to_owned(), value.to_owned()),
        }
    }

    /// Sends a prepared write; `false` on error.
    pub async fn send(&self, prepared: &Prepared) -> bool {
        match (self, prepared) {
            (Baseline::Redis(_) | Baseline::RedisCluster(_), Prepared::Redis(set)) => {
                self.redis::<()>(set).await
            }
            (_, Prepared::Write(key, value)) => self.write(key, value).await,
            _ => false,
        }
    }

    /// Reads `key`; `false` on error.
    pub async fn read(&self, key: &str) -> bool {
        match self {
            Baseline::Map(map) => {
                let map = map.lock().unwrap_or_else(PoisonError::into_inner);
                black_box(map.get(key).map(String::len));
                true
            }
            Baseline::Redis(_) | Baseline::RedisCluster(_) => {
                let mut get = redis::cmd("GET");
                get.arg(key);
                self.redis::<Option<String>>(&get).await
            }
            Baseline::Etcd(kv) => kv.clone().get(key, None).await.is_ok(),
        }
    }
}

impl Baseline {
    /// Sends `cmd` over the Redis or cluster connection; `false` on error (or on another
    /// baseline).
    async fn redis<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> bool {
        match self {
            Baseline::Redis(conn) => cmd.query_async::<T>(&mut conn.clone()).await.is_ok(),
            Baseline::RedisCluster(conn) => cmd.query_async::<T>(&mut conn.clone()).await.is_ok(),
            _ => false,
        }
    }
}

/// A baseline write prepared once ([`Baseline::prepare_expiring`]).
pub enum Prepared {
    /// Redis's command, built once.
    Redis(Arc<redis::Cmd>),
    /// Key and value for [`Baseline::write`].
    Write(String, String),
}

/// The targets for one store.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Minimum renewal throughput ÷ baseline write throughput.
    pub renew_ratio: f64,
    /// Minimum first-claim throughput ÷ baseline write throughput, where the issue sets one.
    pub first_claim_ratio: Option<f64>,
    /// Minimum check throughput ÷ baseline read throughput.
    pub check_ratio: f64,
    /// How the ratio targets read in the table (memory's are "within 3×").
    pub ratio_text: fn(f64) -> String,
    /// Maximum p99 of the handover after a revoke.
    pub handover_revoke_p99: Duration,
    /// Maximum p99 of the handover after a crash, past the lease's nominal expiry.
    pub handover_crash_p99: Duration,
}

/// A store under benchmark.
#[async_trait]
pub trait Bench: Send + Sync {
    /// `memory`, `redis` or `etcd`.
    fn name(&self) -> &'static str;

    /// A new handle on `namespace`; for a remote store a new client connection, as another
    /// process would have.
    async fn open(&self, namespace: &str) -> BenchResult<Arc<dyn Leadership>>;

    /// The raw-store baseline, over the same client crate (and a new connection).
    async fn baseline(&self) -> BenchResult<Baseline>;

    /// The targets.
    fn targets(&self) -> Targets;

    /// The lease the crashing holder claims before it dies (handover after a crash).
    fn crash_lease(&self) -> Duration;

    /// How long to let a waiter settle into its blocking wait before the holder lets go.
    fn settle(&self) -> Duration;

    /// The trackers' guarantee in the scale scenario.
    fn scale_guarantee(&self) -> Duration;

    /// The target of the real-cadence renewal row (baseline CPU per operation ÷ the
    /// library's), for the stores that run it.
    fn cadence_renew_ratio(&self) -> Option<f64> {
        None
    }

    /// The store's server process, when the runner started it: its CPU time is reported
    /// beside each throughput row.
    fn server_pid(&self) -> Option<u32> {
        None
    }

    /// What the server says about its subscriptions (Redis: pub/sub connections and their
    /// channels; etcd: watch streams and watchers), for the idle-watchers row. `None` for
    /// stores without a server.
    async fn server_subscriptions(&self) -> Option<String> {
        None
    }

    /// Extra arguments a child runner needs to reach the same store (server URLs).
    fn child_args(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A namespace no earlier run used, so runs against a long-lived server never collide.
pub fn fresh_namespace(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("bench-{tag}-{}-{nanos:x}", std::process::id())
}
