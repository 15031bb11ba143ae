//! Scenarios 1–4: renewal, first claim, token check (each against its baseline) and handover.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use leadership_core::tracker::LeaderTracker;
use leadership_core::{
    CancellationToken, Claimer, Leadership, Token, Tracker as _, TrackerWorker as _,
};
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

use crate::driver::{Op, Sample, op, pair};
use crate::report::{Row, Verdict};
use crate::stats::{self, Figures, human_us};
use crate::target::{Baseline, Bench, BenchResult, fresh_namespace};

/// How long and how often: `--quick` or full.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// One timed round of a throughput pair (each side runs two).
    pub round: Duration,
    /// Handover runs after a revoke.
    pub revoke_runs: usize,
    /// Handover runs after a crash.
    pub crash_runs: usize,
    /// Crash runs in flight at once (each on its own application).
    pub crash_in_flight: usize,
    /// The scale scenario's steady window.
    pub scale_window: Duration,
    /// Applications with a live tracker in the scale scenario.
    pub scale_apps: usize,
    /// How long the scale scenario waits for every tracker to lead before its window.
    pub scale_setup: Duration,
    /// Leases held in the memory scenario.
    pub memory_leases: usize,
}

impl Sizes {
    /// The full run.
    pub const FULL: Sizes = Sizes {
        round: Duration::from_secs(2),
        revoke_runs: 100,
        crash_runs: 100,
        crash_in_flight: 5,
        scale_window: Duration::from_secs(60),
        scale_apps: 10_000,
        scale_setup: Duration::from_secs(120),
        memory_leases: 1_000_000,
    };

    /// `--quick`: the same scenarios, shorter and fewer runs.
    pub const QUICK: Sizes = Sizes {
        round: Duration::from_millis(300),
        revoke_runs: 20,
        crash_runs: 10,
        crash_in_flight: 5,
        scale_window: Duration::from_secs(10),
        scale_apps: 10_000,
        scale_setup: Duration::from_secs(30),
        memory_leases: 1_000_000,
    };
}

/// Applications the renewal and check scenarios spread their calls over.
pub const APPLICATIONS: usize = 1_000;
/// Claims in the throughput scenarios last this long: the runs end well before.
const LEASE: Duration = Duration::from_secs(60);

/// Application, its unit, the baseline's key for it, and which of a spread's handles holds
/// it (0 without a spread).
struct Names {
    app: String,
    unit: String,
    key: String,
    handle: usize,
}

/// [`APPLICATIONS`] names dealt round-robin over `handles` handles.
fn spread_names(prefix: &str, namespace: &str, handles: usize) -> Arc<Vec<Names>> {
    Arc::new(
        (0..APPLICATIONS)
            .map(|i| Names {
                app: format!("{prefix}{i}"),
                unit: format!("{prefix}{i}/0"),
                key: format!("bench:{namespace}:{prefix}{i}"),
                handle: i % handles.max(1),
            })
            .collect(),
    )
}

/// Unmeasured setup: each unit 0 leads its application through its handle, and the baseline
/// holds each key.
async fn lead_all(
    handles: &[Arc<dyn Leadership>],
    base: &Baseline,
    names: &[Names],
) -> BenchResult<()> {
    for n in names {
        handles[n.handle]
            .claim_leadership(&n.app, &n.unit, LEASE)
            .await
            .map_err(|e| format!("setup claim of {}: {e}", n.app))?;
        base.write(&n.key, &n.unit).await;
    }
    Ok(())
}

fn pick(names: &[Names], seq: u64) -> &Names {
    &names[(seq % names.len() as u64) as usize]
}

/// A throughput row from a baseline/subject pair.
fn throughput_row(
    bench: &dyn Bench,
    scenario: &str,
    callers: usize,
    (base, subj): (Sample, Sample),
    labels: (&str, &str),
    target: Option<f64>,
) -> Row {
    let targets = bench.targets();
    let mut row = Row::pair(bench.name(), scenario, callers, (&base, &subj), labels);
    let ratio = row.ratio.unwrap_or(0.0);
    if let Some(min) = target {
        row.target = Some((targets.ratio_text)(min));
        row.verdict = Verdict::of(ratio >= min);
    }
    // Failed operations are the store's (or the baseline's) result, not the runner's: the
    // library's failures fail the row; the baseline's are noted.
    if subj.errors + base.errors > 0 {
        row.note = Some(format!(
            "{} of {} library and {} of {} baseline operations failed",
            subj.errors, subj.ops, base.errors, base.ops
        ));
    }
    if subj.errors > 0 {
        row.verdict = Verdict::Fail;
    }
    row
}

/// Scenario 1: the holder renews its lease, over [`APPLICATIONS`] applications.
pub async fn renewal(bench: &dyn Bench, sizes: Sizes, callers: usize) -> BenchResult<Row> {
    let ns = fresh_namespace("renew");
    let store = bench.open(&ns).await?;
    renewal_over(bench, sizes, callers, &[store], &ns, "renewal").await
}

/// [`renewal`] with the applications dealt round-robin over `handles` (one namespace each,
/// for a spread over a cluster's masters); `ns` names the baseline's keys.
pub(crate) async fn renewal_over(
    bench: &dyn Bench,
    sizes: Sizes,
    callers: usize,
    handles: &[Arc<dyn Leadership>],
    ns: &str,
    scenario: &str,
) -> BenchResult<Row> {
    let handles: Arc<Vec<Arc<dyn Leadership>>> = Arc::new(handles.to_vec());
    let base = bench.baseline().await?;
    let names = spread_names("r", ns, handles.len());
    lead_all(&handles, &base, &names).await?;
    let labels = ("claim (renew)", base.write_label());
    let (b, ns1, ns2) = (base, Arc::clone(&names), names);
    let samples = pair(
        callers,
        sizes.round,
        move |seq| {
            let (b, names) = (b.clone(), Arc::clone(&ns2));
            async move {
                let n = pick(&names, seq);
                b.write(&n.key, &n.unit).await
            }
        },
        move |seq| {
            let (handles, names) = (Arc::clone(&handles), Arc::clone(&ns1));
            async move {
                let n = pick(&names, seq);
                handles[n.handle]
                    .claim_leadership(&n.app, &n.unit, LEASE)
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    Ok(throughput_row(
        bench,
        scenario,
        callers,
        samples,
        labels,
        Some(bench.targets().renew_ratio),
    ))
}

/// Scenario 2: the first claim of a never-held application (a new term), one per call.
pub async fn first_claim(bench: &dyn Bench, sizes: Sizes, callers: usize) -> BenchResult<Row> {
    let ns = fresh_namespace("first");
    let store = bench.open(&ns).await?;
    let base = bench.baseline().await?;
    let labels = ("claim (new term)", base.write_label());
    // A counter per side, shared by its callers and rounds, so no name is claimed twice.
    let (subject_next, base_next) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let claimed = Arc::clone(&subject_next);
    let cleanup_store = Arc::clone(&store);
    let key_prefix = format!("bench:{ns}:f");
    let samples = pair(
        callers,
        sizes.round,
        move |_| {
            let (b, next, prefix) = (base.clone(), Arc::clone(&base_next), key_prefix.clone());
            async move {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let (key, unit) = (format!("{prefix}{i}"), format!("f{i}/0"));
                b.write(&key, &unit).await
            }
        },
        move |_| {
            let (s, next) = (Arc::clone(&store), Arc::clone(&subject_next));
            async move {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let (app, unit) = (format!("f{i}"), format!("f{i}/0"));
                s.claim_leadership(&app, &unit, LEASE).await.is_ok()
            }
        },
    )
    .await;
    // Unmeasured: revoke every lease the scenario made, so that their expiry (timer work in
    // the memory store, lease revocations in etcd) does not weigh on later scenarios.
    revoke_all(cleanup_store, "f", claimed.load(Ordering::Relaxed)).await;
    Ok(throughput_row(
        bench,
        "first claim",
        callers,
        samples,
        labels,
        bench.targets().first_claim_ratio,
    ))
}

/// Revokes `<prefix>0` … `<prefix><count-1>` (held by their unit 0) from 64 concurrent tasks
/// (unmeasured cleanup, so that the leases' expiry does not weigh on later scenarios).
pub(crate) async fn revoke_all(store: Arc<dyn Leadership>, prefix: &'static str, count: u64) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (store, next) = (Arc::clone(&store), Arc::clone(&next));
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let _ = store
                    .revoke_leadership(&format!("{prefix}{i}"), &format!("{prefix}{i}/0"))
                    .await;
                if i % 32 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Our first claim of a fresh application `<prefix><i>` by its unit 0 per call, for `lease`,
/// as an [`Op`] of the interleaved peer and reference groups; the counter says how many were
/// made, for [`revoke_all`] after the run.
pub(crate) fn new_terms(
    store: &Arc<dyn Leadership>,
    prefix: &'static str,
    lease: Duration,
) -> (Op, Arc<AtomicU64>) {
    let (store, next) = (Arc::clone(store), Arc::new(AtomicU64::new(0)));
    let made = Arc::clone(&next);
    let claim = op(move |_| {
        let (store, next) = (Arc::clone(&store), Arc::clone(&next));
        async move {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let (app, unit) = (format!("{prefix}{i}"), format!("{prefix}{i}/0"));
            store.claim_leadership(&app, &unit, lease).await.is_ok()
        }
    });
    (claim, made)
}

/// Our claim of a fresh application `<prefix><i>` by its unit 0 per call, for `lease`, then
/// its revoke, as an [`Op`] of the interleaved peer and reference groups.
pub(crate) fn terms_started_and_ended(
    store: &Arc<dyn Leadership>,
    prefix: &'static str,
    lease: Duration,
) -> Op {
    let (store, next) = (Arc::clone(store), Arc::new(AtomicU64::new(0)));
    op(move |_| {
        let (store, next) = (Arc::clone(&store), Arc::clone(&next));
        async move {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let (app, unit) = (format!("{prefix}{i}"), format!("{prefix}{i}/0"));
            store.claim_leadership(&app, &unit, lease).await.is_ok()
                && store.revoke_leadership(&app, &unit).await.is_ok()
        }
    })
}

/// Scenario 3: the holder's token is checked, over [`APPLICATIONS`] applications. Tokens are
/// made once per application (a token is reusable, K2); `fresh_tokens` makes one per call
/// instead, as a caller that does not keep its token would.
pub async fn check(
    bench: &dyn Bench,
    sizes: Sizes,
    callers: usize,
    fresh_tokens: bool,
) -> BenchResult<Row> {
    let ns = fresh_namespace("check");
    let store = bench.open(&ns).await?;
    let scenario = if fresh_tokens {
        "check, new token per call"
    } else {
        "token check"
    };
    check_over(bench, sizes, callers, fresh_tokens, &[store], &ns, scenario).await
}

/// [`check`] with the applications dealt round-robin over `handles`, as [`renewal_over`].
pub(crate) async fn check_over(
    bench: &dyn Bench,
    sizes: Sizes,
    callers: usize,
    fresh_tokens: bool,
    handles: &[Arc<dyn Leadership>],
    ns: &str,
    scenario: &str,
) -> BenchResult<Row> {
    let handles: Arc<Vec<Arc<dyn Leadership>>> = Arc::new(handles.to_vec());
    let base = bench.baseline().await?;
    let names = spread_names("k", ns, handles.len());
    lead_all(&handles, &base, &names).await?;
    let tokens: Arc<Vec<Box<dyn Token>>> = Arc::new(
        names
            .iter()
            .map(|n| handles[n.handle].leadership_check(&n.app, &n.unit))
            .collect(),
    );
    let labels = (
        if fresh_tokens {
            "new token + check"
        } else {
            "token.check()"
        },
        base.read_label(),
    );
    let (b, ns1, ns2) = (base, Arc::clone(&names), names);
    let samples = pair(
        callers,
        sizes.round,
        move |seq| {
            let (b, names) = (b.clone(), Arc::clone(&ns2));
            async move { b.read(&pick(&names, seq).key).await }
        },
        move |seq| {
            let (handles, names, tokens) =
                (Arc::clone(&handles), Arc::clone(&ns1), Arc::clone(&tokens));
            async move {
                if fresh_tokens {
                    let n = pick(&names, seq);
                    handles[n.handle]
                        .leadership_check(&n.app, &n.unit)
                        .check()
                        .await
                        .is_ok()
                } else {
                    tokens[(seq % tokens.len() as u64) as usize]
                        .check()
                        .await
                        .is_ok()
                }
            }
        },
    )
    .await;
    let target = (!fresh_tokens).then(|| bench.targets().check_ratio);
    Ok(throughput_row(
        bench, scenario, callers, samples, labels, target,
    ))
}

/// The waiting unit's tracker guarantee in the handover scenarios (it claims twice that).
const WAITER_GUARANTEE: Duration = Duration::from_secs(10);

/// Starts a tracker for `unit` (the waiting unit, a minion while another unit leads) and
/// sends the moment its `claim_leader()` resolves `true`: after `wait_leader()` resolved
/// `true`, `claim_leader()` answers at once for a fresh term.
fn spawn_waiter(
    store: Arc<dyn Leadership>,
    unit: String,
) -> (
    oneshot::Receiver<Result<Instant, String>>,
    CancellationToken,
) {
    let (tx, rx) = oneshot::channel();
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        let claimer: Arc<dyn Claimer> = store.clone();
        let tracker = LeaderTracker::builder(unit.clone(), WAITER_GUARANTEE, claimer)
            .release_on_stop(store)
            .spawn();
        let led = async {
            if !tracker.wait_leader().wait().await {
                return Err(format!("{unit}'s tracker stopped before leading"));
            }
            if !tracker.claim_leader().wait().await {
                return Err(format!(
                    "{unit}'s claim_leader() answered false after leading"
                ));
            }
            Ok(Instant::now())
        };
        tokio::select! {
            result = led => { let _ = tx.send(result); }
            () = stop.cancelled() => {}
        }
        // Holds the tracker (and its lease) until the run is over, then releases it.
        stop.cancelled().await;
        tracker.kill();
        let _ = tracker.wait().await;
    });
    (rx, cancel)
}

/// How long a single handover may take before the run counts it as failed.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

async fn await_waiter(
    rx: oneshot::Receiver<Result<Instant, String>>,
    cancel: CancellationToken,
) -> Result<Instant, String> {
    let result = match tokio::time::timeout(HANDOVER_TIMEOUT, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("waiter task ended without an answer".to_owned()),
        Err(_) => Err(format!("no handover within {HANDOVER_TIMEOUT:?}")),
    };
    cancel.cancel();
    result
}

fn latency_row(
    bench: &dyn Bench,
    scenario: &str,
    label: &str,
    hist: &hdrhistogram::Histogram<u64>,
    failures: &[String],
    target: Duration,
) -> Row {
    let mut row = Row::new(bench.name(), scenario);
    let figures = Figures::from_histogram(label, hist, hist.len(), failures.len() as u64, None);
    let ok = figures.p99_us <= target.as_secs_f64() * 1e6;
    row.target = Some(format!("p99 ≤ {}", human_us(target.as_secs_f64() * 1e6)));
    row.verdict = Verdict::of(ok && failures.is_empty());
    row.subject = Some(figures);
    if let Some(first) = failures.first() {
        row.note = Some(format!("{} runs failed; first: {first}", failures.len()));
    }
    row
}

/// Scenario 4a: the holder revokes; time until the waiting unit leads.
pub async fn handover_revoke(bench: &dyn Bench, sizes: Sizes) -> BenchResult<Row> {
    let ns = fresh_namespace("hrev");
    let holder = bench.open(&ns).await?;
    let waiter = bench.open(&ns).await?;
    let mut hist = stats::histogram();
    let mut failures = Vec::new();
    for run in 0..sizes.revoke_runs {
        let (app, u0, u1) = (format!("h{run}"), format!("h{run}/0"), format!("h{run}/1"));
        holder
            .claim_leadership(&app, &u0, LEASE)
            .await
            .map_err(|e| format!("holder claim of {app}: {e}"))?;
        let (rx, cancel) = spawn_waiter(Arc::clone(&waiter), u1);
        tokio::time::sleep(bench.settle()).await;
        let started = Instant::now();
        holder
            .revoke_leadership(&app, &u0)
            .await
            .map_err(|e| format!("revoke of {app}: {e}"))?;
        match await_waiter(rx, cancel).await {
            Ok(led) => stats::record(&mut hist, led.saturating_duration_since(started)),
            Err(e) => failures.push(e),
        }
    }
    let target = bench.targets().handover_revoke_p99;
    Ok(latency_row(
        bench,
        "handover after revoke",
        "revoke → next leader",
        &hist,
        &failures,
        target,
    )
    .note_if_none(
        "from the revoke call until the waiting unit's tracker answers claim_leader() true",
    ))
}

/// Scenario 4b: the holder claims and dies without revoking; time from the lease's nominal
/// expiry (the holder's call start + duration) until the waiting unit leads.
pub async fn handover_crash(bench: &dyn Bench, sizes: Sizes) -> BenchResult<Row> {
    let ns = fresh_namespace("hcrash");
    let holder = bench.open(&ns).await?;
    let waiter = bench.open(&ns).await?;
    let lease = bench.crash_lease();
    let permits = Arc::new(Semaphore::new(sizes.crash_in_flight.max(1)));
    let mut runs = tokio::task::JoinSet::new();
    for run in 0..sizes.crash_runs {
        let (holder, waiter, permits) = (
            Arc::clone(&holder),
            Arc::clone(&waiter),
            Arc::clone(&permits),
        );
        runs.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            let (app, u0, u1) = (format!("c{run}"), format!("c{run}/0"), format!("c{run}/1"));
            let claimed = Instant::now();
            holder
                .claim_leadership(&app, &u0, lease)
                .await
                .map_err(|e| format!("holder claim of {app}: {e}"))?;
            // The holder is gone from here on: it never renews nor revokes.
            let (rx, cancel) = spawn_waiter(waiter, u1);
            let led = await_waiter(rx, cancel).await?;
            let nominal = claimed + lease;
            Ok::<_, String>((led.saturating_duration_since(nominal), led < nominal))
        });
    }
    let mut hist = stats::histogram();
    let mut failures = Vec::new();
    let mut early = 0usize;
    while let Some(joined) = runs.join_next().await {
        match joined.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok((past, was_early)) => {
                early += usize::from(was_early);
                stats::record(&mut hist, past);
            }
            Err(e) => failures.push(e),
        }
    }
    if early > 0 {
        failures.push(format!(
            "{early} runs granted the lease before its nominal expiry (C4 broken)"
        ));
    }
    let target = bench.targets().handover_crash_p99;
    let mut row = latency_row(
        bench,
        "handover after crash",
        "past nominal expiry",
        &hist,
        &failures,
        target,
    );
    row.broken = early > 0;
    Ok(row.note_if_none(format!(
        "lease {} ms, time from the holder's call start + lease until the waiting unit's tracker answers claim_leader() true; {} runs in flight at once",
        lease.as_millis(),
        sizes.crash_in_flight
    )))
}

impl Row {
    fn note_if_none(mut self, note: impl Into<String>) -> Row {
        if self.note.is_none() {
            self.note = Some(note.into());
        }
        self
    }
}
