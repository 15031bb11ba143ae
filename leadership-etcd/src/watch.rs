//! Blocking until released: a watch from the read revision, resumed after breaks (B1–B5).

use etcd_client::{EventType, WatchFilterType, WatchOptions};
use leadership_core::retry::Backoff;
use leadership_core::{Error, Result};

use crate::BACKEND;
use crate::error::map_err;
use crate::store::EtcdStore;
use crate::txn::header_revision;

impl EtcdStore {
    /// Waits for the term seen by the first read to end: a watch from the read's revision + 1
    /// sees every later change (no gap); after a broken watch or a compaction, a fresh read
    /// tells whether the term ended meanwhile (B2, B5).
    pub(crate) async fn wait_released(&self, application: &str) -> Result<()> {
        let key = self.inner.keys.leader(application);
        let mut term: Option<i64> = None;
        let mut backoff = Backoff::store();
        loop {
            // Each step goes through the one retry path; a wait outlives the operation
            // timeout, so a step that gave up is started again after a pause (B5).
            let read = self
                .run("block", || {
                    let mut kv = self.inner.shared.client.kv_client();
                    let key = key.clone();
                    async move { kv.get(key, None).await.map_err(|e| map_err("block", e)) }
                })
                .await;
            let read = match read {
                Ok(read) => read,
                Err(err) if err.is_retryable() => {
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
                Err(err) => return Err(err),
            };
            let Some(lead) = read.kvs().first() else {
                return Ok(());
            };
            if term.is_some_and(|seen| seen != lead.create_revision()) {
                return Ok(());
            }
            term = Some(lead.create_revision());
            let from = header_revision(read.header()) + 1;
            match self.watch_for_delete(&key, from).await {
                Ok(true) => return Ok(()),
                Ok(false) => backoff.reset(),
                Err(err) if err.is_retryable() => tokio::time::sleep(backoff.next_delay()).await,
                Err(err) => return Err(err),
            }
        }
    }

    /// `Ok(true)` once the key is deleted; `Ok(false)` if the watch must be started again
    /// from a fresh read (compacted or cancelled by the server).
    pub(crate) async fn watch_for_delete(&self, key: &str, from: i64) -> Result<bool> {
        let options = WatchOptions::new()
            .with_start_revision(from)
            .with_filters(vec![WatchFilterType::NoPut]);
        let (_watcher, mut stream) = self
            .run("block", || {
                let mut watch_client = self.inner.shared.client.watch_client();
                let options = options.clone();
                async move {
                    // The client goes back with its stream: the stream lives as long as it.
                    match watch_client.watch(key, Some(options)).await {
                        Ok(stream) => Ok((watch_client, stream)),
                        Err(e) => Err(map_err("block", e)),
                    }
                }
            })
            .await?;
        loop {
            let message = stream.message().await.map_err(|e| map_err("block", e))?;
            let Some(response) = message else {
                return Err(Error::unavailable(
                    BACKEND,
                    "block",
                    "the watch stream ended",
                ));
            };
            if response
                .events()
                .iter()
                .any(|event| event.event_type() == EventType::Delete)
            {
                return Ok(true);
            }
            if response.canceled() || response.compact_revision() > 0 {
                return Ok(false);
            }
        }
    }
}
