//! A private Redis Sentinel setup for tests: a primary, a replica and three sentinels
//! (`redis-server CONF --sentinel`, the same binary), with kill -9, pause and forced
//! failover.

use std::ffi::OsString;
use std::fmt;
use std::time::Duration;

use super::process::{HarnessError, ServerProcess, find_binary, free_port, wait_until};
use super::redis::{REDIS_SERVER_ENV, RedisServer, RedisTls, RespConnection};

const INSTALL: &str = "sudo apt-get install redis-server";
/// How long the sentinels may take to find the replica and each other (hello messages every
/// 2 s, the replica through the primary's INFO every 10 s at worst).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(40);
/// How long a failover may take: the primary is seen down after 1 s, then an election.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// One `redis-server --sentinel` process.
struct Sentinel {
    process: ServerProcess,
    port: u16,
    tls_port: Option<u16>,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    fn start(
        binary: &std::path::Path,
        name: &str,
        primary_port: u16,
        tls: Option<&RedisTls>,
    ) -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("leadership-sentinel-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a temporary directory", e))?;
        let mut last_error = None;
        for _ in 0..3 {
            let port = free_port()?;
            let tls_port = match tls {
                Some(_) => Some(free_port()?),
                None => None,
            };
            // The sentinel rewrites its configuration file as it learns: it must be writable.
            let mut config = format!(
                "bind 127.0.0.1\nport {port}\ndir {dir}\ndaemonize no\nprotected-mode no\n\
                 logfile \"\"\n\
                 sentinel monitor {name} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 5000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir = dir.path().display(),
            );
            if let (Some(tls), Some(tls_port)) = (tls, tls_port) {
                // Its own TLS listener, and TLS to the data servers (`tls-replication`).
                config.push_str(&tls.directives(tls_port));
            }
            let path = dir.path().join("sentinel.conf");
            std::fs::write(&path, config)
                .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))?;
            let mut process = ServerProcess::spawn_in(
                format!("redis sentinel on port {port}"),
                binary,
                vec![OsString::from(&path), OsString::from("--sentinel")],
                dir.path(),
                "sentinel.log",
            )?;
            let pid = process.pid();
            let ready = wait_until(Duration::from_secs(10), || {
                if !process.is_running() {
                    return true;
                }
                call(port, &["INFO", "server"]).is_ok_and(|info| {
                    info.lines()
                        .find_map(|l| l.strip_prefix("process_id:"))
                        .and_then(|p| p.trim().parse::<u32>().ok())
                        == pid
                })
            });
            if ready && process.is_running() {
                return Ok(Sentinel {
                    process,
                    port,
                    tls_port,
                    _dir: dir,
                });
            }
            last_error = Some(process.not_ready(Duration::from_secs(10)));
            let _ = process.kill9();
        }
        Err(last_error.unwrap_or_else(|| HarnessError::NotReady {
            what: "redis sentinel".into(),
            waited: Duration::from_secs(10),
            log_tail: String::new(),
        }))
    }
}

fn call(port: u16, args: &[&str]) -> Result<String, HarnessError> {
    RespConnection::open(port)?.call(args)
}

/// A Sentinel setup: a primary and a replica ([`RedisServer`]s) monitored under one master
/// name by three sentinels (quorum 2, the primary judged down after 1 s), each on its own
/// free loopback port and temporary directory, killed when dropped.
///
/// ```no_run
/// use leadership_testkit::harness::RedisSentinel;
/// let setup = RedisSentinel::start("leaders").expect("redis sentinel");
/// println!("{}", setup.url()); // redis+sentinel://127.0.0.1:S1,…/leaders
/// ```
pub struct RedisSentinel {
    name: String,
    servers: Vec<RedisServer>,
    sentinels: Vec<Sentinel>,
}

impl fmt::Debug for RedisSentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSentinel")
            .field("name", &self.name)
            .field("servers", &self.servers)
            .field(
                "sentinels",
                &self.sentinels.iter().map(|s| s.port).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl RedisSentinel {
    /// Starts the primary, its replica and three sentinels monitoring it as `name`, and
    /// waits until the replica is in sync and every sentinel knows the replica and the two
    /// other sentinels (so that a failover can happen).
    ///
    /// # Errors
    /// [`HarnessError::MissingBinary`] without `redis-server`; [`HarnessError::NotReady`]
    /// if the setup does not settle within 40 s.
    pub fn start(name: &str) -> Result<Self, HarnessError> {
        Self::start_with(name, None)
    }

    /// [`RedisSentinel::start`] with TLS everywhere: the data servers and the sentinels
    /// each get a TLS listener (their certificate from `tls`), replication goes over TLS,
    /// and the sentinels monitor the primary's TLS port, so they name TLS ports to clients;
    /// see [`RedisSentinel::tls_url`]. The plain ports stay open for the harness's own
    /// commands, and [`RedisSentinel::primary_port`] still reports the plain one.
    ///
    /// # Errors
    /// As [`RedisSentinel::start`].
    pub fn start_tls(name: &str, tls: RedisTls) -> Result<Self, HarnessError> {
        Self::start_with(name, Some(tls))
    }

    fn start_with(name: &str, tls: Option<RedisTls>) -> Result<Self, HarnessError> {
        let binary = find_binary("redis-server", REDIS_SERVER_ENV, INSTALL)?;
        let builder = || {
            let builder = RedisServer::builder();
            match &tls {
                Some(tls) => builder.tls(tls.clone()),
                None => builder,
            }
        };
        let primary = builder().start()?;
        // Over TLS, replicas and sentinels speak to the primary's TLS port.
        let primary_port = primary.tls_port().unwrap_or(primary.port());
        let replica = builder()
            .config("replicaof", format!("127.0.0.1 {primary_port}"))
            .start()?;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(Sentinel::start(&binary, name, primary_port, tls.as_ref())?);
        }
        let setup = RedisSentinel {
            name: name.to_owned(),
            servers: vec![primary, replica],
            sentinels,
        };
        setup.wait(
            SETTLE_TIMEOUT,
            "the sentinels to find the replica and each other",
            || {
                setup.replicas_in_sync()
                    && setup.sentinels.iter().all(|s| {
                        let replicas = call(s.port, &["SENTINEL", "REPLICAS", &setup.name]);
                        let others = call(s.port, &["SENTINEL", "SENTINELS", &setup.name]);
                        replicas.is_ok_and(|r| r.contains("127.0.0.1"))
                            && others.is_ok_and(|o| o.matches("127.0.0.1").count() >= 2)
                    })
            },
        )?;
        Ok(setup)
    }

    fn wait(
        &self,
        timeout: Duration,
        what: &str,
        ready: impl FnMut() -> bool,
    ) -> Result<(), HarnessError> {
        if wait_until(timeout, ready) {
            return Ok(());
        }
        let tail = self
            .sentinels
            .first()
            .map(|s| s.process.log_tail(2048))
            .unwrap_or_default();
        Err(HarnessError::NotReady {
            what: format!("redis sentinel setup ({what})"),
            waited: timeout,
            log_tail: tail,
        })
    }

    /// Every running replica's link to the primary is up.
    fn replicas_in_sync(&self) -> bool {
        let primary = self.primary_port();
        self.servers
            .iter()
            .filter(|s| Some(s.port()) != primary)
            .all(|s| {
                s.command(&["INFO", "replication"])
                    .map_or(true, |info| info.contains("master_link_status:up"))
            })
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/NAME`.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{}", sentinels.join(","), self.name)
    }

    /// `rediss+sentinel://localhost:T1,localhost:T2,localhost:T3/NAME` (the sentinels' TLS
    /// ports) for a setup started with [`RedisSentinel::start_tls`]; `None` otherwise.
    pub fn tls_url(&self) -> Option<String> {
        let sentinels = self
            .sentinels
            .iter()
            .map(|s| s.tls_port.map(|port| format!("localhost:{port}")))
            .collect::<Option<Vec<String>>>()?;
        Some(format!(
            "rediss+sentinel://{}/{}",
            sentinels.join(","),
            self.name
        ))
    }

    /// The master name the sentinels monitor.
    pub fn master_name(&self) -> &str {
        &self.name
    }

    /// The data servers: index 0 started as the primary, 1 as its replica.
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    /// Data server `i` (0 started as the primary).
    ///
    /// # Panics
    /// If there is no server `i` (a test's mistake).
    pub fn server(&self, i: usize) -> &RedisServer {
        &self.servers[i]
    }

    /// The sentinels' ports.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// The primary's plain port, as the first answering sentinel reports it (over TLS the
    /// sentinels name its TLS port; this is the same server's plain one).
    pub fn primary_port(&self) -> Option<u16> {
        self.primary().map(|i| self.servers[i].port())
    }

    /// The index of the data server that is the primary now.
    pub fn primary(&self) -> Option<usize> {
        let port: u16 = self.sentinels.iter().find_map(|s| {
            let reply = call(s.port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.name]).ok()?;
            reply.lines().nth(1)?.trim().parse().ok()
        })?;
        self.servers.iter().position(|s| s.listens_on(port))
    }

    /// SIGKILL data server `i`; if it was the primary, the sentinels promote the replica
    /// after about a second (see [`RedisSentinel::wait_for_failover`]).
    ///
    /// # Errors
    /// If the process cannot be killed.
    pub fn kill9(&mut self, i: usize) -> Result<(), HarnessError> {
        self.servers[i].kill9()
    }

    /// Starts data server `i` again after [`RedisSentinel::kill9`]. The sentinels make a
    /// former primary a replica of the current one.
    ///
    /// # Errors
    /// If it cannot be started or does not become ready.
    pub fn start_again(&mut self, i: usize) -> Result<(), HarnessError> {
        self.servers[i].start_again()
    }

    /// SIGSTOP data server `i`.
    ///
    /// # Errors
    /// If it cannot be signalled.
    pub fn pause(&self, i: usize) -> Result<(), HarnessError> {
        self.servers[i].pause()
    }

    /// SIGCONT data server `i`.
    ///
    /// # Errors
    /// If it cannot be signalled.
    pub fn resume(&self, i: usize) -> Result<(), HarnessError> {
        self.servers[i].resume()
    }

    /// `SENTINEL FAILOVER`: promotes the replica without agreement from the others, then
    /// waits until the sentinels name a new primary that reports itself a master and its
    /// replica is in sync again.
    ///
    /// # Errors
    /// If the sentinel refuses or the failover does not finish within 30 s.
    pub fn failover(&self) -> Result<(), HarnessError> {
        let old = self.primary_port();
        let sentinel = self.sentinels.first().map_or(0, |s| s.port);
        call(sentinel, &["SENTINEL", "FAILOVER", &self.name])?;
        self.wait_for_failover(old)
    }

    /// Waits until the sentinels name a primary other than the one on `old_port` (if any),
    /// which reports itself a master, and the running replicas are in sync with it.
    ///
    /// # Errors
    /// If that does not happen within 30 s.
    pub fn wait_for_failover(&self, old_port: Option<u16>) -> Result<(), HarnessError> {
        self.wait(FAILOVER_TIMEOUT, "the failover", || {
            let Some(port) = self.primary_port() else {
                return false;
            };
            if Some(port) == old_port {
                return false;
            }
            self.servers.iter().any(|s| {
                s.port() == port
                    && s.command(&["INFO", "replication"])
                        .is_ok_and(|info| info.contains("role:master"))
            })
        })
    }

    /// Waits until every running replica is in sync with the primary (after a former
    /// primary was started again).
    ///
    /// # Errors
    /// If that does not happen within 40 s.
    pub fn wait_in_sync(&self) -> Result<(), HarnessError> {
        self.wait(SETTLE_TIMEOUT, "the replicas to sync", || {
            self.replicas_in_sync()
        })
    }
}
