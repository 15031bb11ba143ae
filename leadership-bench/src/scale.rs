//! Scenario 5: many applications, each with a live tracker, for a steady window. Runs in a
//! child process of its own, so the peak RSS and CPU figures are this scenario's alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use leadership_core::tracker::LeaderTracker;
use leadership_core::{
    CancellationToken, Claimer, Fence, Leadership, Result, Tracker as _, TrackerWorker as _,
};
use tokio::time::Instant;

use crate::report::{Row, Verdict};
use crate::scenarios::Sizes;
use crate::sys::{self, human_bytes};
use crate::target::{Bench, BenchResult, fresh_namespace};

/// Counts the claims the trackers make (each one after the first is a renewal).
struct Counting {
    inner: Arc<dyn Leadership>,
    claims: AtomicU64,
    failures: AtomicU64,
}

#[async_trait]
impl Claimer for Counting {
    async fn claim_leadership(
        &self,
        application: &str,
        unit: &str,
        duration: Duration,
    ) -> Result<Fence> {
        let result = self
            .inner
            .claim_leadership(application, unit, duration)
            .await;
        match &result {
            Ok(_) => self.claims.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failures.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    async fn block_until_leadership_released(
        &self,
        application: &str,
        cancel: CancellationToken,
    ) -> Result<()> {
        self.inner
            .block_until_leadership_released(application, cancel)
            .await
    }
}

/// Trackers started at once during setup.
const SETUP_BATCH: usize = 500;

/// The ballast a tracker is spawned with in the control run of M1's overhead: seven
/// allocations of 384 bytes, about what its seven labelled series take in the Prometheus
/// recorder (peak RSS of 10,000 labelled trackers less that of 10,000 unlabelled ones:
/// 67.2 − 41.7 MiB, 2.7 KB each), allocated as they are, between the tracker's own.
pub const BALLAST: (usize, usize) = (7, 384);

/// Runs `sizes.scale_apps` trackers (one unit per application, so each leads throughout)
/// for `sizes.scale_window` and reports renewals, spurious losses, peak RSS and CPU.
/// `labelled`: whether the trackers' metrics carry their application and unit (M1; matters
/// only with a recorder installed). `ballast`: whether each tracker is spawned with
/// [`BALLAST`] (the control of M1's overhead).
pub async fn scale(
    bench: &dyn Bench,
    sizes: Sizes,
    labelled: bool,
    ballast: bool,
) -> BenchResult<Vec<Row>> {
    let store = bench.name();
    let guarantee = bench.scale_guarantee();
    let apps = sizes.scale_apps;
    let counting = Arc::new(Counting {
        inner: bench.open(&fresh_namespace("scale")).await?,
        claims: AtomicU64::new(0),
        failures: AtomicU64::new(0),
    });
    // Trackers start in batches, each batch leading before the next starts: 10,000 first
    // claims at once would measure a thundering herd (on etcd, a lease grant each), not the
    // steady state this scenario is about. The setup time is reported. Within the batches,
    // starts are paced evenly over one guarantee, as trackers started by a real process at
    // different times are: each renews at its own phase, so the window measures renewals
    // spread over time rather than bunched into the few milliseconds a fast setup took (the
    // timer wheel then fires hundreds at a tick, and a slower setup, such as one registering
    // metrics series, would look dearer per renewal only because its timers spread out).
    let setup_started = Instant::now();
    let pace = guarantee.div_f64(apps.max(1) as f64);
    let mut trackers: Vec<LeaderTracker> = Vec::with_capacity(apps);
    let mut ballasts: Vec<Vec<Box<[u8]>>> = Vec::new();
    let mut terms = Vec::with_capacity(apps);
    let mut setup_missed = None;
    'batches: while trackers.len() < apps {
        let first = trackers.len();
        let last = (first + SETUP_BATCH).min(apps);
        for i in first..last {
            tokio::time::sleep_until(setup_started + pace.mul_f64(i as f64)).await;
            let claimer: Arc<dyn Claimer> = counting.clone();
            if ballast {
                let (count, bytes) = BALLAST;
                ballasts.push(
                    (0..count)
                        .map(|_| vec![1u8; bytes].into_boxed_slice())
                        .collect(),
                );
            }
            trackers.push(
                LeaderTracker::builder(format!("s{i}/0"), guarantee, claimer)
                    .metrics_application_label(labelled)
                    .spawn(),
            );
        }
        for tracker in &trackers[first..last] {
            let remaining = sizes.scale_setup.saturating_sub(setup_started.elapsed());
            match tokio::time::timeout(remaining, tracker.wait_leader().wait()).await {
                Ok(true) => terms.push(tracker.current_term()),
                Ok(false) => {
                    return Err(format!(
                        "{}'s tracker stopped before leading",
                        tracker.unit_name()
                    ));
                }
                Err(_) => {
                    // Not a runner failure: the store could not keep up. The window runs with
                    // the trackers that lead (the others keep trying), and a row says so.
                    setup_missed = Some(terms.len());
                    break 'batches;
                }
            }
        }
    }
    let setup = setup_started.elapsed();

    let (claims0, failures0) = (
        counting.claims.load(Ordering::Relaxed),
        counting.failures.load(Ordering::Relaxed),
    );
    let cpu0 = sys::cpu_time().ok_or("cannot read getrusage")?;
    let started = Instant::now();
    tokio::time::sleep(sizes.scale_window).await;
    let window = started.elapsed();
    let cpu = sys::cpu_time()
        .ok_or("cannot read getrusage")?
        .saturating_sub(cpu0);
    let renewals = counting.claims.load(Ordering::Relaxed) - claims0;
    let failures = counting.failures.load(Ordering::Relaxed) - failures0;

    let mut losses = 0usize;
    // Only trackers that led before the window count: the others never had a term to lose.
    for (tracker, term) in trackers.iter().zip(&terms) {
        let now = tracker.current_term();
        let lost = match (term, &now) {
            (Some(term), Some(now)) => term.lost.is_cancelled() || term.fence != now.fence,
            _ => true,
        };
        losses += usize::from(lost);
    }
    let peak = sys::peak_rss().ok_or("cannot read VmHWM from /proc/self/status")?;
    drop(std::hint::black_box(ballasts));
    for tracker in &trackers {
        tracker.kill();
    }
    for tracker in &trackers {
        let _ = tracker.wait().await;
    }

    let secs = window.as_secs_f64();
    let expected = apps as f64 / guarantee.as_secs_f64();
    let what = format!("{apps} apps, guarantee {} s", guarantee.as_secs_f64());
    let mut rate = Row::new(store, "scale: renewals/s");
    rate.value = Some(format!(
        "{:.0}/s over {secs:.0} s ({what}; one per guarantee = {expected:.0}/s); {failures} failed claims",
        renewals as f64 / secs
    ));
    rate.number = Some(renewals as f64 / secs);
    rate.note = Some(format!(
        "{} of {apps} trackers led {:.1} s after the first was spawned (batches of {SETUP_BATCH})",
        terms.len(),
        setup.as_secs_f64()
    ));
    let mut lost = Row::new(store, "scale: spurious losses");
    lost.value = Some(format!(
        "{losses} of {apps} trackers lost leadership during the window"
    ));
    lost.number = Some(losses as f64);
    lost.target = Some("0".to_owned());
    lost.verdict = Verdict::of(losses == 0);
    lost.broken = losses > 0;
    let mut rss = Row::new(store, "scale: runner peak RSS");
    rss.value = Some(format!("{} ({what})", human_bytes(peak)));
    rss.number = Some(peak as f64);
    let mut cpu_row = Row::new(store, "scale: runner CPU");
    let share = cpu.as_secs_f64() / secs * 100.0;
    cpu_row.value = Some(format!(
        "{share:.1}% of one core over the window ({:.2} s CPU in {secs:.0} s)",
        cpu.as_secs_f64()
    ));
    cpu_row.number = Some(share);
    let mut rows = vec![rate, lost, rss, cpu_row];
    if let Some(led) = setup_missed {
        let mut setup_row = Row::new(store, "scale: setup");
        setup_row.value = Some(format!(
            "only {led} of {apps} trackers led within {:.0} s of the first spawn (batches of {SETUP_BATCH}); the window ran with those",
            sizes.scale_setup.as_secs_f64()
        ));
        setup_row.number = Some(led as f64);
        setup_row.target = Some(format!("all {apps} lead"));
        setup_row.verdict = Verdict::Fail;
        rows.insert(0, setup_row);
    }
    Ok(rows)
}

/// Runner CPU seconds per renewal from a scale run's rows (renewals/s and the CPU share).
pub fn cpu_per_renewal(rows: &[Row]) -> Option<f64> {
    let find = |scenario: &str| {
        rows.iter()
            .find(|row| row.scenario == scenario)
            .and_then(|row| row.number)
    };
    let rate = find("scale: renewals/s")?;
    let share = find("scale: runner CPU")?;
    (rate > 0.0).then(|| share / 100.0 / rate)
}

/// The median of `values` (`None` if empty).
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The settings M1's overhead compares with the recorder-less run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// The Prometheus recorder, each tracker labelled with its application and unit (the
    /// default).
    Labelled,
    /// The Prometheus recorder, labels switched off: what M1 advises for deployments with
    /// many thousands of applications, so the row that carries the target.
    Unlabelled,
    /// No recorder; each tracker spawned with [`BALLAST`]: the control that shows what the
    /// labelled series' memory alone costs.
    Ballast,
}

/// M1's overhead: CPU per renewal without a metrics recorder ÷ with one, in `setting`.
/// `off[i]` and `on[i]` are round `i`'s figures, measured side by side; the ratio is the
/// median of the rounds' ratios. Only [`Setting::Unlabelled`] carries the target (≥ 0.95):
/// 10,000 trackers in one process is the deployment M1 switches the labels off for.
pub fn metrics_overhead(off: &[f64], on: &[f64], setting: Setting) -> Row {
    let (scenario, what) = match setting {
        Setting::Labelled => (
            "scale: metrics on vs off (CPU per renewal)",
            "with the Prometheus recorder",
        ),
        Setting::Unlabelled => (
            "scale: metrics on, unlabelled, vs off",
            "with the Prometheus recorder",
        ),
        Setting::Ballast => (
            "scale: ref: labelled series' bytes, no recorder, vs off",
            "with the ballast",
        ),
    };
    let mut row = Row::new("memory", scenario);
    let targeted = setting == Setting::Unlabelled;
    if targeted {
        row.target = Some("off ÷ on ≥ 0.95".into());
    }
    let each = |values: &[f64], scale: f64, digits: usize| {
        values
            .iter()
            .map(|v| format!("{:.digits$}", v * scale))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ratios: Vec<f64> = off
        .iter()
        .zip(on)
        .filter(|(_, on)| **on > 0.0)
        .map(|(off, on)| off / on)
        .collect();
    match (median(off), median(on), median(&ratios)) {
        (Some(off_median), Some(on_median), Some(ratio))
            if off.len() == on.len() && ratios.len() == on.len() =>
        {
            row.value = Some(format!(
                "{:.1} µs without a recorder, {:.1} µs {what} (medians); \
                 ratio {ratio:.2}, the median of {} rounds' ratios ({}; per round {} / {} µs)",
                off_median * 1e6,
                on_median * 1e6,
                ratios.len(),
                each(&ratios, 1.0, 2),
                each(off, 1e6, 1),
                each(on, 1e6, 1),
            ));
            row.ratio = Some(ratio);
            row.number = Some(ratio);
            row.verdict = if targeted {
                Verdict::of(ratio >= 0.95)
            } else {
                Verdict::Info
            };
        }
        _ => {
            row.value = Some(format!(
                "the rounds gave no matching CPU figures ({} without a recorder, {} {what})",
                off.len(),
                on.len()
            ));
            row.verdict = Verdict::Fail;
        }
    }
    let setting = match setting {
        Setting::Labelled => {
            "each tracker labelled with its application and unit (10,000 series per metric, \
             2.7 KB per tracker); informational, as M1 advises switching the labels off at \
             this scale: its cost is the unlabelled row's recording plus what the series' \
             memory costs the renewals, which the ballast row shows without a recorder"
        }
        Setting::Unlabelled => {
            "labels switched off (metrics_application_label(false): one series per metric), \
             as M1 advises for many thousands of applications"
        }
        Setting::Ballast => {
            "no recorder; each tracker spawned with seven allocations of 384 bytes, as many \
             bytes as its labelled series take, allocated between the tracker's own"
        }
    };
    row.note = Some(format!(
        "child processes, each 10,000 trackers on memory (starts paced over one guarantee) \
         for the scale window, in rounds of the four settings side by side, at the same time \
         (five rounds in a full run, one with --quick); the library is built with its \
         metrics feature in all; the recorder is the Prometheus recorder as `track --metrics` \
         builds it (latency histograms with DURATION_BUCKETS) with its 5 s upkeep; {setting}"
    ));
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_overhead_is_the_median_of_the_rounds_ratios() {
        // The machine gets slower round by round: each round's pair is close, the medians
        // of the sides are not; the paired ratio sees through the drift.
        let off = [10.0e-6, 12.0e-6, 14.0e-6, 16.0e-6, 18.0e-6];
        let on = [10.2e-6, 12.2e-6, 14.1e-6, 16.5e-6, 18.2e-6];
        let row = metrics_overhead(&off, &on, Setting::Unlabelled);
        let ratio = row.ratio.expect("a ratio");
        // Round ratios 0.980, 0.984, 0.993, 0.970, 0.989: the median is round 2's.
        assert!((ratio - 12.0 / 12.2).abs() < 1e-9, "{ratio}");
        assert_eq!(row.verdict, Verdict::Pass);
        // A real overhead fails it.
        let slower = off.map(|v| v * 1.10);
        let row = metrics_overhead(&off, &slower, Setting::Unlabelled);
        assert!(row.ratio.expect("a ratio") < 0.95);
        assert_eq!(row.verdict, Verdict::Fail);
        // The labelled and ballast rows report their ratio and carry no target.
        for setting in [Setting::Labelled, Setting::Ballast] {
            let row = metrics_overhead(&off, &slower, setting);
            assert!(row.ratio.expect("a ratio") < 0.95);
            assert_eq!(row.verdict, Verdict::Info);
            assert!(row.target.is_none());
        }
        // Rounds that do not pair up are a failure, not a verdict, in every setting.
        for setting in [Setting::Labelled, Setting::Unlabelled, Setting::Ballast] {
            let row = metrics_overhead(&off, &on[..3], setting);
            assert_eq!(row.verdict, Verdict::Fail);
            assert!(row.ratio.is_none());
        }
    }
}
