//! The command connection of each deployment: one server, a Redis Cluster, or a primary
//! found through Sentinel. Every operation sends its commands and scripts through [`Conn`],
//! which routes them; the store above does not know which one it talks to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};
use tokio::sync::Mutex as AsyncMutex;

/// The command connection, cheap to clone (every clone shares the same sockets).
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server: redis's auto-reconnecting manager.
    Single(ConnectionManager),
    /// A cluster: the redis crate's cluster connection routes each command by its keys'
    /// slot, follows `MOVED` and `ASK`, and refreshes the slot map.
    Cluster(ClusterConnection),
    /// The primary the sentinels name, found again after every failover.
    Sentinel(SentinelConn),
}

impl Conn {
    /// The one error mapping, plus: behind Sentinel, a failover under way is retried until
    /// the new primary is found (S4).
    pub(crate) fn map_error(
        &self,
        operation: &'static str,
        err: redis::RedisError,
    ) -> leadership_core::Error {
        if matches!(self, Conn::Sentinel(_)) && failover_under_way(&err) {
            return leadership_core::Error::unavailable(
                crate::error::BACKEND,
                operation,
                crate::error::Cause::new(err),
            );
        }
        crate::error::map_redis_error(operation, err)
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
            Conn::Sentinel(conn) => Box::pin(conn.command(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(conn) => Box::pin(conn.pipeline(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
            Conn::Sentinel(_) => 0,
        }
    }
}

/// A connection to the primary that the sentinels name.
///
/// The current connection is kept until it fails in a way that says the primary may have
/// changed: an I/O error (the primary died or a sentinel reconfigured it and killed its
/// clients) or `READONLY` (it was demoted to a replica). The next command then asks the
/// sentinels again, which check with `ROLE` that the server they name is a primary, so a
/// retried operation reaches the promoted primary within the operation timeout (S4).
#[derive(Clone)]
pub(crate) struct SentinelConn {
    inner: Arc<SentinelInner>,
}

struct SentinelInner {
    sentinel: AsyncMutex<SentinelClient>,
    /// The current connection and its generation (so a failed one is dropped only once).
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// The next connection's generation: counts up for good, so a late failure of an old
    /// connection never matches a newer one.
    generations: AtomicU64,
    config: AsyncConnectionConfig,
}

impl SentinelConn {
    pub(crate) fn new(sentinel: SentinelClient, timeout: Duration) -> Self {
        SentinelConn {
            inner: Arc::new(SentinelInner {
                sentinel: AsyncMutex::new(sentinel),
                current: Mutex::new(None),
                generations: AtomicU64::new(0),
                // A request on a connection to a primary that stopped answering (paused,
                // cut off) fails before the retry path abandons it, so that the connection
                // is dropped and the sentinels are asked again.
                config: AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some((timeout / 4).max(Duration::from_millis(200)))),
            }),
        }
    }

    /// A client for the primary the sentinels name now (for the release subscriber).
    pub(crate) async fn primary_client(&self) -> RedisResult<Client> {
        self.inner.sentinel.lock().await.async_get_client().await
    }

    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let mut sentinel = self.inner.sentinel.lock().await;
        // Another caller may have connected while this one waited for the lock.
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let client = sentinel.async_get_client().await?;
        drop(sentinel);
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.inner.config)
            .await?;
        let mut current = self
            .inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed);
        *current = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets connection `generation` after `err` if it says the primary may have moved.
    fn check<T>(&self, generation: u64, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(err) = &result
            && primary_may_have_moved(err)
        {
            let mut current = self
                .inner
                .current
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if current.as_ref().is_some_and(|(g, _)| *g == generation) {
                *current = None;
            }
        }
        result
    }

    async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let (generation, mut conn) = self.connection().await?;
        let result = conn.req_packed_command(cmd).await;
        self.check(generation, result)
    }

    async fn pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let (generation, mut conn) = self.connection().await?;
        let result = conn.req_packed_commands(pipeline, offset, count).await;
        self.check(generation, result)
    }
}

/// An error after which the sentinels should be asked for the primary again.
pub(crate) fn primary_may_have_moved(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || failover_under_way(err)
}

/// `READONLY`: a primary demoted to a replica by a failover.
fn is_readonly(err: &redis::RedisError) -> bool {
    matches!(
        err.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
    ) || err.code() == Some("READONLY")
}

/// What a failover under way looks like behind Sentinel, and passes once it is over: a
/// demoted primary (`READONLY`), or no sentinel naming a server that says it is the primary
/// (the sentinels have not agreed yet, or the one they name is not promoted yet). Retried
/// within the operation timeout (S4), also at connect (a wrong master name then ends as
/// `Unavailable` naming the cause).
pub(crate) fn failover_under_way(err: &redis::RedisError) -> bool {
    is_readonly(err) || err.kind() == redis::ErrorKind::MasterNameNotFoundBySentinel
}
