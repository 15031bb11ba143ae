//! `rediss://` against a redis-server with a TLS listener and a private CA.
#![cfg(feature = "tls")]

use std::path::Path;

use leadership_core::{Checker, Claimer};
use leadership_redis::RedisStore;
use leadership_testkit::harness::{RedisServer, RedisTls};

/// A throwaway CA and a `localhost`/`127.0.0.1` server certificate it signed, made in-process
/// with rcgen (issue 19.1: no test needs the openssl binary), written as PEM files into
/// `dir` for redis-server.
fn make_certs(dir: &Path) -> RedisTls {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "leadership test CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("self-signed CA");
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let server_key = rcgen::KeyPair::generate().expect("server key");
    let mut server =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
    server
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let server_cert = server.signed_by(&server_key, &issuer).expect("signed");

    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap_or_else(|e| panic!("write {name}: {e}"));
        path
    };
    RedisTls {
        cert: write("server.crt", server_cert.pem()),
        key: write("server.key", server_key.serialize_pem()),
        ca: write("ca.crt", ca_cert.pem()),
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
