//! A throwaway certificate authority for TLS tests, made in-process with rcgen: no test needs
//! the openssl binary (issue 19.1). Shared by the Redis and etcd TLS tests (issue 13.5).

use std::path::Path;

use super::{HarnessError, RedisTls};

/// A self-signed CA that signs `localhost` server certificates.
///
/// Generating keys cannot fail for reasons a test controls, so the constructors panic on an
/// rcgen error rather than make every test handle one.
pub struct TestCa {
    /// The CA certificate, PEM: what a client trusts.
    pub cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new self-signed CA with common name `name`.
    ///
    /// # Panics
    /// If rcgen cannot make a key or sign the certificate.
    pub fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1` signed by this CA, and its key:
    /// `(certificate PEM, key PEM)`.
    ///
    /// # Panics
    /// If rcgen cannot make a key or sign the certificate.
    pub fn server_cert(&self) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("server key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a new server certificate, its key and this CA into `dir` (`server.crt`,
    /// `server.key`, `ca.crt`) for a redis-server TLS listener.
    ///
    /// # Errors
    /// If a file cannot be written.
    pub fn redis_tls(&self, dir: &Path) -> Result<RedisTls, HarnessError> {
        let (cert, key) = self.server_cert();
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).map_err(|source| HarnessError::Io {
                what: format!("write {}", path.display()),
                source,
            })?;
            Ok::<_, HarnessError>(path)
        };
        Ok(RedisTls {
            cert: write("server.crt", &cert)?,
            key: write("server.key", &key)?,
            ca: write("ca.crt", &self.cert_pem)?,
        })
    }
}
