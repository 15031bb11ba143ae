//! F2: guarded writes happen only while the unit leads with the given fence.

mod common;

use std::time::Duration;

use leadership_core::{Claimer, Error, Fence, PermissivePolicy, Revoker};
use leadership_redis::{GuardedScript, RedisStore};

const LEASE: Duration = Duration::from_secs(30);

async fn store(namespace: &str) -> RedisStore {
    RedisStore::builder(&common::server().url())
        .expect("valid redis URL")
        .namespace(namespace)
        .connect()
        .await
        .expect("connect")
}

fn get(key: &str) -> String {
    common::server().command(&["GET", key]).expect("GET")
}

fn not_leader(result: leadership_core::Result<impl std::fmt::Debug>, unit: &str) {
    match result {
        Err(Error::NotLeader {
            unit: u,
            application,
        }) => {
            assert_eq!((u.as_str(), application.as_str()), (unit, "app"));
        }
        other => panic!("expected NotLeader for {unit}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_set_and_del_only_for_the_current_term() {
    let store = store("guarded-set").await;
    let key = format!("{}user:config", store.key_prefix());
    let old = store
        .claim_leadership("app", "app/0", LEASE)
        .await
        .expect("claim");

    store
        .guarded_set("app", "app/0", old, &key, "v1")
        .await
        .expect("leader writes");
    assert_eq!(get(&key), "v1");

    // Wrong fence, wrong unit: refused, nothing written.
    not_leader(
        store
            .guarded_set("app", "app/0", Fence(old.get() + 1), &key, "x")
            .await,
        "app/0",
    );
    not_leader(
        store.guarded_set("app", "app/1", old, &key, "x").await,
        "app/1",
    );
    assert_eq!(get(&key), "v1");

    // A new term: the stale leader's writes fail, the new leader's succeed.
    store
        .revoke_leadership("app", "app/0")
        .await
        .expect("revoke");
    not_leader(
        store.guarded_set("app", "app/0", old, &key, "stale").await,
        "app/0",
    );
    let new = store
        .claim_leadership("app", "app/1", LEASE)
        .await
        .expect("claim");
    assert!(new > old);
    not_leader(
        store.guarded_set("app", "app/0", old, &key, "stale").await,
        "app/0",
    );
    not_leader(store.guarded_del("app", "app/0", old, &key).await, "app/0");
    assert_eq!(get(&key), "v1");
    store
        .guarded_set("app", "app/1", new, &key, "v2")
        .await
        .expect("new leader writes");
    assert_eq!(get(&key), "v2");
    assert!(
        store
            .guarded_del("app", "app/1", new, &key)
            .await
            .expect("del")
    );
    assert!(
        !store
            .guarded_del("app", "app/1", new, &key)
            .await
            .expect("del")
    );
    assert_eq!(get(&key), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_write_fails_after_expiry() {
    let store = store("guarded-expiry").await;
    let key = format!("{}user:k", store.key_prefix());
    let fence = store
        .claim_leadership("app", "app/0", Duration::from_millis(200))
        .await
        .expect("claim");
    store
        .guarded_set("app", "app/0", fence, &key, "a")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(400)).await;
    not_leader(
        store.guarded_set("app", "app/0", fence, &key, "b").await,
        "app/0",
    );
    assert_eq!(get(&key), "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_script_runs_any_body_with_its_own_keys_and_args() {
    let store = store("guarded-script").await;
    let counter = format!("{}user:counter", store.key_prefix());
    let log = format!("{}user:log", store.key_prefix());
    let script = GuardedScript::new(
        "redis.call('RPUSH', KEYS[2], ARGV[2])\n\
         return redis.call('INCRBY', KEYS[1], ARGV[1])",
    );
    let fence = store
        .claim_leadership("app", "app/0", LEASE)
        .await
        .expect("claim");
    for expected in [5, 10] {
        let value: i64 = store
            .guarded_script(
                "app",
                "app/0",
                fence,
                &script,
                &[&counter, &log],
                &[b"5", b"entry"],
            )
            .await
            .expect("guarded script");
        assert_eq!(value, expected);
    }
    let stale: leadership_core::Result<i64> = store
        .guarded_script(
            "app",
            "app/0",
            Fence(1),
            &script,
            &[&counter, &log],
            &[b"5", b"x"],
        )
        .await;
    not_leader(stale, "app/0");
    assert_eq!(get(&counter), "10");
    assert_eq!(
        common::server()
            .command(&["LRANGE", &log, "0", "-1"])
            .expect("LRANGE"),
        "entry\nentry"
    );

    // A body that returns nothing, and a failing body.
    let nothing = GuardedScript::new("redis.call('SET', KEYS[1], 'x')");
    let value: Option<String> = store
        .guarded_script("app", "app/0", fence, &nothing, &[&counter], &[])
        .await
        .expect("nil result");
    assert_eq!(value, None);
    let failing = GuardedScript::new("return redis.call('INCR', KEYS[1])");
    let err = store
        .guarded_script::<i64>("app", "app/0", fence, &failing, &[&counter], &[])
        .await
        .expect_err("INCR of a non-number fails");
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_writes_validate_names_and_accept_permissive_ones() {
    let juju = store("guarded-validate").await;
    let err = juju
        .guarded_set("Bad", "Bad/0", Fence(1), "k", "v")
        .await
        .expect_err("invalid application");
    assert!(err.is_invalid_input(), "{err:?}");

    let permissive = RedisStore::builder(&common::server().url())
        .expect("valid redis URL")
        .namespace("guarded-permissive")
        .policy(std::sync::Arc::new(PermissivePolicy::default()))
        .connect()
        .await
        .expect("connect");
    let key = format!("{}user:{{x}}", permissive.key_prefix());
    let fence = permissive
        .claim_leadership("a:b{c}", "pod:1", LEASE)
        .await
        .expect("claim");
    permissive
        .guarded_set("a:b{c}", "pod:1", fence, &key, "ok")
        .await
        .expect("guarded write with odd names");
    assert_eq!(get(&key), "ok");
}
