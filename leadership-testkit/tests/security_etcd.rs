//! etcd with auth enabled: a user whose role is limited to its namespace's key prefix works
//! there; a user limited to another namespace's prefix gets no handle on this one (refused at
//! connect, clearly and for good), so it can claim, check or revoke nothing here; and one namespace's
//! keys, seen through a raw root client, all live under that namespace's prefix (N1). Over
//! TLS (`etcds://`) with a CA the test makes, the store works; with another CA it is refused.

use std::error::Error as _;
use std::time::Duration;

use leadership_core::{Checker, Claimer, Error, Pinner, Reader};
use leadership_etcd::EtcdStore;
use leadership_etcd::etcd_client::{Client, GetOptions, Permission};
use leadership_testkit::harness::{EtcdServer, EtcdTls, TestCa};

const LONG: Duration = Duration::from_secs(60);

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

async fn as_user(server: &EtcdServer, namespace: &str, user: &str) -> EtcdStore {
    let config = EtcdStore::builder(&server.url())
        .expect("a valid etcd URL")
        .namespace(namespace)
        .credentials(user, format!("{user}-pw"))
        .operation_timeout(Duration::from_secs(3));
    match config.connect().await {
        Ok(store) => store,
        Err(err) => panic!("{user} cannot connect: {}", chain(&err)),
    }
}

fn is_refused(err: &Error) -> bool {
    matches!(err, Error::Backend { .. }) && !err.is_retryable()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_limited_to_another_prefix_can_do_nothing_here() {
    let server = match EtcdServer::start() {
        Ok(server) => server,
        Err(err) => panic!("cannot start etcd: {err}"),
    };
    let mut admin = Client::connect(server.endpoints(), None)
        .await
        .expect("admin");
    admin.user_add("root", "root-pw", None).await.expect("root");
    admin
        .user_grant_role("root", "root")
        .await
        .expect("root role");
    for (user, namespace) in [("alice", "ns-a"), ("bob", "ns-b")] {
        let role = format!("role-{namespace}");
        admin.role_add(&role).await.expect("role");
        let prefix = format!("leadership/{namespace}/");
        admin
            .role_grant_permission(&role, Permission::read_write(prefix).with_prefix())
            .await
            .expect("grant");
        admin
            .user_add(user, format!("{user}-pw"), None)
            .await
            .expect("user");
        admin.user_grant_role(user, &role).await.expect("user role");
    }
    admin.auth_enable().await.expect("auth enable");

    // Alice works in her namespace.
    let alice = as_user(&server, "ns-a", "alice").await;
    let fence = alice
        .claim_leadership("app", "app/0", LONG)
        .await
        .unwrap_or_else(|e| panic!("alice claims: {}", chain(&e)));
    assert_eq!(
        alice
            .leadership_check("app", "app/0")
            .check()
            .await
            .expect("check"),
        fence
    );
    alice.pin_leadership("app", "machine-0").await.expect("pin");
    let leaders = alice.leaders().await.expect("leaders");
    let pinned = alice.pinned_leadership().await.expect("pinned");

    // Bob, limited to ns-b, gets no handle on ns-a at all: the store checks its access to
    // the namespace when it connects, so nothing can be claimed, checked or revoked there.
    let config = EtcdStore::builder(&server.url())
        .expect("a valid etcd URL")
        .namespace("ns-a")
        .credentials("bob", "bob-pw")
        .operation_timeout(Duration::from_secs(3));
    let err = config
        .connect()
        .await
        .expect_err("bob must be refused in ns-a");
    assert!(is_refused(&err), "{}", chain(&err));
    let text = chain(&err);
    assert!(text.contains("permission denied"), "unclear: {text}");
    assert!(
        text.contains("denied user \"bob\" access to this namespace"),
        "unclear: {text}"
    );
    assert!(
        !text.contains("wrong user or password"),
        "misleading: {text}"
    );
    assert!(!text.contains("bob-pw"), "password shown: {text}");
    assert_eq!(
        alice.leaders().await.expect("leaders"),
        leaders,
        "bob changed leaders"
    );
    assert_eq!(
        alice.pinned_leadership().await.expect("pinned"),
        pinned,
        "bob changed pins"
    );
    assert_eq!(
        alice
            .leadership_check("app", "app/0")
            .check()
            .await
            .expect("check"),
        fence
    );

    // Bob in his own namespace: the same names, nothing shared.
    let bob = as_user(&server, "ns-b", "bob").await;
    bob.claim_leadership("app", "app/1", LONG)
        .await
        .expect("bob claims in ns-b");
    assert_eq!(
        bob.leaders()
            .await
            .expect("leaders")
            .get("app")
            .map(String::as_str),
        Some("app/1")
    );
    assert_eq!(alice.leaders().await.expect("leaders"), leaders);

    // Through a raw root client: every key lives under its namespace's prefix.
    let mut root = Client::connect(
        server.endpoints(),
        Some(leadership_etcd::etcd_client::ConnectOptions::new().with_user("root", "root-pw")),
    )
    .await
    .expect("root");
    let all = root
        .get("leadership/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("all keys");
    let keys: Vec<String> = all
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    let a = keys
        .iter()
        .filter(|k| k.starts_with("leadership/ns-a/"))
        .count();
    let b = keys
        .iter()
        .filter(|k| k.starts_with("leadership/ns-b/"))
        .count();
    assert_eq!(a + b, keys.len(), "keys outside both namespaces: {keys:?}");
    assert!(a >= 2 && b >= 1, "{keys:?}");
    println!(
        "SECURITY etcd: other-prefix user refused at connect, {} keys checked by prefix",
        keys.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcds_with_a_generated_ca_works_and_another_ca_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = TestCa::new("leadership etcd test CA");
    let (cert, key) = ca.server_cert();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write a PEM file");
        path
    };
    let tls = EtcdTls {
        cert_file: write("server.pem", &cert),
        key_file: write("server-key.pem", &key),
    };
    let ca_file = write("ca.pem", &ca.cert_pem);
    let other_ca_file = write("other-ca.pem", &TestCa::new("another CA").cert_pem);
    let server = EtcdServer::start_tls(&tls).unwrap_or_else(|e| panic!("{e}"));
    let url = server.tls_url().expect("a TLS endpoint");

    let trusted = format!("{url}?ca={}&namespace=tls&timeout=3s", ca_file.display());
    let store = match EtcdStore::connect(&trusted).await {
        Ok(store) => store,
        Err(err) => panic!("etcds:// with the right CA: {}", chain(&err)),
    };
    let fence = store
        .claim_leadership("app", "app/0", LONG)
        .await
        .unwrap_or_else(|e| panic!("claim over TLS: {}", chain(&e)));
    let checked = store.leadership_check("app", "app/0").check().await;
    assert_eq!(checked.ok(), Some(fence), "check over TLS");

    let untrusted = format!(
        "{url}?ca={}&namespace=tls&timeout=3s",
        other_ca_file.display()
    );
    let started = std::time::Instant::now();
    let err = match EtcdStore::connect(&untrusted).await {
        Ok(_) => panic!("etcds:// with another CA must be refused"),
        Err(err) => err,
    };
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refusal took {:?}",
        started.elapsed()
    );
    let text = chain(&err);
    assert!(
        text.to_lowercase().contains("certificate") || text.contains("UnknownIssuer"),
        "the cause names the certificate: {text}"
    );
    assert!(
        is_refused(&err),
        "a certificate refusal is not retryable: {text}"
    );
    assert!(text.contains("does not trust"), "{text}");
}
