//! O: following who leads, one case per rule (O1–O4), plus an agreement check: watchers'
//! views against the store itself after a randomized run.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use tokio::time::{Instant, sleep, timeout};

use super::{StoreFactory, claim, leaders, limit, long, pin, revoke, unique_namespace, unpin};
use crate::watch::{Leader, LeaderEvent, LeaderStream};
use crate::{Fence, Leadership};

/// A watcher's view, applied event by event and checked as it goes (O1–O4): a snapshot
/// replaces it; `Elected` only for a term with a larger fence than the one shown (never two
/// leaders of one term, never back in time) and, once terms are recorded with
/// [`WatchView::made`], only for a term that was made; `Vacated` only of a shown leader.
/// For store crates' own watch tests as well as the suite.
#[derive(Debug, Default)]
pub struct WatchView {
    leaders: BTreeMap<String, Leader>,
    /// The highest fence ever shown per application: a term, once shown, never comes back.
    highest: HashMap<String, Fence>,
    /// The terms the test made, when it records them.
    terms: Option<HashMap<(String, Fence), String>>,
}

impl WatchView {
    /// A view that also checks every `Elected` against the terms recorded with `made`.
    pub fn checking_terms() -> WatchView {
        WatchView {
            leaders: BTreeMap::new(),
            highest: HashMap::new(),
            terms: Some(HashMap::new()),
        }
    }

    /// Records a term the test made (a successful claim's fence).
    pub fn made(&mut self, application: &str, unit: &str, fence: Fence) {
        self.terms
            .get_or_insert_with(HashMap::new)
            .insert((application.to_owned(), fence), unit.to_owned());
    }

    /// Applies `event`, panicking (naming `what`) if it is no news or no real term.
    pub fn apply(&mut self, event: &LeaderEvent, what: &str) {
        match event {
            LeaderEvent::Snapshot { leaders } => {
                for (application, leader) in leaders {
                    self.shown(application, leader.fence);
                }
                self.leaders = leaders.clone();
            }
            LeaderEvent::Elected {
                application,
                unit,
                fence,
            } => {
                if let Some(terms) = &self.terms {
                    assert_eq!(
                        terms.get(&(application.clone(), *fence)),
                        Some(unit),
                        "{what}: {event:?} is no term that was made"
                    );
                }
                if let Some(shown) = self.leaders.get(application) {
                    assert!(
                        *fence > shown.fence,
                        "{what}: Elected {unit} of {application} with fence {fence} while {} \
                         with fence {} was shown",
                        shown.unit,
                        shown.fence
                    );
                }
                if let Some(highest) = self.highest.get(application) {
                    assert!(
                        fence > highest,
                        "{what}: Elected {unit} of {application} with fence {fence}, but fence \
                         {highest} was shown before: a term came back"
                    );
                }
                self.shown(application, *fence);
                self.leaders.insert(
                    application.clone(),
                    Leader {
                        unit: unit.clone(),
                        fence: *fence,
                    },
                );
            }
            LeaderEvent::Vacated { application } => {
                assert!(
                    self.leaders.remove(application).is_some(),
                    "{what}: Vacated {application}, which was not shown as led"
                );
            }
        }
    }

    fn shown(&mut self, application: &str, fence: Fence) {
        let highest = self.highest.entry(application.to_owned()).or_insert(fence);
        *highest = (*highest).max(fence);
    }

    /// Application → unit, as `leaders()` returns it.
    pub fn units(&self) -> BTreeMap<String, String> {
        self.leaders
            .iter()
            .map(|(app, leader)| (app.clone(), leader.unit.clone()))
            .collect()
    }

    /// Reads `stream` until the view equals `truth` and no event arrives for `quiet`, all
    /// within `within`. Events that arrive after the view first equals `truth` are applied
    /// and checked like any other (a view can pass through the final state while a term that
    /// came and went is still on its way); the view must end equal to `truth`.
    pub async fn converge(
        &mut self,
        stream: &mut LeaderStream,
        truth: &BTreeMap<String, String>,
        within: Duration,
        quiet: Duration,
        what: &str,
    ) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let settled = self.units() == *truth;
            let wait = if settled { quiet.min(left) } else { left };
            match timeout(wait, stream.next()).await {
                Ok(Some(event)) => self.apply(&event, what),
                Ok(None) => panic!("{what}: the stream ended"),
                Err(_) if settled && wait == quiet => return,
                Err(_) => panic!(
                    "{what}: not converged and quiet within {within:?}: shows {:?}, the store \
                     has {truth:?}",
                    self.units()
                ),
            }
        }
    }
}

async fn watch_all(store: &dyn Leadership, what: &str) -> LeaderStream {
    match store.watch_leaders().await {
        Ok(stream) => stream,
        Err(err) => panic!("{what}: watch_leaders() failed: {err}"),
    }
}

/// The next event within `within`, or a panic naming what was awaited.
async fn next(stream: &mut LeaderStream, within: Duration, what: &str) -> LeaderEvent {
    match timeout(within, stream.next()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("{what}: the stream ended"),
        Err(_) => panic!("{what}: no event within {within:?}"),
    }
}

/// Asserts that nothing arrives for `quiet`.
async fn assert_quiet(stream: &mut LeaderStream, quiet: Duration, what: &str) {
    if let Ok(event) = timeout(quiet, stream.next()).await {
        panic!("{what}: expected no event, got {event:?}");
    }
}

fn elected(app: &str, unit: &str, fence: Fence) -> LeaderEvent {
    LeaderEvent::Elected {
        application: app.into(),
        unit: unit.into(),
        fence,
    }
}

fn vacated(app: &str) -> LeaderEvent {
    LeaderEvent::Vacated {
        application: app.into(),
    }
}

/// O1: the first item is a snapshot equal to `leaders()`, with each term's fence;
/// `watch_leader` is the same for one application.
pub async fn o1_snapshot_equals_leaders(store: &dyn Leadership, profile: &super::Profile) {
    let d = long(profile);
    let a = claim(store, "app", "app/0", d).await;
    let b = claim(store, "other", "other/3", d).await;
    let mut stream = watch_all(store, "O1").await;
    let expected = BTreeMap::from([
        (
            "app".to_owned(),
            Leader {
                unit: "app/0".into(),
                fence: a,
            },
        ),
        (
            "other".to_owned(),
            Leader {
                unit: "other/3".into(),
                fence: b,
            },
        ),
    ]);
    let first = next(&mut stream, profile.notify_latency * 4, "O1 snapshot").await;
    assert_eq!(
        first,
        LeaderEvent::Snapshot {
            leaders: expected.clone()
        },
        "O1: the first item must be the snapshot"
    );
    let mut view = WatchView::default();
    view.apply(&first, "O1");
    assert_eq!(
        view.units(),
        leaders(store).await,
        "O1: snapshot != leaders()"
    );

    let mut one = match store.watch_leader("other").await {
        Ok(stream) => stream,
        Err(err) => panic!("O1: watch_leader() failed: {err}"),
    };
    let first = next(
        &mut one,
        profile.notify_latency * 4,
        "O1 watch_leader snapshot",
    )
    .await;
    assert_eq!(
        first,
        LeaderEvent::Snapshot {
            leaders: expected
                .into_iter()
                .filter(|(app, _)| app == "other")
                .collect()
        }
    );
    // A change of another application does not reach the one-application watcher.
    revoke(store, "app", "app/0").await;
    assert_eq!(
        next(&mut stream, profile.notify_latency * 2, "O1 revoke").await,
        vacated("app")
    );
    assert_quiet(
        &mut one,
        profile.notify_latency,
        "O1 watch_leader of another app",
    )
    .await;
    assert!(
        store.watch_leader("Not An App").await.is_err(),
        "O1: watch_leader must validate its application"
    );
}

/// O2: a claim, a revoke, an expiry and an unpin after the claimed expiry each produce their
/// event in time; an extension and a pin produce nothing.
pub async fn o2_changes_are_seen_in_time(store: &dyn Leadership, profile: &super::Profile) {
    let latency = profile.notify_latency * 2;
    let mut stream = watch_all(store, "O2").await;
    next(&mut stream, latency * 2, "O2 snapshot").await;

    let start = Instant::now();
    let fence = claim(store, "app", "app/0", long(profile)).await;
    assert_eq!(
        next(&mut stream, latency, "O2 claim").await,
        elected("app", "app/0", fence)
    );
    assert!(
        start.elapsed() <= latency + profile.notify_latency,
        "O2: claim seen late"
    );

    // An extension and a pin are not changes of leadership.
    claim(store, "app", "app/0", long(profile)).await;
    pin(store, "app", "o2-entity").await;
    unpin(store, "app", "o2-entity").await;
    assert_quiet(&mut stream, profile.notify_latency, "O2 extension and pin").await;

    let start = Instant::now();
    revoke(store, "app", "app/0").await;
    assert_eq!(
        next(&mut stream, latency, "O2 revoke").await,
        vacated("app")
    );
    assert!(
        start.elapsed() <= latency + profile.notify_latency,
        "O2: revoke seen late"
    );

    // Expiry: seen within the expiry slack plus the notification latency.
    let d = profile.min_duration;
    let start = Instant::now();
    let fence = claim(store, "app", "app/1", d).await;
    assert_eq!(
        next(&mut stream, latency, "O2 claim before expiry").await,
        elected("app", "app/1", fence)
    );
    let bound = d + profile.expiry_slack + latency;
    assert_eq!(
        next(&mut stream, bound + profile.notify_latency, "O2 expiry").await,
        vacated("app")
    );
    let seen = start.elapsed();
    assert!(
        seen >= d,
        "O2: Vacated {seen:?} into a {d:?} lease (a state that did not exist)"
    );
    assert!(
        seen <= bound + profile.notify_latency,
        "O2: expiry seen after {seen:?}"
    );

    // Pinned past its expiry: nothing; the unpin ends it at once (P3).
    let start = Instant::now();
    let fence = claim(store, "app", "app/2", d).await;
    pin(store, "app", "o2-pin").await;
    assert_eq!(
        next(&mut stream, latency, "O2 pinned claim").await,
        elected("app", "app/2", fence)
    );
    let past = start + d + profile.expiry_slack + profile.notify_latency;
    sleep(past.saturating_duration_since(Instant::now())).await;
    assert_quiet(&mut stream, profile.notify_latency, "O2 pinned past expiry").await;
    let unpinned = Instant::now();
    unpin(store, "app", "o2-pin").await;
    assert_eq!(
        next(&mut stream, latency + profile.expiry_slack, "O2 unpin").await,
        vacated("app")
    );
    assert!(
        unpinned.elapsed() <= latency + profile.expiry_slack + profile.notify_latency,
        "O2: unpin seen late"
    );
}

/// O3: a consumer that does not read while 1,000 changes happen holds at most one pending
/// state per application, then sees every application's current state.
pub async fn o3_latest_state_wins(store: &dyn Leadership, profile: &super::Profile) {
    const APPS: usize = 10;
    let mut stream = watch_all(store, "O3").await;
    let mut view = WatchView::default();
    let first = next(&mut stream, profile.notify_latency * 4, "O3 snapshot").await;
    view.apply(&first, "O3");
    let d = long(profile) * 2;
    let mut held: HashMap<String, String> = HashMap::new();
    let mut changes = 0;
    let mut round = 0;
    while changes < 1_000 {
        for i in 0..APPS {
            let app = format!("app{i}");
            if let Some(unit) = held.remove(&app) {
                revoke(store, &app, &unit).await;
                changes += 1;
            }
            let unit = format!("app{i}/{}", round % 3);
            claim(store, &app, &unit, d).await;
            changes += 1;
            // Leave about a third of the applications led after each round.
            if (i + round) % 3 == 0 {
                held.insert(app, unit);
            } else {
                revoke(store, &app, &unit).await;
                changes += 1;
            }
        }
        round += 1;
    }
    // Let the store's notifications arrive, unread.
    sleep(profile.notify_latency * 2).await;
    let truth = leaders(store).await;
    let mut delivered = 0;
    while let Ok(Some(event)) = timeout(profile.notify_latency, stream.next()).await {
        view.apply(&event, "O3");
        delivered += 1;
        assert!(
            delivered <= APPS,
            "O3: {delivered} events after {changes} unread changes over {APPS} applications: \
             more than one pending state per application"
        );
    }
    assert_eq!(
        view.units(),
        truth,
        "O3: the view after reading again != leaders()"
    );
}

/// O4: a dropped connection resynchronises the stream without a false event, and the
/// stream does not end; a dropped stream is quiet (the store's own tests check that it frees
/// its subscription).
pub async fn o4_dropped_connection_resynchronises(factory: &dyn StoreFactory) {
    let profile = factory.profile();
    let store = factory.open(&unique_namespace("o4")).await;
    let store = &*store;
    let d = long(&profile) * 3;
    let mut stream = watch_all(store, "O4").await;
    let mut view = WatchView::checking_terms();
    let first = next(&mut stream, profile.notify_latency * 4, "O4 snapshot").await;
    view.apply(&first, "O4");
    let fence = claim(store, "app", "app/0", d).await;
    view.made("app", "app/0", fence);
    let event = next(&mut stream, profile.notify_latency * 2, "O4 claim").await;
    view.apply(&event, "O4");

    let dropped = factory.drop_connections().await;
    // Changes while (maybe) reconnecting: retried like a user would.
    let retry_until = Instant::now() + limit(&profile);
    loop {
        match store.revoke_leadership("app", "app/0").await {
            Ok(()) => break,
            Err(err) if err.is_retryable() && Instant::now() < retry_until => {
                sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("O4: revoke after dropped connections failed: {err}"),
        }
    }
    let fence = loop {
        match store.claim_leadership("next", "next/1", d).await {
            Ok(fence) => break fence,
            Err(err) if err.is_retryable() && Instant::now() < retry_until => {
                sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("O4: claim after dropped connections failed: {err}"),
        }
    };
    view.made("next", "next/1", fence);

    // The stream converges to the store's state, every event being a real term's.
    let truth = leaders(store).await;
    let what = format!("O4 (connections dropped: {dropped}) resynchronising");
    view.converge(
        &mut stream,
        &truth,
        limit(&profile),
        profile.notify_latency,
        &what,
    )
    .await;
    // Still alive: a later change is seen.
    revoke(store, "next", "next/1").await;
    assert_eq!(
        next(
            &mut stream,
            profile.notify_latency * 2 + Duration::from_secs(1),
            "O4 after"
        )
        .await,
        vacated("next")
    );
    drop(stream);
}

/// The agreement check: a randomized run of claims, revokes, expiries and pins over 100
/// applications with 3 watchers. Every watcher's last view equals `leaders()`; no watcher
/// ever showed two leaders of one term or went back in time (checked by each event); every
/// `Elected` names a term the run made.
pub async fn o_watchers_agree_with_the_store(factory: &dyn StoreFactory) {
    const APPS: usize = 100;
    let profile = factory.profile();
    let namespace = unique_namespace("o-agree");
    let store = factory.open(&namespace).await;
    let store = &*store;
    let mut watchers = Vec::new();
    for _ in 0..3 {
        let handle = factory.open(&namespace).await;
        let stream = watch_all(&*handle, "agreement").await;
        watchers.push((handle, stream, WatchView::default()));
    }
    let terms = std::sync::Mutex::new(HashMap::<(String, Fence), String>::new());
    let run = async {
        let until = Instant::now() + long(&profile) * 2;
        let mut ops = 0u32;
        while Instant::now() < until || ops < 300 {
            let (app, unit, op, short) = {
                let mut rng = rand::rng();
                let app = format!("app{}", rng.random_range(0..APPS));
                let unit = format!("{app}/{}", rng.random_range(0..3));
                (app, unit, rng.random_range(0..10u8), rng.random_bool(0.3))
            };
            match op {
                0..=4 => {
                    let d = if short {
                        profile.min_duration
                    } else {
                        long(&profile)
                    };
                    if let Ok(fence) = store.claim_leadership(&app, &unit, d).await {
                        terms
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert((app, fence), unit);
                    }
                }
                5..=7 => {
                    let _ = store.revoke_leadership(&app, &unit).await;
                }
                8 => pin(store, &app, "agree").await,
                _ => unpin(store, &app, "agree").await,
            }
            ops += 1;
        }
        // Let every pin go, so expiries can happen too.
        for i in 0..APPS {
            unpin(store, &format!("app{i}"), "agree").await;
        }
    };
    // Read the watchers (at different paces) while the run goes on.
    let read = async {
        let mut turn = 0usize;
        loop {
            for (i, (_, stream, view)) in watchers.iter_mut().enumerate() {
                // Watcher i reads one event every i+1 turns: the slowest falls behind.
                if !turn.is_multiple_of(i + 1) {
                    continue;
                }
                if let Ok(Some(event)) = timeout(Duration::from_millis(5), stream.next()).await {
                    check_elected(&event, &terms, "agreement");
                    view.apply(&event, "agreement");
                }
            }
            turn += 1;
            tokio::task::yield_now().await;
        }
    };
    tokio::select! {
        () = run => {}
        () = read => unreachable!("the reader loops forever"),
    }
    // Quiesce: every lease of the run ends (pins are gone), then a last set of terms starts;
    // the watchers must converge to exactly that.
    sleep(long(&profile) + profile.expiry_slack + profile.notify_latency * 2).await;
    for i in (0..APPS).step_by(7) {
        let app = format!("app{i}");
        let unit = format!("{app}/9");
        let fence = claim(store, &app, &unit, limit(&profile) * 4).await;
        terms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((app, fence), unit);
    }
    let truth = leaders(store).await;
    assert_eq!(
        truth.len(),
        APPS.div_ceil(7),
        "agreement: the last terms are all held"
    );
    for (i, (_, stream, view)) in watchers.iter_mut().enumerate() {
        let deadline = Instant::now() + limit(&profile);
        while view.units() != truth {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = next(stream, left, &format!("agreement: watcher {i} converging")).await;
            check_elected(&event, &terms, "agreement");
            view.apply(&event, "agreement");
        }
        assert_quiet(
            stream,
            profile.notify_latency,
            "agreement: after converging",
        )
        .await;
    }
}

fn check_elected(
    event: &LeaderEvent,
    terms: &std::sync::Mutex<HashMap<(String, Fence), String>>,
    what: &str,
) {
    if let LeaderEvent::Elected {
        application,
        unit,
        fence,
    } = event
    {
        let terms = terms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A claim's answer may still be on its way back when its event arrives.
        if let Some(holder) = terms.get(&(application.clone(), *fence)) {
            assert_eq!(holder, unit, "{what}: {event:?} names the wrong unit");
        }
    }
}
