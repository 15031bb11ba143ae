//! The concurrency driver: N callers issue one operation after another for a fixed time.
//!
//! Every caller is a tokio task on the runner's multi-threaded runtime. All start together
//! (a barrier) and stop when a shared flag is raised; each times one operation in
//! [`SAMPLE_EVERY`] (the same ones for subject and baseline), so that reading the clock does
//! not weigh on operations that take tens of nanoseconds. Throughput counts every operation.
//! Callers yield to the scheduler every [`YIELD_EVERY`] operations so that, with an
//! in-process store whose operations never wait, 64 callers really interleave on 2 threads.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::Barrier;
use tokio::time::Instant;

use crate::stats::{self, Figures};
use crate::sys;

/// One operation in this many is timed.
pub const SAMPLE_EVERY: u64 = 8;
/// Callers yield to the scheduler after this many operations.
pub const YIELD_EVERY: u64 = 32;

/// What one timed run of a driver measured.
pub struct Sample {
    /// Operations completed.
    pub ops: u64,
    /// Operations that returned `false` (an error).
    pub errors: u64,
    /// Wall time from the common start to the last caller's stop.
    pub elapsed: Duration,
    /// Sampled latencies.
    pub hist: Histogram<u64>,
    /// CPU time the runner (the client; for the memory store, the store too) spent.
    pub client_cpu: Duration,
    /// CPU time the store's server process spent, when the runner watches one.
    pub server_cpu: Option<Duration>,
}

impl Sample {
    /// No operation yet, no CPU measured.
    pub(crate) fn empty() -> Sample {
        Sample {
            ops: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            hist: stats::histogram(),
            client_cpu: Duration::ZERO,
            server_cpu: None,
        }
    }

    /// Adds another run of the same operation (times add up, so the rate stays a mean).
    pub fn absorb(&mut self, other: Sample) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        stats::merge(&mut self.hist, &other.hist);
        self.client_cpu += other.client_cpu;
        self.server_cpu = match (self.server_cpu, other.server_cpu) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }

    /// CPU time per operation, in microseconds.
    fn per_op_us(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.ops.max(1) as f64
    }

    /// Successful and failed operations per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }

    /// The row figures for this sample.
    pub fn figures(&self, label: &str) -> Figures {
        Figures {
            client_cpu_us: Some(self.per_op_us(self.client_cpu)),
            server_cpu_us: self.server_cpu.map(|cpu| self.per_op_us(cpu)),
            ..Figures::from_histogram(label, &self.hist, self.ops, self.errors, Some(self.rate()))
        }
    }
}

/// Runs `op` from `callers` concurrent tasks for `run_for`. `op(i)` gets a sequence number
/// unique across callers (caller `c`'s `k`-th call gets `k * callers + c`) and returns whether
/// it succeeded.
pub async fn drive<F, Fut>(callers: usize, run_for: Duration, op: F) -> Sample
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let callers = callers.max(1);
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(callers + 1));
    let mut tasks = Vec::with_capacity(callers);
    for caller in 0..callers {
        let (op, stop, barrier) = (Arc::clone(&op), Arc::clone(&stop), Arc::clone(&barrier));
        let stride = callers as u64;
        tasks.push(tokio::spawn(async move {
            let mut hist = stats::histogram();
            let (mut ops, mut errors) = (0u64, 0u64);
            barrier.wait().await;
            while !stop.load(Ordering::Relaxed) {
                let seq = ops * stride + caller as u64;
                let ok = if ops % SAMPLE_EVERY == 0 {
                    let started = Instant::now();
                    let ok = op(seq).await;
                    stats::record(&mut hist, started.elapsed());
                    ok
                } else {
                    op(seq).await
                };
                ops += 1;
                errors += u64::from(!ok);
                if ops % YIELD_EVERY == 0 {
                    tokio::task::yield_now().await;
                }
            }
            (ops, errors, Instant::now(), hist)
        }));
    }
    barrier.wait().await;
    let (client0, server0) = (sys::cpu_time(), sys::server_cpu_time());
    let started = Instant::now();
    tokio::time::sleep(run_for).await;
    stop.store(true, Ordering::Relaxed);
    let mut sample = Sample::empty();
    let mut last = started;
    for task in tasks {
        // A panicking operation is a bug in the runner: let it surface as a failed caller.
        let Ok((ops, errors, ended, hist)) = task.await else {
            sample.errors += 1;
            continue;
        };
        sample.ops += ops;
        sample.errors += errors;
        last = last.max(ended);
        stats::merge(&mut sample.hist, &hist);
    }
    sample.elapsed = last.saturating_duration_since(started);
    sample.client_cpu = match (client0, sys::cpu_time()) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => Duration::ZERO,
    };
    sample.server_cpu = match (server0, sys::server_cpu_time()) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    sample
}

/// Baseline and subject measured in the same run at the same concurrency, in the order
/// baseline, subject, subject, baseline (so a drift of the machine during the pair weighs on
/// both alike), after a short warm-up of each.
pub async fn pair<B, BF, S, SF>(
    callers: usize,
    round: Duration,
    baseline: B,
    subject: S,
) -> (Sample, Sample)
where
    B: Fn(u64) -> BF + Clone + Send + Sync + 'static,
    BF: Future<Output = bool> + Send,
    S: Fn(u64) -> SF + Clone + Send + Sync + 'static,
    SF: Future<Output = bool> + Send,
{
    let warm = round / 4;
    drive(callers, warm, baseline.clone()).await;
    drive(callers, warm, subject.clone()).await;
    let mut base = drive(callers, round, baseline.clone()).await;
    let mut subj = drive(callers, round, subject.clone()).await;
    subj.absorb(drive(callers, round, subject).await);
    base.absorb(drive(callers, round, baseline).await);
    (base, subj)
}

/// Repetitions of A B C C B A in an interleaved measurement of the peer and reference rows:
/// four timed rounds per subject, as many as a [`pair`]'s two sides get together.
pub const INTERLEAVED_REPS: usize = 2;

/// One operation of [`interleaved`], boxed so that subjects of different types run side by
/// side.
pub type Op = Arc<
    dyn Fn(u64) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + 'static>> + Send + Sync,
>;

/// Boxes `op` for [`interleaved`].
pub fn op<F, Fut>(op: F) -> Op
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    Arc::new(move |seq| Box::pin(op(seq)))
}

/// Several subjects measured in the same run at the same concurrency, so that every ratio
/// between two of them comes from the same moments: after a short warm-up of each, `reps`
/// times the order first to last, then last to first (A B C C B A), so a drift of the
/// machine weighs on all alike. Ratios of separate [`pair`]s run at different moments, and
/// on a server whose cost drifts (etcd's disk, its compaction) their products disagree.
/// One sample per subject, in the order given.
pub async fn interleaved<const N: usize>(
    callers: usize,
    round: Duration,
    reps: usize,
    subjects: &[Op; N],
) -> [Sample; N] {
    let run = |subject: &Op, run_for: Duration| {
        let subject = Arc::clone(subject);
        drive(callers, run_for, move |seq| subject(seq))
    };
    for subject in subjects {
        run(subject, round / 4).await;
    }
    // The first round of each subject starts its sample: an empty one would drop the
    // server's CPU (absorbing a measured sample into an unmeasured one stays unmeasured).
    let mut samples: [Option<Sample>; N] = std::array::from_fn(|_| None);
    let mut add = |i: usize, sample: Sample| match &mut samples[i] {
        Some(total) => total.absorb(sample),
        slot @ None => *slot = Some(sample),
    };
    for _ in 0..reps.max(1) {
        for (i, subject) in subjects.iter().enumerate() {
            add(i, run(subject, round).await);
        }
        for (i, subject) in subjects.iter().enumerate().rev() {
            add(i, run(subject, round).await);
        }
    }
    samples.map(|sample| sample.unwrap_or_else(Sample::empty))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subject that logs its index on every call.
    fn logging(index: usize, log: &Arc<std::sync::Mutex<Vec<usize>>>) -> Op {
        let log = Arc::clone(log);
        op(move |_| {
            let log = Arc::clone(&log);
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                log.lock().unwrap().push(index);
                index != 1
            }
        })
    }

    #[tokio::test]
    async fn interleaved_runs_a_b_c_c_b_a_after_a_warm_up_and_keeps_samples_apart() {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let subjects: [Op; 3] = std::array::from_fn(|i| logging(i, &log));
        let round = Duration::from_millis(40);
        let samples = interleaved(2, round, 2, &subjects).await;

        // Runs of the same subject back to back read as one.
        let mut order = log.lock().unwrap().clone();
        order.dedup();
        assert_eq!(
            order,
            [0, 1, 2, 0, 1, 2, 1, 0, 1, 2, 1, 0],
            "warm-up A B C, then A B C C B A twice"
        );
        for (i, sample) in samples.iter().enumerate() {
            assert!(sample.ops > 0, "subject {i} ran");
            // Four timed rounds each (two per repetition), not six or eight.
            assert!(
                sample.elapsed >= round * 4 && sample.elapsed < round * 6,
                "subject {i}: {:?}",
                sample.elapsed
            );
        }
        assert_eq!(
            samples[1].errors, samples[1].ops,
            "subject 1 fails every call"
        );
        assert_eq!(samples[0].errors + samples[2].errors, 0);
    }
}
