//! Real-server harnesses: private servers for tests, with fault injection.
//!
//! Each server runs as a child process of the test on a free loopback port with a temporary
//! data directory, and is killed when dropped. A missing binary is an error whose message
//! says how to install it: tests fail, they never skip.

mod process;
mod proxy;
mod redis;
mod redis_cluster;
mod redis_failover;
mod redis_sentinel;
mod tls_ca;

pub use process::{HarnessError, ServerProcess, cpu_time, find_binary, free_port, wait_until};
pub mod etcd;

pub use etcd::{EtcdCluster, EtcdServer, EtcdTls};
pub use proxy::ReplyDropProxy;
pub use redis::{REDIS_SERVER_ENV, RedisServer, RedisServerBuilder, RedisTls};
pub use redis_cluster::RedisCluster;
pub use redis_failover::RedisFailover;
pub use redis_sentinel::RedisSentinel;
pub use tls_ca::TestCa;
