//! The store handle: what every module of this crate works through.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::Client;
use leadership_core::Policy;
use leadership_core::watch::WatchHub;

use crate::builder::EtcdStoreBuilder;
use crate::claim::{Held, Spare};
use crate::follow::Feeds;
use crate::keys::Keys;

/// What every handle opened from one `connect` shares (S3): the client, whose one gRPC
/// channel carries every call and watch of every namespace, and the watchers of every
/// namespace with the one etcd watch per namespace that feeds them (O4).
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) timeout: Duration,
    pub(crate) policy: Arc<dyn Policy>,
    pub(crate) endpoints: Vec<String>,
    pub(crate) key_prefix: String,
    pub(crate) hub: WatchHub,
    pub(crate) feeds: Feeds,
    /// Leases of terms that handles of this connection revoked, for their later terms in any
    /// namespace (one term at a time each): a controller with many namespaces keeps a few
    /// spare leases, not a few per namespace.
    pub(crate) spare: Mutex<Vec<Spare>>,
}

impl Drop for Shared {
    /// The last handle is gone: the watches stop, and with them the hub, which ends every
    /// stream.
    fn drop(&mut self) {
        self.feeds.stop_all();
    }
}

/// One namespace's view (N1): its keys and the leases this handle's claims hold in it.
pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) keys: Keys,
    pub(crate) namespace: String,
    pub(crate) held: Mutex<HashMap<String, Held>>,
}

impl Inner {
    fn new(shared: Arc<Shared>, namespace: &str) -> Self {
        Inner {
            keys: Keys::new(&shared.key_prefix, namespace),
            shared,
            namespace: namespace.to_owned(),
            held: Mutex::new(HashMap::new()),
        }
    }
}

/// A leadership store over etcd v3 (see the crate docs for the data model).
///
/// Cheap to clone: clones share one connection, and so do the handles
/// [`EtcdStore::namespace`] makes. Create it inside a tokio runtime and use it there.
#[derive(Clone)]
pub struct EtcdStore {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.shared.endpoints)
            .field("namespace", &self.inner.namespace)
            .field("timeout", &self.inner.shared.timeout)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Starts a builder from `url`, parsed at once in the one URL grammar of every store
    /// (S1, S2; see [`leadership_core::url`]):
    /// `etcd://[user[:password]@]host:port[,host:port…][?namespace=NS&timeout=DURATION&prefix=P]`,
    /// or `etcds://…?ca=/path/ca.pem` for TLS. User, password and parameters are
    /// percent-decoded; the timeout is humane (`500ms`, `1.5s`, `1m`); any other parameter
    /// is an error naming it.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`](leadership_core::Error::InvalidUrl) naming what is wrong (the
    /// password redacted).
    pub fn builder(url: &str) -> leadership_core::Result<EtcdStoreBuilder> {
        EtcdStoreBuilder::from_url(url)
    }

    pub(crate) fn from_shared(shared: Arc<Shared>, namespace: &str) -> Self {
        EtcdStore {
            inner: Arc::new(Inner::new(shared, namespace)),
        }
    }

    /// A handle for namespace `name` over this handle's client: the same gRPC channel, so
    /// the same connections to the members (S3). A controller with thousands of models
    /// opens one connection per member, not thousands. Handles of different namespaces
    /// share nothing else (N1).
    pub fn namespace(&self, name: &str) -> EtcdStore {
        EtcdStore::from_shared(self.inner.shared.clone(), name)
    }

    /// The etcd client this store uses, for the application's own reads and writes.
    pub fn client(&self) -> Client {
        self.inner.shared.client.clone()
    }

    /// This handle's namespace (N1).
    pub fn namespace_name(&self) -> &str {
        &self.inner.namespace
    }

    /// How long any operation of this handle may take, retries included, before it fails
    /// with `Unavailable` (E1, S4).
    pub fn operation_timeout(&self) -> Duration {
        self.inner.shared.timeout
    }

    /// The etcd key that holds `application`'s leader (its value is the holder unit, its
    /// create revision the fence).
    pub fn leader_key(&self, application: &str) -> String {
        self.inner.keys.leader(application)
    }
}
