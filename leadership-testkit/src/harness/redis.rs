//! A private `redis-server` for tests.

use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process::{HarnessError, ServerProcess, find_binary, free_port, wait_until};

/// The variable that overrides where `redis-server` is found.
pub const REDIS_SERVER_ENV: &str = "LEADERSHIP_REDIS_SERVER";

const INSTALL: &str = "sudo apt-get install redis-server";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Certificate files for a TLS listener (PEM).
#[derive(Debug, Clone)]
pub struct RedisTls {
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// The CA that signed client certificates (redis requires one even when clients are not
    /// asked for certificates).
    pub ca: PathBuf,
}

impl RedisTls {
    /// The `redis.conf` (or `sentinel.conf`) lines of a TLS listener on `port` with these
    /// files, clients not asked for certificates, and replication (a sentinel's links to the
    /// servers, too) over TLS.
    pub(crate) fn directives(&self, port: u16) -> String {
        format!(
            "tls-port {port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
             tls-auth-clients no\ntls-replication yes\n",
            self.cert.display(),
            self.key.display(),
            self.ca.display()
        )
    }
}

/// Options for [`RedisServer`]; start with [`RedisServer::builder`].
#[derive(Clone, Default)]
pub struct RedisServerBuilder {
    aof: bool,
    requirepass: Option<String>,
    acl_users: Vec<(String, String)>,
    tls: Option<RedisTls>,
    cluster: bool,
    extra: Vec<(String, String)>,
}

impl fmt::Debug for RedisServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users: Vec<&str> = self.acl_users.iter().map(|(u, _)| u.as_str()).collect();
        f.debug_struct("RedisServerBuilder")
            .field("aof", &self.aof)
            .field(
                "requirepass",
                &self.requirepass.as_ref().map(|_| "<redacted>"),
            )
            .field("acl_users", &users)
            .field("tls", &self.tls)
            .field("cluster", &self.cluster)
            .field("extra", &self.extra)
            .finish()
    }
}

impl RedisServerBuilder {
    /// Turns on the append-only file (`appendfsync always`), so data survives
    /// [`RedisServer::restart`].
    pub fn aof(mut self, on: bool) -> Self {
        self.aof = on;
        self
    }

    /// Requires this password of the default user.
    pub fn requirepass(mut self, password: impl Into<String>) -> Self {
        self.requirepass = Some(password.into());
        self
    }

    /// Adds an ACL user with every permission.
    pub fn acl_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.acl_users.push((user.into(), password.into()));
        self
    }

    /// Adds a TLS listener on a second port (see [`RedisServer::tls_url`]); the plain port
    /// stays open for readiness checks and admin commands. Replication then goes over TLS
    /// (`tls-replication yes`: a replica names its primary's TLS port), and so does a
    /// cluster node's bus (`tls-cluster yes`), which announces the TLS port to TLS clients.
    pub fn tls(mut self, tls: RedisTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Runs the server as a Redis Cluster node (`cluster-enabled yes`) with its cluster bus
    /// on a second free port (not `port + 10000`, which may be out of range) and a node
    /// timeout of 1 s, so failovers in tests take seconds. [`super::RedisCluster`] joins
    /// such nodes into a cluster.
    pub fn cluster(mut self, on: bool) -> Self {
        self.cluster = on;
        self
    }

    /// Any other `redis.conf` directive, e.g. `("maxmemory", "10mb")`.
    pub fn config(mut self, directive: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((directive.into(), value.into()));
        self
    }

    /// Starts the server and waits until it answers as itself.
    ///
    /// # Errors
    /// [`HarnessError::MissingBinary`] (with `apt-get install redis-server`) if there is no
    /// `redis-server`; [`HarnessError::NotReady`] if it does not come up.
    pub fn start(self) -> Result<RedisServer, HarnessError> {
        let binary = find_binary("redis-server", REDIS_SERVER_ENV, INSTALL)?;
        let mut dir = tempfile::Builder::new()
            .prefix("leadership-redis-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a temporary directory", e))?;
        // A port can be taken between free_port and the server's bind: try a few.
        let mut last_error = None;
        for _ in 0..3 {
            let port = free_port()?;
            let tls_port = match self.tls {
                Some(_) => Some(free_port()?),
                None => None,
            };
            let cluster_port = match self.cluster {
                true => Some(free_port()?),
                false => None,
            };
            let config = self.write_config(dir.path(), port, tls_port, cluster_port)?;
            let process = ServerProcess::spawn_in(
                format!("redis-server on port {port}"),
                &binary,
                vec![OsString::from(config)],
                dir.path(),
                "redis.log",
            )?;
            let mut server = RedisServer {
                process,
                port,
                tls_port,
                cluster_port,
                admin_password: self.requirepass.clone(),
                dir,
            };
            match server.wait_ready() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    last_error = Some(e);
                    let _ = server.process.kill9();
                    dir = server.dir;
                }
            }
        }
        Err(last_error.unwrap_or_else(|| HarnessError::NotReady {
            what: "redis-server".into(),
            waited: READY_TIMEOUT,
            log_tail: String::new(),
        }))
    }

    fn write_config(
        &self,
        dir: &Path,
        port: u16,
        tls_port: Option<u16>,
        cluster_port: Option<u16>,
    ) -> Result<PathBuf, HarnessError> {
        let mut config = format!(
            "bind 127.0.0.1\nport {port}\ndir {dir}\ndaemonize no\nprotected-mode no\n\
             save \"\"\nlogfile \"\"\nappendonly {aof}\nappendfsync always\n",
            dir = dir.display(),
            aof = if self.aof { "yes" } else { "no" },
        );
        if let Some(password) = &self.requirepass {
            config.push_str(&format!("requirepass {}\n", quote(password)));
        }
        for (user, password) in &self.acl_users {
            config.push_str(&format!(
                "user {} on {} ~* &* +@all\n",
                quote(user),
                quote(&format!(">{password}"))
            ));
        }
        if let (Some(tls), Some(tls_port)) = (&self.tls, tls_port) {
            config.push_str(&tls.directives(tls_port));
            if cluster_port.is_some() {
                config.push_str("tls-cluster yes\n");
            }
        }
        if let Some(cluster_port) = cluster_port {
            config.push_str(&format!(
                "cluster-enabled yes\ncluster-port {cluster_port}\n\
                 cluster-config-file nodes.conf\ncluster-node-timeout 1000\n"
            ));
        }
        for (directive, value) in &self.extra {
            config.push_str(&format!("{directive} {value}\n"));
        }
        let path = dir.join("redis.conf");
        std::fs::write(&path, config)
            .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))?;
        Ok(path)
    }
}

/// Quotes a config value for redis.conf.
fn quote(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// A `redis-server` child process on a free loopback port with a temporary directory,
/// killed when dropped.
///
/// ```no_run
/// use leadership_testkit::harness::RedisServer;
/// let server = RedisServer::start().expect("redis-server");
/// println!("{}", server.url());
/// ```
pub struct RedisServer {
    process: ServerProcess,
    port: u16,
    tls_port: Option<u16>,
    cluster_port: Option<u16>,
    admin_password: Option<String>,
    dir: tempfile::TempDir,
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("tls_port", &self.tls_port)
            .field("pid", &self.process.pid())
            .finish_non_exhaustive()
    }
}

impl RedisServer {
    /// A server with default options (no persistence, no password).
    ///
    /// # Errors
    /// See [`RedisServerBuilder::start`].
    pub fn start() -> Result<Self, HarnessError> {
        Self::builder().start()
    }

    /// Options: AOF, passwords, ACL users, TLS.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// `redis://127.0.0.1:PORT` (no credentials).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `rediss://localhost:TLS_PORT` if the server has a TLS listener.
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port
            .map(|port| format!("rediss://localhost:{port}"))
    }

    /// The plain TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS port, if the server has a TLS listener (see [`RedisServerBuilder::tls`]).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// Whether `port` is one of this server's listeners (plain or TLS).
    pub(crate) fn listens_on(&self, port: u16) -> bool {
        self.port == port || self.tls_port == Some(port)
    }

    /// The cluster bus port of a cluster node (see [`RedisServerBuilder::cluster`]).
    pub fn cluster_port(&self) -> Option<u16> {
        self.cluster_port
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The server's temporary directory (its configuration, data and log). It is removed
    /// when the server is dropped, or, for a server that never is (one kept in a static),
    /// once the test process has exited.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// SIGKILL: the server dies at once. Start it again with [`RedisServer::start_again`].
    ///
    /// # Errors
    /// If the process cannot be killed.
    pub fn kill9(&mut self) -> Result<(), HarnessError> {
        self.process.kill9()
    }

    /// Starts the server again after [`RedisServer::kill9`] on the same port and data, and
    /// waits until it is ready.
    ///
    /// # Errors
    /// If it cannot be started or does not become ready.
    pub fn start_again(&mut self) -> Result<(), HarnessError> {
        self.process.start_again()?;
        self.wait_ready()
    }

    /// Kill -9 and start again on the same port and data, then wait until ready.
    ///
    /// # Errors
    /// If it cannot be restarted or does not become ready.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.process.restart()?;
        self.wait_ready()
    }

    /// SIGSTOP: the server keeps its connections but answers nothing.
    ///
    /// # Errors
    /// If it cannot be signalled.
    pub fn pause(&self) -> Result<(), HarnessError> {
        self.process.pause()
    }

    /// SIGCONT after [`RedisServer::pause`].
    ///
    /// # Errors
    /// If it cannot be signalled.
    pub fn resume(&self) -> Result<(), HarnessError> {
        self.process.resume()
    }

    /// Runs one command as the admin (default) user over a fresh connection and returns the
    /// reply as text (arrays one element per line), e.g. `["CLIENT", "KILL", "TYPE", "pubsub"]`.
    ///
    /// # Errors
    /// If the server cannot be reached or answers with an error.
    pub fn command(&self, args: &[&str]) -> Result<String, HarnessError> {
        let mut connection = self.admin_connection()?;
        connection.call(args)
    }

    fn admin_connection(&self) -> Result<RespConnection, HarnessError> {
        let mut connection = RespConnection::open(self.port)?;
        if let Some(password) = &self.admin_password {
            connection.call(&["AUTH", password])?;
        }
        Ok(connection)
    }

    /// The pid of the server that answers, once it has finished loading its data.
    fn answering_pid(&self) -> Option<u32> {
        let info = self.command(&["INFO"]).ok()?;
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name))
                .map(str::trim)
        };
        if field("loading:") != Some("0") {
            return None;
        }
        field("process_id:").and_then(|pid| pid.parse().ok())
    }

    fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let Some(pid) = self.process.pid() else {
            return Err(self.process.not_ready(Duration::ZERO));
        };
        let ready = wait_until(READY_TIMEOUT, || {
            if !self.process.is_running() {
                return true; // fail fast below
            }
            self.answering_pid() == Some(pid)
        });
        if ready && self.process.is_running() {
            Ok(())
        } else {
            Err(self.process.not_ready(READY_TIMEOUT))
        }
    }
}

/// A minimal RESP2 client: enough for readiness and admin commands without a redis crate.
pub(super) struct RespConnection {
    reader: BufReader<TcpStream>,
}

impl RespConnection {
    pub(super) fn open(port: u16) -> Result<Self, HarnessError> {
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into();
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .map_err(|e| HarnessError::io(format!("connecting to redis on port {port}"), e))?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(|e| HarnessError::io("setting socket timeouts", e))?;
        Ok(RespConnection {
            reader: BufReader::new(stream),
        })
    }

    pub(super) fn call(&mut self, args: &[&str]) -> Result<String, HarnessError> {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        self.reader
            .get_mut()
            .write_all(&request)
            .map_err(|e| HarnessError::io("writing a redis command", e))?;
        self.read_reply()
    }

    fn read_line(&mut self) -> Result<String, HarnessError> {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .map_err(|e| HarnessError::io("reading a redis reply", e))?;
        if !line.ends_with("\r\n") {
            return Err(protocol_error("connection closed mid-reply"));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    fn read_reply(&mut self) -> Result<String, HarnessError> {
        let line = self.read_line()?;
        let (kind, rest) = line.split_at(line.len().min(1));
        match kind {
            "+" | ":" => Ok(rest.to_owned()),
            "-" => Err(protocol_error(&format!("redis answered: {rest}"))),
            "$" => {
                let Ok(len) = rest.parse::<i64>() else {
                    return Err(protocol_error("bad bulk length"));
                };
                let Ok(len) = usize::try_from(len) else {
                    return Ok(String::new()); // nil
                };
                let mut body = vec![0; len + 2];
                self.reader
                    .read_exact(&mut body)
                    .map_err(|e| HarnessError::io("reading a redis reply", e))?;
                body.truncate(len);
                Ok(String::from_utf8_lossy(&body).into_owned())
            }
            "*" => {
                let count = rest.parse::<i64>().unwrap_or(0).max(0);
                let mut items = Vec::new();
                for _ in 0..count {
                    items.push(self.read_reply()?);
                }
                Ok(items.join("\n"))
            }
            _ => Err(protocol_error("unknown reply type")),
        }
    }
}

fn protocol_error(what: &str) -> HarnessError {
    HarnessError::io(
        "talking to redis-server",
        std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned()),
    )
}
