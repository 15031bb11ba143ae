//! The CLI as a process against real Redis and etcd servers from the testkit harness: the
//! operator commands share state across processes, `--json` parses, and an unreachable store
//! exits 3 within its timeout.
#![cfg(all(feature = "redis", feature = "etcd"))]

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use leadership_testkit::harness::{EtcdServer, RedisCluster, RedisServer};

fn leadership(store: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leadership"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("the leadership binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn expect(out: &Output, code: i32, args: &[&str]) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Every operator command against one store URL, across separate processes.
fn operator_commands(store: &str) {
    let run = |args: &[&str], code: i32| expect(&leadership(store, args), code, args);
    let claimed = run(&["--json", "claim", "mysql", "mysql/0", "--for", "30s"], 0);
    let doc: serde_json::Value = serde_json::from_str(claimed.trim()).expect("claim JSON");
    let fence = doc["fence"].as_u64().expect("a fence");
    assert!(fence > 0);
    let checked = run(&["check", "mysql", "mysql/0"], 0);
    assert!(
        checked.contains(&format!("mysql/0 leads mysql (fence {fence})")),
        "{checked}"
    );
    run(&["check", "mysql", "mysql/1"], 1);
    run(&["claim", "mysql", "mysql/1"], 1);
    run(&["revoke", "mysql", "mysql/1"], 1);
    let leaders = run(&["--json", "leaders"], 0);
    let leaders: serde_json::Value = serde_json::from_str(leaders.trim()).expect("leaders JSON");
    assert_eq!(leaders, serde_json::json!({ "mysql": "mysql/0" }));
    run(&["pin", "mysql", "machine-0"], 0);
    let pinned = run(&["--json", "pinned"], 0);
    let pinned: serde_json::Value = serde_json::from_str(pinned.trim()).expect("pinned JSON");
    assert_eq!(pinned, serde_json::json!({ "mysql": ["machine-0"] }));
    run(&["unpin", "mysql", "machine-0"], 0);

    // wait-released blocks while the lease is held and returns once it is revoked.
    let waiter = Command::new(env!("CARGO_BIN_EXE_leadership"))
        .args(["--store", store, "wait-released", "mysql"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wait-released starts");
    std::thread::sleep(Duration::from_millis(500));
    run(&["revoke", "mysql", "mysql/0"], 0);
    let out = waiter.wait_with_output().expect("wait-released ends");
    let said = expect(&out, 0, &["wait-released"]);
    assert!(said.contains("mysql has no leader"), "{said}");
    let next = run(&["--json", "claim", "mysql", "mysql/1"], 0);
    let next: serde_json::Value = serde_json::from_str(next.trim()).expect("claim JSON");
    assert!(
        next["fence"].as_u64().expect("a fence") > fence,
        "F1: {next} after {fence}"
    );
}

#[test]
fn redis_operator_commands() {
    let server = RedisServer::start().expect("redis-server starts");
    operator_commands(&format!(
        "{}?namespace=cli-{}",
        server.url(),
        std::process::id()
    ));
}

/// Issue 18: the same commands, wait-released included (sharded pub/sub), on a cluster URL.
#[test]
fn redis_cluster_operator_commands() {
    let cluster = RedisCluster::start(3, 0).expect("redis cluster starts");
    operator_commands(&format!(
        "{}?namespace=cli-{}",
        cluster.url(),
        std::process::id()
    ));
}

#[test]
fn etcd_operator_commands() {
    let server = EtcdServer::start().expect("etcd starts");
    operator_commands(&format!(
        "{}?namespace=cli-{}",
        server.url(),
        std::process::id()
    ));
}

#[test]
fn demo_runs_on_redis() {
    let server = RedisServer::start().expect("redis-server starts");
    let store = server.url();
    let args = [
        "demo",
        "--guarantee",
        "300ms",
        "--apps",
        "1",
        "--units",
        "2",
        "--json",
    ];
    let out = leadership(&store, &args);
    let said = expect(&out, 0, &args);
    let summary: serde_json::Value =
        serde_json::from_str(said.lines().last().unwrap_or_default()).expect("summary JSON");
    assert_eq!(summary["stale_write_refused"], true, "{said}");
    assert!(
        summary["failover_ms"].as_f64().unwrap_or(0.0) >= 550.0,
        "{said}"
    );
}

#[test]
fn unreachable_stores_exit_3_within_the_timeout() {
    // A port nobody listens on (taken, then released).
    let port = leadership_testkit::harness::free_port().expect("a port");
    for store in [
        format!("redis://127.0.0.1:{port}?timeout=1s"),
        format!("etcd://127.0.0.1:{port}?timeout=1s"),
    ] {
        let started = Instant::now();
        let out = leadership(&store, &["leaders"]);
        let took = started.elapsed();
        assert_eq!(out.status.code(), Some(3), "{store}: {}", text(&out.stderr));
        assert!(took < Duration::from_secs(10), "{store}: took {took:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("unavailable") && err.contains("running and reachable"),
            "{err}"
        );
    }
}

/// Issue 19.5: one short line, the cause once (the redis error's own message used to
/// repeat its I/O cause).
#[test]
fn unreachable_redis_prints_its_cause_once() {
    let port = leadership_testkit::harness::free_port().expect("a port");
    let store = format!("redis://127.0.0.1:{port}?timeout=1s");
    let out = leadership(&store, &["leaders"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!(
            "leadership: redis store unavailable during connect: Connection refused (os error \
             111) (check that the store at {store} is running and reachable (--store or \
             LEADERSHIP_STORE))"
        )
    );
}

#[test]
fn wrong_password_is_clear_and_never_printed() {
    let server = RedisServer::builder()
        .requirepass("right-password")
        .start()
        .expect("redis-server starts");
    let store = server
        .url()
        .replacen("redis://", "redis://default:hunter2@", 1);
    let out = leadership(&store, &["leaders"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    assert!(
        err.to_lowercase().contains("login") || err.contains("password"),
        "{err}"
    );
}

/// `leadership watch APP --json` follows another process's claim and revoke (O1, O2), one
/// JSON line per state, and Ctrl-C exits 130 (issue 14.5).
fn watch_follows_other_processes(store: &str) {
    use std::io::{BufRead, BufReader};
    let run = |args: &[&str], code: i32| expect(&leadership(store, args), code, args);
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_leadership"))
        .args(["--store", store, "--json", "watch", "web"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("watch starts");
    let mut lines = BufReader::new(watcher.stdout.take().expect("stdout")).lines();
    let mut next = || -> serde_json::Value {
        let line = lines
            .next()
            .expect("a line before the watch ends")
            .expect("readable");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
    };
    // The snapshot of a vacant application says so.
    let first = next();
    assert_eq!(
        (first["event"].as_str(), first["application"].as_str()),
        (Some("vacated"), Some("web")),
        "{first}"
    );
    let claimed = run(&["--json", "claim", "web", "web/3", "--for", "30s"], 0);
    let fence =
        serde_json::from_str::<serde_json::Value>(claimed.trim()).expect("claim JSON")["fence"]
            .as_u64()
            .expect("a fence");
    let elected = next();
    assert_eq!(elected["event"], "elected", "{elected}");
    assert_eq!(elected["unit"], "web/3", "{elected}");
    assert_eq!(elected["fence"].as_u64(), Some(fence), "{elected}");
    assert!(
        elected["time"].as_str().is_some_and(|t| t.contains('T')),
        "{elected}"
    );
    // An extension is no change.
    run(&["claim", "web", "web/3", "--for", "30s"], 0);
    run(&["revoke", "web", "web/3"], 0);
    let vacated = next();
    assert_eq!(
        (vacated["event"].as_str(), vacated["application"].as_str()),
        (Some("vacated"), Some("web")),
        "{vacated}"
    );
    let status = Command::new("kill")
        .args(["-INT", &watcher.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = watcher.wait().expect("watch exits");
    assert_eq!(exit.code(), Some(130));
}

#[test]
fn redis_watch_follows_other_processes() {
    let server = RedisServer::start().expect("redis-server starts");
    watch_follows_other_processes(&format!(
        "{}?namespace=watch-{}",
        server.url(),
        std::process::id()
    ));
}

#[test]
fn etcd_watch_follows_other_processes() {
    let server = EtcdServer::start().expect("etcd starts");
    watch_follows_other_processes(&format!(
        "{}?namespace=watch-{}",
        server.url(),
        std::process::id()
    ));
}

/// Polls `probe` every 50 ms until it returns `Some`, for at most `limit`.
fn poll<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let give_up = Instant::now() + limit;
    while Instant::now() < give_up {
        if let Some(found) = probe() {
            return Some(found);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The value of a Prometheus sample line `name{labels} value` in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// `track --metrics --health` against Redis, across processes (M1, H1): the tracker leads
/// (`leadership_is_leader` 1, health 200); another process revokes its lease and a third
/// claims it, so the tracker's next renewal is denied: the gauge drops to 0 and a `demoted`
/// transition is counted. Then it leads again, and Redis is frozen (SIGSTOP): health turns
/// 503 before the lease could end (the last renewal + the claim duration).
#[test]
fn redis_track_serves_metrics_and_health_across_processes() {
    use std::io::{BufRead, BufReader};
    let server = RedisServer::start().expect("redis-server starts");
    let store = format!(
        "{}?namespace=track-{}&timeout=300ms",
        server.url(),
        std::process::id()
    );
    let guarantee = Duration::from_secs(2);
    let (metrics, health) = (common::free_port(), common::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_leadership"))
        .args(["--store", &store, "track", "web/0", "--guarantee", "2s"])
        .args(["--metrics", &format!("127.0.0.1:{metrics}")])
        .args(["--health", &format!("127.0.0.1:{health}")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("track starts");
    // The output, line by line with the instant each arrived, read on its own thread so
    // that waiting for a line can time out.
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let (tx, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let next_promotion = |limit: Duration| {
        let give_up = Instant::now() + limit;
        loop {
            let left = give_up.saturating_duration_since(Instant::now());
            match output.recv_timeout(left) {
                Ok((at, line)) if line.contains("promoted to leader") => return Some(at),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    };
    next_promotion(guarantee * 4).expect("the tracker leads");
    let is_leader = r#"leadership_is_leader{application="web",unit="web/0"}"#;
    let demoted =
        r#"leadership_transitions_total{application="web",unit="web/0",transition="demoted"}"#;
    let (status, text) = common::get(metrics, "/metrics");
    assert_eq!(status, 200, "{text}");
    assert_eq!(sample(&text, is_leader), Some(1.0), "{text}");
    assert_eq!(common::get(health, "/").0, 200);

    // Another process revokes, a third claims: the renewal is denied.
    expect(
        &leadership(&store, &["revoke", "web", "web/0"]),
        0,
        &["revoke"],
    );
    expect(
        &leadership(&store, &["claim", "web", "web/1", "--for", "3s"]),
        0,
        &["claim"],
    );
    let scraped = poll(guarantee * 2, || {
        let (_, text) = common::get(metrics, "/metrics");
        (sample(&text, is_leader) == Some(0.0)).then_some(text)
    })
    .expect("leadership_is_leader drops to 0 after the renewal is denied");
    assert_eq!(sample(&scraped, demoted), Some(1.0), "{scraped}");
    assert_eq!(common::get(health, "/").0, 200, "a minion is healthy");

    // web/1's lease expires; the tracker leads again (its output says so the moment the claim
    // succeeded). Redis freezes at once, so that claim is the last that succeeds: its lease
    // lasts at least a claim duration (2 × guarantee) from its call, which was before `led`.
    let led =
        next_promotion(guarantee * 4).expect("the tracker leads again once web/1's lease expired");
    server.pause().expect("redis pauses");
    let unhealthy = poll(guarantee * 2, || {
        (common::get(health, "/").0 == 503).then(Instant::now)
    });
    server.resume().expect("redis resumes");
    let unhealthy = unhealthy.expect("health turns 503 while the store is frozen");
    assert!(
        unhealthy < led + guarantee * 2,
        "503 came {:?} after the last successful claim, not before its lease could end",
        unhealthy - led
    );

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = child.wait().expect("track exits");
    let rest: Vec<String> = output.try_iter().map(|(_, line)| line).collect();
    assert_eq!(exit.code(), Some(0), "{rest:?}");
}

/// Issue 19.5: against an unreachable etcd, one short line in the store's words (the client's
/// own error, tonic's internals, stays behind `source()`).
#[test]
fn unreachable_etcd_prints_one_short_line() {
    let port = leadership_testkit::harness::free_port().expect("a port");
    let store = format!("etcd://127.0.0.1:{port}?timeout=1s");
    let out = leadership(&store, &["leaders"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!(
            "leadership: etcd store unavailable during connect: cannot reach etcd at \
             127.0.0.1:{port}: unavailable: tcp connect error (check that the store at {store} \
             is running and reachable (--store or LEADERSHIP_STORE))"
        )
    );
}
