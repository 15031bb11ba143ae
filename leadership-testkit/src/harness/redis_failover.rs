//! A replicated Redis deployment that fails over: Sentinel or a cluster, behind one face,
//! so a fault schedule (the safety matrix, the failover example) kills "the primary of this
//! namespace" without caring which.

use std::time::{Duration, Instant};

use super::process::{HarnessError, wait_until};
use super::redis::RedisServer;
use super::redis_cluster::RedisCluster;
use super::redis_sentinel::RedisSentinel;

/// How long a cluster may take to promote a replica (node timeout 1 s, then an election) or
/// a restarted node to sync again.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(40);

/// A Sentinel setup (a primary, a replica, three sentinels) or a Redis Cluster of masters
/// with one replica each, killed when dropped.
///
/// ```no_run
/// use leadership_testkit::harness::RedisFailover;
/// let mut setup = RedisFailover::sentinel("leaders").expect("sentinel setup");
/// let primary = setup.primary_for("{ns}:").expect("a primary");
/// setup.kill9(primary).expect("kill -9");
/// setup.wait_for_failover("{ns}:", primary).expect("a replica promoted");
/// setup.restore(primary).expect("the former primary rejoins as a replica");
/// ```
#[derive(Debug)]
pub enum RedisFailover {
    /// [`RedisSentinel::start`].
    Sentinel(RedisSentinel),
    /// [`RedisCluster::start`] with one replica per master.
    Cluster(RedisCluster),
}

impl RedisFailover {
    /// A Sentinel setup monitoring master `name`.
    ///
    /// # Errors
    /// As [`RedisSentinel::start`].
    pub fn sentinel(name: &str) -> Result<Self, HarnessError> {
        RedisSentinel::start(name).map(RedisFailover::Sentinel)
    }

    /// A cluster of `masters` masters with one replica each.
    ///
    /// # Errors
    /// As [`RedisCluster::start`].
    pub fn cluster(masters: usize) -> Result<Self, HarnessError> {
        RedisCluster::start(masters, 1).map(RedisFailover::Cluster)
    }

    /// The store URL: `redis+sentinel://…/NAME` or `redis+cluster://…`.
    pub fn url(&self) -> String {
        match self {
            RedisFailover::Sentinel(setup) => setup.url(),
            RedisFailover::Cluster(cluster) => cluster.url(),
        }
    }

    /// `"sentinel"` or `"cluster"`.
    pub fn kind(&self) -> &'static str {
        match self {
            RedisFailover::Sentinel(_) => "sentinel",
            RedisFailover::Cluster(_) => "cluster",
        }
    }

    /// The data server (its index) that holds the keys under `key_prefix` as a primary now:
    /// behind Sentinel the primary, in a cluster the master of the prefix's slot.
    ///
    /// # Errors
    /// If no server answers as that primary.
    pub fn primary_for(&self, key_prefix: &str) -> Result<usize, HarnessError> {
        match self {
            RedisFailover::Sentinel(setup) => setup.primary().ok_or_else(|| {
                HarnessError::io(
                    "asking the sentinels",
                    std::io::Error::other("no sentinel names a primary"),
                )
            }),
            RedisFailover::Cluster(cluster) => cluster.master_of(cluster.slot_of(key_prefix)?),
        }
    }

    /// Data server `i`.
    ///
    /// # Panics
    /// If there is no server `i` (a test's mistake).
    pub fn server(&self, i: usize) -> &RedisServer {
        match self {
            RedisFailover::Sentinel(setup) => setup.server(i),
            RedisFailover::Cluster(cluster) => cluster.node(i),
        }
    }

    /// SIGKILL data server `i`.
    ///
    /// # Errors
    /// If the process cannot be killed.
    pub fn kill9(&mut self, i: usize) -> Result<(), HarnessError> {
        match self {
            RedisFailover::Sentinel(setup) => setup.kill9(i),
            RedisFailover::Cluster(cluster) => cluster.kill9(i),
        }
    }

    /// Waits until a server other than `old` holds the keys under `key_prefix` as a
    /// primary (the sentinels or the cluster promoted its replica).
    ///
    /// # Errors
    /// If that does not happen in time (30 s behind Sentinel, 40 s in a cluster).
    pub fn wait_for_failover(&self, key_prefix: &str, old: usize) -> Result<(), HarnessError> {
        match self {
            RedisFailover::Sentinel(setup) => {
                setup.wait_for_failover(Some(setup.server(old).port()))
            }
            RedisFailover::Cluster(cluster) => {
                let slot = cluster.slot_of(key_prefix)?;
                let started = Instant::now();
                let promoted = wait_until(CLUSTER_TIMEOUT, || {
                    cluster.master_of(slot).is_ok_and(|node| node != old)
                });
                if promoted {
                    Ok(())
                } else {
                    Err(HarnessError::NotReady {
                        what: format!("the cluster to promote a replica for slot {slot}"),
                        waited: started.elapsed(),
                        log_tail: String::new(),
                    })
                }
            }
        }
    }

    /// Starts the former primary `i` again (on its port and data) and waits until it has
    /// rejoined as an in-sync replica.
    ///
    /// # Errors
    /// If it cannot be started or does not sync in time.
    pub fn restore(&mut self, i: usize) -> Result<(), HarnessError> {
        match self {
            RedisFailover::Sentinel(setup) => {
                setup.start_again(i)?;
                setup.wait_in_sync()
            }
            RedisFailover::Cluster(cluster) => {
                cluster.start_again(i)?;
                cluster.wait_healthy()?;
                let node = cluster.node(i);
                let synced = wait_until(CLUSTER_TIMEOUT, || {
                    node.command(&["INFO", "replication"]).is_ok_and(|info| {
                        info.contains("role:slave") && info.contains("master_link_status:up")
                    })
                });
                if synced {
                    Ok(())
                } else {
                    Err(HarnessError::NotReady {
                        what: format!("the former master on port {} to sync", node.port()),
                        waited: CLUSTER_TIMEOUT,
                        log_tail: String::new(),
                    })
                }
            }
        }
    }
}
