//! The redis-server harness: readiness against its own pid, faults, persistence.

use leadership_testkit::harness::RedisServer;

#[test]
fn starts_answers_as_itself_and_restarts_on_the_same_data() {
    let mut server = RedisServer::builder()
        .aof(true)
        .start()
        .expect("redis-server");
    let info = server.command(&["INFO", "server"]).expect("info");
    let pid = server.pid().expect("running");
    assert!(info.contains(&format!("process_id:{pid}")), "{info}");
    assert!(server.url().starts_with("redis://127.0.0.1:"));

    server.command(&["SET", "k", "v"]).expect("set");
    server.restart().expect("restart");
    assert_ne!(server.pid(), Some(pid), "a new process after restart");
    assert_eq!(
        server.command(&["GET", "k"]).expect("get"),
        "v",
        "AOF keeps data"
    );

    server.kill9().expect("kill");
    assert!(
        server.command(&["PING"]).is_err(),
        "killed server answers nothing"
    );
    server.start_again().expect("start again");
    assert_eq!(server.command(&["PING"]).expect("ping"), "PONG");
}

#[test]
fn without_persistence_a_restart_loses_data() {
    let mut server = RedisServer::start().expect("redis-server");
    server.command(&["SET", "k", "v"]).expect("set");
    server.restart().expect("restart");
    assert_eq!(server.command(&["GET", "k"]).expect("get"), "");
}

#[test]
fn paused_server_does_not_answer_until_resumed() {
    let server = RedisServer::start().expect("redis-server");
    server.pause().expect("pause");
    let started = std::time::Instant::now();
    assert!(
        server.command(&["PING"]).is_err(),
        "a paused server answers nothing"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    server.resume().expect("resume");
    assert_eq!(server.command(&["PING"]).expect("ping"), "PONG");
}

#[test]
fn password_and_acl_users_are_configured() {
    let server = RedisServer::builder()
        .requirepass("admin-secret")
        .acl_user("alice", "alice secret")
        .start()
        .expect("redis-server");
    // The harness authenticates its own admin commands.
    assert_eq!(server.command(&["PING"]).expect("ping"), "PONG");
    let users = server.command(&["ACL", "USERS"]).expect("acl users");
    assert!(users.lines().any(|u| u == "alice"), "{users}");
    assert!(!format!("{server:?}").contains("secret"));
}

/// Set in the child run of [`a_server_never_outlives_its_test_process`].
const LEAK_CHILD: &str = "LEADERSHIP_HARNESS_LEAK_CHILD";

/// A no-op, except in the child run: it starts a server, prints its pid and directory, and
/// exits without dropping it, as a test does with a server kept in a static.
#[test]
fn leaking_child() {
    if std::env::var_os(LEAK_CHILD).is_none() {
        return;
    }
    let server = RedisServer::start().expect("redis-server");
    println!("server pid {}", server.pid().expect("running"));
    println!("server dir {}", server.dir().display());
    // A server the test killed and never started again loses its directory too.
    let mut killed = RedisServer::start().expect("redis-server");
    killed.kill9().expect("kill");
    println!("killed dir {}", killed.dir().display());
    std::mem::forget(server);
    std::mem::forget(killed);
}

#[test]
fn a_server_never_outlives_its_test_process() {
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "leaking_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LEAK_CHILD, "1")
        .output()
        .expect("child run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let pid: u32 = stdout
        .lines()
        .find_map(|line| line.split_once("server pid ").map(|(_, pid)| pid))
        .and_then(|pid| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in the child's output: {stdout}"));
    let dir_of = |label: &str| {
        stdout
            .lines()
            .find_map(|line| line.split_once(label).map(|(_, dir)| dir.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {label}in the child's output: {stdout}"))
    };
    let dirs = [dir_of("server dir "), dir_of("killed dir ")];
    let gone = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < gone,
            "redis-server {pid} outlived its test process by 5 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The directories go after the servers: a static's temporary directory is never dropped.
    for dir in &dirs {
        while std::path::Path::new(dir).exists() {
            assert!(
                std::time::Instant::now() < gone,
                "{dir} outlived its test process by 5 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

#[test]
fn a_killed_server_keeps_its_data_while_the_test_runs() {
    let mut server = RedisServer::builder()
        .aof(true)
        .start()
        .expect("redis-server");
    server.command(&["SET", "k", "v"]).expect("set");
    server.kill9().expect("kill");
    // Longer than the watchdog's poll: it sees the server gone while the test process runs,
    // and must leave the directory.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert!(
        server.dir().exists(),
        "the directory went with the killed server"
    );
    server.start_again().expect("start again");
    assert_eq!(server.command(&["GET", "k"]).expect("get"), "v");
}
