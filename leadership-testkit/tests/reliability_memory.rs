//! The memory store under a fault schedule, judged by the history checker.
//!
//! Three applications, each contended by trackers (T1–T9) and by bare claimers with random
//! durations that extend, revoke or let their lease run out and then try a zombie write;
//! revokers that do not hold the lease revoke at random (R2). Faults, for a few seconds:
//! trackers killed with and without release (T8) and replaced; a leader frozen past its
//! lease like a GC pause (its renewals stall, its work stops looking at the loss signal and
//! later resumes with its old fence: the guarded write must be refused, F2). Then the faults
//! end and each application must settle on exactly one leader within the claim duration plus
//! slack. Every leader's work writes through `MemoryStore::guarded` into a downstream
//! log, which must only ever see fences in order.
//!
//! Set `RELIABILITY_SEED` to replay a schedule's random choices (scheduling still varies).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leadership_core::{
    CancellationToken, Claimer, Error, Fence, LeaderTracker, Reader, Revoker, Tracker,
    TrackerWorker,
};
use leadership_memory::MemoryStore;
use leadership_testkit::history::{History, WriteRecord};
use leadership_testkit::{Fault, FaultyStore};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

const APPS: [&str; 3] = ["alpha", "beta", "gamma"];
const GUARANTEE: Duration = Duration::from_millis(150);
const CLAIM: Duration = Duration::from_millis(300);
const CHAOS: Duration = Duration::from_secs(3);
/// The memory store's clock is exact; this covers only the recorder noticing a loss signal
/// late on a loaded two-core machine (the tracker's 30 ms safety margin comes on top).
const CLOCK_BOUND: Duration = Duration::from_millis(10);
/// Expiry and wake-up slack of the memory store on a loaded machine (as in its conformance
/// profile), plus a retry backoff of a tracker that was paused.
const SLACK: Duration = Duration::from_millis(400);

/// SplitMix64: a seeded generator, so a schedule's choices can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high - low + 1))
    }
}

fn seed() -> u64 {
    std::env::var("RELIABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// Figures the schedule keeps besides the history.
#[derive(Default)]
struct Counters {
    claims: AtomicUsize,
    denied: AtomicUsize,
    revokes: AtomicUsize,
    not_held: AtomicUsize,
    frozen_writes: AtomicUsize,
    frozen_refused: AtomicUsize,
    /// A write refused while the writer's tracker still gave it the same term: a tracker that
    /// believes it leads past its lease (T7). Must stay 0.
    refused_while_leading: AtomicUsize,
    /// Unexpected errors, with what happened. Must stay empty.
    unexpected: Mutex<Vec<String>>,
}

impl Counters {
    fn unexpected(&self, what: String) {
        self.unexpected.lock().expect("counters").push(what);
    }
}

/// What each application's downstream system saw: fences of accepted writes, in the order the
/// writes ran (under the store's lock).
#[derive(Default)]
struct Downstream {
    log: Mutex<BTreeMap<String, Vec<u64>>>,
    out_of_order: AtomicUsize,
}

impl Downstream {
    fn apply(&self, application: &str, fence: Fence) {
        let mut log = self.log.lock().expect("downstream");
        let entries = log.entry(application.to_owned()).or_default();
        if entries.last().is_some_and(|last| *last > fence.get()) {
            self.out_of_order.fetch_add(1, Ordering::SeqCst);
        }
        entries.push(fence.get());
    }
}

struct World {
    store: Arc<MemoryStore>,
    history: Arc<History>,
    counters: Counters,
    downstream: Downstream,
}

impl World {
    /// A guarded write by `unit` with `fence`, recorded.
    fn write(&self, application: &str, unit: &str, fence: Fence, newer_term_known: bool) -> bool {
        let started = Instant::now();
        let result = self.store.guarded(application, unit, fence, || {
            self.downstream.apply(application, fence);
        });
        let accepted = match result {
            Ok(()) => true,
            Err(err) if err.is_not_leader() => false,
            Err(err) => {
                self.counters
                    .unexpected(format!("guarded write by {unit}: {err}"));
                false
            }
        };
        self.history.write(WriteRecord {
            application: application.to_owned(),
            unit: unit.to_owned(),
            fence,
            started,
            accepted,
            newer_term_known,
        });
        accepted
    }
}

/// One tracked unit: its tracker, the store wrapper its claims go through, and its work.
struct Unit {
    name: String,
    tracker: Arc<LeaderTracker>,
    faulty: Arc<FaultyStore>,
    freeze: Arc<AtomicBool>,
    frozen_done: Arc<tokio::sync::Notify>,
    tasks: Vec<JoinHandle<()>>,
}

fn spawn_unit(world: &Arc<World>, name: String, release: bool) -> Unit {
    let faulty = FaultyStore::new(world.store.clone());
    let mut builder = LeaderTracker::builder(&name, GUARANTEE, faulty.clone());
    if release {
        builder = builder.release_on_stop(world.store.clone());
    }
    let tracker = Arc::new(builder.spawn());
    let freeze = Arc::new(AtomicBool::new(false));
    let frozen_done = Arc::new(tokio::sync::Notify::new());
    let recorder = world.history.record_tracker(&name, tracker.clone());
    let work = tokio::spawn(leader_work(
        world.clone(),
        name.clone(),
        tracker.clone(),
        freeze.clone(),
        frozen_done.clone(),
    ));
    Unit {
        name,
        tracker,
        faulty,
        freeze,
        frozen_done,
        tasks: vec![recorder, work],
    }
}

/// Leader-only work: while the term lasts, guarded writes with its fence. When frozen (a GC
/// pause), it stops looking at the loss signal, waits until another term has begun, and then
/// writes with its old fence, as a resumed process would.
async fn leader_work(
    world: Arc<World>,
    unit: String,
    tracker: Arc<LeaderTracker>,
    freeze: Arc<AtomicBool>,
    frozen_done: Arc<tokio::sync::Notify>,
) {
    let application = tracker.application_name();
    let mut rng = Rng(unit.bytes().map(u64::from).sum());
    while tracker.wait_leader().wait().await {
        let Some(term) = tracker.current_term() else {
            tokio::task::yield_now().await;
            continue;
        };
        while !term.lost.is_cancelled() {
            if freeze.swap(false, Ordering::SeqCst) {
                let give_up = Instant::now() + Duration::from_secs(3);
                while world
                    .history
                    .newer_term_than(&application, term.fence)
                    .is_none()
                    && Instant::now() < give_up
                {
                    sleep(Duration::from_millis(5)).await;
                }
                let known = world
                    .history
                    .newer_term_than(&application, term.fence)
                    .is_some();
                world.counters.frozen_writes.fetch_add(1, Ordering::SeqCst);
                if !world.write(&application, &unit, term.fence, known) {
                    world.counters.frozen_refused.fetch_add(1, Ordering::SeqCst);
                }
                frozen_done.notify_one();
                break;
            }
            if !world.write(&application, &unit, term.fence, false) {
                let same = tracker
                    .current_term()
                    .is_some_and(|t| t.fence == term.fence);
                if same && !term.lost.is_cancelled() {
                    world
                        .counters
                        .refused_while_leading
                        .fetch_add(1, Ordering::SeqCst);
                }
            }
            tokio::select! {
                () = term.lost.cancelled() => {}
                () = sleep(rng.millis(5, 25)) => {}
            }
        }
    }
}

/// A bare claimer: claims with random durations, records each term it is granted (from the
/// claim's return to call start + duration, C4), extends, revokes itself or lets the lease
/// run out and then tries a zombie write with the old fence.
async fn bare_claimer(
    world: Arc<World>,
    application: &'static str,
    id: u64,
    seed: u64,
    stop: CancellationToken,
) {
    let unit = format!("{application}/{}", 10 + id);
    let mut rng = Rng(seed);
    let mut held: Option<(leadership_testkit::history::TermId, Fence, Instant)> = None;
    while !stop.is_cancelled() {
        if rng.below(2) == 0 {
            // Race the trackers for the next vacancy.
            let cancel = CancellationToken::new();
            let wait = world
                .store
                .block_until_leadership_released(application, cancel.clone());
            match timeout(Duration::from_millis(300), wait).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(err)) => world.counters.unexpected(format!("block by {unit}: {err}")),
            }
        } else {
            sleep(rng.millis(0, 60)).await;
        }
        let duration = rng.millis(20, 300);
        let start = Instant::now();
        world.counters.claims.fetch_add(1, Ordering::SeqCst);
        match world
            .store
            .claim_leadership(application, &unit, duration)
            .await
        {
            Ok(fence) => {
                let until = start + duration;
                held = match held {
                    Some((id, old, end)) if old == fence => {
                        let end = end.max(until);
                        world.history.term_ended(id, end);
                        Some((id, fence, end))
                    }
                    Some((_, old, _)) if old > fence => {
                        world
                            .counters
                            .unexpected(format!("{unit} got fence {fence} after {old}"));
                        None
                    }
                    _ => {
                        let id =
                            world
                                .history
                                .term_began(application, &unit, fence, Instant::now());
                        world.history.term_ended(id, until);
                        Some((id, fence, until))
                    }
                };
                world.write(application, &unit, fence, false);
            }
            Err(Error::ClaimDenied) => {
                world.counters.denied.fetch_add(1, Ordering::SeqCst);
            }
            Err(err) => world.counters.unexpected(format!("claim by {unit}: {err}")),
        }
        let Some((id, fence, end)) = held else {
            continue;
        };
        match rng.below(3) {
            0 => {
                // Revoke now: the unit stops acting as leader before it asks. Within its
                // lease it still holds it (C4), so the revoke must succeed; after, another
                // unit may hold it (R2).
                let at = Instant::now();
                if at < end {
                    world.history.term_ended(id, at);
                    held = Some((id, fence, at));
                }
                world.counters.revokes.fetch_add(1, Ordering::SeqCst);
                match world.store.revoke_leadership(application, &unit).await {
                    Ok(()) => {}
                    Err(Error::ClaimNotHeld) if at >= end => {
                        world.counters.not_held.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(err) => world
                        .counters
                        .unexpected(format!("revoke by {unit}: {err}")),
                }
            }
            1 => {
                // Let it run out, then write as a zombie with the old fence.
                tokio::select! {
                    () = tokio::time::sleep_until(end + Duration::from_millis(1)) => {}
                    () = stop.cancelled() => {}
                }
                world.write(application, &unit, fence, false);
            }
            _ => {} // claim again soon: an extension if still held
        }
    }
}

/// Revokes as units that never hold the lease: always `ClaimNotHeld` or `Ok` on a vacant
/// application, and never a change (R2, R3).
async fn stray_revoker(world: Arc<World>, seed: u64, stop: CancellationToken) {
    let mut rng = Rng(seed);
    while !stop.is_cancelled() {
        sleep(rng.millis(5, 40)).await;
        let application = APPS[rng.below(APPS.len() as u64) as usize];
        let unit = format!("{application}/{}", 90 + rng.below(5));
        world.counters.revokes.fetch_add(1, Ordering::SeqCst);
        match world.store.revoke_leadership(application, &unit).await {
            Err(Error::ClaimNotHeld) => {
                world.counters.not_held.fetch_add(1, Ordering::SeqCst);
            }
            // Vacant at that moment (R3).
            Ok(()) => {}
            Err(err) => world
                .counters
                .unexpected(format!("stray revoke by {unit}: {err}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_under_a_fault_schedule() {
    let seed = seed();
    println!("reliability_memory: seed {seed} (replay with RELIABILITY_SEED={seed})");
    let mut rng = Rng(seed);
    let world = Arc::new(World {
        store: Arc::new(MemoryStore::new().namespace("reliability")),
        history: History::new(CLOCK_BOUND),
        counters: Counters::default(),
        downstream: Downstream::default(),
    });
    let history = world.history.clone();
    let mut next_unit: BTreeMap<&str, u64> = APPS.iter().map(|a| (*a, 0)).collect();
    let mut units: BTreeMap<&str, Vec<Unit>> = BTreeMap::new();
    // gamma is left to the bare claimers for the first half of the chaos.
    let late = "gamma";
    for application in APPS {
        units.entry(application).or_default();
        if application == late {
            continue;
        }
        for _ in 0..3 {
            let n = next_unit.get_mut(application).expect("app");
            let unit = spawn_unit(&world, format!("{application}/{n}"), rng.below(2) == 0);
            *n += 1;
            units.entry(application).or_default().push(unit);
        }
    }

    let stop = CancellationToken::new();
    let contention = history.fault_began("bare claimers and stray revokers contend");
    let mut chaos: Vec<JoinHandle<()>> = Vec::new();
    for (i, application) in APPS.iter().enumerate() {
        for id in 0..2 {
            chaos.push(tokio::spawn(bare_claimer(
                world.clone(),
                application,
                id,
                rng.next(),
                stop.clone(),
            )));
        }
        if i == 0 {
            chaos.push(tokio::spawn(stray_revoker(
                world.clone(),
                rng.next(),
                stop.clone(),
            )));
        }
    }

    let chaos_end = Instant::now() + CHAOS;
    let mut kills = 0;
    let mut freezes = 0;
    let half = Instant::now() + CHAOS / 2;
    while Instant::now() < chaos_end {
        sleep(rng.millis(100, 250)).await;
        if Instant::now() >= half && units.get(late).is_some_and(Vec::is_empty) {
            let list = units.get_mut(late).expect("app");
            for _ in 0..3 {
                let n = next_unit.get_mut(late).expect("app");
                list.push(spawn_unit(&world, format!("{late}/{n}"), rng.below(2) == 0));
                *n += 1;
            }
        }
        let application = APPS[rng.below(APPS.len() as u64) as usize];
        let list = units.get_mut(application).expect("app");
        if list.is_empty() {
            continue;
        }
        match rng.below(3) {
            0 | 1 => {
                // Kill a unit (the leader if there is one), with or without release, and
                // start a replacement.
                let index = list
                    .iter()
                    .position(|u| u.tracker.current_term().is_some())
                    .unwrap_or_else(|| rng.below(list.len() as u64) as usize);
                let victim = list.remove(index);
                let release = rng.below(2) == 0;
                let at = Instant::now();
                if release {
                    // Released: the tracker's own release_on_stop if it has one, else revoke.
                    victim.tracker.kill();
                    let _ = victim.tracker.wait().await;
                    match world
                        .store
                        .revoke_leadership(application, &victim.name)
                        .await
                    {
                        Ok(()) | Err(Error::ClaimNotHeld) => {}
                        Err(err) => world.counters.unexpected(format!("release: {err}")),
                    }
                } else {
                    victim.tracker.kill();
                }
                history.fault(
                    format!(
                        "kill {} {}",
                        victim.name,
                        if release {
                            "with release"
                        } else {
                            "without release"
                        }
                    ),
                    at,
                    Instant::now(),
                );
                kills += 1;
                let n = next_unit.get_mut(application).expect("app");
                list.push(spawn_unit(
                    &world,
                    format!("{application}/{n}"),
                    rng.below(2) == 0,
                ));
                *n += 1;
            }
            _ => {
                // Freeze the leader past its lease: renewals stall, its work stops watching.
                let Some(leader) = list.iter().find(|u| u.tracker.current_term().is_some()) else {
                    continue;
                };
                let fault = history.fault_began(format!("freeze {} past its lease", leader.name));
                leader.faulty.fail(Fault::Timeout(Duration::from_secs(30)));
                leader.freeze.store(true, Ordering::SeqCst);
                let done = timeout(Duration::from_secs(5), leader.frozen_done.notified()).await;
                if done.is_err() {
                    // The term ended before the work saw the freeze (e.g. the lease was
                    // already being lost): nothing was frozen.
                    leader.freeze.store(false, Ordering::SeqCst);
                }
                leader.faulty.heal();
                history.fault_ended(fault);
                freezes += 1;
            }
        }
    }

    stop.cancel();
    for task in chaos {
        task.await.expect("chaos task");
    }
    // Bare claimers' leases run out at most 300 ms after their last claim.
    sleep(Duration::from_millis(300)).await;
    history.fault_ended(contention);
    for application in APPS {
        history.expect_leader(application, CLAIM + SLACK);
    }
    let settled = history.settled_by().expect("every fault ended");
    tokio::time::sleep_until(settled + Duration::from_millis(500)).await;
    history.finish();
    let leaders = world.store.leaders().await.expect("leaders");
    let now = Instant::now();
    let open: BTreeMap<String, String> = history
        .terms()
        .into_iter()
        .filter(|t| t.ended.is_none_or(|e| e > now))
        .map(|t| (t.application, t.unit))
        .collect();

    let report = history.check();
    let c = &world.counters;
    let unexpected = c.unexpected.lock().expect("counters").clone();
    let summary = format!(
        "RELIABILITY memory: seed={seed} {} kills={kills} freezes={freezes} frozen_writes={} \
         frozen_refused={} bare_claims={} denied={} revokes={} not_held={} \
         refused_while_leading={} downstream_out_of_order={} unexpected={}",
        report.summary(),
        c.frozen_writes.load(Ordering::SeqCst),
        c.frozen_refused.load(Ordering::SeqCst),
        c.claims.load(Ordering::SeqCst),
        c.denied.load(Ordering::SeqCst),
        c.revokes.load(Ordering::SeqCst),
        c.not_held.load(Ordering::SeqCst),
        c.refused_while_leading.load(Ordering::SeqCst),
        world.downstream.out_of_order.load(Ordering::SeqCst),
        unexpected.len(),
    );
    println!("{summary}");

    for list in units.values() {
        for unit in list {
            unit.tracker.kill();
        }
    }
    for list in units.into_values() {
        for unit in list {
            let _ = unit.tracker.wait().await;
            for task in unit.tasks {
                task.await.expect("unit task");
            }
        }
    }

    assert!(report.is_ok(), "{summary}\n{report}");
    assert!(unexpected.is_empty(), "{summary}\n{unexpected:#?}");
    assert_eq!(
        c.refused_while_leading.load(Ordering::SeqCst),
        0,
        "{summary}"
    );
    assert_eq!(
        world.downstream.out_of_order.load(Ordering::SeqCst),
        0,
        "{summary}"
    );
    assert_eq!(
        c.frozen_writes.load(Ordering::SeqCst),
        c.frozen_refused.load(Ordering::SeqCst),
        "a frozen leader's write with its old fence was accepted: {summary}"
    );
    // The store agrees with the history about who leads now.
    assert_eq!(leaders.len(), APPS.len(), "{leaders:?}: {summary}");
    for (application, unit) in &leaders {
        assert_eq!(open.get(application), Some(unit), "{leaders:?} vs {open:?}");
    }
    // Enough happened for the run to mean something.
    assert!(report.terms >= 10 && kills + freezes >= 5, "{summary}");
}

/// A broken store: grants a third of the asked duration, breaking C4.
struct Shortening(Arc<MemoryStore>);

#[leadership_core::async_trait]
impl Claimer for Shortening {
    async fn claim_leadership(
        &self,
        application: &str,
        unit: &str,
        duration: Duration,
    ) -> leadership_core::Result<Fence> {
        self.0
            .claim_leadership(application, unit, duration / 3)
            .await
    }

    async fn block_until_leadership_released(
        &self,
        application: &str,
        cancel: CancellationToken,
    ) -> leadership_core::Result<()> {
        self.0
            .block_until_leadership_released(application, cancel)
            .await
    }
}

/// The schedule can fail: over a store that shortens leases, trackers believe they lead
/// after the store has given the lease to another, and the checker says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_a_store_that_shortens_leases() {
    let store = Arc::new(MemoryStore::new().namespace("broken"));
    let history = History::new(CLOCK_BOUND);
    let broken: Arc<dyn Claimer> = Arc::new(Shortening(store.clone()));
    let trackers: Vec<Arc<LeaderTracker>> = (0..3)
        .map(|n| {
            Arc::new(LeaderTracker::builder(format!("web/{n}"), GUARANTEE, broken.clone()).spawn())
        })
        .collect();
    for (n, tracker) in trackers.iter().enumerate() {
        history.record_tracker(&format!("web/{n}"), tracker.clone());
    }
    sleep(Duration::from_secs(1)).await;
    history.finish();
    let report = history.check();
    println!(
        "RELIABILITY memory (broken store, must fail): {}",
        report.summary()
    );
    for tracker in &trackers {
        tracker.kill();
    }
    assert!(
        report
            .violations
            .iter()
            .any(|v| matches!(v, leadership_testkit::history::Violation::Overlap { .. })),
        "{report}"
    );
}

/// The precise C4 check fails a store that shortens leases from the claims alone: each
/// claim is timed around the call, and another unit's newer term granted before the holder's
/// call start plus duration is a broken promise (while fences still increase: F1 holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_precise_check_catches_a_store_that_shortens_leases() {
    use leadership_testkit::history::ClaimCall;

    let broken = Shortening(Arc::new(MemoryStore::new().namespace("broken-c4")));
    let history = History::new(CLOCK_BOUND);
    let claim = |unit: &'static str| {
        let broken = &broken;
        let history = history.clone();
        async move {
            history.claim(
                ClaimCall::time(
                    "web",
                    unit,
                    CLAIM,
                    broken.claim_leadership("web", unit, CLAIM),
                )
                .await,
            );
        }
    };
    for _ in 0..3 {
        claim("web/0").await;
        // The store kept a third of the lease: web/1 gets it while web/0's promise runs.
        sleep(CLAIM / 2).await;
        claim("web/1").await;
        sleep(CLAIM / 2).await;
    }
    let report = history.check();
    println!(
        "RELIABILITY memory (store shortening leases, must fail C4): {}",
        report.summary()
    );
    assert!(report.count("C4") >= 3, "{report}");
    assert_eq!(report.count("F1"), 0, "{report}");
    assert!(
        report.violations.iter().all(|v| v.rule() == "C4"),
        "{report}"
    );
}

mod reliability_cases;

/// The memory store as a target of the shared schedule driver (the one Redis and etcd run
/// under their server faults), so the driver itself is exercised on every run.
struct MemoryTarget {
    store: Arc<MemoryStore>,
    log: Arc<Mutex<Witness>>,
}

/// Per application, the `(unit, fence)` of each applied guarded write, in order.
type Witness = BTreeMap<String, Vec<(String, u64)>>;

#[leadership_core::async_trait]
impl reliability_cases::Target for MemoryTarget {
    async fn participant(&self) -> reliability_cases::Participant {
        let store = self.store.clone();
        let log = self.log.clone();
        let write: reliability_cases::WriteFn = Arc::new(move |application, unit, fence| {
            let store = store.clone();
            let log = log.clone();
            Box::pin(async move {
                store.guarded(&application, &unit, fence, || {
                    log.lock()
                        .expect("log")
                        .entry(application.clone())
                        .or_default()
                        .push((unit.clone(), fence.get()));
                })
            })
        });
        reliability_cases::Participant {
            store: self.store.clone(),
            write,
        }
    }

    async fn downstream(&self, application: &str) -> Vec<(String, u64)> {
        self.log
            .lock()
            .expect("log")
            .get(application)
            .cloned()
            .unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_memory_client_pause_and_crash() {
    let target = Arc::new(MemoryTarget {
        store: Arc::new(MemoryStore::new().namespace("shared-schedule")),
        log: Arc::default(),
    });
    let run = reliability_cases::Run::start(
        target,
        reliability_cases::Settings::standard(GUARANTEE, CLOCK_BOUND, SLACK, CLAIM / 2),
    )
    .await;
    let mut round = 0;
    while run.more(round, 3) {
        assert!(run.freeze_a_leader("alpha").await, "alpha has a leader");
        run.pause_a_leader("beta", reliability_cases::Wake::Careful)
            .await;
        run.kill_a_leader("beta", round % 2 == 0).await;
        run.kill_a_leader("alpha", round % 2 == 1).await;
        run.wait_for_leaders(Duration::from_secs(5)).await;
        round += 1;
    }
    let cell = reliability_cases::Cell {
        store: "memory",
        configuration: "in-process",
        fault: "client pause past the lease (zombie and careful), crash, stop with release",
        tolerated: &[],
    };
    let report = run.finish_cell(&cell, "").await;
    assert!(report.stale_writes >= 10, "{report}");
    assert!(report.count("C4") == 0 && report.claims > 0, "{report}");
}
