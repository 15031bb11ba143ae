//! A loopback TCP proxy whose connections a test can cut, to drop a store's connections
//! without disturbing the server that other tests share (B5).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Forwards every connection on a local port to `upstream`.
pub struct Proxy {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    acceptor: AbortHandle,
    held: Arc<AtomicBool>,
}

impl Proxy {
    /// Starts a proxy on a free loopback port, on the current runtime.
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let tracked = connections.clone();
        let held: Arc<AtomicBool> = Arc::default();
        let refusing = held.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if refusing.load(Ordering::SeqCst) {
                    // Held: the connection closes at once, as if the server were gone.
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tracked
                    .lock()
                    .expect("proxy lock")
                    .push(task.abort_handle());
            }
        })
        .abort_handle();
        Proxy {
            addr,
            connections,
            acceptor,
            held,
        }
    }

    /// The proxy's `host:port`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Closes every connection made so far; new ones are still accepted.
    pub fn drop_connections(&self) -> usize {
        let cut: Vec<AbortHandle> =
            std::mem::take(&mut *self.connections.lock().expect("proxy lock"));
        for connection in &cut {
            connection.abort();
        }
        cut.len()
    }
}

impl Proxy {
    /// Cuts every connection and closes new ones at once until [`Proxy::release`].
    pub fn hold(&self) -> usize {
        self.held.store(true, Ordering::SeqCst);
        self.drop_connections()
    }

    /// Forwards new connections again.
    pub fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.drop_connections();
    }
}
