//! S4: every operation goes through one retry path. A dropped connection or a server that
//! is briefly gone (a restart, a failover under way) is ridden out within the operation
//! timeout; only a server gone for longer gives `Unavailable`.

use std::error::Error as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use leadership_core::{CancellationToken, Checker, Claimer, Error, Pinner, Reader, Revoker};
use leadership_redis::{GuardedScript, RedisStore};
use leadership_testkit::harness::RedisServer;

const TIMEOUT: Duration = Duration::from_secs(5);
const LEASE: Duration = Duration::from_secs(300);
/// How often each operation meets a freshly dropped connection.
const ROUNDS: usize = 10;

type Op<'a> = Pin<Box<dyn Future<Output = leadership_core::Result<()>> + Send + 'a>>;

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

/// Every operation of the store, by name; each leaves `app` led by `app/0`.
fn operation<'a>(store: &'a RedisStore, name: &str) -> Op<'a> {
    let unit = "app/0";
    match name {
        "claim" => {
            Box::pin(async move { store.claim_leadership("app", unit, LEASE).await.map(drop) })
        }
        "check" => {
            Box::pin(async move { store.leadership_check("app", unit).check().await.map(drop) })
        }
        "revoke" => Box::pin(async move {
            store.revoke_leadership("app", unit).await?;
            store.claim_leadership("app", unit, LEASE).await.map(drop)
        }),
        "pin" => Box::pin(async move { store.pin_leadership("app", "machine-0").await }),
        "unpin" => Box::pin(async move { store.unpin_leadership("app", "machine-0").await }),
        "pinned" => Box::pin(async move { store.pinned_leadership().await.map(drop) }),
        "leaders" => Box::pin(async move {
            let leaders = store.leaders().await?;
            assert_eq!(leaders.get("app").map(String::as_str), Some(unit));
            Ok(())
        }),
        "guarded set" | "guarded del" | "guarded script" => {
            let name = name.to_owned();
            Box::pin(async move {
                let fence = store.leadership_check("app", unit).check().await?;
                let key = format!("{}data", store.key_prefix());
                match name.as_str() {
                    "guarded set" => store.guarded_set("app", unit, fence, &key, "v").await,
                    "guarded del" => store.guarded_del("app", unit, fence, &key).await.map(drop),
                    _ => {
                        let script =
                            GuardedScript::new("return redis.call('SET', KEYS[1], ARGV[1])");
                        store
                            .guarded_script::<redis::Value>(
                                "app",
                                unit,
                                fence,
                                &script,
                                &[&key],
                                &[b"s"],
                            )
                            .await
                            .map(drop)
                    }
                }
            })
        }
        "wait" => Box::pin(async move {
            // Vacant: B1 returns at once, after looking through the subscriber.
            store
                .block_until_leadership_released("vacant", CancellationToken::new())
                .await
        }),
        other => panic!("no operation {other}"),
    }
}

/// Every operation that may be sent twice. A caller's guarded script is retried only
/// after errors that prove it did not run (see `a_restarting_server_is_ridden_out`).
const IDEMPOTENT: [&str; 10] = [
    "claim",
    "check",
    "revoke",
    "pin",
    "unpin",
    "pinned",
    "leaders",
    "guarded set",
    "guarded del",
    "wait",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_rides_out_a_dropped_connection() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let store = RedisStore::connect(&format!("{}?namespace=dropped&timeout=5s", server.url()))
        .await
        .expect("connect");
    store
        .claim_leadership("app", "app/0", LEASE)
        .await
        .expect("claim");
    for name in IDEMPOTENT {
        for round in 0..ROUNDS {
            // Drops the store's command and subscriber connections (the asking admin
            // connection is skipped).
            let killed = server
                .command(&["CLIENT", "KILL", "TYPE", "normal"])
                .expect("CLIENT KILL TYPE normal");
            // The command connection, and the subscriber once it has unsubscribed its
            // last channel (Redis then counts it as a normal client).
            assert_ne!(killed, "0", "{name}: nothing to kill");
            server
                .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
                .expect("CLIENT KILL TYPE pubsub");
            let started = Instant::now();
            if let Err(err) = operation(&store, name).await {
                panic!("{name}, round {round}: {}", chain(&err));
            }
            assert!(
                started.elapsed() < TIMEOUT,
                "{name} took {:?}",
                started.elapsed()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarting_server_is_ridden_out() {
    let server = RedisServer::builder()
        .aof(true)
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("{}?namespace=restart&timeout=5s", server.url());
    let server = Arc::new(Mutex::new(server));
    let store = RedisStore::connect(&url).await.expect("connect");
    store
        .claim_leadership("app", "app/0", LEASE)
        .await
        .expect("claim");

    let mut names: Vec<&str> = IDEMPOTENT.to_vec();
    names.extend(["guarded script", "connect"]);
    for name in names {
        // Down for 300 ms: every attempt meanwhile is refused, so even the guarded script,
        // which is never sent twice when its outcome is unknown, may be retried.
        server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .kill9()
            .expect("kill -9");
        let restart = {
            let server = server.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                server
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .start_again()
            })
        };
        let started = Instant::now();
        let result = if name == "connect" {
            RedisStore::connect(&url).await.map(drop)
        } else {
            operation(&store, name).await
        };
        restart
            .join()
            .expect("restart thread")
            .unwrap_or_else(|e| panic!("{e}"));
        if let Err(err) = result {
            panic!("{name} during a restart: {}", chain(&err));
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "{name} took {:?}",
            started.elapsed()
        );
    }

    // Gone for longer than the timeout: Unavailable, within it (E1).
    server
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .kill9()
        .expect("kill -9");
    let short = RedisStore::builder(&url)
        .expect("url")
        .operation_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let err = store
        .claim_leadership("app", "app/0", LEASE)
        .await
        .expect_err("server is gone");
    assert!(matches!(err, Error::Unavailable { .. }), "{}", chain(&err));
    assert!(started.elapsed() < TIMEOUT + Duration::from_secs(1));
    let started = Instant::now();
    let err = short.connect().await.expect_err("server is gone");
    assert!(matches!(err, Error::Unavailable { .. }), "{}", chain(&err));
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
}
