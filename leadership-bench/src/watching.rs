//! Following the leader (issue 14): how fast a revoke reaches a watcher next to how fast it
//! wakes a blocked waiter on the same store in the same run, and what an idle watcher costs.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use leadership_core::{CancellationToken, LeaderEvent, Leadership};
use tokio::time::{Instant, timeout};

use crate::report::{Row, Verdict};
use crate::scenarios::Sizes;
use crate::stats::{self, Figures};
use crate::sys;
use crate::target::{Bench, BenchResult, fresh_namespace};

const LEASE: Duration = Duration::from_secs(60);
const LIMIT: Duration = Duration::from_secs(10);

/// A revoke, seen by a watcher (subject) and by a blocked waiter (baseline), each on its own
/// handle (a connection of its own, as another process would have), measured from the revoke
/// call; the ratio is the waiter's p99 over the watcher's (≥ 0.9: a watcher learns of a
/// release about as soon as a waiter is woken).
pub async fn revoke_delivery(bench: &dyn Bench, sizes: Sizes) -> BenchResult<Row> {
    let ns = fresh_namespace("wdel");
    let holder = bench.open(&ns).await?;
    let watcher = bench.open(&ns).await?;
    let waiter = bench.open(&ns).await?;
    let mut seen = stats::histogram();
    let mut woken = stats::histogram();
    let mut failures = Vec::new();
    for run in 0..sizes.revoke_runs {
        let (app, unit) = (format!("w{run}"), format!("w{run}/0"));
        holder
            .claim_leadership(&app, &unit, LEASE)
            .await
            .map_err(|e| format!("claim of {app}: {e}"))?;
        let mut stream = watcher
            .watch_leader(&app)
            .await
            .map_err(|e| format!("watch of {app}: {e}"))?;
        match timeout(LIMIT, stream.next()).await {
            Ok(Some(LeaderEvent::Snapshot { leaders })) if leaders.contains_key(&app) => {}
            other => {
                return Err(format!(
                    "{app}: expected a snapshot with its leader, got {other:?}"
                ));
            }
        }
        let (woke, cancel) = spawn_blocked(Arc::clone(&waiter), app.clone());
        // The watcher reads on a task of its own too, so both sides note their instant the
        // same way (not one of them through the runner's task).
        let watched = tokio::spawn(async move {
            let event = timeout(LIMIT, stream.next()).await;
            (event, Instant::now())
        });
        tokio::time::sleep(bench.settle()).await;
        let started = Instant::now();
        holder
            .revoke_leadership(&app, &unit)
            .await
            .map_err(|e| format!("revoke of {app}: {e}"))?;
        match watched.await {
            Ok((Ok(Some(LeaderEvent::Vacated { .. })), at)) => {
                stats::record(&mut seen, at.saturating_duration_since(started));
            }
            other => failures.push(format!("{app}: watcher got {other:?}")),
        }
        match timeout(LIMIT, woke).await {
            Ok(Ok(Ok(at))) => stats::record(&mut woken, at.saturating_duration_since(started)),
            other => {
                cancel.cancel();
                failures.push(format!("{app}: waiter {other:?}"));
            }
        }
    }
    let subject = Figures::from_histogram(
        "revoke → watcher's Vacated",
        &seen,
        seen.len(),
        failures.len() as u64,
        None,
    );
    let baseline = Figures::from_histogram(
        "revoke → blocked waiter woken",
        &woken,
        woken.len(),
        0,
        None,
    );
    let ratio = (subject.p99_us > 0.0).then(|| baseline.p99_us / subject.p99_us);
    let mut row = Row::new(bench.name(), "watch: revoke delivery (p99 ratio)");
    row.target = Some("waiter p99 ÷ watcher p99 ≥ 0.90".into());
    row.verdict = Verdict::of(failures.is_empty() && ratio.is_some_and(|r| r >= 0.9));
    row.ratio = ratio;
    row.subject = Some(subject);
    row.baseline = Some(baseline);
    row.note = failures
        .first()
        .map(|first| format!("{} runs failed; first: {first}", failures.len()));
    Ok(row)
}

/// A blocked waiter on its own task; its instant of waking.
fn spawn_blocked(
    store: Arc<dyn Leadership>,
    app: String,
) -> (
    tokio::task::JoinHandle<leadership_core::Result<Instant>>,
    CancellationToken,
) {
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let handle = tokio::spawn(async move {
        store.block_until_leadership_released(&app, token).await?;
        Ok(Instant::now())
    });
    (handle, cancel)
}

/// 10,000 idle watchers on one handle: resident memory per watcher, and a revoke still
/// reaches every one of them (how long until the last has it).
pub async fn idle_watchers(bench: &dyn Bench) -> BenchResult<Row> {
    const WATCHERS: usize = 10_000;
    let ns = fresh_namespace("widle");
    let handle = bench.open(&ns).await?;
    let holder = bench.open(&ns).await?;
    holder
        .claim_leadership("idle", "idle/0", LEASE)
        .await
        .map_err(|e| format!("claim: {e}"))?;
    let before = sys::rss().unwrap_or(0);
    let mut streams = Vec::with_capacity(WATCHERS);
    for i in 0..WATCHERS {
        let mut stream = if i % 2 == 0 {
            handle.watch_leaders().await
        } else {
            handle.watch_leader("idle").await
        }
        .map_err(|e| format!("watch {i}: {e}"))?;
        match timeout(LIMIT, stream.next()).await {
            Ok(Some(LeaderEvent::Snapshot { .. })) => {}
            other => return Err(format!("watcher {i}: expected a snapshot, got {other:?}")),
        }
        streams.push(stream);
    }
    let after = sys::rss().unwrap_or(0);
    let subscriptions = bench.server_subscriptions().await;
    let per_watcher = after.saturating_sub(before) as f64 / WATCHERS as f64;
    let started = Instant::now();
    holder
        .revoke_leadership("idle", "idle/0")
        .await
        .map_err(|e| format!("revoke: {e}"))?;
    let mut missed = 0;
    for stream in &mut streams {
        if !matches!(
            timeout(LIMIT, stream.next()).await,
            Ok(Some(LeaderEvent::Vacated { .. }))
        ) {
            missed += 1;
        }
    }
    let all = started.elapsed();
    let mut row = Row::new(bench.name(), "watch: 10,000 idle watchers on one handle");
    row.value = Some(format!(
        "{per_watcher:.0} B resident per watcher; a revoke reached all in {:.1} ms",
        all.as_secs_f64() * 1e3
    ));
    row.number = Some(per_watcher);
    row.verdict = Verdict::of(missed == 0);
    let server = subscriptions.unwrap_or_else(|| "no server: in-process hub".into());
    row.note = Some(if missed == 0 {
        format!("every watcher saw the revoke; with 10,000 open: {server}")
    } else {
        format!("{missed} watchers missed the revoke; {server}")
    });
    Ok(row)
}
