//! The Redis store's rows of the safety matrix (see `reliability_cases`), each on its own
//! server: kill -9 and restart at once without persistence (C4 cannot hold: the leases are
//! forgotten; counted, not failed), with AOF `everysec` (a process kill loses nothing the
//! kernel holds) and with AOF `always`; without persistence restarted only after a lease;
//! SIGSTOP of the server for two leases; a client paused past its lease and crashed
//! clients; claims whose replies a proxy drops after they applied, then retried (E2). Also
//! persistence: after a restart with AOF, pins, the leader and its fence are still there,
//! and no fence is ever reissued, with or without AOF (F1).

mod reliability_cases;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use leadership_core::Leadership;
use leadership_redis::{GuardedScript, RedisStore};
use leadership_testkit::harness::{RedisFailover, RedisServer, ReplyDropProxy};
use reliability_cases::{Cell, Participant, Run, Settings, Target, Wake, WriteFn};
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
    /// A plain `redis://` URL of the server that holds the namespace's keys as a primary
    /// now, for reading the downstream log (moved after a failover).
    raw_url: Mutex<String>,
    /// `wait_for_replicas` of every client.
    wait_replicas: u32,
}

impl RedisTarget {
    fn new(server: &RedisServer, namespace: &str) -> Arc<Self> {
        Arc::new(Self::on(server.url(), server.url(), namespace, 0))
    }

    fn on(url: String, raw_url: String, namespace: &str, wait_replicas: u32) -> Self {
        RedisTarget {
            url,
            namespace: namespace.to_owned(),
            script: GuardedScript::new("return redis.call('RPUSH', KEYS[1], ARGV[1])"),
            reader: Mutex::new(None),
            raw_url: Mutex::new(raw_url),
            wait_replicas,
        }
    }

    async fn connect(&self) -> RedisStore {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            match RedisStore::builder(&self.url)
                .expect("valid redis URL")
                .namespace(&self.namespace)
                .operation_timeout(OPERATION_TIMEOUT)
                .wait_for_replicas(self.wait_replicas)
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
                let value = format!("{unit} {}", fence.get());
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

    async fn downstream(&self, application: &str) -> Vec<(String, u64)> {
        let Some(store) = self.reader.lock().expect("reader").clone() else {
            return Vec::new();
        };
        let key = downstream_key(&store, application);
        let url = self.raw_url.lock().expect("raw url").clone();
        blocking(move || {
            let mut raw = redis::Client::open(url)
                .and_then(|c| c.get_connection())
                .expect("a raw redis connection");
            redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query::<Vec<String>>(&mut raw)
                .expect("LRANGE")
                .iter()
                .filter_map(|entry| {
                    let (unit, fence) = entry.rsplit_once(' ')?;
                    Some((unit.to_owned(), fence.parse().ok()?))
                })
                .collect()
        })
    }
}

fn settings() -> Settings {
    Settings::standard(GUARANTEE, CLOCK_BOUND, SLACK, Duration::from_millis(200))
}

/// Runs a blocking harness call without stalling the runtime's other worker.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// How the server keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persistence {
    None,
    EverySec,
    Always,
}

impl Persistence {
    fn name(self) -> &'static str {
        match self {
            Persistence::None => "no persistence",
            Persistence::EverySec => "AOF everysec",
            Persistence::Always => "AOF always",
        }
    }

    fn start(self) -> RedisServer {
        let mut builder = RedisServer::builder().aof(self != Persistence::None);
        if self == Persistence::EverySec {
            builder = builder.config("appendfsync", "everysec");
        }
        builder.start().unwrap_or_else(|err| panic!("{err}"))
    }
}

/// The server faults of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerFault {
    /// SIGKILL and restart at once on the same data.
    KillRestartAtOnce,
    /// SIGKILL, then restart once every lease has surely run out.
    KillRestartAfterALease,
    /// SIGSTOP for two leases, then SIGCONT.
    Stop,
}

impl ServerFault {
    fn name(self) -> &'static str {
        match self {
            ServerFault::KillRestartAtOnce => "kill -9, restart at once",
            ServerFault::KillRestartAfterALease => "kill -9, restart after a lease",
            ServerFault::Stop => "SIGSTOP server for 2 leases",
        }
    }
}

/// One row: a server with `persistence` under `fault`, rounds until [`Run::more`] is done.
async fn server_cell(
    persistence: Persistence,
    fault: ServerFault,
    tolerated: &'static [&'static str],
) -> leadership_testkit::history::Report {
    let _slot = reliability_cases::cell_slot();
    let mut server = persistence.start();
    let namespace = leadership_core::conformance::unique_namespace("safety");
    let run = Run::start(RedisTarget::new(&server, &namespace), settings()).await;
    let mut round = 0;
    while run.more(round, 2) {
        let id = run.history.fault_began(fault.name());
        match fault {
            ServerFault::KillRestartAtOnce | ServerFault::KillRestartAfterALease => {
                blocking(|| server.kill9()).expect("kill -9");
                if fault == ServerFault::KillRestartAfterALease {
                    sleep(CLAIM + GUARANTEE).await;
                }
                blocking(|| server.start_again()).expect("restart");
            }
            ServerFault::Stop => {
                blocking(|| server.pause()).expect("SIGSTOP");
                sleep(CLAIM * 2).await;
                blocking(|| server.resume()).expect("SIGCONT");
            }
        }
        run.history.fault_ended(id);
        run.wait_for_leaders(Duration::from_secs(15)).await;
        // Let the bare claimers turn over a few terms between faults.
        sleep(CLAIM).await;
        round += 1;
    }
    let cell = Cell {
        store: "redis 7.0",
        configuration: persistence.name(),
        fault: fault.name(),
        tolerated,
    };
    run.finish_cell(&cell, "").await
}

/// C4 and T7 are what a restart without persistence cannot keep: every lease is forgotten
/// at once, so another unit is granted the lease while the old holder's promise runs.
/// Fences still increase (seeded from server time) and stale writes are still refused.
const FORGETS_LEASES: &[&str] = &["C4", "T7"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_redis_no_persistence_kill_restart_at_once() {
    let report = server_cell(
        Persistence::None,
        ServerFault::KillRestartAtOnce,
        FORGETS_LEASES,
    )
    .await;
    println!(
        "C4 broken {} times (expected: leases are forgotten)",
        report.count("C4")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_redis_no_persistence_kill_restart_after_a_lease() {
    server_cell(Persistence::None, ServerFault::KillRestartAfterALease, &[]).await;
}

/// `appendfsync everysec` writes the AOF to the kernel before it answers (unless an fsync
/// slower than a second makes it postpone the write) and fsyncs once a second: a kill -9 of
/// the process loses nothing the kernel holds, so C4 is held to here. A crash of the host
/// could lose the last second; this schedule does not crash the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_redis_aof_everysec_kill_restart_at_once() {
    server_cell(Persistence::EverySec, ServerFault::KillRestartAtOnce, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_redis_aof_always_kill_restart_at_once() {
    server_cell(Persistence::Always, ServerFault::KillRestartAtOnce, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_redis_sigstop_server() {
    server_cell(Persistence::Always, ServerFault::Stop, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_redis_client_pause_and_crash() {
    let _slot = reliability_cases::cell_slot();
    let server = Persistence::Always.start();
    let namespace = leadership_core::conformance::unique_namespace("safety");
    let run = Run::start(RedisTarget::new(&server, &namespace), settings()).await;
    let mut round = 0;
    while run.more(round, 2) {
        run.freeze_a_leader("alpha").await;
        run.pause_a_leader("beta", Wake::Careful).await;
        run.kill_a_leader("beta", round % 2 == 0).await;
        run.wait_for_leaders(Duration::from_secs(15)).await;
        round += 1;
    }
    let cell = Cell {
        store: "redis 7.0",
        configuration: "AOF always",
        fault: "client paused past its lease (zombie write; careful wake), client crash",
        tolerated: &[],
    };
    run.finish_cell(&cell, "").await;
}

/// Replicated deployments (issue 18.5): the primary that holds the namespace (behind
/// Sentinel the primary; in a cluster of 3 masters with a replica each, the master of the
/// namespace's slot) is killed with SIGKILL; the sentinels or the cluster promote its replica;
/// the former primary is started again and rejoins as a replica before the next round.
/// Every claim and renewal of the run is checked for C4 against the store's answers, across
/// the failovers.
async fn failover_cell(
    setup: RedisFailover,
    wait_replicas: u32,
    tolerated: &'static [&'static str],
) -> leadership_testkit::history::Report {
    let _slot = reliability_cases::cell_slot();
    let mut setup = setup;
    let namespace = leadership_core::conformance::unique_namespace("safety");
    let target = Arc::new(RedisTarget::on(
        setup.url(),
        String::new(),
        &namespace,
        wait_replicas,
    ));
    let prefix = target.connect().await.key_prefix().to_owned();
    let primary = blocking(|| setup.primary_for(&prefix)).expect("the namespace's primary");
    *target.raw_url.lock().expect("raw url") = setup.server(primary).url();
    let run = Run::start(target.clone(), settings()).await;
    let fault = "kill -9 primary, replica promoted";
    // A failover loses a write only if the kill lands between the primary's reply and the
    // replica's copy: rare at random times, so an extended run kills at least 20 times
    // (`leadership-redis`'s failover_safety example kills right after a reply instead).
    let rounds = if reliability_cases::terms_wanted() > 0 {
        20
    } else {
        2
    };
    let mut round = 0;
    while run.more(round, rounds) {
        let primary = blocking(|| setup.primary_for(&prefix)).expect("the namespace's primary");
        let id = run.history.fault_began(fault);
        blocking(|| setup.kill9(primary)).expect("kill -9");
        blocking(|| setup.wait_for_failover(&prefix, primary)).expect("failover");
        let now = blocking(|| setup.primary_for(&prefix)).expect("the new primary");
        *target.raw_url.lock().expect("raw url") = setup.server(now).url();
        blocking(|| setup.restore(primary)).expect("the former primary rejoins");
        // The fault lasts until the deployment has a replica again: with
        // `wait_for_replicas(1)` no claim can be acknowledged before (availability, not
        // safety, is what waiting for replicas costs).
        run.history.fault_ended(id);
        run.wait_for_leaders(Duration::from_secs(15)).await;
        sleep(CLAIM).await;
        round += 1;
    }
    let store = match &setup {
        RedisFailover::Sentinel(_) => "redis 7.0 Sentinel (1 replica)",
        _ => "redis 7.0 Cluster (3 masters, 1 replica each)",
    };
    let cell = Cell {
        store,
        configuration: if wait_replicas == 0 {
            "asynchronous replication"
        } else {
            "wait_for_replicas(1)"
        },
        fault,
        tolerated,
    };
    let report = run.finish_cell(&cell, "").await;
    drop(setup);
    report
}

/// A promoted replica may miss the last writes the primary acknowledged (asynchronous
/// replication): a term or a renewal lost with the primary lets another unit in while the
/// holder's promise runs. Fences still increase (seeded from server time, carried by the
/// client) and stale writes are still refused on whatever the new primary has.
const LOSES_WRITES: &[&str] = &["C4", "T7"];

/// Behind Sentinel, a former primary started again comes back as a primary (empty, without
/// persistence) until the sentinels make it a replica, and a client that asks a sentinel
/// still naming it writes there: for that moment two primaries grant, so besides lost
/// writes (C4, T7) fences can go back and stale guarded writes be accepted (F1, F2). The
/// writes it took are then discarded. Waiting for replicas closes this too (a restarted
/// primary has none); so does `min-replicas-to-write` on the servers.
const SPLIT_BRAIN: &[&str] = &["C4", "T7", "F1", "F2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_redis_sentinel_async_failover() {
    let setup = blocking(|| RedisFailover::sentinel("safety")).unwrap_or_else(|e| panic!("{e}"));
    failover_cell(setup, 0, SPLIT_BRAIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_redis_sentinel_wait_for_replicas_failover() {
    let setup = blocking(|| RedisFailover::sentinel("safety")).unwrap_or_else(|e| panic!("{e}"));
    failover_cell(setup, 1, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_redis_cluster_async_failover() {
    let setup = blocking(|| RedisFailover::cluster(3)).unwrap_or_else(|e| panic!("{e}"));
    failover_cell(setup, 0, LOSES_WRITES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_redis_cluster_wait_for_replicas_failover() {
    let setup = blocking(|| RedisFailover::cluster(3)).unwrap_or_else(|e| panic!("{e}"));
    failover_cell(setup, 1, &[]).await;
}

/// The child process of [`safety_redis_client_process_sigstopped`]: a no-op in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process_leader() {
    let Some(spec) = reliability_cases::process::ChildSpec::from_env() else {
        return;
    };
    let target = RedisTarget::on(spec.url.clone(), spec.url.clone(), &spec.namespace, 0);
    reliability_cases::process::run_child(Arc::new(target), spec).await;
}

/// A client that is a real process, SIGSTOPped past its lease (see
/// `reliability_cases/process.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_redis_client_process_sigstopped() {
    let _slot = reliability_cases::cell_slot();
    let server = Persistence::Always.start();
    let namespace = leadership_core::conformance::unique_namespace("safety");
    let target = Arc::new(RedisTarget::on(server.url(), server.url(), &namespace, 0));
    let seen = reliability_cases::process::sigstop_rounds(
        target,
        &server.url(),
        &namespace,
        "child_process_leader",
        GUARANTEE,
        reliability_cases::process::rounds(),
    )
    .await;
    reliability_cases::process::finish("redis 7.0", "AOF always", &seen);
}

/// E2: claims whose replies a proxy drops after Redis applied them, then retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_redis_lost_replies() {
    let _slot = reliability_cases::cell_slot();
    let server = Persistence::Always.start();
    let proxy = ReplyDropProxy::start(("127.0.0.1", server.port())).expect("proxy");
    let namespace = leadership_core::conformance::unique_namespace("safety");
    let target = RedisTarget::new(&server, &namespace);
    let run = Run::start(target.clone(), settings()).await;
    let proxied = RedisTarget::on(
        format!("redis://{}", proxy.addr()),
        server.url(),
        &namespace,
        0,
    );
    let proxied: Arc<dyn Leadership> = Arc::new(proxied.connect().await);
    let direct: Arc<dyn Leadership> = Arc::new(target.connect().await);
    let drop_replies = |on: bool, _round: usize| proxy.drop_replies(on);
    let mut lost = reliability_cases::LostReplies::default();
    let mut round = 0;
    while run.more(round, 1) {
        let seen = run
            .lost_replies(
                "epsilon",
                proxied.clone(),
                direct.clone(),
                &drop_replies,
                5,
                CLAIM,
            )
            .await;
        lost.attempts += seen.attempts;
        lost.errors += seen.errors;
        lost.applied += seen.applied;
        lost.retried_same_fence += seen.retried_same_fence;
        round += 1;
    }
    let cell = Cell {
        store: "redis 7.0",
        configuration: "AOF always",
        fault: "claim reply dropped after it applied, then retried (E2)",
        tolerated: &[],
    };
    run.finish_cell(
        &cell,
        &format!("lost_replies={lost:?} dropped={}", proxy.dropped()),
    )
    .await;
    assert!(
        lost.applied >= 1,
        "no lost reply hid an applied claim: {lost:?}"
    );
    assert_eq!(lost.applied, lost.retried_same_fence, "{lost:?}");
}

// ---------------------------------------------------------------------------------------
// Persistence (P, F1). leadership-redis/tests/faults.rs already shows pins and a pinned
// lease surviving an AOF restart, and one larger fence after an unpersisted restart; these
// add the unpinned leader with its TTL, the holder's renewal keeping its fence, and fences
// over many terms with a SIGKILL between each.

/// Retries `op` on retryable errors (the store reconnecting) for up to 10 s.
async fn eventually<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = leadership_core::Result<T>>,
{
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        match op().await {
            Ok(value) => return value,
            Err(err) if err.is_retryable() && Instant::now() < give_up => {
                sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("{what}: {err:?}"),
        }
    }
}

/// The lease key of `unit` on `application`, as leadership-redis/src/keys.rs lays it out.
fn lease_key(store: &RedisStore, application: &str, unit: &str) -> String {
    format!(
        "{}lease:{}:{application}{unit}",
        store.key_prefix(),
        application.len()
    )
}

fn raw_command(server: &RedisServer, args: &[&str]) -> String {
    server
        .command(args)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aof_keeps_the_leader_its_fence_and_its_expiry_across_sigkill() {
    use leadership_core::{Checker, Claimer, Error, Pinner, Reader};

    let mut server = start(true);
    let target = RedisTarget::new(&server, "persistence-aof");
    let store = target.connect().await;
    let lease = Duration::from_secs(3);
    let fence = store
        .claim_leadership("app", "app/0", lease)
        .await
        .expect("claim");
    let pinned_fence = store
        .claim_leadership("db", "db/0", Duration::from_secs(1))
        .await
        .expect("claim");
    store.pin_leadership("db", "machine-0").await.expect("pin");
    let key = lease_key(&store, "app", "app/0");
    let expires_at = raw_command(&server, &["PEXPIRETIME", &key]);
    assert!(
        expires_at.parse::<i64>().expect("PEXPIRETIME") > 0,
        "{key}: {expires_at}"
    );

    // SIGKILL right after the acknowledged writes: `appendfsync always` made them durable.
    blocking(|| server.kill9()).expect("kill -9");
    blocking(|| server.start_again()).expect("restart");

    let held = eventually("check after restart", || async {
        store.leadership_check("app", "app/0").check().await
    })
    .await;
    assert_eq!(held, fence, "the leader and its fence survive");
    assert_eq!(
        raw_command(&server, &["PEXPIRETIME", &key]),
        expires_at,
        "the lease keeps its expiry: neither lost nor extended by the restart"
    );
    let leaders = store.leaders().await.expect("leaders");
    assert_eq!(leaders.get("app").map(String::as_str), Some("app/0"));
    assert_eq!(leaders.get("db").map(String::as_str), Some("db/0"));
    assert!(
        matches!(
            store.claim_leadership("app", "app/1", lease).await,
            Err(Error::ClaimDenied)
        ),
        "C1: a rival is denied after the restart"
    );
    assert_eq!(
        store
            .claim_leadership("app", "app/0", lease)
            .await
            .expect("renew"),
        fence,
        "the holder's renewal keeps its fence: no new term, no reissue"
    );
    assert_eq!(
        store
            .leadership_check("db", "db/0")
            .check()
            .await
            .expect("pinned"),
        pinned_fence
    );

    // The lease still ends (Redis's clock, restored TTL); the next term's fence is larger.
    let next = loop {
        match store
            .claim_leadership("app", "app/1", Duration::from_secs(30))
            .await
        {
            Ok(next) => break next,
            Err(Error::ClaimDenied) => sleep(Duration::from_millis(50)).await,
            Err(err) => panic!("claim after expiry: {err:?}"),
        }
    };
    assert!(next > fence, "F1: {next} <= {fence}");
    let err = store
        .leadership_check("app", "app/0")
        .check()
        .await
        .expect_err("expired");
    assert!(err.is_not_leader(), "{err:?}");
}

/// F1 over many terms with a SIGKILL and restart between each: every fence is larger than
/// every earlier one, with AOF and without persistence (server time seeds the next fence).
async fn fences_never_reissued(aof: bool) {
    use leadership_core::{Claimer, Revoker};

    let mut server = start(aof);
    let target = RedisTarget::new(&server, "persistence-fences");
    let store = target.connect().await;
    let mut fences = Vec::new();
    for term in 0..4 {
        let unit = format!("app/{term}");
        let fence = eventually("claim", || {
            store.claim_leadership("app", &unit, Duration::from_secs(30))
        })
        .await;
        fences.push(fence);
        if term % 2 == 0 {
            // A revoked term, then a kill: the counter's last value must be durable too.
            store.revoke_leadership("app", &unit).await.expect("revoke");
            blocking(|| server.kill9()).expect("kill -9");
            blocking(|| server.start_again()).expect("restart");
        } else {
            blocking(|| server.kill9()).expect("kill -9");
            blocking(|| server.start_again()).expect("restart");
            if aof {
                // Still held after the restart: end it so the next unit can claim.
                eventually("revoke after restart", || {
                    store.revoke_leadership("app", &unit)
                })
                .await;
            }
        }
    }
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "F1 (aof: {aof}): {fences:?}"
    );
    println!("PERSISTENCE redis (aof: {aof}): fences over 4 terms and 4 SIGKILLs: {fences:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_are_never_reissued_across_sigkill_with_aof() {
    fences_never_reissued(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_are_never_reissued_across_sigkill_without_persistence() {
    fences_never_reissued(false).await;
}

/// Without persistence a restart forgets every lease at once: the old leader's tracker may
/// still believe it leads (until its own lease runs out) while a new unit claims; this is
/// why the fault schedule above restarts an unpersisted server only after a lease. Guarded
/// writes still hold (F2): the old leader's fence is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_persistence_an_immediate_restart_forgets_leases_but_refuses_stale_writes() {
    use leadership_core::{Checker, Claimer};

    let mut server = start(false);
    let target = RedisTarget::new(&server, "persistence-none");
    let store = target.connect().await;
    let fence = store
        .claim_leadership("app", "app/0", Duration::from_secs(30))
        .await
        .expect("claim");
    let key = format!("{}config", store.key_prefix());
    store
        .guarded_set("app", "app/0", fence, &key, "from app/0")
        .await
        .expect("guarded write while leading");

    blocking(|| server.kill9()).expect("kill -9");
    blocking(|| server.start_again()).expect("restart at once");

    let err = eventually("check after restart", || async {
        match store.leadership_check("app", "app/0").check().await {
            Err(err) if err.is_not_leader() => Ok(err),
            other => other.map(|fence| panic!("still leads with {fence} after a wipe")),
        }
    })
    .await;
    assert!(err.is_not_leader());
    let next = store
        .claim_leadership("app", "app/1", Duration::from_secs(30))
        .await
        .expect("the wiped lease is free at once");
    assert!(next > fence, "F1 from server time: {next} <= {fence}");
    let stale = store
        .guarded_set("app", "app/0", fence, &key, "stale")
        .await
        .expect_err("F2: the old leader's write is refused");
    assert!(stale.is_not_leader(), "{stale:?}");
    assert_eq!(raw_command(&server, &["GET", &key]), "", "nothing written");
}
