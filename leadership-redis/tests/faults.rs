//! Faults and logins, each test with its own redis-server: ACL, wrong passwords, a killed
//! server (E1), a paused server, waiters across restarts (B5), pins and fences across
//! restarts (P, F1), dropped waits (B3).

use std::error::Error as _;
use std::time::{Duration, Instant};

use leadership_core::{CancellationToken, Checker, Claimer, Error, Fence, Pinner, Reader, Revoker};
use leadership_redis::RedisStore;
use leadership_testkit::harness::RedisServer;

const SHORT: Duration = Duration::from_millis(500);
const LONG_LEASE: Duration = Duration::from_secs(60);

fn start(builder: leadership_testkit::harness::RedisServerBuilder) -> RedisServer {
    match builder.start() {
        Ok(server) => server,
        Err(err) => panic!("{err}"),
    }
}

async fn store(server: &RedisServer, timeout: Duration) -> RedisStore {
    RedisStore::builder(&server.url())
        .expect("valid redis URL")
        .namespace("faults")
        .operation_timeout(timeout)
        .connect()
        .await
        .expect("connect")
}

fn chain(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Retries `op` on retryable errors for up to 10 s.
async fn eventually<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = leadership_core::Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match op().await {
            Ok(value) => return value,
            Err(err) if err.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("{what}: {}", chain(&err)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_login_works_and_wrong_credentials_fail_clearly() {
    let server = start(
        RedisServer::builder()
            .requirepass("admin-pw")
            .acl_user("app-user", "right horse battery"),
    );
    let good = RedisStore::builder(&server.url())
        .expect("valid redis URL")
        .username("app-user")
        .password("right horse battery")
        .namespace("acl")
        .connect()
        .await
        .expect("ACL login");
    good.claim_leadership("app", "app/0", LONG_LEASE)
        .await
        .expect("claim as an ACL user");
    let debug = format!("{good:?}");
    assert!(
        !debug.contains("horse") && !debug.contains("app-user"),
        "{debug}"
    );

    // Credentials in the URL work too.
    let url = server
        .url()
        .replace("redis://", "redis://app-user:right%20horse%20battery@");
    let from_url = RedisStore::connect(&format!("{url}?namespace=acl"))
        .await
        .expect("URL login");
    assert_eq!(
        from_url
            .leaders()
            .await
            .expect("leaders")
            .get("app")
            .map(String::as_str),
        Some("app/0")
    );

    for (user, password) in [("app-user", "wrong"), ("nobody", "right horse battery")] {
        let started = Instant::now();
        let err = RedisStore::builder(&server.url())
            .expect("valid redis URL")
            .username(user)
            .password(password)
            .connect()
            .await
            .expect_err("wrong credentials must fail");
        assert!(started.elapsed() < Duration::from_secs(5), "fails at once");
        assert!(matches!(err, Error::Backend { .. }), "{err:?}");
        assert!(!err.is_retryable(), "a refused login is not retryable");
        assert_eq!(err.to_string(), "redis store failed during login");
        let text = chain(&err).to_lowercase();
        assert!(
            text.contains("authentication failed") || text.contains("wrongpass"),
            "{text}"
        );
        assert!(!text.contains(password), "the password leaks: {text}");
    }

    // No credentials on a server that requires them.
    let err = RedisStore::connect(&format!("{}?namespace=acl", server.url()))
        .await
        .expect_err("no password");
    assert!(!err.is_retryable(), "{err:?}");
    assert_eq!(
        err.to_string(),
        "redis store failed during login",
        "{}",
        chain(&err)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_gives_unavailable_within_the_timeout_and_recovers() {
    let mut server = start(RedisServer::builder());
    let store = store(&server, SHORT).await;
    let fence = store
        .claim_leadership("app", "app/0", LONG_LEASE)
        .await
        .expect("claim");

    server.kill9().expect("kill");
    for _ in 0..3 {
        let started = Instant::now();
        let err = store
            .claim_leadership("app", "app/0", LONG_LEASE)
            .await
            .expect_err("server is dead");
        assert!(err.is_retryable(), "{}", chain(&err));
        assert!(matches!(
            err,
            Error::Unavailable {
                backend: "redis",
                ..
            }
        ));
        let took = started.elapsed();
        assert!(took < SHORT + Duration::from_secs(1), "took {took:?}");
        let err = store
            .leadership_check("app", "app/0")
            .check()
            .await
            .expect_err("server is dead");
        assert!(err.is_retryable(), "{}", chain(&err));
    }

    // Without persistence the restart forgets the lease; the store reconnects by itself
    // and the next term's fence is still larger (F1: seeded from server time).
    server.start_again().expect("start again");
    let again = eventually("claim after restart", || {
        store.claim_leadership("app", "app/1", LONG_LEASE)
    })
    .await;
    assert!(
        again > fence,
        "F1 across an unpersisted restart: {again} <= {fence}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server_does_not_hang_callers_past_the_timeout() {
    let server = start(RedisServer::builder());
    let store = store(&server, SHORT).await;
    store
        .claim_leadership("app", "app/0", LONG_LEASE)
        .await
        .expect("claim");
    let cancel = CancellationToken::new();
    let waiter = tokio::spawn({
        let store = store.clone();
        let cancel = cancel.clone();
        async move { store.block_until_leadership_released("app", cancel).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.pause().expect("pause");
    let calls = async {
        let started = Instant::now();
        let claim = store.claim_leadership("app", "app/0", LONG_LEASE).await;
        let check = store.leadership_check("app", "app/0").check().await;
        let leaders = store.leaders().await;
        (started.elapsed(), claim, check, leaders)
    };
    let (took, claim, check, leaders) = tokio::time::timeout(Duration::from_secs(10), calls)
        .await
        .expect("calls hang on a paused server");
    assert!(claim.expect_err("paused").is_retryable());
    assert!(check.expect_err("paused").is_retryable());
    assert!(leaders.expect_err("paused").is_retryable());
    assert!(
        took < SHORT * 3 + Duration::from_secs(1),
        "three calls took {took:?}"
    );
    assert!(!waiter.is_finished(), "a paused server releases nobody");

    server.resume().expect("resume");
    let fence = eventually("check after resume", || async {
        store.leadership_check("app", "app/0").check().await
    })
    .await;
    assert!(fence > Fence(0));
    assert!(!waiter.is_finished(), "still held after resume");
    cancel.cancel();
    let outcome = waiter.await.expect("waiter task");
    assert!(matches!(outcome, Err(Error::BlockCancelled)), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_survives_a_restart_and_is_released_after_it() {
    let mut server = start(RedisServer::builder().aof(true));
    let store = store(&server, Duration::from_secs(1)).await;
    store
        .claim_leadership("app", "app/0", LONG_LEASE)
        .await
        .expect("claim");
    let waiter = tokio::spawn({
        let store = store.clone();
        async move {
            let outcome = store
                .block_until_leadership_released("app", CancellationToken::new())
                .await;
            (outcome, Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished());

    server.restart().expect("restart");
    // The lease survived (AOF): the waiter reconnects and keeps waiting, never Ok by error.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!waiter.is_finished(), "a restart is not a release");
    assert_eq!(
        eventually("leaders after restart", || store.leaders())
            .await
            .get("app")
            .map(String::as_str),
        Some("app/0")
    );

    let revoked = Instant::now();
    eventually("revoke", || store.revoke_leadership("app", "app/0")).await;
    let (outcome, released) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("waiter released after the revoke")
        .expect("waiter task");
    outcome.expect("released by the revoke");
    assert!(released >= revoked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_and_fences_survive_a_restart_with_aof() {
    let mut server = start(RedisServer::builder().aof(true));
    let store = store(&server, Duration::from_secs(1)).await;
    let fence = store
        .claim_leadership("app", "app/0", Duration::from_millis(300))
        .await
        .expect("claim");
    store.pin_leadership("app", "machine-0").await.expect("pin");
    store.pin_leadership("app", "machine-1").await.expect("pin");

    server.restart().expect("restart");
    tokio::time::sleep(Duration::from_millis(500)).await; // past the claimed expiry

    let pinned = eventually("pinned after restart", || store.pinned_leadership()).await;
    assert_eq!(
        pinned.get("app"),
        Some(&vec!["machine-0".to_owned(), "machine-1".to_owned()])
    );
    let check = eventually("check after restart", || async {
        store.leadership_check("app", "app/0").check().await
    })
    .await;
    assert_eq!(
        check, fence,
        "P1: pinned past its expiry, across the restart"
    );

    store
        .unpin_leadership("app", "machine-0")
        .await
        .expect("unpin");
    store
        .unpin_leadership("app", "machine-1")
        .await
        .expect("unpin");
    let err = store
        .leadership_check("app", "app/0")
        .check()
        .await
        .expect_err("P3: expiry resumes at the claimed expiry, long passed");
    assert!(err.is_not_leader(), "{err:?}");
    let next = store
        .claim_leadership("app", "app/1", LONG_LEASE)
        .await
        .expect("claim");
    assert!(next > fence, "F1 across a persisted restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_and_dropped_waits_leave_nothing_behind() {
    let server = start(RedisServer::builder());
    let store = store(&server, Duration::from_secs(1)).await;
    store
        .claim_leadership("app", "app/0", LONG_LEASE)
        .await
        .expect("claim");
    let cancel = CancellationToken::new();
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move { store.block_until_leadership_released("app", cancel).await })
        })
        .collect();
    let dropped = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .block_until_leadership_released("app", CancellationToken::new())
                .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.blocked_waiters() < 11 {
        assert!(Instant::now() < deadline, "waiters never registered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    dropped.abort();
    let _ = dropped.await;
    assert_eq!(store.blocked_waiters(), 10, "an aborted wait unregisters");
    cancel.cancel();
    for waiter in waiters {
        let outcome = waiter.await.expect("waiter task");
        assert!(matches!(outcome, Err(Error::BlockCancelled)), "{outcome:?}");
    }
    assert_eq!(store.blocked_waiters(), 0);
}
