//! A store-agnostic fault schedule driver, judged by the history checker; shared by the
//! `reliability_<store>.rs` test files.
//!
//! [`Run::start`] spawns trackers (each over its own client, wrapped in a [`FaultyStore`] so
//! its renewals can be stalled) for a few applications, each with leader-only work that makes
//! guarded writes with its term's fence into the store (F2) for as long as its loss signal is
//! quiet. The test then injects faults: its store's (server killed, paused, restarted), and the
//! client-side ones offered here ([`Run::freeze_a_leader`]: a GC pause past the lease, after
//! which the frozen work writes with its old fence; [`Run::kill_a_leader`]: a tracker stopped
//! with or without release, replaced by a new unit). [`Run::finish`] waits until every
//! application should have settled on one leader, checks the history, the downstream log of
//! each application (fences of applied writes, in the store's order, never going back) and
//! prints one `RELIABILITY <name>:` summary line.
//!
//! A guarded write whose outcome is unknown (the store was unavailable) is not recorded as
//! accepted or refused; the downstream log is what proves such writes never applied out of
//! order.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use leadership_core::{Fence, LeaderTracker, Leadership, Result, Tracker, TrackerWorker};
use leadership_testkit::history::{History, Report, WriteRecord};
use leadership_testkit::{Fault, FaultyStore};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

/// A boxed future, for the write closures.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A guarded write `(application, unit, fence)` into the store's downstream log.
pub type WriteFn = Arc<dyn Fn(String, String, Fence) -> BoxFuture<Result<()>> + Send + Sync>;

/// One client of the store under test.
pub struct Participant {
    /// The client as a leadership store.
    pub store: Arc<dyn Leadership>,
    /// A guarded write through this client: appends the fence to the application's
    /// downstream log only if `unit` leads with `fence` (F2).
    pub write: WriteFn,
}

/// The store under test.
#[leadership_core::async_trait]
pub trait Target: Send + Sync + 'static {
    /// A new client on the run's namespace.
    async fn participant(&self) -> Participant;

    /// The fences of the application's applied guarded writes, in the order the store
    /// applied them.
    async fn downstream(&self, application: &str) -> Vec<u64>;
}

/// The shape of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Applications contended for.
    pub applications: Vec<String>,
    /// Trackers per application.
    pub trackers: usize,
    /// Each tracker's guarantee; it claims twice that.
    pub guarantee: Duration,
    /// The overlap the history tolerates (recording latency plus the store's clock error).
    pub clock_bound: Duration,
    /// What the store needs beyond one claim duration to settle after the last fault
    /// (expiry slack, reconnects, the trackers' retry backoff).
    pub settle_slack: Duration,
}

#[derive(Default)]
struct Counters {
    writes_unknown: AtomicUsize,
    frozen_writes: AtomicUsize,
    frozen_refused: AtomicUsize,
    refused_while_leading: AtomicUsize,
    client_faults: AtomicUsize,
}

struct Unit {
    name: String,
    tracker: Arc<LeaderTracker>,
    faulty: Arc<FaultyStore>,
    freeze: Arc<AtomicBool>,
    frozen_done: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

/// A running schedule; see the [module docs](self).
pub struct Run {
    /// The history everything is recorded in; tests record their own faults here.
    pub history: Arc<History>,
    target: Arc<dyn Target>,
    settings: Settings,
    units: tokio::sync::Mutex<BTreeMap<String, (u64, Vec<Unit>)>>,
    counters: Arc<Counters>,
    started: Instant,
}

impl Run {
    /// Starts the trackers and their work, and waits until every application has a leader.
    pub async fn start(target: Arc<dyn Target>, settings: Settings) -> Run {
        let run = Run {
            history: History::new(settings.clock_bound),
            target,
            settings: settings.clone(),
            units: tokio::sync::Mutex::new(BTreeMap::new()),
            counters: Arc::new(Counters::default()),
            started: Instant::now(),
        };
        for application in &settings.applications {
            for _ in 0..settings.trackers {
                run.add_unit(application).await;
            }
        }
        run.wait_for_leaders(Duration::from_secs(30)).await;
        run
    }

    async fn add_unit(&self, application: &str) {
        let participant = self.target.participant().await;
        let mut units = self.units.lock().await;
        let (next, list) = units.entry(application.to_owned()).or_default();
        let name = format!("{application}/{next}");
        *next += 1;
        let faulty = FaultyStore::new(participant.store.clone());
        let tracker = Arc::new(
            LeaderTracker::builder(&name, self.settings.guarantee, faulty.clone())
                // Through the wrapper, so a crash (the wrapper failing) cannot release.
                .release_on_stop(faulty.clone())
                .spawn(),
        );
        let freeze = Arc::new(AtomicBool::new(false));
        let frozen_done = Arc::new(Notify::new());
        let recorder = self.history.record_tracker(&name, tracker.clone());
        let work = tokio::spawn(leader_work(
            self.history.clone(),
            self.counters.clone(),
            participant.write,
            name.clone(),
            tracker.clone(),
            freeze.clone(),
            frozen_done.clone(),
        ));
        list.push(Unit {
            name,
            tracker,
            faulty,
            freeze,
            frozen_done,
            tasks: vec![recorder, work],
        });
    }

    /// Waits until every application has a unit whose tracker leads.
    pub async fn wait_for_leaders(&self, within: Duration) {
        let give_up = Instant::now() + within;
        loop {
            let all = {
                let units = self.units.lock().await;
                units
                    .values()
                    .all(|(_, list)| list.iter().any(|u| u.tracker.current_term().is_some()))
            };
            if all {
                return;
            }
            assert!(
                Instant::now() < give_up,
                "not every application got a leader within {within:?}"
            );
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// A GC pause of a leader: its renewals stall and its work stops looking at the loss
    /// signal; once a newer term has begun (or 3 claim durations passed), the work resumes
    /// and writes with its old fence, then the pause ends. Returns whether a leader was found.
    pub async fn freeze_a_leader(&self, application: &str) -> bool {
        let (faulty, freeze, done, name) = {
            let units = self.units.lock().await;
            let Some((_, list)) = units.get(application) else {
                return false;
            };
            let Some(leader) = list.iter().find(|u| u.tracker.current_term().is_some()) else {
                return false;
            };
            (
                leader.faulty.clone(),
                leader.freeze.clone(),
                leader.frozen_done.clone(),
                leader.name.clone(),
            )
        };
        let fault = self
            .history
            .fault_began(format!("GC pause of {name} past its lease"));
        self.counters.client_faults.fetch_add(1, Ordering::SeqCst);
        faulty.fail(Fault::Timeout(Duration::from_secs(3600)));
        freeze.store(true, Ordering::SeqCst);
        let limit = self.settings.guarantee * 12 + Duration::from_secs(5);
        if timeout(limit, done.notified()).await.is_err() {
            freeze.store(false, Ordering::SeqCst);
        }
        faulty.heal();
        self.history.fault_ended(fault);
        true
    }

    /// Stops the current leader of `application` (a crash without release, or a graceful
    /// stop with release, T8) and starts a replacement unit.
    pub async fn kill_a_leader(&self, application: &str, release: bool) {
        let victim = {
            let mut units = self.units.lock().await;
            let Some((_, list)) = units.get_mut(application) else {
                return;
            };
            let index = list
                .iter()
                .position(|u| u.tracker.current_term().is_some())
                .unwrap_or(0);
            if list.is_empty() {
                return;
            }
            list.remove(index)
        };
        let at = Instant::now();
        if release {
            victim.tracker.kill();
            let _ = victim.tracker.wait().await;
        } else {
            // A crash: the tracker stops without revoking (this unit never released).
            victim.faulty.fail(Fault::Unavailable);
            victim.tracker.kill();
        }
        let how = if release { "with" } else { "without" };
        self.history.fault(
            format!("stop {} {how} release", victim.name),
            at,
            Instant::now(),
        );
        self.counters.client_faults.fetch_add(1, Ordering::SeqCst);
        self.add_unit(application).await;
    }

    /// Waits until every application should have settled, checks everything, prints the
    /// summary line `RELIABILITY <name>: …`, stops every unit, and fails the test on any
    /// violation.
    pub async fn finish(self, name: &str, extra: &str) -> Report {
        let settle = self.settings.guarantee * 2 + self.settings.settle_slack;
        for application in &self.settings.applications {
            self.history.expect_leader(application, settle);
        }
        let settled = self.history.settled_by().expect("every fault ended");
        tokio::time::sleep_until(settled + self.settings.guarantee).await;
        self.history.finish();
        let report = self.history.check();

        let mut downstream = BTreeMap::new();
        let mut out_of_order = Vec::new();
        for application in &self.settings.applications {
            let log = self.target.downstream(application).await;
            if let Some(pair) = log.windows(2).find(|p| p[1] < p[0]) {
                out_of_order.push(format!("{application}: {} after {}", pair[1], pair[0]));
            }
            downstream.insert(application.clone(), log.len());
        }
        let c = &self.counters;
        let summary = format!(
            "RELIABILITY {name}: {} client_faults={} frozen_writes={} frozen_refused={} \
             writes_unknown={} refused_while_leading={} downstream_applied={} \
             downstream_out_of_order={} {extra} took={:?}",
            report.summary(),
            c.client_faults.load(Ordering::SeqCst),
            c.frozen_writes.load(Ordering::SeqCst),
            c.frozen_refused.load(Ordering::SeqCst),
            c.writes_unknown.load(Ordering::SeqCst),
            c.refused_while_leading.load(Ordering::SeqCst),
            downstream.values().sum::<usize>(),
            out_of_order.len(),
            self.started.elapsed(),
        );
        println!("{summary}");

        let units = std::mem::take(&mut *self.units.lock().await);
        for (_, list) in units.values() {
            for unit in list {
                unit.tracker.kill();
            }
        }
        for (_, list) in units.into_values() {
            for unit in list {
                let _ = unit.tracker.wait().await;
                for task in unit.tasks {
                    let _ = task.await;
                }
            }
        }

        assert!(report.is_ok(), "{summary}\n{report}");
        assert!(out_of_order.is_empty(), "{summary}\n{out_of_order:?}");
        assert_eq!(
            c.refused_while_leading.load(Ordering::SeqCst),
            0,
            "a tracker believed it led while the store refused its write: {summary}"
        );
        assert!(
            downstream.values().all(|n| *n > 0),
            "some application saw no applied write: {summary}"
        );
        report
    }
}

/// Leader-only work; see the [module docs](self).
async fn leader_work(
    history: Arc<History>,
    counters: Arc<Counters>,
    write: WriteFn,
    unit: String,
    tracker: Arc<LeaderTracker>,
    freeze: Arc<AtomicBool>,
    frozen_done: Arc<Notify>,
) {
    let application = tracker.application_name();
    // The tracker's claims last twice its guarantee (T2).
    let claim = tracker.claim_duration() * 2;
    let attempt = |fence: Fence, newer_term_known: bool| {
        let write = write.clone();
        let history = history.clone();
        let counters = counters.clone();
        let application = application.clone();
        let unit = unit.clone();
        async move {
            let started = Instant::now();
            let outcome = write(application.clone(), unit.clone(), fence).await;
            let accepted = match outcome {
                Ok(()) => true,
                Err(err) if err.is_not_leader() => false,
                Err(_) => {
                    counters.writes_unknown.fetch_add(1, Ordering::SeqCst);
                    return None;
                }
            };
            history.write(WriteRecord {
                application,
                unit,
                fence,
                started,
                accepted,
                newer_term_known,
            });
            Some(accepted)
        }
    };
    while tracker.wait_leader().wait().await {
        let Some(term) = tracker.current_term() else {
            tokio::task::yield_now().await;
            continue;
        };
        while !term.lost.is_cancelled() {
            if freeze.swap(false, Ordering::SeqCst) {
                let give_up = Instant::now() + claim * 3;
                while history.newer_term_than(&application, term.fence).is_none()
                    && Instant::now() < give_up
                {
                    sleep(Duration::from_millis(10)).await;
                }
                let known = history.newer_term_than(&application, term.fence).is_some();
                counters.frozen_writes.fetch_add(1, Ordering::SeqCst);
                if attempt(term.fence, known).await == Some(false) {
                    counters.frozen_refused.fetch_add(1, Ordering::SeqCst);
                }
                frozen_done.notify_one();
                break;
            }
            if attempt(term.fence, false).await == Some(false) {
                let same = tracker
                    .current_term()
                    .is_some_and(|t| t.fence == term.fence);
                if same && !term.lost.is_cancelled() {
                    counters
                        .refused_while_leading
                        .fetch_add(1, Ordering::SeqCst);
                }
            }
            tokio::select! {
                () = term.lost.cancelled() => {}
                () = sleep(Duration::from_millis(20)) => {}
            }
        }
    }
}
