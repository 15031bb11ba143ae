//! S3: namespaces derived from one handle share its command connection and its release
//! subscriber, and still share nothing else (N1, B4).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use leadership_core::{CancellationToken, Checker, Claimer, Error, Pinner, Reader, Revoker};
use leadership_redis::RedisStore;
use leadership_testkit::harness::RedisServer;

const NAMESPACES: usize = 1_000;
/// Every this many namespaces, one waiter blocks on the namespace's application.
const WAITER_EVERY: usize = 10;
const LEASE: Duration = Duration::from_secs(60);

/// `CLIENT LIST` lines of everyone but the admin connection asking.
fn store_clients(server: &RedisServer) -> Vec<String> {
    let list = server
        .command(&["CLIENT", "LIST"])
        .expect("CLIENT LIST from a raw admin connection");
    list.lines()
        .filter(|line| !line.contains("cmd=client|list"))
        .map(str::to_owned)
        .collect()
}

/// A field of a `CLIENT LIST` line, e.g. `sub`.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split(' ')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or("")
}

/// Polls `CLIENT LIST` until `ok` holds (subscriptions are made by a background task).
async fn clients_until(server: &RedisServer, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let clients = store_clients(server);
        if ok(&clients) || Instant::now() > deadline {
            return clients;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_namespaces_use_one_connection_and_one_subscriber() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let root = RedisStore::connect(&format!("{}?namespace=root", server.url()))
        .await
        .expect("connect");
    let handles: Vec<RedisStore> = (0..NAMESPACES)
        .map(|i| root.namespace(&format!("model-{i}")))
        .collect();
    for (i, handle) in handles.iter().enumerate() {
        assert_eq!(handle.namespace_name(), format!("model-{i}"));
        handle
            .claim_leadership("app", "app/0", LEASE)
            .await
            .unwrap_or_else(|e| panic!("claim in model-{i}: {e}"));
    }
    // Every namespace has its own lease on the same application name (N1).
    assert_eq!(
        handles[7].leaders().await.expect("leaders"),
        BTreeMap::from([("app".to_owned(), "app/0".to_owned())])
    );
    assert!(root.leaders().await.expect("leaders").is_empty());

    let waiters: Vec<_> = handles
        .iter()
        .step_by(WAITER_EVERY)
        .map(|handle| {
            let handle = handle.clone();
            tokio::spawn(async move {
                handle
                    .block_until_leadership_released("app", CancellationToken::new())
                    .await
            })
        })
        .collect();
    let blocked = NAMESPACES / WAITER_EVERY;
    let deadline = Instant::now() + Duration::from_secs(10);
    while handles
        .iter()
        .step_by(WAITER_EVERY)
        .any(|h| h.blocked_waiters() != 1)
    {
        assert!(Instant::now() < deadline, "waiters did not register");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let want_sub = blocked.to_string();
    let clients = clients_until(&server, |clients| {
        clients.len() == 2 && clients.iter().any(|c| field(c, "sub") == want_sub)
    })
    .await;
    assert_eq!(
        clients.len(),
        2,
        "one command connection plus one subscriber, whatever the number of namespaces:\n{}",
        clients.join("\n")
    );
    let subscriber = clients
        .iter()
        .find(|c| field(c, "flags").contains('P'))
        .unwrap_or_else(|| panic!("no subscriber connection:\n{}", clients.join("\n")));
    assert_eq!(
        field(subscriber, "sub"),
        want_sub,
        "one channel per namespace with waiters, on the one subscriber: {subscriber}"
    );
    println!("CLIENT LIST (store's connections):\n{}", clients.join("\n"));

    // B5 for all of them at once: the subscriber connection dropped, every namespace's
    // channel is subscribed again on its replacement, and no waiter returns meanwhile.
    let killed = server
        .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .expect("CLIENT KILL TYPE pubsub");
    assert_eq!(killed, "1", "exactly one subscriber connection to kill");
    let old_id = field(subscriber, "id").to_owned();
    let clients = clients_until(&server, |clients| {
        clients
            .iter()
            .any(|c| field(c, "sub") == want_sub && field(c, "id") != old_id)
    })
    .await;
    assert_eq!(
        clients.len(),
        2,
        "resubscribed on one new connection:\n{}",
        clients.join("\n")
    );

    // One revoke per namespace releases that namespace's waiter (B4), and only after it.
    for waiter in &waiters {
        assert!(
            !waiter.is_finished(),
            "a waiter returned while the lease is held"
        );
    }
    for handle in handles.iter().step_by(WAITER_EVERY) {
        handle
            .revoke_leadership("app", "app/0")
            .await
            .expect("revoke");
    }
    for waiter in waiters {
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("released within 5 s")
            .expect("waiter task")
            .expect("released, not an error");
    }
    // The last waiter of each namespace gone, its channel is unsubscribed.
    let clients = clients_until(&server, |clients| {
        clients.iter().all(|c| matches!(field(c, "sub"), "" | "0"))
    })
    .await;
    assert!(
        clients.iter().all(|c| matches!(field(c, "sub"), "" | "0")),
        "{}",
        clients.join("\n")
    );
    assert!(clients.len() <= 2, "{}", clients.join("\n"));
}

/// N1 between two namespaces of one handle: claims, checks, pins, leaders and waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_of_one_handle_share_nothing() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let root = RedisStore::connect(&server.url()).await.expect("connect");
    assert_eq!(root.namespace_name(), leadership_core::DEFAULT_NAMESPACE);
    let a = root.namespace("n1-a");
    let b = root.namespace("n1-b");

    // Claims: both namespaces grant the same application to different units.
    let fence_a = a
        .claim_leadership("db", "db/0", LEASE)
        .await
        .expect("claim in a");
    b.claim_leadership("db", "db/1", LEASE)
        .await
        .expect("the same application is vacant in b");
    assert!(matches!(
        a.claim_leadership("db", "db/1", LEASE).await,
        Err(Error::ClaimDenied)
    ));

    // Checks.
    assert_eq!(
        a.leadership_check("db", "db/0").check().await.expect("a"),
        fence_a
    );
    assert!(
        b.leadership_check("db", "db/0")
            .check()
            .await
            .expect_err("db/0 leads in a only")
            .is_not_leader()
    );

    // Leaders.
    let leaders = |unit: &str| BTreeMap::from([("db".to_owned(), unit.to_owned())]);
    assert_eq!(a.leaders().await.expect("a"), leaders("db/0"));
    assert_eq!(b.leaders().await.expect("b"), leaders("db/1"));
    assert!(root.leaders().await.expect("root").is_empty());

    // Pins.
    a.pin_leadership("db", "machine-0").await.expect("pin in a");
    assert_eq!(
        a.pinned_leadership().await.expect("a"),
        BTreeMap::from([("db".to_owned(), vec!["machine-0".to_owned()])])
    );
    assert!(b.pinned_leadership().await.expect("b").is_empty());
    b.unpin_leadership("db", "machine-0")
        .await
        .expect("unpinning nothing is Ok");
    assert_eq!(a.pinned_leadership().await.expect("a").len(), 1);
    a.unpin_leadership("db", "machine-0").await.expect("unpin");

    // Waits: a release in b does not wake a's waiter; a's own revoke does.
    let waiter = {
        let a = a.clone();
        tokio::spawn(async move {
            a.block_until_leadership_released("db", CancellationToken::new())
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.blocked_waiters() != 1 {
        assert!(Instant::now() < deadline, "the waiter did not register");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.blocked_waiters(), 0);
    b.revoke_leadership("db", "db/1")
        .await
        .expect("revoke in b");
    b.block_until_leadership_released("db", CancellationToken::new())
        .await
        .expect("vacant in b: at once");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "b's revoke released a's waiter");
    assert_eq!(
        a.leadership_check("db", "db/0").check().await.expect("a"),
        fence_a
    );
    a.revoke_leadership("db", "db/0")
        .await
        .expect("revoke in a");
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("released within 5 s")
        .expect("waiter task")
        .expect("released");
}
