//! The Redis store under server and client faults, judged by the history checker
//! (see `reliability_cases`): SIGKILL and restart without persistence (a delayed restart,
//! longer than a lease, as Redis without persistence needs) and with AOF (`appendfsync
//! always`, restarted at once), SIGSTOP for longer than a lease then SIGCONT, a leader's
//! GC pause past its lease, crashed and gracefully stopped trackers. Also persistence: after
//! a restart with AOF, pins, the leader and its fence are still there, and no fence is ever
//! reissued, with or without AOF (F1).

mod reliability_cases;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use leadership_redis::{GuardedScript, RedisStore};
use leadership_testkit::harness::RedisServer;
use reliability_cases::{Participant, Run, Settings, Target, WriteFn};
use tokio::time::{Instant, sleep};

const GUARANTEE: Duration = Duration::from_millis(300);
const CLAIM: Duration = Duration::from_millis(600);
/// Redis decides expiry by its own `TIME` (µs) on this machine's clock; this covers only the
/// recorder noticing a loss signal late (the tracker's 60 ms safety margin comes on top).
const CLOCK_BOUND: Duration = Duration::from_millis(10);
/// Reconnects after a restart, the trackers' retry backoff, pub/sub wake-ups.
const SLACK: Duration = Duration::from_millis(1500);
const OPERATION_TIMEOUT: Duration = Duration::from_millis(250);

fn start(aof: bool) -> RedisServer {
    match RedisServer::builder().aof(aof).start() {
        Ok(server) => server,
        Err(err) => panic!("{err}"),
    }
}

struct RedisTarget {
    url: String,
    namespace: String,
    script: GuardedScript,
    /// Kept from the first participant, for reading the downstream log.
    reader: Mutex<Option<RedisStore>>,
}

impl RedisTarget {
    fn new(server: &RedisServer, namespace: &str) -> Arc<Self> {
        Arc::new(RedisTarget {
            url: server.url(),
            namespace: namespace.to_owned(),
            script: GuardedScript::new("return redis.call('RPUSH', KEYS[1], ARGV[1])"),
            reader: Mutex::new(None),
        })
    }

    async fn connect(&self) -> RedisStore {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            match RedisStore::builder(&self.url)
                .namespace(&self.namespace)
                .operation_timeout(OPERATION_TIMEOUT)
                .connect()
                .await
            {
                Ok(store) => return store,
                Err(err) if err.is_retryable() && Instant::now() < give_up => {
                    sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("connect to the test redis-server: {err}"),
            }
        }
    }
}

fn downstream_key(store: &RedisStore, application: &str) -> String {
    format!("{}downstream:{application}", store.key_prefix())
}

#[leadership_core::async_trait]
impl Target for RedisTarget {
    async fn participant(&self) -> Participant {
        let store = Arc::new(self.connect().await);
        self.reader
            .lock()
            .expect("reader")
            .get_or_insert_with(|| (*store).clone());
        let script = self.script.clone();
        let writer = store.clone();
        let write: WriteFn = Arc::new(move |application, unit, fence| {
            let store = writer.clone();
            let script = script.clone();
            Box::pin(async move {
                let key = downstream_key(&store, &application);
                let value = fence.get().to_string();
                store
                    .guarded_script::<i64>(
                        &application,
                        &unit,
                        fence,
                        &script,
                        &[&key],
                        &[value.as_bytes()],
                    )
                    .await
                    .map(drop)
            })
        });
        Participant { store, write }
    }

    async fn downstream(&self, application: &str) -> Vec<u64> {
        let Some(store) = self.reader.lock().expect("reader").clone() else {
            return Vec::new();
        };
        let key = downstream_key(&store, application);
        let url = self.url.clone();
        blocking(move || {
            let mut raw = redis::Client::open(url)
                .and_then(|c| c.get_connection())
                .expect("a raw redis connection");
            redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query::<Vec<u64>>(&mut raw)
                .expect("LRANGE")
        })
    }
}

fn settings() -> Settings {
    Settings {
        applications: vec!["alpha".into(), "beta".into()],
        trackers: 3,
        guarantee: GUARANTEE,
        clock_bound: CLOCK_BOUND,
        settle_slack: SLACK,
    }
}

/// Runs a blocking harness call without stalling the runtime's other worker.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn server_faults(run: &Run, server: &mut RedisServer, aof: bool) -> usize {
    let mut faults = 0;
    for round in 0..2 {
        // SIGKILL, then a restart: at once with AOF; without persistence, only after a lease
        // has surely run out (every lease is lost with the data).
        let fault = run.history.fault_began(format!(
            "SIGKILL redis-server and restart ({})",
            if aof {
                "AOF, at once"
            } else {
                "no persistence, after a lease"
            }
        ));
        blocking(|| server.kill9()).expect("kill -9");
        if !aof {
            sleep(CLAIM + GUARANTEE).await;
        }
        blocking(|| server.start_again()).expect("restart");
        run.history.fault_ended(fault);
        faults += 1;
        run.wait_for_leaders(Duration::from_secs(15)).await;

        // SIGSTOP for longer than a lease, then SIGCONT.
        let fault = run
            .history
            .fault_began("SIGSTOP redis-server for 2 leases, then SIGCONT");
        blocking(|| server.pause()).expect("SIGSTOP");
        sleep(CLAIM * 2).await;
        blocking(|| server.resume()).expect("SIGCONT");
        run.history.fault_ended(fault);
        faults += 1;
        run.wait_for_leaders(Duration::from_secs(15)).await;

        // Client faults between server faults.
        assert!(run.freeze_a_leader("alpha").await, "alpha has a leader");
        run.kill_a_leader("beta", round == 0).await;
        run.wait_for_leaders(Duration::from_secs(15)).await;
    }
    faults
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_without_persistence_under_faults() {
    let mut server = start(false);
    let target = RedisTarget::new(&server, "reliability-plain");
    let run = Run::start(target, settings()).await;
    let faults = server_faults(&run, &mut server, false).await;
    run.finish("redis (no persistence)", &format!("server_faults={faults}"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_aof_under_faults() {
    let mut server = start(true);
    let target = RedisTarget::new(&server, "reliability-aof");
    let run = Run::start(target, settings()).await;
    let faults = server_faults(&run, &mut server, true).await;
    run.finish("redis (AOF)", &format!("server_faults={faults}"))
        .await;
}
