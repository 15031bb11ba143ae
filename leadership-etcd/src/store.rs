//! The store handle: what every module of this crate works through.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::Client;
use leadership_core::Policy;

use crate::claim::Held;
use crate::keys::Keys;

pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) keys: Keys,
    pub(crate) timeout: Duration,
    pub(crate) policy: Arc<dyn Policy>,
    pub(crate) endpoints: Vec<String>,
    pub(crate) namespace: String,
    pub(crate) held: Mutex<HashMap<String, Held>>,
}

/// A leadership store over etcd v3 (see the crate docs for the data model).
///
/// Cheap to clone: clones share one connection. Create it inside a tokio runtime and use it
/// there.
#[derive(Clone)]
pub struct EtcdStore {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.endpoints)
            .field("namespace", &self.inner.namespace)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// The etcd client this store uses, for the application's own reads and writes.
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// The namespace of this handle.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The etcd key that holds `application`'s leader (its value is the holder unit, its
    /// create revision the fence).
    pub fn leader_key(&self, application: &str) -> String {
        self.inner.keys.leader(application)
    }
}
