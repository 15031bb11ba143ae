//! Connecting: client options, TLS, credentials, the first read, and what a failure to connect says.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, TlsOptions};
use leadership_core::watch::WatchHub;
use leadership_core::{Error, Result, retry};

use crate::BACKEND;
use crate::builder::EtcdStoreBuilder;
use crate::error::{Detail, connect_error};
use crate::follow::Feeds;
use crate::keys::Keys;
use crate::store::{EtcdStore, Shared};

/// HTTP/2 pings find a dead or frozen member under an idle watch within about this long.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

impl EtcdStore {
    /// Connects to `url` (see [`EtcdStore::builder`]) with the default options.
    ///
    /// # Errors
    /// As [`EtcdStore::builder`] and [`EtcdStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder(url)?.connect().await
    }

    /// Connects and checks that the cluster answers a linearizable read of this namespace
    /// within the operation timeout, so a wrong endpoint or password fails here rather than
    /// on first use.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if no member answers in time; [`Error::Backend`] for a CA file
    /// that cannot be read, or refused credentials (the message says which).
    pub(crate) async fn open(builder: EtcdStoreBuilder) -> Result<Self> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(builder.timeout)
            .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some((user, password)) = &builder.credentials {
            options = options.with_user(user.clone(), password.clone());
        }
        let scheme = if builder.tls { "https" } else { "http" };
        if builder.tls {
            let mut tls = TlsOptions::new();
            if let Some(path) = &builder.ca_file {
                let pem = std::fs::read(path).map_err(|e| {
                    Error::backend(
                        BACKEND,
                        "connect",
                        Detail {
                            message: format!("cannot read the CA file {}: {e}", path.display()),
                            source: None,
                        },
                    )
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            options = options.with_tls(tls);
        }
        let urls: Vec<String> = builder
            .endpoints
            .iter()
            .map(|e| format!("{scheme}://{e}"))
            .collect();
        let joined = builder.endpoints.join(",");
        let user = builder.credentials.as_ref().map(|(user, _)| user.clone());
        let connect_error = |err: etcd_client::Error| connect_error(err, &joined, user.as_deref());
        let timed_out = || {
            Error::unavailable(
                BACKEND,
                "connect",
                Detail {
                    message: format!(
                        "no etcd member at {joined} answered within {:?}",
                        builder.timeout
                    ),
                    source: None,
                },
            )
        };
        // Both steps share one deadline and core's one retry path (S4): with a member down,
        // the client may pick it for the read; another attempt picks another. An attempt cut
        // at the deadline says which members did not answer.
        let deadline = Instant::now() + builder.timeout;
        let named = |err: Error| {
            if cut_at_deadline(&err) {
                timed_out()
            } else {
                err
            }
        };
        let client = retry::within(BACKEND, "connect", builder.timeout, || {
            let connecting = Client::connect(urls.clone(), Some(options.clone()));
            async move { connecting.await.map_err(connect_error) }
        })
        .await
        .map_err(named)?;
        let keys = Keys::new(&builder.key_prefix, &builder.namespace);
        let probe = GetOptions::new().with_prefix().with_count_only();
        let left = deadline.saturating_duration_since(Instant::now());
        retry::within(BACKEND, "connect", left, || {
            let mut kv = client.kv_client();
            let (leaders, probe) = (keys.leaders(), probe.clone());
            async move { kv.get(leaders, Some(probe)).await.map_err(connect_error) }
        })
        .await
        .map_err(named)?;
        let shared = Shared {
            client,
            timeout: builder.timeout,
            policy: builder.policy,
            endpoints: builder.endpoints,
            key_prefix: builder.key_prefix,
            hub: WatchHub::new(),
            feeds: Feeds::default(),
            spare: std::sync::Mutex::new(Vec::new()),
        };
        Ok(EtcdStore::from_shared(Arc::new(shared), &builder.namespace))
    }
}

/// True for core's "no answer within the operation timeout": an attempt still running at the
/// deadline.
fn cut_at_deadline(err: &Error) -> bool {
    match err {
        Error::Unavailable { source, .. } => source.is::<retry::TimedOut>(),
        _ => false,
    }
}
