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
//! order. Any other guarded-write error fails the run.
//!
//! The safety matrix (issue 16) runs on this driver: every claim and revoke of a tracker is
//! recorded around the call (`FaultyStore::record_into`) for the precise C4 check; bare
//! claimers contend for their own applications with short leases they extend, revoke or let
//! run out, and after a lease ran out and a newer term began they write with the old fence
//! (a client paused past its lease that does not look; F2: each write must be refused); the
//! downstream log holds `(unit, fence)` in the store itself and is the history's witness. A
//! [`Cell`] names the row of the matrix; [`Run::finish_cell`] prints one `SAFETY` line per run
//! and fails on any violation except of the rules the cell declares its configuration cannot
//! keep (which it still counts and shows). `LEADERSHIP_SAFETY_TERMS=N` makes
//! [`Run::more`] keep a schedule going until `N` new terms were granted.

#![allow(dead_code)]

pub mod process;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use leadership_core::{
    Claimer, Fence, LeaderTracker, Leadership, Result, Revoker, Tracker, TrackerWorker,
};
use leadership_testkit::history::{
    ClaimCall, History, Report, RevokeCall, WitnessEntry, WriteRecord,
};
use leadership_testkit::{Fault, FaultyStore};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;

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

    /// The application's applied guarded writes as the store holds them, `(unit, fence)` in
    /// the order the store applied them (the store-side witness).
    async fn downstream(&self, application: &str) -> Vec<(String, u64)>;
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
    /// Applications contended for by bare claimers (three each), besides the trackers'.
    pub churn: Vec<String>,
    /// The bare claimers' lease; at least the store's granularity.
    pub churn_claim: Duration,
}

impl Settings {
    /// Two tracker applications (three trackers each) and two bare-claimer applications.
    pub fn standard(
        guarantee: Duration,
        clock_bound: Duration,
        settle_slack: Duration,
        churn_claim: Duration,
    ) -> Settings {
        Settings {
            applications: vec!["alpha".into(), "beta".into()],
            trackers: 3,
            guarantee,
            clock_bound,
            settle_slack,
            churn: vec!["gamma".into(), "delta".into()],
            churn_claim,
        }
    }
}

/// A row of the safety matrix.
#[derive(Debug, Clone)]
pub struct Cell {
    /// The store, e.g. `redis`.
    pub store: &'static str,
    /// Its configuration, e.g. `AOF always`.
    pub configuration: &'static str,
    /// The fault the schedule injects.
    pub fault: &'static str,
    /// Rules the configuration cannot keep under this fault (counted and shown, not failed).
    pub tolerated: &'static [&'static str],
}

/// At most two cells of one test binary run at once, whatever `RUST_TEST_THREADS` says: each
/// starts its own servers, and on a two-core machine more would measure the scheduler.
pub fn cell_slot() -> CellSlot {
    static SLOTS: (std::sync::Mutex<usize>, std::sync::Condvar) =
        (std::sync::Mutex::new(0), std::sync::Condvar::new());
    let mut busy = SLOTS
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    while *busy >= 2 {
        busy = SLOTS
            .1
            .wait(busy)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
    *busy += 1;
    CellSlot(&SLOTS)
}

/// A running cell's slot; see [`cell_slot`].
pub struct CellSlot(&'static (std::sync::Mutex<usize>, std::sync::Condvar));

impl Drop for CellSlot {
    fn drop(&mut self) {
        let mut busy = self
            .0
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *busy = busy.saturating_sub(1);
        self.0.1.notify_one();
    }
}

/// How many new terms an extended run wants (`LEADERSHIP_SAFETY_TERMS`), 0 by default.
pub fn terms_wanted() -> usize {
    std::env::var("LEADERSHIP_SAFETY_TERMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[derive(Default)]
struct Counters {
    writes_unknown: AtomicUsize,
    frozen_writes: AtomicUsize,
    frozen_refused: AtomicUsize,
    refused_while_leading: AtomicUsize,
    client_faults: AtomicUsize,
    /// Writes with an old fence after a newer term was known (frozen trackers, bare
    /// claimers whose lease ran out), and how many the store refused.
    stale_attempts: AtomicUsize,
    stale_refused: AtomicUsize,
    /// A paused leader that acted on waking without treating its term as lost.
    acted_after_pause: AtomicUsize,
    /// Guarded-write and tracker-exit errors that are neither NotLeader nor Unavailable.
    unexpected: std::sync::Mutex<Vec<String>>,
}

impl Counters {
    fn unexpected(&self, what: String) {
        self.unexpected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(what);
    }
}

/// How a guarded write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Refused,
    Unknown,
}

/// Makes a guarded write and records it; errors other than NotLeader and Unavailable are
/// counted as unexpected (they fail the run).
async fn guarded_write(
    history: &History,
    counters: &Counters,
    write: &WriteFn,
    application: &str,
    unit: &str,
    fence: Fence,
    newer_term_known: bool,
) -> Outcome {
    let started = Instant::now();
    let accepted = match write(application.to_owned(), unit.to_owned(), fence).await {
        Ok(()) => true,
        Err(err) if err.is_not_leader() => false,
        Err(err) if err.is_retryable() => {
            counters.writes_unknown.fetch_add(1, Ordering::SeqCst);
            return Outcome::Unknown;
        }
        Err(err) => {
            counters.unexpected(format!("guarded write by {unit} with {fence}: {err:?}"));
            return Outcome::Unknown;
        }
    };
    history.write(WriteRecord {
        application: application.to_owned(),
        unit: unit.to_owned(),
        fence,
        started,
        accepted,
        newer_term_known,
    });
    if accepted {
        Outcome::Accepted
    } else {
        Outcome::Refused
    }
}

/// How a frozen leader behaves on waking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Like a process that does not look: it writes with its old fence (F2 must refuse it).
    Zombie,
    /// Like a correct client after SIGSTOP: it must see its term as lost before acting (T7).
    Careful,
}

struct Unit {
    name: String,
    tracker: Arc<LeaderTracker>,
    faulty: Arc<FaultyStore>,
    freeze: Arc<std::sync::Mutex<Option<Wake>>>,
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
    churn_stop: CancellationToken,
    churners: std::sync::Mutex<Vec<JoinHandle<()>>>,
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
            churn_stop: CancellationToken::new(),
            churners: std::sync::Mutex::new(Vec::new()),
        };
        for application in &settings.applications {
            for _ in 0..settings.trackers {
                run.add_unit(application).await;
            }
        }
        for application in &settings.churn {
            for n in 0..3 {
                let participant = run.target.participant().await;
                let task = tokio::spawn(bare_claimer(
                    run.history.clone(),
                    run.counters.clone(),
                    participant,
                    application.clone(),
                    format!("{application}/{n}"),
                    settings.churn_claim,
                    run.churn_stop.clone(),
                ));
                run.churners
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(task);
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
        faulty.record_into(self.history.clone());
        let tracker = Arc::new(
            LeaderTracker::builder(&name, self.settings.guarantee, faulty.clone())
                // Through the wrapper, so a crash (the wrapper failing) cannot release.
                .release_on_stop(faulty.clone())
                .spawn(),
        );
        let freeze = Arc::new(std::sync::Mutex::new(None));
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

    /// Whether a schedule should run another round: until `min_rounds` ran and, in an
    /// extended run, until `LEADERSHIP_SAFETY_TERMS` new terms were granted.
    pub fn more(&self, rounds_done: usize, min_rounds: usize) -> bool {
        if rounds_done < min_rounds {
            return true;
        }
        let wanted = terms_wanted();
        wanted > 0 && self.history.check().new_terms < wanted
    }

    /// A GC pause of a leader: its renewals stall and its work stops looking at the loss
    /// signal; once a newer term has begun (or 3 claim durations passed), the work resumes
    /// and writes with its old fence, then the pause ends. Fails the test if no leader froze.
    pub async fn freeze_a_leader(&self, application: &str) -> bool {
        self.pause_a_leader(application, Wake::Zombie).await
    }

    /// A leader paused past its lease (the in-process form of SIGSTOP: its store calls stall
    /// and its work stops); on waking it acts as `wake` says. Fails the test if no leader
    /// of `application` was found or the pause did not take.
    pub async fn pause_a_leader(&self, application: &str, wake: Wake) -> bool {
        let (faulty, freeze, done, name) = {
            let units = self.units.lock().await;
            let leader = units
                .get(application)
                .and_then(|(_, list)| list.iter().find(|u| u.tracker.current_term().is_some()));
            let Some(leader) = leader else {
                panic!("no leader of {application} to pause");
            };
            (
                leader.faulty.clone(),
                leader.freeze.clone(),
                leader.frozen_done.clone(),
                leader.name.clone(),
            )
        };
        let what = match wake {
            Wake::Zombie => "a zombie that writes with its old fence",
            Wake::Careful => "checks its term on waking",
        };
        let fault = self
            .history
            .fault_began(format!("pause of {name} past its lease ({what})"));
        self.counters.client_faults.fetch_add(1, Ordering::SeqCst);
        faulty.fail(Fault::Timeout(Duration::from_secs(3600)));
        *freeze
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(wake);
        let limit = self.settings.guarantee * 12 + Duration::from_secs(5);
        let froze = timeout(limit, done.notified()).await.is_ok();
        faulty.heal();
        self.history.fault_ended(fault);
        assert!(
            froze,
            "{name} never froze: its work did not pick up the pause within {limit:?}"
        );
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
        } else {
            // A crash: the tracker stops without revoking (this unit never released).
            victim.faulty.fail(Fault::Unavailable);
            victim.tracker.kill();
        }
        if let Err(err) = victim.tracker.wait().await {
            self.counters
                .unexpected(format!("{} stopped with {err:?}", victim.name));
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
        let cell = Cell {
            store: "",
            configuration: "",
            fault: "",
            tolerated: &[],
        };
        self.finish_inner(name, extra, &cell).await
    }

    /// [`finish`](Self::finish) for a row of the safety matrix: also prints
    /// `SAFETY | store | configuration | fault | terms | faults | C4 | T7 | F1 | F2 | stale
    /// writes refused/attempted |`
    /// and tolerates violations of the cell's declared rules (F1 and F2 never are).
    pub async fn finish_cell(self, cell: &Cell, extra: &str) -> Report {
        let name = format!(
            "{} ({}) under {}",
            cell.store, cell.configuration, cell.fault
        );
        self.finish_inner(&name, extra, cell).await
    }

    async fn finish_inner(self, name: &str, extra: &str, cell: &Cell) -> Report {
        let settle = self.settings.guarantee * 2 + self.settings.settle_slack;
        for application in &self.settings.applications {
            self.history.expect_leader(application, settle);
        }
        let settled = self.history.settled_by().expect("every fault ended");
        tokio::time::sleep_until(settled + self.settings.guarantee).await;
        self.history.finish();

        // Stop everything before reading the witness, so the logs are complete.
        self.churn_stop.cancel();
        let churners = std::mem::take(
            &mut *self
                .churners
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for task in churners {
            if let Err(err) = task.await {
                self.counters.unexpected(format!("a bare claimer: {err}"));
            }
        }
        let units = std::mem::take(&mut *self.units.lock().await);
        for (_, list) in units.values() {
            for unit in list {
                unit.tracker.kill();
            }
        }
        for (_, list) in units.into_values() {
            for unit in list {
                if let Err(err) = unit.tracker.wait().await {
                    self.counters
                        .unexpected(format!("{} stopped with {err:?}", unit.name));
                }
                for task in unit.tasks {
                    if let Err(err) = task.await {
                        self.counters
                            .unexpected(format!("{}'s task: {err}", unit.name));
                    }
                }
            }
        }

        let mut downstream = BTreeMap::new();
        for application in self
            .settings
            .applications
            .iter()
            .chain(&self.settings.churn)
        {
            let log = self.target.downstream(application).await;
            downstream.insert(application.clone(), log.len());
            self.history.witness(
                application,
                log.into_iter()
                    .map(|(unit, fence)| WitnessEntry {
                        unit,
                        fence: Fence(fence),
                    })
                    .collect(),
            );
        }
        let report = self.history.check();
        let c = &self.counters;
        let stale_attempts = c.stale_attempts.load(Ordering::SeqCst);
        let stale_refused = c.stale_refused.load(Ordering::SeqCst);
        let unexpected = c
            .unexpected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let summary = format!(
            "RELIABILITY {name}: {} client_faults={} frozen_writes={} frozen_refused={} \
             stale_attempts={stale_attempts} stale_refused={stale_refused} \
             acted_after_pause={} writes_unknown={} refused_while_leading={} \
             downstream_applied={} unexpected={} {extra} took={:?}",
            report.summary(),
            c.client_faults.load(Ordering::SeqCst),
            c.frozen_writes.load(Ordering::SeqCst),
            c.frozen_refused.load(Ordering::SeqCst),
            c.acted_after_pause.load(Ordering::SeqCst),
            c.writes_unknown.load(Ordering::SeqCst),
            c.refused_while_leading.load(Ordering::SeqCst),
            downstream.values().sum::<usize>(),
            unexpected.len(),
            self.started.elapsed(),
        );
        println!("{summary}");
        if !cell.store.is_empty() {
            println!(
                "SAFETY | {} | {} | {} | {} | {} | {} | {} | {} | {} | {stale_refused}/{stale_attempts} |",
                cell.store,
                cell.configuration,
                cell.fault,
                report.new_terms,
                report.faults,
                report.count("C4"),
                report.count("T7"),
                report.count("F1"),
                report.count("F2"),
            );
        }

        let failing: Vec<_> = report
            .violations
            .iter()
            .filter(|v| !cell.tolerated.contains(&v.rule()))
            .collect();
        assert!(failing.is_empty(), "{summary}\n{report}");
        assert!(unexpected.is_empty(), "{summary}\n{unexpected:#?}");
        // A cell that cannot keep F2 (a server whose members' data diverged) counts the
        // accepted stale writes in its F2 column; the fault must still have happened.
        assert!(
            stale_attempts >= 10
                && (stale_refused == stale_attempts || cell.tolerated.contains(&"F2")),
            "at least 10 stale writes, every one refused: {summary}"
        );
        assert_eq!(
            c.acted_after_pause.load(Ordering::SeqCst),
            0,
            "a paused leader acted on waking before treating its term as lost: {summary}"
        );
        // A tracker leading by its own belief while the store refuses it is T7 broken; a
        // cell that cannot keep T7 (the store forgot its lease) counts it in the summary.
        if !cell.tolerated.contains(&"T7") {
            assert_eq!(
                c.refused_while_leading.load(Ordering::SeqCst),
                0,
                "a tracker believed it led while the store refused its write: {summary}"
            );
        }
        assert!(
            downstream.values().all(|n| *n > 0),
            "some application saw no applied write: {summary}"
        );
        report
    }
}

/// A bare claimer: claims `application` for `claim`, writes once through its guarded write,
/// then extends, revokes or lets the lease run out; after a lease ran out and another unit's
/// newer term was granted, it writes with its old fence (a client that slept past its lease
/// and does not look, and retries it up to three times; F2 must refuse each). Every call is
/// recorded for the C4 check.
async fn bare_claimer(
    history: Arc<History>,
    counters: Arc<Counters>,
    participant: Participant,
    application: String,
    unit: String,
    claim: Duration,
    stop: CancellationToken,
) {
    let store = participant.store;
    let write = participant.write;
    let mut turn: u64 = unit.bytes().map(u64::from).sum();
    while !stop.is_cancelled() {
        turn = turn.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let call = ClaimCall::time(
            &application,
            &unit,
            claim,
            store.claim_leadership(&application, &unit, claim),
        )
        .await;
        let (started, result) = (call.started, call.result.clone());
        if let Err(err) = &result
            && !err.is_claim_denied()
            && !err.is_retryable()
        {
            counters.unexpected(format!("claim by {unit}: {err:?}"));
        }
        history.claim(call);
        let Ok(fence) = result else {
            let pause = Duration::from_millis(5 + (turn >> 33) % 30);
            tokio::select! {
                () = stop.cancelled() => {}
                () = sleep(pause) => {}
            }
            continue;
        };
        let _ = guarded_write(
            &history,
            &counters,
            &write,
            &application,
            &unit,
            fence,
            false,
        )
        .await;
        match (turn >> 40) % 4 {
            // Revoke at once: the next term can start right away.
            0 | 1 => {
                let started = Instant::now();
                let result = store.revoke_leadership(&application, &unit).await;
                history.revoke(RevokeCall {
                    application: application.clone(),
                    unit: unit.clone(),
                    started,
                    ok: result.is_ok(),
                });
                if let Err(err) = result
                    && !err.is_retryable()
                    && !matches!(err, leadership_core::Error::ClaimNotHeld)
                {
                    counters.unexpected(format!("revoke by {unit}: {err:?}"));
                }
                sleep(Duration::from_millis(5 + (turn >> 20) % 20)).await;
            }
            // Let it run out, then write with the stale fence once a newer term is granted.
            _ => {
                let give_up = started + claim * 4;
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = sleep_until_newer(&history, &application, fence, give_up) => {}
                }
                // A client that does not look retries its write a few times.
                for _ in 0..3 {
                    if !newer_granted(&history, &application, fence) {
                        break;
                    }
                    counters.stale_attempts.fetch_add(1, Ordering::SeqCst);
                    let outcome = guarded_write(
                        &history,
                        &counters,
                        &write,
                        &application,
                        &unit,
                        fence,
                        true,
                    )
                    .await;
                    match outcome {
                        Outcome::Refused => {
                            counters.stale_refused.fetch_add(1, Ordering::SeqCst);
                        }
                        // Not counted either way: the store's witness shows whether it applied.
                        Outcome::Unknown => {
                            counters.stale_attempts.fetch_sub(1, Ordering::SeqCst);
                        }
                        Outcome::Accepted => {}
                    }
                }
            }
        }
    }
}

/// Whether a claim granted another unit of `application` a fence above `fence`.
fn newer_granted(history: &History, application: &str, fence: Fence) -> bool {
    history
        .claims()
        .iter()
        .any(|c| c.application == application && c.granted().is_some_and(|f| f > fence))
}

async fn sleep_until_newer(history: &History, application: &str, fence: Fence, until: Instant) {
    while Instant::now() < until && !newer_granted(history, application, fence) {
        sleep(Duration::from_millis(10)).await;
    }
}

/// Leader-only work; see the [module docs](self).
async fn leader_work(
    history: Arc<History>,
    counters: Arc<Counters>,
    write: WriteFn,
    unit: String,
    tracker: Arc<LeaderTracker>,
    freeze: Arc<std::sync::Mutex<Option<Wake>>>,
    frozen_done: Arc<Notify>,
) {
    let application = tracker.application_name();
    // The tracker's claims last twice its guarantee (T2).
    let claim = tracker.claim_duration() * 2;
    while tracker.wait_leader().wait().await {
        let Some(term) = tracker.current_term() else {
            tokio::task::yield_now().await;
            continue;
        };
        while !term.lost.is_cancelled() {
            let wake = freeze
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(wake) = wake {
                let give_up = Instant::now() + claim * 3;
                while history.newer_term_than(&application, term.fence).is_none()
                    && !newer_granted(&history, &application, term.fence)
                    && Instant::now() < give_up
                {
                    sleep(Duration::from_millis(10)).await;
                }
                let known = history.newer_term_than(&application, term.fence).is_some()
                    || newer_granted(&history, &application, term.fence);
                match wake {
                    Wake::Zombie => {
                        counters.frozen_writes.fetch_add(1, Ordering::SeqCst);
                        if known {
                            counters.stale_attempts.fetch_add(1, Ordering::SeqCst);
                        }
                        let outcome = guarded_write(
                            &history,
                            &counters,
                            &write,
                            &application,
                            &unit,
                            term.fence,
                            known,
                        )
                        .await;
                        if outcome == Outcome::Refused {
                            counters.frozen_refused.fetch_add(1, Ordering::SeqCst);
                            if known {
                                counters.stale_refused.fetch_add(1, Ordering::SeqCst);
                            }
                        } else if outcome == Outcome::Unknown && known {
                            counters.stale_attempts.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    Wake::Careful => {
                        // The pause is over for the work: before acting it looks at its
                        // term, which the tracker must already have ended (T7). It asks the
                        // tracker, which judges the deadline itself: the loss signal's timer
                        // may not have run yet on a starved machine (or after a real SIGSTOP,
                        // tracker_faults::a_process_frozen_past_its_lease_...).
                        let still_leads = tracker
                            .current_term()
                            .is_some_and(|t| t.fence == term.fence);
                        if still_leads && !term.lost.is_cancelled() {
                            counters.acted_after_pause.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                frozen_done.notify_one();
                break;
            }
            let outcome = guarded_write(
                &history,
                &counters,
                &write,
                &application,
                &unit,
                term.fence,
                false,
            )
            .await;
            if outcome == Outcome::Refused {
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

/// What [`Run::lost_replies`] saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct LostReplies {
    /// Claims sent while replies were dropped.
    pub attempts: usize,
    /// Of those, claims whose caller got an error.
    pub errors: usize,
    /// Of those, claims the store had applied anyway (the unit held the lease).
    pub applied: usize,
    /// Retries that returned the applied claim's fence (C2 makes the retry safe).
    pub retried_same_fence: usize,
}

impl Run {
    /// E2: `rounds` times, a claim of `application` is sent through a client whose replies
    /// are lost (`drop_replies(true, round)` on a proxy), so it may apply while its caller sees an
    /// error; another client checks whether it applied, the claimant retries (it must get
    /// the same fence, and a rival is denied meanwhile), then revokes. Every call goes into
    /// the history, so C4 and F1 judge the retried claims too.
    pub async fn lost_replies(
        &self,
        application: &str,
        proxied: Arc<dyn Leadership>,
        direct: Arc<dyn Leadership>,
        drop_replies: &(dyn Fn(bool, usize) + Send + Sync),
        rounds: usize,
        claim: Duration,
    ) -> LostReplies {
        let unit = format!("{application}/0");
        let rival = format!("{application}/1");
        let mut seen = LostReplies::default();
        for round in 0..rounds {
            let fault = self.history.fault_began(format!(
                "the reply to {unit}'s claim dropped after it applied"
            ));
            drop_replies(true, round);
            seen.attempts += 1;
            let first = self
                .recorded_claim(&*proxied, application, &unit, claim)
                .await;
            drop_replies(false, round);
            if first.is_err() {
                seen.errors += 1;
                let applied = direct.leadership_check(application, &unit).check().await;
                // Retry until the claimant's client has reconnected.
                let give_up = Instant::now() + Duration::from_secs(10);
                let retried = loop {
                    match self
                        .recorded_claim(&*proxied, application, &unit, claim)
                        .await
                    {
                        Err(err) if err.is_retryable() && Instant::now() < give_up => {
                            sleep(Duration::from_millis(20)).await;
                        }
                        other => break other,
                    }
                };
                match (applied, retried) {
                    (Ok(held), Ok(again)) => {
                        seen.applied += 1;
                        if held == again {
                            seen.retried_same_fence += 1;
                        } else {
                            self.counters.unexpected(format!(
                                "E2: {unit}'s retry got {again} after its lost claim applied \
                                 with {held}"
                            ));
                        }
                    }
                    (Err(err), Ok(_)) if err.is_not_leader() => {}
                    (applied, retried) => self.counters.unexpected(format!(
                        "E2: after a lost reply, check {applied:?}, retry {retried:?}"
                    )),
                }
            }
            match self
                .recorded_claim(&*direct, application, &rival, claim)
                .await
            {
                Err(err) if err.is_claim_denied() => {}
                other => self.counters.unexpected(format!(
                    "E2: a rival's claim during {unit}'s retried lease: {other:?}"
                )),
            }
            let started = Instant::now();
            let revoked = proxied.revoke_leadership(application, &unit).await;
            self.history.revoke(RevokeCall {
                application: application.to_owned(),
                unit: unit.clone(),
                started,
                ok: revoked.is_ok(),
            });
            if let Err(err) = revoked {
                self.counters
                    .unexpected(format!("E2: {unit}'s revoke: {err:?}"));
            }
            self.history.fault_ended(fault);
        }
        seen
    }

    async fn recorded_claim(
        &self,
        store: &dyn Leadership,
        application: &str,
        unit: &str,
        claim: Duration,
    ) -> Result<Fence> {
        let call = ClaimCall::time(
            application,
            unit,
            claim,
            store.claim_leadership(application, unit, claim),
        )
        .await;
        let result = call.result.clone();
        self.history.claim(call);
        result
    }
}
