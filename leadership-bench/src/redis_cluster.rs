//! Redis Cluster (issue 18.6): renewal and token check with the namespaces spread evenly over
//! three masters, against `SET` and `GET` through the same cluster client the store uses.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use leadership_core::Leadership;
use leadership_redis::RedisStore;
use leadership_testkit::harness::RedisCluster;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;

use crate::report::Row;
use crate::scenarios::{self, Sizes};
use crate::target::{Baseline, Bench, BenchResult, Targets, fresh_namespace};

/// Masters of the benchmarked cluster (no replicas: these rows are about routing, not
/// failover).
const MASTERS: usize = 3;
/// Namespaces per master: the applications are spread over `MASTERS × PER_MASTER`
/// namespace handles of one connection.
const PER_MASTER: usize = 4;
/// The operation timeout of the store, and the cluster client's timeouts derived from it
/// as the store derives them.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A private three-master cluster under benchmark.
pub struct RedisClusterBench {
    cluster: RedisCluster,
}

impl RedisClusterBench {
    /// Starts three masters through the testkit harness and joins them.
    pub fn start() -> BenchResult<RedisClusterBench> {
        let cluster = RedisCluster::start(MASTERS, 0)
            .map_err(|e| format!("cannot start a {MASTERS}-master Redis Cluster: {e}"))?;
        Ok(RedisClusterBench { cluster })
    }

    /// A cluster connection built as the store builds its own (same timeouts and retries).
    async fn connection(&self) -> BenchResult<ClusterConnection> {
        let nodes: Vec<String> = self
            .cluster
            .ports()
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect();
        ClusterClientBuilder::new(nodes)
            .connection_timeout(TIMEOUT)
            .response_timeout((TIMEOUT / 4).max(Duration::from_millis(200)))
            .retries(4)
            .min_retry_wait(20)
            .max_retry_wait(500)
            .build()
            .map_err(|e| format!("cluster client: {e}"))?
            .get_async_connection()
            .await
            .map_err(|e| format!("cluster connection: {e}"))
    }

    async fn store(&self, namespace: &str) -> BenchResult<RedisStore> {
        RedisStore::builder(&self.cluster.url())
            .map_err(|e| format!("redis cluster store: {e}"))?
            .namespace(namespace)
            .operation_timeout(TIMEOUT)
            .connect()
            .await
            .map_err(|e| format!("redis cluster store: {e}"))
    }

    /// `PER_MASTER` namespace handles per master, all over one connection (S3): fresh
    /// namespaces are tried until each master serves as many as the others.
    async fn spread(&self, tag: &str) -> BenchResult<Vec<Arc<dyn Leadership>>> {
        let base = self.store(&fresh_namespace(tag)).await?;
        let mut per_master: Vec<Vec<Arc<dyn Leadership>>> = vec![Vec::new(); MASTERS];
        for i in 0..1_000 {
            if per_master.iter().all(|handles| handles.len() == PER_MASTER) {
                break;
            }
            let handle = base.namespace(&format!("{}-{i}", base.namespace_name()));
            let slot = self
                .cluster
                .slot_of(handle.key_prefix())
                .map_err(|e| format!("CLUSTER KEYSLOT: {e}"))?;
            let master = self
                .cluster
                .master_of(slot)
                .map_err(|e| format!("the master of slot {slot}: {e}"))?;
            if let Some(handles) = per_master.get_mut(master)
                && handles.len() < PER_MASTER
            {
                handles.push(Arc::new(handle));
            }
        }
        if per_master.iter().any(|handles| handles.len() < PER_MASTER) {
            return Err("could not spread namespaces over every master".to_owned());
        }
        Ok(per_master.into_iter().flatten().collect())
    }
}

#[async_trait]
impl Bench for RedisClusterBench {
    fn name(&self) -> &'static str {
        "redis cluster"
    }

    async fn open(&self, namespace: &str) -> BenchResult<Arc<dyn Leadership>> {
        Ok(Arc::new(self.store(namespace).await?))
    }

    async fn baseline(&self) -> BenchResult<Baseline> {
        Ok(Baseline::RedisCluster(self.connection().await?))
    }

    fn targets(&self) -> Targets {
        crate::redis_store::TARGETS
    }

    fn crash_lease(&self) -> Duration {
        Duration::from_millis(300)
    }

    fn settle(&self) -> Duration {
        Duration::from_millis(30)
    }

    fn scale_guarantee(&self) -> Duration {
        Duration::from_secs(2)
    }
}

/// The holder renews its lease, over [`scenarios::APPLICATIONS`] applications spread over
/// every master, against `SET` of as many keys (which the cluster spreads by their slots).
pub async fn renewal(bench: &RedisClusterBench, sizes: Sizes, callers: usize) -> BenchResult<Row> {
    let handles = bench.spread("crenew").await?;
    let ns = fresh_namespace("crenew");
    let row = scenarios::renewal_over(
        bench,
        sizes,
        callers,
        &handles,
        &ns,
        "renewal over 3 masters",
    );
    Ok(note_spread(row.await?))
}

/// A token check, over the same spread, against `GET`.
pub async fn check(bench: &RedisClusterBench, sizes: Sizes, callers: usize) -> BenchResult<Row> {
    let handles = bench.spread("ccheck").await?;
    let ns = fresh_namespace("ccheck");
    let row = scenarios::check_over(
        bench,
        sizes,
        callers,
        false,
        &handles,
        &ns,
        "token check over 3 masters",
    );
    Ok(note_spread(row.await?))
}

fn note_spread(mut row: Row) -> Row {
    let spread = format!(
        "{} namespaces of one connection, {PER_MASTER} on each of {MASTERS} masters",
        MASTERS * PER_MASTER
    );
    row.note = Some(match row.note.take() {
        Some(note) => format!("{spread}; {note}"),
        None => spread,
    });
    row
}
