//! Renewal at a real cadence: each application is renewed once per guarantee, as a tracker
//! renews it, not in a tight loop over a few applications (where a handle's hint of the fence
//! is always fresh and a renewal is one bare `PEXPIRE`).
//!
//! [`APPS`] applications ([`ONE_CALLER_APPS`] with one call in flight), each renewed once per
//! [`GUARANTEE`] with claims of twice that (T2), the calls spread evenly over the guarantee;
//! the baseline writes each application's key with the same expiry (`SET key value PX ms` on
//! Redis) at the same cadence, its command built once per key as the library builds each
//! lease's renewal commands once. Both sides run the same number of operations at the same
//! times, so the comparison is the cost of one renewal: client and server CPU per operation,
//! and latency. The ratio is the baseline's CPU per operation ÷ the library's. A side that
//! falls behind its cadence fails the row, which then did not measure what it names.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::driver::Sample;
use crate::report::{Row, Verdict};
use crate::scenarios::Sizes;
use crate::stats;
use crate::sys;
use crate::target::{Bench, BenchResult, Prepared, fresh_namespace};

/// Applications renewed, with many calls in flight.
pub const APPS: usize = 10_000;
/// Applications renewed with one call in flight: a round trip to a local Redis takes 100 to
/// 400 µs on the development machine, so one caller cannot keep 10,000 renewals a second. It
/// would fall behind, every lease would expire before its turn came again (claims last two
/// guarantees), and the row would measure new terms in a tight loop instead of renewals.
pub const ONE_CALLER_APPS: usize = 1_000;
/// A side that makes less than this share of its cadence fails the row: it did not measure
/// renewals at that cadence.
const KEPT_CADENCE: f64 = 0.95;
/// Each is renewed once per guarantee, with claims of twice the guarantee (T2).
pub const GUARANTEE: Duration = Duration::from_secs(1);

/// CPU times of the runner and the server at one moment.
type CpuMark = (Instant, Option<Duration>, Option<Duration>);

fn cpu_mark() -> CpuMark {
    (Instant::now(), sys::cpu_time(), sys::server_cpu_time())
}

/// Runs `op(n)` for n = 0, 1, 2, … with call n due at `start + n / rate`, from `callers`
/// tasks (at most that many in flight). Calls due in the first `warm` are not counted; the
/// sample counts the calls due in the `window` after it. Its time and CPU run from the start
/// of the first counted call to the end of the last, so that a side that falls behind its
/// cadence shows a lower rate and pays for every counted call (and for no warm-up call).
async fn paced<F, Fut>(callers: usize, rate: f64, warm: Duration, window: Duration, op: F) -> Sample
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let first_counted = Arc::new(std::sync::OnceLock::<CpuMark>::new());
    let start = Instant::now() + Duration::from_millis(20);
    let (counted_from, end) = (start + warm, start + warm + window);
    let mut tasks = Vec::with_capacity(callers);
    for _ in 0..callers.max(1) {
        let (op, next, first_counted) = (
            Arc::clone(&op),
            Arc::clone(&next),
            Arc::clone(&first_counted),
        );
        tasks.push(tokio::spawn(async move {
            let mut hist = stats::histogram();
            let (mut ops, mut errors) = (0u64, 0u64);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let due = start + Duration::from_secs_f64(n as f64 / rate);
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due).await;
                let counted = due >= counted_from;
                if counted {
                    first_counted.get_or_init(cpu_mark);
                }
                let called = Instant::now();
                let ok = op(n).await;
                if counted {
                    stats::record(&mut hist, called.elapsed());
                    ops += 1;
                    errors += u64::from(!ok);
                }
            }
            (ops, errors, hist)
        }));
    }
    let mut sample = Sample::empty();
    for task in tasks {
        match task.await {
            Ok((ops, errors, hist)) => {
                sample.ops += ops;
                sample.errors += errors;
                stats::merge(&mut sample.hist, &hist);
            }
            // A panicking operation is a bug in the runner: count it as a failure.
            Err(_) => sample.errors += 1,
        }
    }
    let (ended, client1, server1) = cpu_mark();
    if let Some(&(began, client0, server0)) = first_counted.get() {
        sample.elapsed = ended.saturating_duration_since(began);
        sample.client_cpu = match (client0, client1) {
            (Some(before), Some(after)) => after.saturating_sub(before),
            _ => Duration::ZERO,
        };
        sample.server_cpu = match (server0, server1) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before)),
            _ => None,
        };
    }
    sample
}

/// CPU per operation (client + server), in seconds.
fn cpu_per_op(sample: &Sample) -> f64 {
    let cpu = sample.client_cpu + sample.server_cpu.unwrap_or(Duration::ZERO);
    cpu.as_secs_f64() / sample.ops.max(1) as f64
}

/// The real-cadence renewal row at `callers` concurrent callers (at most that many calls in
/// flight). Target: the baseline's CPU per operation ÷ the library's ≥ `target`.
pub async fn renewal(
    bench: &dyn Bench,
    sizes: Sizes,
    callers: usize,
    target: f64,
) -> BenchResult<Row> {
    let ns = fresh_namespace("cadence");
    let store = bench.open(&ns).await?;
    let base = bench.baseline().await?;
    let lease = GUARANTEE * 2;
    let apps = if callers > 1 { APPS } else { ONE_CALLER_APPS };
    let rate = apps as f64 / GUARANTEE.as_secs_f64();
    // The baseline's commands are built once per key, as the library builds each lease's.
    let names: Arc<Vec<(String, String, Prepared)>> = Arc::new(
        (0..apps)
            .map(|i| {
                let (app, unit) = (format!("c{i}"), format!("c{i}/0"));
                let write = base.prepare_expiring(&format!("bench:{ns}:c{i}"), &unit, lease);
                (app, unit, write)
            })
            .collect(),
    );
    // One guarantee of warm-up: every application is claimed (a new term) or renewed once
    // before the counted window, so the window is the steady state a tracker is in.
    let warm = GUARANTEE + Duration::from_millis(200);
    let window = (sizes.round * 2).max(Duration::from_secs(2));
    let labels = ("claim (renew)", base.expiring_label());

    let run_base = || {
        let (base, names) = (base.clone(), Arc::clone(&names));
        paced(callers, rate, warm, window, move |n| {
            let (base, names) = (base.clone(), Arc::clone(&names));
            async move {
                let (_, _, write) = &names[(n % apps as u64) as usize];
                base.send(write).await
            }
        })
    };
    let run_subj = || {
        let (store, names) = (Arc::clone(&store), Arc::clone(&names));
        paced(callers, rate, warm, window, move |n| {
            let (store, names) = (Arc::clone(&store), Arc::clone(&names));
            async move {
                let (app, unit, _) = &names[(n % apps as u64) as usize];
                store.claim_leadership(app, unit, lease).await.is_ok()
            }
        })
    };
    // Baseline, library, library, baseline, as the throughput pairs run.
    let mut b = run_base().await;
    let mut s = run_subj().await;
    s.absorb(run_subj().await);
    b.absorb(run_base().await);

    let mut row = Row::pair(
        bench.name(),
        "renewal, real cadence",
        callers,
        (&b, &s),
        labels,
    );
    let ratio = cpu_per_op(&b) / cpu_per_op(&s).max(f64::MIN_POSITIVE);
    let kept = |sample: &Sample| sample.rate() >= rate * KEPT_CADENCE;
    row.ratio = Some(ratio);
    row.target = Some(format!("CPU ≥ {target:.2}"));
    row.verdict = Verdict::of(ratio >= target && s.errors == 0 && kept(&s) && kept(&b));
    let behind = match (kept(&s), kept(&b)) {
        (true, true) => String::new(),
        _ => format!(
            "; FELL BEHIND the cadence ({:.0} and {:.0} calls/s of {rate:.0}): not a renewal \
             at this cadence",
            s.rate(),
            b.rate()
        ),
    };
    row.note = Some(format!(
        "{apps} applications, each renewed once per {} s guarantee with {} s claims ({rate:.0} \
         renewals/s), against {} with the same expiry at the same cadence; ratio = the \
         baseline's CPU per operation (client + server) ÷ the library's; {} of {} library \
         and {} of {} baseline operations failed{behind}",
        GUARANTEE.as_secs_f64(),
        lease.as_secs_f64(),
        base.expiring_label(),
        s.errors,
        s.ops,
        b.errors,
        b.ops
    ));
    Ok(row)
}
