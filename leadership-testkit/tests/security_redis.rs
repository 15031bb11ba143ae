//! The Redis store's security (issue 8): an ACL user limited to its namespace's key pattern
//! and channel, and only the commands the store needs, can do everything; a user without
//! rights on the pattern gets a permission error, not a retryable one; `rediss://` with a CA
//! this test makes (rcgen, so no openssl binary is needed) works and another CA is refused;
//! one namespace's handle never reads or changes another's keys (N1), checked with a raw
//! client.
//!
//! leadership-redis/tests/faults.rs already covers ACL logins with every right, wrong
//! passwords and unknown users; leadership-redis/tests/tls.rs a private CA made by openssl
//! against the system roots.

use std::collections::BTreeMap;
use std::time::Duration;

use leadership_core::{CancellationToken, Checker, Claimer, Error, Fence, Pinner, Reader, Revoker};
use leadership_redis::RedisStore;
use leadership_testkit::harness::{RedisServer, RedisTls, TestCa};
use tokio::time::timeout;

/// Every command the store sends: on connect (`PING`; the redis crate's `CLIENT SETINFO`
/// may be refused, it ignores the answer; Redis 7.0 does not know it), for
/// checks (`GET`), inside its scripts (loaded with `SCRIPT LOAD`, run with `EVALSHA`, `EVAL`
/// as the fallback), and for the release subscription. `RPUSH` and `SET` are the tests'
/// guarded-write bodies. This is the list an operator grants.
const STORE_COMMANDS: &[&str] = &[
    "+ping",
    "+hello",
    "+auth",
    "+select",
    "+evalsha",
    "+eval",
    "+script|load",
    "+get",
    "+set",
    "+del",
    "+exists",
    "+pexpire",
    "+pexpireat",
    "+pexpiretime",
    "+pttl",
    "+persist",
    "+time",
    "+hget",
    "+hset",
    "+hdel",
    "+hgetall",
    "+sadd",
    "+srem",
    "+scard",
    "+smembers",
    "+publish",
    "+subscribe",
    "+unsubscribe",
    "+rpush",
];

/// The prefix of every key of `namespace` (leadership-redis/src/keys.rs), for namespaces
/// without `%`, `{` or `}`; also its release channel's prefix.
fn prefix_of(namespace: &str) -> String {
    format!("leadership:{{n{namespace}}}:")
}

/// Creates `user` with `password`, the store's commands, and keys and channels matching
/// `leadership:{n<namespace>}:*` only.
fn scoped_user(server: &RedisServer, user: &str, password: &str, namespace: &str) {
    let keys = format!("~{}*", prefix_of(namespace));
    let channels = format!("&{}*", prefix_of(namespace));
    let secret = format!(">{password}");
    let mut args = vec![
        "ACL", "SETUSER", user, "reset", "on", &secret, &keys, &channels,
    ];
    args.extend_from_slice(STORE_COMMANDS);
    server
        .command(&args)
        .unwrap_or_else(|e| panic!("ACL SETUSER {user}: {e}"));
}

fn start(builder: leadership_testkit::harness::RedisServerBuilder) -> RedisServer {
    match builder.start() {
        Ok(server) => server,
        Err(err) => panic!("{err}"),
    }
}

async fn login(server: &RedisServer, user: &str, password: &str, namespace: &str) -> RedisStore {
    RedisStore::builder(&server.url())
        .expect("valid redis URL")
        .username(user)
        .password(password)
        .namespace(namespace)
        .operation_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{user} logs in: {}", chain(&e)))
}

/// The error and its sources, for assertions on the cause.
fn chain(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(" <- ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

const LEASE: Duration = Duration::from_secs(30);

/// Every operation of the contract, through `store`, on application `app`.
async fn full_workload(store: &RedisStore, app: &str) -> Fence {
    let unit0 = format!("{app}/0");
    let unit1 = format!("{app}/1");
    let fence = store
        .claim_leadership(app, &unit0, LEASE)
        .await
        .unwrap_or_else(|e| panic!("claim: {}", chain(&e)));
    assert_eq!(
        store
            .claim_leadership(app, &unit0, LEASE)
            .await
            .expect("extend"),
        fence
    );
    assert!(matches!(
        store.claim_leadership(app, &unit1, LEASE).await,
        Err(Error::ClaimDenied)
    ));
    assert_eq!(
        store
            .leadership_check(app, &unit0)
            .check()
            .await
            .expect("check"),
        fence
    );
    store
        .guarded_set(
            app,
            &unit0,
            fence,
            &format!("{}config:{app}", store.key_prefix()),
            "primary",
        )
        .await
        .unwrap_or_else(|e| panic!("guarded write: {}", chain(&e)));
    store.pin_leadership(app, "machine-0").await.expect("pin");
    assert_eq!(
        store.pinned_leadership().await.expect("pinned").get(app),
        Some(&vec!["machine-0".to_owned()])
    );
    store
        .unpin_leadership(app, "machine-0")
        .await
        .expect("unpin");
    assert_eq!(
        store
            .leaders()
            .await
            .expect("leaders")
            .get(app)
            .map(String::as_str),
        Some(unit0.as_str())
    );

    // A waiter (subscribed on the namespace's channel) is released by the revoke.
    let waiter = tokio::spawn({
        let store = store.clone();
        let app = app.to_owned();
        async move {
            store
                .block_until_leadership_released(&app, CancellationToken::new())
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "held: the waiter waits");
    store
        .revoke_leadership(app, &unit0)
        .await
        .unwrap_or_else(|e| panic!("revoke: {}", chain(&e)));
    timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the revoke releases the waiter")
        .expect("waiter task")
        .unwrap_or_else(|e| panic!("block: {}", chain(&e)));
    let next = store
        .claim_leadership(app, &unit1, LEASE)
        .await
        .expect("claim after release");
    assert!(next > fence);
    next
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_limited_to_the_namespace_pattern_can_do_everything() {
    let server = start(RedisServer::builder().requirepass("admin-pw"));
    scoped_user(&server, "tenant-a", "pw-a", "tenant-a");
    let store = login(&server, "tenant-a", "pw-a", "tenant-a").await;
    full_workload(&store, "mysql").await;

    // Redis enforced the pattern all along: outside it, the same user is refused.
    let denied = server.command(&["ACL", "DRYRUN", "tenant-a", "GET", "leadership:{nother}:x"]);
    let denied = denied.expect("ACL DRYRUN");
    assert!(denied.contains("no permissions"), "{denied}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_rights_on_the_namespace_gets_a_permission_error() {
    let server = start(RedisServer::builder().requirepass("admin-pw"));
    scoped_user(&server, "tenant-b", "pw-b", "tenant-b");
    // tenant-b's credentials, tenant-a's namespace: logging in works (PING needs no key),
    // every operation on tenant-a's keys is refused.
    let store = login(&server, "tenant-b", "pw-b", "tenant-a").await;
    let outcomes: Vec<(&str, leadership_core::Result<()>)> = vec![
        (
            "claim",
            store
                .claim_leadership("mysql", "mysql/0", LEASE)
                .await
                .map(drop),
        ),
        (
            "check",
            store
                .leadership_check("mysql", "mysql/0")
                .check()
                .await
                .map(drop),
        ),
        ("revoke", store.revoke_leadership("mysql", "mysql/0").await),
        ("pin", store.pin_leadership("mysql", "machine-0").await),
        ("pinned", store.pinned_leadership().await.map(drop)),
        ("leaders", store.leaders().await.map(drop)),
    ];
    for (operation, outcome) in outcomes {
        let err = outcome.expect_err(operation);
        let text = chain(&err);
        assert!(matches!(err, Error::Backend { .. }), "{operation}: {text}");
        assert!(!err.is_retryable(), "{operation}: {text}");
        assert_eq!(
            err.to_string(),
            format!("redis store failed during {operation}"),
            "{operation}"
        );
        assert!(
            text.contains("NOPERM") || text.contains("no permissions"),
            "{operation}: the cause names the missing permission: {text}"
        );
        assert!(!text.contains("pw-b"), "{operation}: {text}");
    }
    // A wait is refused too, not left hanging on a subscription that can never succeed.
    let wait = timeout(
        Duration::from_secs(10),
        store.block_until_leadership_released("mysql", CancellationToken::new()),
    )
    .await
    .expect("a refused wait returns rather than hangs");
    let err = wait.expect_err("a refused wait is an error, never Ok (B5)");
    let text = chain(&err);
    assert!(!err.is_retryable(), "wait: {text}");
    assert!(
        text.contains("NOPERM") || text.contains("no permissions"),
        "wait: {text}"
    );
    let leaders = server
        .command(&["KEYS", &format!("{}*", prefix_of("tenant-a"))])
        .expect("KEYS");
    assert_eq!(leaders, "", "nothing was written in tenant-a");

    // A user with no commands at all is refused at login, clearly.
    server
        .command(&["ACL", "SETUSER", "nobody", "reset", "on", ">pw-n"])
        .expect("ACL SETUSER nobody");
    let err = RedisStore::builder(&server.url())
        .expect("valid redis URL")
        .username("nobody")
        .password("pw-n")
        .namespace("tenant-a")
        .connect()
        .await
        .expect_err("no rights at all");
    assert!(!err.is_retryable(), "{}", chain(&err));
    assert_eq!(err.to_string(), "redis store failed during login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_generated_ca_works_and_another_ca_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("leadership test CA");
    let (cert, key) = ca.server_cert();
    let write = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    };
    let tls = RedisTls {
        cert: write("server.crt", &cert),
        key: write("server.key", &key),
        ca: write("ca.crt", &ca.cert_pem),
    };
    let server = start(RedisServer::builder().tls(tls).requirepass("tls-secret"));
    let url = server.tls_url().expect("a TLS listener");

    let store = RedisStore::builder(&url)
        .expect("valid redis URL")
        .password("tls-secret")
        .tls_root_cert_pem(ca.cert_pem.clone())
        .namespace("tls")
        .operation_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("rediss:// with the generated CA: {}", chain(&e)));
    full_workload(&store, "app").await;

    // A CA that did not sign the server's certificate: the handshake fails, promptly.
    let other = TestCa::new("another CA");
    let started = std::time::Instant::now();
    let err = timeout(
        Duration::from_secs(10),
        RedisStore::builder(&url)
            .expect("valid redis URL")
            .password("tls-secret")
            .tls_root_cert_pem(other.cert_pem)
            .namespace("tls")
            .operation_timeout(Duration::from_secs(2))
            .connect(),
    )
    .await
    .expect("a refused handshake does not hang")
    .expect_err("a certificate from another CA must not be trusted");
    let text = chain(&err);
    println!(
        "SECURITY redis: wrong CA refused after {:?}: {text} (retryable: {})",
        started.elapsed(),
        err.is_retryable()
    );
    assert!(!text.contains("tls-secret"), "{text}");
    // An untrusted certificate is permanent: not retryable, or callers would retry forever.
    assert!(
        matches!(err, Error::Backend { .. }) && !err.is_retryable(),
        "a certificate refusal is not retryable: {text}"
    );
    assert!(
        text.to_lowercase().contains("certificate") || text.contains("UnknownIssuer"),
        "the cause names the certificate: {text}"
    );
}

/// Every key of the server with its type, value (`DUMP`) and absolute expiry, read with a
/// raw client (not the store).
fn snapshot(url: &str) -> BTreeMap<String, (Vec<u8>, i64)> {
    tokio::task::block_in_place(|| {
        let mut raw = redis::Client::open(url)
            .and_then(|c| c.get_connection())
            .expect("a raw redis connection");
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut raw).expect("KEYS");
        keys.into_iter()
            .map(|key| {
                let dump: Vec<u8> = redis::cmd("DUMP").arg(&key).query(&mut raw).expect("DUMP");
                let at: i64 = redis::cmd("PEXPIRETIME")
                    .arg(&key)
                    .query(&mut raw)
                    .expect("PEXPIRETIME");
                (key, (dump, at))
            })
            .collect()
    })
}

/// Redis's hash tag of a key: between the first `{` and the next `}`, if non-empty.
fn hash_tag(key: &str) -> &str {
    let Some(open) = key.find('{') else {
        return key;
    };
    match key[open + 1..].find('}') {
        Some(0) | None => key,
        Some(len) => &key[open + 1..open + 1 + len],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_namespace_never_reads_or_changes_another() {
    let server = start(RedisServer::builder());
    let url = server.url();
    let open = |namespace: &'static str| {
        let url = url.clone();
        async move {
            RedisStore::builder(&url)
                .expect("valid redis URL")
                .namespace(namespace)
                .connect()
                .await
                .expect("connect")
        }
    };
    // `tenant-a}` looks like `tenant-a` with its tag closed early; its own tag is escaped.
    let a = open("tenant-a").await;
    let b = open("tenant-b").await;
    let lookalike = open("tenant-a}").await;

    let b_fence = b
        .claim_leadership("mysql", "mysql/0", LEASE)
        .await
        .expect("b claims");
    b.pin_leadership("mysql", "machine-0")
        .await
        .expect("b pins");
    b.guarded_set(
        "mysql",
        "mysql/0",
        b_fence,
        &format!("{}config:mysql", b.key_prefix()),
        "b",
    )
    .await
    .expect("b writes");
    let before = snapshot(&url);
    let b_keys: BTreeMap<_, _> = before
        .iter()
        .filter(|(k, _)| k.starts_with(b.key_prefix()))
        .collect();
    assert_eq!(
        b_keys.len(),
        before.len(),
        "only b's keys so far: {before:?}"
    );

    // a (and the look-alike) use the same application and unit names, and try b's.
    assert!(
        a.leaders().await.expect("leaders").is_empty(),
        "a sees b's leader"
    );
    assert!(a.pinned_leadership().await.expect("pinned").is_empty());
    let err = a
        .leadership_check("mysql", "mysql/0")
        .check()
        .await
        .expect_err("b's lease is not a's");
    assert!(err.is_not_leader(), "{err:?}");
    a.revoke_leadership("mysql", "mysql/0")
        .await
        .expect("revoking a vacant lease is Ok (R1)");
    a.unpin_leadership("mysql", "machine-0")
        .await
        .expect("unpin of nothing");
    let stale = a
        .guarded_set(
            "mysql",
            "mysql/0",
            b_fence,
            &format!("{}config:mysql", b.key_prefix()),
            "a",
        )
        .await
        .expect_err("a's guard is a's lease: b's fence means nothing here");
    assert!(stale.is_not_leader(), "{stale:?}");
    a.block_until_leadership_released("mysql", CancellationToken::new())
        .await
        .expect("vacant in a: B1");
    full_workload(&a, "mysql").await;
    full_workload(&lookalike, "mysql").await;

    let after = snapshot(&url);
    for (key, value) in &b_keys {
        let now = after.get(*key);
        let (dump, at) = *value;
        assert_eq!(now, Some(&(dump.clone(), *at)), "b's key {key} changed");
    }
    for key in after.keys() {
        let owner = [&a, &b, &lookalike]
            .into_iter()
            .filter(|s| key.starts_with(s.key_prefix()))
            .count();
        assert_eq!(owner, 1, "{key} belongs to exactly one namespace");
    }
    let a_keys: Vec<&String> = after
        .keys()
        .filter(|k| k.starts_with(a.key_prefix()))
        .collect();
    assert!(a_keys.len() >= 3, "a wrote its keys: {a_keys:?}");
    for key in &a_keys {
        assert_eq!(hash_tag(key), "ntenant-a", "{key}");
    }
    for key in after
        .keys()
        .filter(|k| k.starts_with(lookalike.key_prefix()))
    {
        assert_ne!(hash_tag(key), "ntenant-a", "{key}");
    }
    assert_eq!(
        b.leadership_check("mysql", "mysql/0")
            .check()
            .await
            .expect("b still leads"),
        b_fence
    );
    println!(
        "SECURITY redis: namespaces a={} b={} look-alike={} keys after both workloads",
        a_keys.len(),
        b_keys.len(),
        after.len() - a_keys.len() - b_keys.len()
    );
}
