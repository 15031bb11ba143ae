//! S3: handles for other namespaces share the first handle's client, so its one gRPC channel
//! and one TCP connection per member, and still share nothing else (N1). This binary owns its
//! server and runs one test, so every socket to that server's port is the store's.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use leadership_core::{CancellationToken, Checker, Claimer, Error, Pinner, Reader, Revoker};
use leadership_etcd::EtcdStore;
use leadership_testkit::harness::EtcdServer;

const LONG: Duration = Duration::from_secs(60);
const NAMESPACES: usize = 1_000;

/// The inodes of this process's sockets, from `/proc/self/fd`.
fn own_socket_inodes() -> HashSet<u64> {
    let mut inodes = HashSet::new();
    let dir = std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd is readable");
    for entry in dir.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|inode| inode.parse().ok())
        {
            inodes.insert(inode);
        }
    }
    inodes
}

/// Established TCP connections of this process whose remote port is `port` (IPv4 and IPv6).
fn connections_to(port: u16) -> usize {
    let own = own_socket_inodes();
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(state), Some(inode)) =
                (fields.get(2), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let remote_port = remote
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            let established = *state == "01";
            let ours = inode.parse::<u64>().is_ok_and(|i| own.contains(&i));
            if established && ours && remote_port == Some(port) {
                count += 1;
            }
        }
    }
    count
}

fn port_of(endpoint: &str) -> u16 {
    endpoint
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .expect("an endpoint is host:port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_thousand_namespaces_share_one_connection_and_nothing_else() {
    let server = match EtcdServer::start() {
        Ok(server) => server,
        Err(err) => panic!("cannot start etcd: {err}"),
    };
    let port = port_of(&server.endpoint());
    let root = EtcdStore::connect(&format!("{}?namespace=s3-root", server.url()))
        .await
        .unwrap();
    assert_eq!(connections_to(port), 1, "one connection after connect");

    let handles: Vec<EtcdStore> = (0..NAMESPACES)
        .map(|i| root.namespace(&format!("model-{i}")))
        .collect();
    let claimed: Vec<_> = stream::iter(handles.iter().enumerate())
        .map(|(i, store)| async move {
            assert_eq!(store.namespace_name(), format!("model-{i}"));
            store
                .claim_leadership("app", &format!("app/{}", i % 7), LONG)
                .await
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let failures: Vec<_> = claimed.iter().filter(|r| r.is_err()).collect();
    assert!(failures.is_empty(), "failed claims: {failures:?}");
    // Each namespace saw its own vacant application: every claim started a term.
    for (i, store) in handles.iter().enumerate().step_by(97) {
        let leaders = store.leaders().await.unwrap();
        let want = BTreeMap::from([("app".to_owned(), format!("app/{}", i % 7))]);
        assert_eq!(leaders, want, "namespace model-{i}");
    }
    assert_eq!(
        connections_to(port),
        1,
        "{NAMESPACES} namespaces over one handle use one TCP connection to the member"
    );
    // The count is not blind: a second connect is a second connection.
    let other = EtcdStore::connect(&server.url()).await.unwrap();
    assert_eq!(connections_to(port), 2);
    drop(other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n1_two_namespaces_of_one_handle_share_nothing() {
    let server = match EtcdServer::start() {
        Ok(server) => server,
        Err(err) => panic!("cannot start etcd: {err}"),
    };
    let a = EtcdStore::connect(&format!("{}?namespace=n1-a", server.url()))
        .await
        .unwrap();
    let b = a.namespace("n1-b");
    let fence_a = a.claim_leadership("app", "app/0", LONG).await.unwrap();
    a.pin_leadership("app", "machine-0").await.unwrap();

    // b sees none of a's state: the application is vacant there.
    assert!(b.leaders().await.unwrap().is_empty());
    assert!(b.pinned_leadership().await.unwrap().is_empty());
    let checked = b.leadership_check("app", "app/0").check().await;
    assert!(
        matches!(checked, Err(Error::NotLeader { .. })),
        "{checked:?}"
    );
    tokio::time::timeout(
        Duration::from_secs(5),
        b.block_until_leadership_released("app", CancellationToken::new()),
    )
    .await
    .expect("a vacant application releases at once (B1)")
    .unwrap();
    assert!(matches!(b.revoke_leadership("app", "app/1").await, Ok(())));

    // b's own term changes nothing in a, and the other way round.
    let fence_b = b.claim_leadership("app", "app/1", LONG).await.unwrap();
    assert_eq!(
        a.leadership_check("app", "app/0").check().await.unwrap(),
        fence_a
    );
    assert!(matches!(
        a.claim_leadership("app", "app/1", LONG).await,
        Err(Error::ClaimDenied)
    ));
    b.revoke_leadership("app", "app/1").await.unwrap();
    assert_eq!(
        a.leaders().await.unwrap(),
        BTreeMap::from([("app".to_owned(), "app/0".to_owned())])
    );
    assert_eq!(
        a.pinned_leadership().await.unwrap(),
        BTreeMap::from([("app".to_owned(), vec!["machine-0".to_owned()])])
    );
    a.unpin_leadership("app", "machine-0").await.unwrap();
    a.revoke_leadership("app", "app/0").await.unwrap();
    assert!(a.leaders().await.unwrap().is_empty());
    assert!(fence_b != fence_a);
}
