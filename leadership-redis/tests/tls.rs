//! `rediss://` against a redis-server with a TLS listener and a private CA.
#![cfg(feature = "tls")]

use std::path::Path;
use std::process::Command;

use leadership_core::{Checker, Claimer};
use leadership_redis::RedisStore;
use leadership_testkit::harness::{RedisServer, RedisTls};

/// A CA and a `localhost` server certificate it signed, made with the openssl CLI.
fn make_certs(dir: &Path) -> RedisTls {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("openssl not runnable ({e}): apt-get install openssl"));
        assert!(output.status.success(), "openssl {args:?}: {output:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=leadership test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write ext.cnf");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    RedisTls {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        ca: dir.join("ca.crt"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tls = make_certs(dir.path());
    let ca = std::fs::read(&tls.ca).expect("read CA");
    let server = RedisServer::builder()
        .tls(tls)
        .requirepass("tls-secret")
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let url = server.tls_url().expect("TLS listener");
    assert!(url.starts_with("rediss://localhost:"), "{url}");

    let store = RedisStore::builder(&url)
        .expect("valid redis URL")
        .password("tls-secret")
        .tls_root_cert_pem(ca)
        .namespace("tls")
        .connect()
        .await
        .expect("TLS connect with the private CA");
    let fence = store
        .claim_leadership("app", "app/0", std::time::Duration::from_secs(30))
        .await
        .expect("claim over TLS");
    assert_eq!(
        store
            .leadership_check("app", "app/0")
            .check()
            .await
            .expect("check"),
        fence
    );

    // The system roots do not know the private CA: the handshake must fail.
    let untrusted = RedisStore::builder(&url)
        .expect("valid redis URL")
        .password("tls-secret")
        .operation_timeout(std::time::Duration::from_secs(2))
        .connect()
        .await;
    assert!(untrusted.is_err(), "an unknown CA must not be trusted");
}
