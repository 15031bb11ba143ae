//! Tracker cases for the conformance suite: leader handover between [`LeaderTracker`]s over
//! a store, without release (the lease expires, T4) and with release (T8), checking that the
//! old leader's loss signal has fired before the new leader's first successful claim (T7).
//!
//! Each case takes the [`StoreFactory`] and opens its own namespace, like the `@factory`
//! cases of [`conformance_tests!`](crate::conformance_tests). [`ClaimProbe`] is public so
//! other tests can make the same ordering checks.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;

use crate::conformance::{Profile, StoreFactory, unique_namespace};
use crate::record::ClaimCall;
use crate::{Claimer, Fence, LeaderTracker, Leadership, Result, Tracker, TrackerWorker};

/// One claim seen by a [`ClaimProbe`]: the call, and the peers' beliefs around it.
#[derive(Debug, Clone)]
pub struct ProbedClaim {
    /// The call, timed around itself.
    pub call: ClaimCall,
    /// How many watched peer trackers believed they led when the call was made.
    pub peers_leading: usize,
    /// How many watched peer trackers believed they led when the call returned: a claim that
    /// began a term must see none, since its tracker believes it leads from then on. (A
    /// claim may start while a peer leads and still win fairly, once that peer released
    /// the lease during the call: the count at the start is not a violation.)
    pub peers_leading_at_return: usize,
}

/// A [`Claimer`] in front of a store that records each claim with its timing and, sampled
/// when the call is made and when it returns, how many *other* trackers believe they lead. A
/// new term whose first claim returned while a peer believed it led would break "one leader
/// at any instant".
pub struct ClaimProbe {
    inner: Arc<dyn Leadership>,
    peers: Mutex<Vec<Weak<dyn Tracker>>>,
    log: Mutex<Vec<ProbedClaim>>,
}

impl std::fmt::Debug for ClaimProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimProbe")
            .field("claims", &lock(&self.log).len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ClaimProbe {
    /// A probe in front of `inner`, watching no peers yet.
    pub fn new(inner: Arc<dyn Leadership>) -> Arc<Self> {
        Arc::new(ClaimProbe {
            inner,
            peers: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
        })
    }

    /// Watches `peer`: its belief is sampled at the start and the return of every claim.
    pub fn watch(&self, peer: Weak<dyn Tracker>) {
        lock(&self.peers).push(peer);
    }

    /// Every claim so far, in call order.
    pub fn claims(&self) -> Vec<ProbedClaim> {
        lock(&self.log).clone()
    }

    /// The first successful claim that returned at or after `since`. A claim may start
    /// before `since` (a waiting tracker's retry, or a read-first claim that reads the key
    /// only after a revoke) and still be the one that begins the next term: what counts is
    /// when it returned.
    pub fn first_success_returning_after(&self, since: Instant) -> Option<ProbedClaim> {
        lock(&self.log)
            .iter()
            .find(|c| c.call.returned >= since && c.call.result.is_ok())
            .cloned()
    }

    /// The last successful claim.
    pub fn last_success(&self) -> Option<ProbedClaim> {
        lock(&self.log)
            .iter()
            .rev()
            .find(|c| c.call.result.is_ok())
            .cloned()
    }

    fn peers_leading(&self) -> usize {
        lock(&self.peers)
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|peer| peer.current_term().is_some())
            .count()
    }
}

#[async_trait]
impl Claimer for ClaimProbe {
    async fn claim_leadership(
        &self,
        application: &str,
        unit: &str,
        duration: Duration,
    ) -> Result<Fence> {
        let peers_leading = self.peers_leading();
        let call = ClaimCall::time(
            application,
            unit,
            duration,
            self.inner.claim_leadership(application, unit, duration),
        )
        .await;
        let peers_leading_at_return = self.peers_leading();
        let result = call.result.clone();
        lock(&self.log).push(ProbedClaim {
            call,
            peers_leading,
            peers_leading_at_return,
        });
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

/// A tracker and the probe in front of its store.
struct Probed {
    tracker: Arc<LeaderTracker>,
    probe: Arc<ClaimProbe>,
}

/// Starts one tracker per unit of `application`, each behind a probe that watches the others.
fn start_trackers(
    store: &Arc<dyn Leadership>,
    application: &str,
    units: usize,
    guarantee: Duration,
    release: bool,
) -> Vec<Probed> {
    let probed: Vec<Probed> = (0..units)
        .map(|n| {
            let probe = ClaimProbe::new(store.clone());
            let mut builder =
                LeaderTracker::builder(format!("{application}/{n}"), guarantee, probe.clone());
            if release {
                builder = builder.release_on_stop(store.clone());
            }
            Probed {
                tracker: Arc::new(builder.spawn()),
                probe,
            }
        })
        .collect();
    for (i, p) in probed.iter().enumerate() {
        for (j, peer) in probed.iter().enumerate() {
            if i != j {
                let weak: Weak<LeaderTracker> = Arc::downgrade(&peer.tracker);
                p.probe.watch(weak);
            }
        }
    }
    probed
}

/// The index of the one tracker that leads, once exactly one does.
async fn sole_leader(trackers: &[Probed], limit: Duration) -> usize {
    let give_up = Instant::now() + limit;
    loop {
        let leading: Vec<usize> = trackers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.tracker.current_term().is_some())
            .map(|(i, _)| i)
            .collect();
        assert!(
            leading.len() <= 1,
            "trackers {leading:?} all believe they lead"
        );
        if let [one] = leading[..] {
            return one;
        }
        assert!(
            Instant::now() < give_up,
            "no tracker became leader within {limit:?}"
        );
        sleep(Duration::from_millis(5)).await;
    }
}

/// A juju-valid application name no other case uses, even against a shared namespace.
fn fresh_application(prefix: &str) -> String {
    let suffix: String = (0..8)
        .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
        .collect();
    format!("{prefix}-{suffix}")
}

async fn stop_all(trackers: &[Probed]) {
    for p in trackers {
        p.tracker.kill();
    }
    for p in trackers {
        if let Err(err) = p.tracker.wait().await {
            panic!("tracker {} stopped with {err}", p.tracker.unit_name());
        }
    }
}

/// Kills the leader of `trackers` and returns the index of the next one, the time the
/// handover took, and the old term's fence.
async fn hand_over(trackers: &[Probed], limit: Duration) -> (usize, Duration, Fence, Instant) {
    let old = sole_leader(trackers, limit).await;
    let term = match trackers[old].tracker.current_term() {
        Some(term) => term,
        None => panic!("the leader lost its term before the handover"),
    };
    let waits: Vec<_> = trackers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != old)
        .map(|(i, p)| (i, p.tracker.wait_leader()))
        .collect();
    let killed = Instant::now();
    trackers[old].tracker.kill();
    if let Err(err) = trackers[old].tracker.wait().await {
        panic!("the old leader stopped with {err}");
    }
    assert!(
        term.lost.is_cancelled(),
        "stopping fires the loss signal (T7)"
    );
    let next = async {
        let answers = futures::future::select_all(
            waits
                .iter()
                .map(|(i, ticket)| Box::pin(async move { (*i, ticket.wait().await) })),
        );
        answers.await.0
    };
    let (new, led) = match timeout(limit, next).await {
        Ok(answer) => answer,
        Err(_) => panic!("no tracker took over within {limit:?}"),
    };
    assert!(led, "the next leader's tracker stopped");
    (new, killed.elapsed(), term.fence, killed)
}

/// Checks what every handover must keep: the new term's first claim returned after the old
/// term's loss signal fired, with a larger fence.
fn assert_handover_order(trackers: &[Probed], new: usize, old_fence: Fence, killed: Instant) {
    let first = match trackers[new].probe.first_success_returning_after(killed) {
        Some(claim) => claim,
        None => panic!("the new leader has no successful claim after the kill"),
    };
    assert_eq!(
        first.peers_leading_at_return, 0,
        "the new leader's first claim returned while another tracker still believed it led (T7)"
    );
    let new_fence = match trackers[new].tracker.current_term() {
        Some(term) => term.fence,
        None => panic!("the new leader has no term"),
    };
    assert!(
        new_fence > old_fence,
        "fence {new_fence} after {old_fence} (F1)"
    );
}

/// T4 (and T7): three trackers of one application; killing the leader's tracker without
/// release hands leadership to a waiting one once the lease expires: not before the claim
/// duration has passed since the old leader's last claim (C4), and within the claim duration
/// plus the store's expiry slack and notification latency. Done twice, so every tracker leads or
/// waits at some point; at no instant do two trackers believe they lead.
pub async fn t4_handover_without_release(factory: &dyn StoreFactory) {
    let profile = factory.profile();
    let store = factory
        .open(&unique_namespace("t4_handover_without_release"))
        .await;
    let guarantee = profile.min_duration.max(Duration::from_millis(100));
    let lease = guarantee * 2;
    let limit = limit(&profile, lease);
    let application = fresh_application("handover");
    let trackers = start_trackers(&store, &application, 3, guarantee, false);

    let bound = lease + profile.expiry_slack + profile.notify_latency * 2;
    let mut alive: Vec<Probed> = trackers;
    for _ in 0..2 {
        let old = sole_leader(&alive, limit).await;
        let (new, took, old_fence, killed) = hand_over(&alive, limit).await;
        assert_ne!(new, old);
        assert_handover_order(&alive, new, old_fence, killed);
        assert!(
            took <= bound,
            "handover without release took {took:?}, more than {bound:?}"
        );
        let last_old = alive[old].probe.last_success();
        let first_new = alive[new].probe.first_success_returning_after(killed);
        if let (Some(last_old), Some(first_new)) = (last_old, first_new) {
            // C4 through the tracker: nobody else can be granted the lease before the claim
            // duration has passed since the old leader's last successful claim was made. A
            // few milliseconds allow for stores that keep time in whole milliseconds.
            let earliest = last_old.call.started + lease - Duration::from_millis(5);
            assert!(
                first_new.call.returned >= earliest,
                "the new leader was granted the lease {:?} before the old one's could expire",
                earliest - first_new.call.returned
            );
        }
        assert_one_leader_at_a_time(&alive);
        alive.remove(old);
    }
    stop_all(&alive).await;
}

/// T8 (and T7): three trackers of one application; killing the leader's tracker with
/// release revokes its lease, so a waiting tracker takes over within the store's
/// notification latency rather than at expiry. Done twice.
pub async fn t8_handover_with_release(factory: &dyn StoreFactory) {
    let profile = factory.profile();
    let store = factory
        .open(&unique_namespace("t8_handover_with_release"))
        .await;
    // Revoke, wake-up and claim each take at most the notification latency; the guarantee
    // is longer, so a handover at expiry could not pass for one by release.
    let bound = profile.notify_latency * 3;
    let guarantee = profile.min_duration.max(bound + Duration::from_millis(500));
    let limit = limit(&profile, guarantee * 2);
    let application = fresh_application("release");
    let mut alive = start_trackers(&store, &application, 3, guarantee, true);

    for _ in 0..2 {
        let old = sole_leader(&alive, limit).await;
        let (new, took, old_fence, killed) = hand_over(&alive, limit).await;
        assert_handover_order(&alive, new, old_fence, killed);
        assert!(
            took <= bound,
            "handover with release took {took:?}, more than {bound:?}"
        );
        assert_one_leader_at_a_time(&alive);
        alive.remove(old);
    }
    stop_all(&alive).await;
}

/// Every claim that began a term (its fence differs from the tracker's previous successful
/// claim) returned while no other tracker believed it led.
fn assert_one_leader_at_a_time(trackers: &[Probed]) {
    for p in trackers {
        let mut previous: Option<Fence> = None;
        for claim in p.probe.claims() {
            let Ok(fence) = claim.call.result else {
                continue;
            };
            if previous != Some(fence) {
                assert_eq!(
                    claim.peers_leading_at_return,
                    0,
                    "{} began term {fence} while {} other tracker(s) believed they led",
                    p.tracker.unit_name(),
                    claim.peers_leading_at_return
                );
            }
            previous = Some(fence);
        }
    }
}

/// How long any one step of a tracker case may take before the case gives up.
fn limit(profile: &Profile, lease: Duration) -> Duration {
    lease * 4 + profile.expiry_slack * 2 + profile.notify_latency * 4 + Duration::from_secs(10)
}

/// One term's leader-only work as the W2 cases saw it.
#[derive(Debug, Clone)]
pub struct WorkSpan {
    /// The unit whose tracker ran it.
    pub unit: String,
    /// The term.
    pub fence: Fence,
    /// When the work started running.
    pub started: Instant,
    /// When it ended: returned, or was dropped. `None` while it runs.
    pub ended: Option<Instant>,
}

/// Records the end of a span when the work's future ends or is dropped.
struct SpanGuard {
    log: Arc<Mutex<Vec<WorkSpan>>>,
    index: usize,
}

impl Drop for SpanGuard {
    fn drop(&mut self) {
        if let Some(span) = lock(&self.log).get_mut(self.index) {
            span.ended = Some(Instant::now());
        }
    }
}

/// W2 (and T7, T8): `handovers` handovers by stop-with-release between trackers of one
/// application, each running leader-only work with [`LeaderTracker::run_as_leader`] that takes
/// a while to stop after its loss signal. On one clock (tokio's `Instant`, one process), no
/// term's work starts before the previous term's work has ended, and fences increase.
pub async fn w2_handovers(factory: &dyn StoreFactory, handovers: usize) {
    let profile = factory.profile();
    let store = factory
        .open(&unique_namespace("w2_run_as_leader_never_overlaps"))
        .await;
    let bound = profile.notify_latency * 3;
    let guarantee = profile.min_duration.max(bound + Duration::from_millis(500));
    let limit = limit(&profile, guarantee * 2);
    let application = fresh_application("work");
    let log: Arc<Mutex<Vec<WorkSpan>>> = Arc::new(Mutex::new(Vec::new()));
    // Shorter than the safety margin (a fifth of the guarantee), so the work ends by itself.
    let cleanup = Duration::from_millis(20);

    let spawn = |n: usize| {
        let unit = format!("{application}/{n}");
        let tracker = LeaderTracker::builder(unit.clone(), guarantee, store.clone())
            .release_on_stop(store.clone())
            .spawn();
        let log = log.clone();
        tracker.run_as_leader(move |term| {
            let log = log.clone();
            let unit = unit.clone();
            async move {
                let index = {
                    let mut log = lock(&log);
                    log.push(WorkSpan {
                        unit,
                        fence: term.fence,
                        started: Instant::now(),
                        ended: None,
                    });
                    log.len() - 1
                };
                let _guard = SpanGuard { log, index };
                term.lost.cancelled().await;
                // Leader-only work rarely stops in an instant: flushing, closing.
                sleep(cleanup).await;
            }
        });
        Arc::new(tracker)
    };

    let mut alive: Vec<Arc<LeaderTracker>> = (0..2).map(spawn).collect();
    let first_new = alive.len();
    for next_unit in first_new..first_new + handovers {
        let old = leader_index(&alive, limit).await;
        let killed = alive.remove(old);
        killed.kill();
        if let Err(err) = killed.wait().await {
            panic!("W2: the old leader stopped with {err}");
        }
        alive.push(spawn(next_unit));
        let next = leader_index(&alive, limit).await;
        // The new leader's work has been spawned with its term; give it a moment to start.
        let fence = match alive[next].current_term() {
            Some(term) => term.fence,
            None => continue,
        };
        let started = timeout(limit, async {
            while !lock(&log).iter().any(|s| s.fence == fence) {
                sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(started.is_ok(), "W2: the new leader's work never started");
    }
    for tracker in &alive {
        tracker.kill();
    }
    for tracker in &alive {
        if let Err(err) = tracker.wait().await {
            panic!("W2: tracker stopped with {err}");
        }
    }
    assert_no_overlap(&lock(&log), handovers);
}

/// W2: [`w2_handovers`] with 20 handovers, for every store's conformance suite.
pub async fn w2_run_as_leader_never_overlaps(factory: &dyn StoreFactory) {
    w2_handovers(factory, 20).await;
}

/// The index of the one tracker that leads, once exactly one does.
async fn leader_index(trackers: &[Arc<LeaderTracker>], limit: Duration) -> usize {
    let give_up = Instant::now() + limit;
    loop {
        let leading: Vec<usize> = trackers
            .iter()
            .enumerate()
            .filter(|(_, t)| t.current_term().is_some())
            .map(|(i, _)| i)
            .collect();
        assert!(leading.len() <= 1, "W2: trackers {leading:?} all lead");
        if let [one] = leading[..] {
            return one;
        }
        assert!(
            Instant::now() < give_up,
            "W2: no tracker became leader within {limit:?}"
        );
        sleep(Duration::from_millis(1)).await;
    }
}

fn assert_no_overlap(spans: &[WorkSpan], handovers: usize) {
    let mut spans = spans.to_vec();
    spans.sort_by_key(|s| s.started);
    assert!(
        spans.len() > handovers,
        "W2: {} terms' work ran for {handovers} handovers",
        spans.len()
    );
    for pair in spans.windows(2) {
        let (old, new) = (&pair[0], &pair[1]);
        let Some(ended) = old.ended else {
            panic!("W2: {}'s work of term {} never ended", old.unit, old.fence);
        };
        assert!(
            new.started >= ended,
            "W2: {}'s work of term {} started {:?} before {}'s work of term {} ended",
            new.unit,
            new.fence,
            ended - new.started,
            old.unit,
            old.fence
        );
        assert!(
            new.fence > old.fence,
            "W2: fence {} after {} (F1)",
            new.fence,
            old.fence
        );
    }
}
