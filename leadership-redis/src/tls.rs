//! TLS setup for `rediss://`.

/// rustls needs a process-wide crypto provider; install ring's unless the application has
/// chosen one already.
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: a provider is then installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
