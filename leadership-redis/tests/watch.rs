//! Watches (O2, O4) against what only a real server shows: a restart during a watch, the
//! channel subscription a dropped stream leaves (none), and one subscription shared by many
//! watchers (S3). Each test runs its own redis-server, so `PUBSUB` and `CLIENT LIST` count
//! only its clients.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use leadership_core::conformance::WatchView;
use leadership_core::watch::{LeaderEvent, LeaderStream, Watcher};
use leadership_core::{Claimer, Reader, Revoker};
use leadership_redis::RedisStore;
use leadership_testkit::harness::{RedisServer, RedisServerBuilder};
use tokio::time::{Instant, sleep, timeout};

const LEASE: Duration = Duration::from_secs(120);
/// How long anything in these tests may take to show (a restart and a reconnect included).
const CONVERGE: Duration = Duration::from_secs(10);

fn start(builder: RedisServerBuilder) -> RedisServer {
    builder.start().unwrap_or_else(|err| panic!("{err}"))
}

async fn store(server: &RedisServer, namespace: &str) -> RedisStore {
    RedisStore::builder(&server.url())
        .expect("valid redis URL")
        .namespace(namespace)
        .operation_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connect")
}

/// Retries `op` on retryable errors (the server restarting) until [`CONVERGE`].
async fn eventually<T, Fut>(what: &str, mut op: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = leadership_core::Result<T>>,
{
    let deadline = Instant::now() + CONVERGE;
    loop {
        match op().await {
            Ok(value) => return value,
            Err(err) if err.is_retryable() && Instant::now() < deadline => {
                sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("{what}: {err}"),
        }
    }
}

/// Reads events into `view` (the suite's checking view) until it equals `truth`, then asserts
/// that nothing else comes for half a second.
async fn converge(
    view: &mut WatchView,
    stream: &mut LeaderStream,
    truth: &BTreeMap<String, String>,
) {
    view.converge(
        stream,
        truth,
        CONVERGE,
        Duration::from_millis(500),
        "redis watch",
    )
    .await;
}

/// O4: a kill -9 and restart of a server that keeps its data (AOF) during a watch: the
/// leases survive, so the watcher sees nothing for them; a revoke by another client right
/// after the restart, whose message the watcher's subscriber may well miss while it
/// reconnects, is seen through the resync; and the stream keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_a_watch_converges_without_a_false_event() {
    let mut server = start(RedisServer::builder().aof(true));
    let watcher = store(&server, "restart").await;
    let mut view = WatchView::checking_terms();
    for app in ["kept", "revoked"] {
        let unit = format!("{app}/0");
        let fence = watcher
            .claim_leadership(app, &unit, LEASE)
            .await
            .expect("claim");
        view.made(app, &unit, fence);
    }
    let mut stream = watcher.watch_leaders().await.expect("watch");
    let truth = watcher.leaders().await.expect("leaders");
    converge(&mut view, &mut stream, &truth).await;

    server.kill9().expect("kill -9");
    server.start_again().expect("start again");
    // Another client acts at once, while the watcher's subscriber is still reconnecting.
    let other = eventually("connect after restart", || async {
        Ok(store(&server, "restart").await)
    })
    .await;
    eventually("revoke after restart", || {
        other.revoke_leadership("revoked", "revoked/0")
    })
    .await;
    let truth = eventually("leaders after restart", || other.leaders()).await;
    assert_eq!(
        truth,
        BTreeMap::from([("kept".to_owned(), "kept/0".to_owned())]),
        "AOF keeps the leases"
    );
    converge(&mut view, &mut stream, &truth).await;

    // Still alive: a new term and its end are seen.
    let fence = eventually("claim after restart", || {
        other.claim_leadership("new", "new/1", LEASE)
    })
    .await;
    view.made("new", "new/1", fence);
    let truth = other.leaders().await.expect("leaders");
    converge(&mut view, &mut stream, &truth).await;
    other
        .revoke_leadership("new", "new/1")
        .await
        .expect("revoke");
    converge(
        &mut view,
        &mut stream,
        &other.leaders().await.expect("leaders"),
    )
    .await;
}

/// O4: a restart that loses the data (no persistence) ended every term: the watcher is told
/// so, and only so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_loses_the_leases_vacates_them_and_nothing_else() {
    let mut server = start(RedisServer::builder());
    let watcher = store(&server, "lost").await;
    let mut view = WatchView::checking_terms();
    for app in ["a", "b"] {
        let unit = format!("{app}/0");
        let fence = watcher
            .claim_leadership(app, &unit, LEASE)
            .await
            .expect("claim");
        view.made(app, &unit, fence);
    }
    let mut stream = watcher.watch_leaders().await.expect("watch");
    let truth = watcher.leaders().await.expect("leaders");
    assert_eq!(truth.len(), 2);
    converge(&mut view, &mut stream, &truth).await;

    server.kill9().expect("kill -9");
    server.start_again().expect("start again");
    let truth = eventually("leaders after restart", || watcher.leaders()).await;
    assert!(truth.is_empty(), "{truth:?}");
    converge(&mut view, &mut stream, &truth).await;
}

/// The namespace's channel and its subscribers, from a raw client.
fn numsub(server: &RedisServer, channel: &str) -> u64 {
    let reply = server
        .command(&["PUBSUB", "NUMSUB", channel])
        .expect("PUBSUB NUMSUB");
    reply
        .lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("PUBSUB NUMSUB reply: {reply:?}"))
}

/// `CLIENT LIST` lines of connections subscribed to at least one channel.
fn subscribers(server: &RedisServer) -> Vec<String> {
    server
        .command(&["CLIENT", "LIST"])
        .expect("CLIENT LIST")
        .lines()
        .filter(|line| {
            line.split_whitespace()
                .any(|field| field.strip_prefix("sub=").is_some_and(|n| n != "0"))
        })
        .map(str::to_owned)
        .collect()
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + CONVERGE;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// O4: dropping every stream of a namespace unsubscribes its channel and ends its watch (the
/// expiry timer with it); waiters of the same namespace keep the channel while they wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_stream_unsubscribes_the_namespace() {
    let server = start(RedisServer::builder());
    let store = store(&server, "drop").await;
    let channel = format!("{}released", store.key_prefix());
    store
        .claim_leadership("app", "app/0", LEASE)
        .await
        .expect("claim");
    let streams = vec![
        store.watch_leaders().await.expect("watch"),
        store.watch_leaders().await.expect("watch"),
        store.watch_leader("app").await.expect("watch one"),
    ];
    assert_eq!(store.watchers(), (3, true));
    assert_eq!(numsub(&server, &channel), 1);

    drop(streams);
    assert_eq!(store.watchers(), (0, false));
    until("the channel is unsubscribed after the last stream", || {
        numsub(&server, &channel) == 0
    })
    .await;
    assert!(
        subscribers(&server).is_empty(),
        "{:?}",
        subscribers(&server)
    );

    // A waiter holds the channel; a watch over it comes and goes without unsubscribing it.
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .block_until_leadership_released("app", leadership_core::CancellationToken::new())
                .await
        })
    };
    until("the waiter subscribes", || numsub(&server, &channel) == 1).await;
    let stream = store.watch_leaders().await.expect("watch");
    drop(stream);
    assert_eq!(store.watchers(), (0, false));
    sleep(Duration::from_millis(200)).await;
    assert_eq!(numsub(&server, &channel), 1, "the waiter still needs it");
    store
        .revoke_leadership("app", "app/0")
        .await
        .expect("revoke");
    timeout(CONVERGE, waiter)
        .await
        .expect("the waiter is released")
        .expect("task")
        .expect("released");
    until("the channel is unsubscribed after the waiter", || {
        numsub(&server, &channel) == 0
    })
    .await;
}

/// O4, S3: 200 watchers over one handle and its namespace handles hold one subscriber
/// connection, one channel subscription per namespace, and each sees every change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watchers_of_one_handle_share_one_subscription() {
    const NAMESPACES: usize = 4;
    const PER_NAMESPACE: usize = 50;
    let server = start(RedisServer::builder());
    let root = store(&server, "share-0").await;
    let handles: Vec<RedisStore> = (0..NAMESPACES)
        .map(|i| root.namespace(&format!("share-{i}")))
        .collect();
    let mut streams = Vec::new();
    for handle in &handles {
        for i in 0..PER_NAMESPACE {
            let stream = if i % 2 == 0 {
                handle.watch_leaders().await
            } else {
                handle.watch_leader("app").await
            };
            let mut stream = stream.expect("watch");
            assert!(matches!(
                stream.next().await,
                Some(LeaderEvent::Snapshot { .. })
            ));
            streams.push(stream);
        }
    }
    for handle in &handles {
        assert_eq!(handle.watchers(), (PER_NAMESPACE, true));
        let channel = format!("{}released", handle.key_prefix());
        assert_eq!(
            numsub(&server, &channel),
            1,
            "one subscription of {channel}"
        );
    }
    let subscribed = subscribers(&server);
    assert_eq!(
        subscribed.len(),
        1,
        "one subscriber connection: {subscribed:?}"
    );
    assert!(
        subscribed[0].contains(&format!("sub={NAMESPACES} ")),
        "{}",
        subscribed[0]
    );
    let clients = server.command(&["CLIENT", "LIST"]).expect("CLIENT LIST");
    // The store's command connection, its subscriber, and the CLIENT LIST connection itself.
    assert_eq!(clients.lines().count(), 3, "{clients}");

    let fence = handles[1]
        .claim_leadership("app", "app/0", LEASE)
        .await
        .expect("claim");
    let expected = LeaderEvent::Elected {
        application: "app".into(),
        unit: "app/0".into(),
        fence,
    };
    for (i, stream) in streams.iter_mut().enumerate() {
        let namespace = i / PER_NAMESPACE;
        if namespace == 1 {
            let event = timeout(CONVERGE, stream.next()).await.expect("in time");
            assert_eq!(event.as_ref(), Some(&expected), "watcher {i}");
        } else {
            assert!(
                timeout(Duration::from_millis(20), stream.next())
                    .await
                    .is_err(),
                "watcher {i} of another namespace saw a change"
            );
        }
    }
    drop(streams);
    until("every channel is unsubscribed", || {
        subscribers(&server)
            .first()
            .is_none_or(|line| line.contains(" sub=0 "))
    })
    .await;
}
