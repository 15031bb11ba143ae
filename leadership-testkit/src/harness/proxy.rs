//! A loopback TCP proxy that can lose replies: the E2 fault ([`ReplyDropProxy`]).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use super::HarnessError;

#[derive(Debug, Default)]
struct Shared {
    drop_replies: AtomicBool,
    /// Reply chunks still let through once dropping is on.
    pass: AtomicUsize,
    dropped: AtomicUsize,
    stop: AtomicBool,
}

/// A loopback TCP proxy to one upstream server that can lose replies: the E2 fault.
///
/// While [`drop_replies`](ReplyDropProxy::drop_replies) is on, requests still reach the
/// server (so they apply), but whatever the server sends back is thrown away, as when a
/// network fails after delivering a request: the client times out on a call that took effect
/// (a claim that "timed out" but applied, E2). When replies flow again, each connection that
/// lost some is closed and the client reconnects. Plain threads and std sockets, so it runs
/// beside any runtime. Stops accepting when dropped (open connections end with their peers).
///
/// ```no_run
/// use leadership_testkit::harness::{RedisServer, ReplyDropProxy};
///
/// let server = RedisServer::start().unwrap();
/// let proxy = ReplyDropProxy::start(("127.0.0.1", server.port())).unwrap();
/// let url = format!("redis://{}", proxy.addr());
/// proxy.drop_replies(true);
/// // ... a claim through `url` now applies, but its caller gets an error.
/// proxy.drop_replies(false);
/// assert!(proxy.dropped() >= 1);
/// ```
#[derive(Debug)]
pub struct ReplyDropProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl ReplyDropProxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    ///
    /// # Errors
    /// If it cannot listen or `upstream` does not resolve.
    pub fn start(upstream: impl ToSocketAddrs) -> Result<Self, HarnessError> {
        let upstream = upstream
            .to_socket_addrs()
            .map_err(|e| HarnessError::io("resolving the proxy's upstream", e))?
            .next()
            .ok_or_else(|| {
                HarnessError::io(
                    "resolving the proxy's upstream",
                    std::io::Error::other("no address"),
                )
            })?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| HarnessError::io("binding the proxy", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| HarnessError::io("reading the proxy's address", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| HarnessError::io("configuring the proxy", e))?;
        let shared = Arc::new(Shared::default());
        let accept = shared.clone();
        thread::spawn(move || accept_loop(&listener, upstream, &accept));
        Ok(ReplyDropProxy { addr, shared })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// While on, the server's replies are thrown away; turning it off closes each connection
    /// that lost one.
    pub fn drop_replies(&self, on: bool) {
        self.drop_replies_after(on, 0);
    }

    /// Like [`drop_replies`](Self::drop_replies), but lets the next `pass` reply chunks
    /// through first: for a call made of several requests (an etcd claim grants a lease,
    /// then writes), it chooses which reply is lost.
    pub fn drop_replies_after(&self, on: bool, pass: usize) {
        self.shared.pass.store(pass, Ordering::SeqCst);
        self.shared.drop_replies.store(on, Ordering::SeqCst);
    }

    /// How many connections lost replies so far.
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for ReplyDropProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: &TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let Ok(server) = TcpStream::connect(upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                thread::spawn(move || pump(client, server, None));
                let shared = shared.clone();
                thread::spawn(move || pump(server2, client2, Some(&shared)));
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Copies `from` to `to` until either side closes. On the reply side (`shared` given), bytes
/// read while replies are dropped are thrown away (the request already reached the server
/// and keeps running there); once replies flow again, a connection that lost some is closed,
/// since its stream can no longer be followed.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: Option<&Shared>) {
    let mut buf = [0u8; 16 * 1024];
    let mut lost = false;
    if shared.is_some() {
        let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    }
    loop {
        let dropping = shared.is_some_and(|s| s.drop_replies.load(Ordering::SeqCst));
        if lost && !dropping {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => break,
        };
        if let Some(shared) = shared
            && shared.drop_replies.load(Ordering::SeqCst)
            && (lost
                || shared
                    .pass
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| p.checked_sub(1))
                    .is_err())
        {
            if !lost {
                shared.dropped.fetch_add(1, Ordering::SeqCst);
            }
            lost = true;
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
