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
