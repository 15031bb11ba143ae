//! The etcd store, against `put`/range over the store's own etcd-client, and etcd-client's
//! election API as the peer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use leadership_core::Leadership;
use leadership_etcd::etcd_client::{self, ResignOptions};
use leadership_etcd::{EtcdConfig, EtcdStore};
use leadership_testkit::harness::EtcdServer;

use crate::driver::pair;
use crate::report::Row;
use crate::scenarios::Sizes;
use crate::target::{Baseline, Bench, BenchResult, Targets, fresh_namespace};

/// An etcd member (ours, or the one `--etcd-url` names) under benchmark.
pub struct EtcdBench {
    url: String,
    /// Kept alive for the run; killed on drop.
    _server: Option<EtcdServer>,
}

impl EtcdBench {
    /// Starts a private etcd member through the testkit harness unless `url` is given
    /// (`etcd://host:port`; `http://host:port` is accepted too).
    pub fn start(url: Option<String>) -> BenchResult<EtcdBench> {
        if let Some(url) = url {
            let url = match url.strip_prefix("http://") {
                Some(rest) => format!("etcd://{rest}"),
                None => url,
            };
            return Ok(EtcdBench { url, _server: None });
        }
        let server = EtcdServer::start().map_err(|e| format!("cannot start etcd: {e}"))?;
        Ok(EtcdBench {
            url: server.url(),
            _server: Some(server),
        })
    }

    async fn store(&self, namespace: &str) -> BenchResult<EtcdStore> {
        let config = EtcdConfig::from_url(&self.url)
            .map_err(|e| format!("etcd URL: {e}"))?
            .namespace(namespace);
        EtcdStore::connect(config)
            .await
            .map_err(|e| format!("etcd store: {e}"))
    }
}

#[async_trait]
impl Bench for EtcdBench {
    fn name(&self) -> &'static str {
        "etcd"
    }

    async fn open(&self, namespace: &str) -> BenchResult<Arc<dyn Leadership>> {
        Ok(Arc::new(self.store(namespace).await?))
    }

    async fn baseline(&self) -> BenchResult<Baseline> {
        // A new store handle's client: the same crate, connection settings and endpoint.
        let client = self.store(&fresh_namespace("base")).await?.client();
        Ok(Baseline::Etcd(client.kv_client()))
    }

    fn targets(&self) -> Targets {
        Targets {
            renew_ratio: 0.8,
            first_claim_ratio: Some(0.45),
            check_ratio: 0.9,
            ratio_text: |min| format!("≥ {min:.2}"),
            handover_revoke_p99: Duration::from_millis(50),
            handover_crash_p99: Duration::from_secs(1),
        }
    }

    fn crash_lease(&self) -> Duration {
        Duration::from_secs(2)
    }

    fn settle(&self) -> Duration {
        Duration::from_millis(100)
    }

    fn scale_guarantee(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn child_args(&self) -> Vec<String> {
        vec![
            "--store".to_owned(),
            "etcd".to_owned(),
            "--etcd-url".to_owned(),
            self.url.clone(),
        ]
    }
}

/// etcd-client's election `campaign` + `resign` against our claim + revoke, each on a fresh
/// election / application per cycle. The election side shares one lease granted up front,
/// as a Go `concurrency.Session` does; our claim makes a lease per term (the store's model).
pub async fn election_peer(bench: &EtcdBench, sizes: Sizes, callers: usize) -> BenchResult<Row> {
    let ns = fresh_namespace("peer");
    let store = bench.open(&ns).await?;
    let client = bench
        .store(&fresh_namespace("peer-election"))
        .await?
        .client();
    let lease = client
        .lease_client()
        .grant(120, None)
        .await
        .map_err(|e| format!("etcd lease grant: {e}"))?
        .id();
    let election = client.election_client();
    let (ours, theirs) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let prefix = format!("bench/{ns}/election/");
    let claim_for = Duration::from_secs(30);
    let (base, subj) = pair(
        callers,
        sizes.round,
        move |_| {
            let (mut election, next, prefix) =
                (election.clone(), Arc::clone(&theirs), prefix.clone());
            async move {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let campaigned = election
                    .campaign(format!("{prefix}{i}"), "unit/0", lease)
                    .await;
                let Some(leader) = campaigned.ok().and_then(|r| r.leader().cloned()) else {
                    return false;
                };
                election
                    .resign(Some(ResignOptions::new().with_leader(leader)))
                    .await
                    .is_ok()
            }
        },
        move |_| {
            let (s, next) = (Arc::clone(&store), Arc::clone(&ours));
            async move {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let (app, unit) = (format!("p{i}"), format!("p{i}/0"));
                s.claim_leadership(&app, &unit, claim_for).await.is_ok()
                    && s.revoke_leadership(&app, &unit).await.is_ok()
            }
        },
    )
    .await;
    let _ = client.lease_client().revoke(lease).await;
    let mut row = Row::pair(
        "etcd",
        "peer: claim+revoke",
        callers,
        (&base, &subj),
        ("claim + revoke", "election campaign+resign"),
    );
    row.note = Some(
        "etcd-client election: one shared lease (a Go session); ours: a lease per term".to_owned(),
    );
    if subj.errors + base.errors > 0 {
        row.note = Some(format!(
            "{} ours and {} election cycles failed",
            subj.errors, base.errors
        ));
    }
    Ok(row)
}

/// An etcd key-value client (the baseline's type).
pub type KvClient = etcd_client::KvClient;
