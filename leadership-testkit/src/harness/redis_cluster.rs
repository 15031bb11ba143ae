//! A private Redis Cluster for tests: `redis-server` nodes with `cluster-enabled yes`,
//! joined with `CLUSTER ADDSLOTSRANGE`, `CLUSTER MEET` and `CLUSTER REPLICATE` (no
//! `redis-cli` needed), with kill -9, pause and forced failover per node.

use std::fmt;
use std::time::Duration;

use super::process::{HarnessError, wait_until};
use super::redis::RedisServer;

/// Redis Cluster's slots.
const SLOTS: u16 = 16384;
/// How long the nodes may take to agree on one cluster (gossip every 100 ms on loopback).
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A Redis Cluster of `masters` masters with `replicas` replicas each, every node a
/// [`RedisServer`] on its own free loopback port and temporary directory, killed when
/// dropped.
///
/// Nodes are numbered as started: `0..masters` are the masters (master `i` serves the `i`-th
/// equal share of the slots), then each master's replicas in turn.
///
/// ```no_run
/// use leadership_testkit::harness::RedisCluster;
/// let cluster = RedisCluster::start(3, 0).expect("redis cluster");
/// println!("{}", cluster.url()); // redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3
/// ```
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    ids: Vec<String>,
    masters: usize,
}

impl fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCluster")
            .field("ports", &self.ports())
            .field("masters", &self.masters)
            .finish_non_exhaustive()
    }
}

impl RedisCluster {
    /// Starts `masters` masters (at least 1) and `replicas` replicas of each, joins them
    /// into one cluster and waits until every node reports `cluster_state:ok` and knows
    /// every other node.
    ///
    /// # Errors
    /// [`HarnessError::MissingBinary`] without `redis-server`; [`HarnessError::NotReady`]
    /// if the nodes do not agree within 30 s.
    pub fn start(masters: usize, replicas: usize) -> Result<Self, HarnessError> {
        Self::start_with(masters, replicas, None)
    }

    /// [`RedisCluster::start`] with a TLS listener on every node (its certificate from
    /// `tls`), the cluster bus and replication over TLS; see [`RedisCluster::tls_url`]. The
    /// plain ports stay open for the harness's own commands.
    ///
    /// # Errors
    /// As [`RedisCluster::start`].
    pub fn start_tls(
        masters: usize,
        replicas: usize,
        tls: super::redis::RedisTls,
    ) -> Result<Self, HarnessError> {
        Self::start_with(masters, replicas, Some(tls))
    }

    fn start_with(
        masters: usize,
        replicas: usize,
        tls: Option<super::redis::RedisTls>,
    ) -> Result<Self, HarnessError> {
        let masters = masters.max(1);
        let total = masters * (1 + replicas);
        let mut nodes = Vec::with_capacity(total);
        for _ in 0..total {
            let mut builder = RedisServer::builder().cluster(true);
            if let Some(tls) = &tls {
                builder = builder.tls(tls.clone());
            }
            nodes.push(builder.start()?);
        }
        let ids = nodes
            .iter()
            .map(|node| node.command(&["CLUSTER", "MYID"]))
            .collect::<Result<Vec<_>, _>>()?;
        let share = usize::from(SLOTS).div_ceil(masters);
        for (i, node) in nodes.iter().take(masters).enumerate() {
            let first = i * share;
            let last = ((i + 1) * share).min(usize::from(SLOTS)) - 1;
            node.command(&[
                "CLUSTER",
                "ADDSLOTSRANGE",
                &first.to_string(),
                &last.to_string(),
            ])?;
        }
        for node in nodes.iter().skip(1) {
            let bus = node.cluster_port().ok_or_else(|| {
                HarnessError::io("joining", std::io::Error::other("not a cluster node"))
            })?;
            nodes[0].command(&[
                "CLUSTER",
                "MEET",
                "127.0.0.1",
                &node.port().to_string(),
                &bus.to_string(),
            ])?;
        }
        let cluster = RedisCluster {
            nodes,
            ids,
            masters,
        };
        // By id, not by count: a node still in the handshake shows a temporary id, and
        // `CLUSTER REPLICATE` names a master by its real one.
        cluster.wait("every node to know every other", || {
            cluster.nodes.iter().all(|node| {
                node.command(&["CLUSTER", "NODES"]).is_ok_and(|nodes| {
                    nodes.lines().count() == total
                        && cluster.ids.iter().all(|id| {
                            nodes.lines().any(|line| {
                                line.starts_with(id.as_str()) && !line.contains("handshake")
                            })
                        })
                })
            })
        })?;
        for r in 0..masters * replicas {
            let replica = masters + r;
            let master = r / replicas.max(1);
            cluster.nodes[replica].command(&["CLUSTER", "REPLICATE", &cluster.ids[master]])?;
        }
        cluster.wait_healthy()?;
        Ok(cluster)
    }

    fn wait(&self, what: &str, ready: impl FnMut() -> bool) -> Result<(), HarnessError> {
        if wait_until(JOIN_TIMEOUT, ready) {
            return Ok(());
        }
        let logs: Vec<String> = self
            .nodes
            .iter()
            .map(|node| {
                let log = std::fs::read_to_string(node.dir().join("redis.log")).unwrap_or_default();
                let tail = log.len().saturating_sub(1024);
                format!("port {}: {}", node.port(), log.get(tail..).unwrap_or(""))
            })
            .collect();
        Err(HarnessError::NotReady {
            what: format!("redis cluster ({what})"),
            waited: JOIN_TIMEOUT,
            log_tail: logs.join("\n"),
        })
    }

    /// Waits until every running node reports `cluster_state:ok` with all slots served and
    /// every replica's link to its master up.
    ///
    /// # Errors
    /// [`HarnessError::NotReady`] after 30 s.
    pub fn wait_healthy(&self) -> Result<(), HarnessError> {
        self.wait("cluster_state:ok on every node", || {
            self.nodes.iter().all(|node| {
                let Ok(info) = node.command(&["CLUSTER", "INFO"]) else {
                    return true; // a killed or paused node
                };
                if !info.contains("cluster_state:ok") || !info.contains("cluster_slots_ok:16384") {
                    return false;
                }
                // A replica counts once its link to its master is up.
                node.command(&["INFO", "replication"])
                    .is_ok_and(|replication| {
                        !replication.contains("role:slave")
                            || replication.contains("master_link_status:up")
                    })
            })
        })
    }

    /// `redis+cluster://127.0.0.1:P,…` with every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// `rediss+cluster://localhost:T1,localhost:T2,…` (every node's TLS port) for a cluster
    /// started with [`RedisCluster::start_tls`]; `None` otherwise.
    pub fn tls_url(&self) -> Option<String> {
        let seeds = self
            .nodes
            .iter()
            .map(|node| node.tls_port().map(|port| format!("localhost:{port}")))
            .collect::<Option<Vec<String>>>()?;
        Some(format!("rediss+cluster://{}", seeds.join(",")))
    }

    /// The nodes' ports, in node order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// Node `i` (see the type's docs for the numbering).
    ///
    /// # Panics
    /// If there is no node `i` (a test's mistake, not the server's).
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// Every node.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Node `i`'s cluster node id.
    ///
    /// # Panics
    /// If there is no node `i`.
    pub fn node_id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`, asked of any running node).
    ///
    /// # Errors
    /// If no node answers.
    pub fn slot_of(&self, key: &str) -> Result<u16, HarnessError> {
        let reply = self.any_command(&["CLUSTER", "KEYSLOT", key])?;
        reply.parse().map_err(|_| {
            HarnessError::io(
                "CLUSTER KEYSLOT",
                std::io::Error::other(format!("not a slot: {reply}")),
            )
        })
    }

    /// The node that serves `slot` now: of the running masters that say they serve it
    /// themselves (the other nodes may not have heard of a failover yet), the one with the
    /// highest config epoch (a demoted master may still claim it for a moment).
    ///
    /// # Errors
    /// If no node answers or none serves the slot.
    pub fn master_of(&self, slot: u16) -> Result<usize, HarnessError> {
        let mut best: Option<(u64, usize)> = None;
        for node in &self.nodes {
            let Ok(nodes) = node.command(&["CLUSTER", "NODES"]) else {
                continue;
            };
            for line in nodes.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2).copied().unwrap_or("");
                if fields.len() < 9 || !flags.contains("myself") || !flags.contains("master") {
                    continue;
                }
                let serves = fields[8..].iter().any(|range| {
                    let (first, last) = range.split_once('-').unwrap_or((range, range));
                    matches!(
                        (first.parse::<u16>(), last.parse::<u16>()),
                        (Ok(first), Ok(last)) if (first..=last).contains(&slot)
                    )
                });
                if serves && let Some(i) = self.ids.iter().position(|id| id == fields[0]) {
                    let epoch = fields[6].parse().unwrap_or(0);
                    if best.is_none_or(|(e, _)| epoch > e) {
                        best = Some((epoch, i));
                    }
                }
            }
        }
        if let Some((_, i)) = best {
            return Ok(i);
        }
        Err(HarnessError::io(
            "finding a slot's master",
            std::io::Error::other(format!("no running node serves slot {slot}")),
        ))
    }

    fn any_command(&self, args: &[&str]) -> Result<String, HarnessError> {
        let mut last = None;
        for node in &self.nodes {
            match node.command(args) {
                Ok(reply) => return Ok(reply),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            HarnessError::io("redis cluster", std::io::Error::other("no nodes"))
        }))
    }

    /// SIGKILL node `i`. Its replica (if any) is promoted by the cluster after the node
    /// timeout (1 s); see [`RedisCluster::wait_healthy`].
    ///
    /// # Errors
    /// If the process cannot be killed.
    pub fn kill9(&mut self, i: usize) -> Result<(), HarnessError> {
        self.nodes[i].kill9()
    }

    /// Starts node `i` again after [`RedisCluster::kill9`], on its port and data (its
    /// `nodes.conf` keeps its identity, so it rejoins the cluster).
    ///
    /// # Errors
    /// If it cannot be started or does not become ready.
    pub fn start_again(&mut self, i: usize) -> Result<(), HarnessError> {
        self.nodes[i].start_again()
    }

    /// SIGSTOP node `i`.
    ///
    /// # Errors
    /// If it cannot be signalled.
    pub fn pause(&self, i: usize) -> Result<(), HarnessError> {
        self.nodes[i].pause()
    }

    /// SIGCONT node `i`.
    ///
    /// # Errors
    /// If it cannot be signalled.
    pub fn resume(&self, i: usize) -> Result<(), HarnessError> {
        self.nodes[i].resume()
    }

    /// `CLUSTER FAILOVER` on replica `replica`: it takes over its master's slots in a
    /// coordinated handover (no writes lost); waits until it reports itself a master.
    ///
    /// # Errors
    /// If the node refuses or is not a master within 30 s.
    pub fn failover(&self, replica: usize) -> Result<(), HarnessError> {
        self.nodes[replica].command(&["CLUSTER", "FAILOVER"])?;
        self.wait("the forced failover", || {
            self.nodes[replica]
                .command(&["INFO", "replication"])
                .is_ok_and(|info| info.contains("role:master"))
        })?;
        self.wait_healthy()
    }

    /// Moves `slot` from the node that serves it to node `to` the way `redis-cli --cluster
    /// reshard` does: `SETSLOT IMPORTING`/`MIGRATING`, `MIGRATE` of every key in batches,
    /// then `SETSLOT NODE` on both and on every other master. Clients meet `ASK` and `MOVED`
    /// redirections meanwhile.
    ///
    /// # Errors
    /// If a node refuses a step.
    pub fn migrate_slot(&self, slot: u16, to: usize) -> Result<(), HarnessError> {
        let from = self.master_of(slot)?;
        if from == to {
            return Ok(());
        }
        let slot_arg = slot.to_string();
        let (source, target) = (&self.nodes[from], &self.nodes[to]);
        target.command(&[
            "CLUSTER",
            "SETSLOT",
            &slot_arg,
            "IMPORTING",
            &self.ids[from],
        ])?;
        source.command(&["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &self.ids[to]])?;
        loop {
            let keys = source.command(&["CLUSTER", "GETKEYSINSLOT", &slot_arg, "100"])?;
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = target.port().to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            source.command(&args)?;
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if i == from || i == to {
                continue;
            }
            // Best effort on the others (a killed node learns it by gossip).
            let _ = node.command(&["CLUSTER", "SETSLOT", &slot_arg, "NODE", &self.ids[to]]);
        }
        target.command(&["CLUSTER", "SETSLOT", &slot_arg, "NODE", &self.ids[to]])?;
        source.command(&["CLUSTER", "SETSLOT", &slot_arg, "NODE", &self.ids[to]])?;
        Ok(())
    }
}
