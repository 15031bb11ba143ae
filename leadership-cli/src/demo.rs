//! `leadership demo`: several units of a few applications, each with a tracker, and a
//! narrated tour of what the library guarantees: who leads with which fence, a crash
//! without release and the failover time, a graceful handover, a pin that keeps a leader
//! through an outage, and a stale leader's write refused by its fence.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use futures::future::select_all;
use leadership::memory::MemoryStore;
use leadership::tracker::LeaderTracker;
use leadership::{Claimer, Error, Fence, LeaderEvent, Leadership, Revoker, Tracker, TrackerWorker};
use leadership_testkit::{Fault, FaultyStore};
use serde_json::json;
use tokio::time::{Instant, sleep, timeout};

use crate::cli::parse_duration;

/// Options of the demo.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Units per application (at least 2).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=50))]
    pub units: u32,
    /// Applications (the tour follows the first; the others run alongside).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub apps: u32,
    /// The trackers' guarantee; claims last twice as long.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub guarantee: Duration,
}

const APPS: [&str; 8] = [
    "wordpress",
    "mysql",
    "haproxy",
    "redis-cache",
    "kafka",
    "nginx",
    "postgresql",
    "vault",
];

/// One unit: its tracker and its own link to the store, which the demo can cut.
struct Unit {
    name: String,
    link: Arc<FaultyStore>,
    tracker: LeaderTracker,
}

fn spawn_unit(store: &Arc<dyn Leadership>, name: String, guarantee: Duration) -> Unit {
    let link = FaultyStore::new(store.clone());
    let claimer: Arc<dyn Claimer> = link.clone();
    let revoker: Arc<dyn Revoker> = link.clone();
    let tracker = LeaderTracker::builder(name.clone(), guarantee, claimer)
        .release_on_stop(revoker)
        .spawn();
    Unit {
        name,
        link,
        tracker,
    }
}

/// A downstream resource that refuses writes carrying a fence older than one it has seen:
/// what a database or object store does with fencing tokens.
#[derive(Default)]
struct FencedResource {
    highest: Mutex<Fence>,
}

impl FencedResource {
    fn write(&self, fence: Fence) -> Result<(), Fence> {
        let mut highest = self.highest.lock().unwrap_or_else(PoisonError::into_inner);
        if fence < *highest {
            return Err(*highest);
        }
        *highest = fence;
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Narrator {
    start: Instant,
}

impl Narrator {
    fn say(&self, text: impl AsRef<str>) {
        let at = self.start.elapsed().as_secs_f64();
        println!("[{at:7.3}s] {}", text.as_ref());
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn signed_ms(later: Instant, earlier: Instant) -> String {
    if later >= earlier {
        format!("{} after", ms(later - earlier))
    } else {
        format!("{} before", ms(earlier - later))
    }
}

fn stuck(what: &'static str) -> Error {
    Error::Stopped { what }
}

/// Waits until one of `units` (other than `excluded`) becomes leader; its index, fence and
/// the instant it was seen.
async fn next_leader(
    units: &[Unit],
    excluded: &[usize],
    limit: Duration,
) -> leadership::Result<(usize, Fence, Instant)> {
    let waits = units
        .iter()
        .enumerate()
        .filter(|(i, _)| !excluded.contains(i))
        .map(|(i, unit)| {
            Box::pin(async move {
                if unit.tracker.wait_leader().wait().await {
                    Some(i)
                } else {
                    futures::future::pending::<Option<usize>>().await
                }
            })
        })
        .collect::<Vec<_>>();
    if waits.is_empty() {
        return Err(stuck("demo (no unit left to lead)"));
    }
    let Ok((Some(i), _, _)) = timeout(limit, select_all(waits)).await else {
        return Err(stuck("demo (no leader emerged in time)"));
    };
    let seen = Instant::now();
    let fence = units[i]
        .tracker
        .current_term()
        .map(|term| term.fence)
        .ok_or_else(|| stuck("demo (a leader lost its term at once)"))?;
    Ok((i, fence, seen))
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "NO" }
}

/// Follows `app` with `watch_leader` on a task of its own: narrates each change (in text
/// mode) and keeps every event for the summary.
async fn watch_app(
    store: &Arc<dyn Leadership>,
    app: &str,
    say: Narrator,
    json: bool,
) -> leadership::Result<Arc<Mutex<Vec<LeaderEvent>>>> {
    let mut stream = store.watch_leader(app).await?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            if !json {
                match &event {
                    LeaderEvent::Elected {
                        application,
                        unit,
                        fence,
                    } => say.say(format!(
                        "   (watcher) {application}: led by {unit}, fence {fence}"
                    )),
                    LeaderEvent::Vacated { application } => {
                        say.say(format!("   (watcher) {application}: no leader"));
                    }
                    _ => {}
                }
            }
            keep.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(event);
        }
    });
    Ok(seen)
}

/// Waits, up to `limit`, until the watcher has shown the term with `fence`. The tour moves on
/// only then, as a router would follow one change before the next: delivery is latest-state
/// wins (O3), so a change made a moment later could otherwise supersede this one before the
/// watcher read it. False if it never showed within `limit`.
async fn watcher_shows(watched: &Mutex<Vec<LeaderEvent>>, fence: Fence, limit: Duration) -> bool {
    let shown = || {
        watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|event| matches!(event, LeaderEvent::Elected { fence: f, .. } if *f == fence))
    };
    let deadline = Instant::now() + limit;
    while !shown() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// Opens the store for the tour: on `memory://` the store itself, so the tour can show its
/// guarded write; elsewhere through [`leadership::connect`].
///
/// # Errors
/// What `connect` returns.
pub async fn open(
    url: &str,
) -> leadership::Result<(Arc<dyn Leadership>, Option<Arc<MemoryStore>>)> {
    if !url
        .get(..9)
        .is_some_and(|s| s.eq_ignore_ascii_case("memory://"))
    {
        return Ok((leadership::connect(url).await?, None));
    }
    let handle = Arc::new(MemoryStore::connect(url).await?);
    Ok((handle.clone(), Some(handle)))
}

/// Runs the tour on `store` (a namespace of its own) and prints a summary.
///
/// # Errors
/// A store error, or a step that did not happen within its time limit.
pub async fn run(
    (store, guard): (Arc<dyn Leadership>, Option<Arc<MemoryStore>>),
    url: &str,
    args: &DemoArgs,
    json: bool,
) -> leadership::Result<()> {
    let say = Narrator {
        start: Instant::now(),
    };
    let g = args.guarantee;
    let claim = g * 2;
    let limit = claim * 3 + Duration::from_secs(5);
    let apps = &APPS[..args.apps as usize];
    say.say(format!(
        "{} application(s) x {} units on {}; guarantee {}, so each claim lasts {}",
        apps.len(),
        args.units,
        leadership::redact_url(url),
        humantime::format_duration(g),
        humantime::format_duration(claim),
    ));

    // A watcher follows the first application from outside, as a router or dashboard would.
    let watched = watch_app(&store, apps[0], say, json).await?;

    // Every unit of every application runs a tracker.
    let mut fleets: Vec<Vec<Unit>> = apps
        .iter()
        .map(|app| {
            (0..args.units)
                .map(|n| spawn_unit(&store, format!("{app}/{n}"), g))
                .collect()
        })
        .collect();

    say.say("1. Who leads");
    let mut leaders = Vec::new();
    for (app, units) in apps.iter().zip(&fleets) {
        let (i, fence, _) = next_leader(units, &[], limit).await?;
        say.say(format!(
            "   {app}: {} leads with fence {fence}",
            units[i].name
        ));
        leaders.push(i);
    }
    let app = apps[0];
    let units = &mut fleets[0];
    let l1 = leaders[0];
    let f1 = units[l1]
        .tracker
        .current_term()
        .map_or(Fence(0), |term| term.fence);

    say.say(format!(
        "2. Crash: {}'s process dies without releasing; the others must wait out its lease",
        units[l1].name
    ));
    let last_ok_end = units[l1]
        .link
        .claims()
        .iter()
        .rev()
        .find(|record| record.result.is_ok())
        .map(|record| record.returned);
    units[l1].link.fail(Fault::Unavailable);
    let crashed_at = Instant::now();
    units[l1].tracker.kill();
    let (l2, f2, seen2) = next_leader(units, &[l1], limit).await?;
    let failover = seen2 - crashed_at;
    let past_expiry = last_ok_end.map(|end| signed_ms(seen2, end + claim));
    say.say(format!(
        "   {} took over with fence {f2} after {}{}",
        units[l2].name,
        ms(failover),
        past_expiry
            .as_ref()
            .map(|p| format!(" ({p} the crashed leader's lease ran out)"))
            .unwrap_or_default()
    ));
    let saw_failover = watcher_shows(&watched, f2, limit).await;
    // The crashed process restarts as a new minion (with a healthy link).
    let restarted = spawn_unit(&store, units[l1].name.clone(), g);
    let crashed = std::mem::replace(&mut units[l1], restarted);
    say.say(format!(
        "   {} restarts and rejoins as a minion",
        crashed.name
    ));

    say.say(format!(
        "3. Graceful handover: {} stops and releases its lease",
        units[l2].name
    ));
    let stopped_at = Instant::now();
    units[l2].tracker.kill();
    let (l3, f3, seen3) = next_leader(units, &[l2], limit).await?;
    let handover = seen3 - stopped_at;
    say.say(format!(
        "   {} took over with fence {f3} after {}",
        units[l3].name,
        ms(handover)
    ));
    let saw_handover = watcher_shows(&watched, f3, limit).await;
    units[l2].tracker.wait().await?;
    let replacement = spawn_unit(&store, units[l2].name.clone(), g);
    units[l2] = replacement;

    let outage = claim + g;
    say.say(format!(
        "4. Pin: an operator pins {app}, then {} loses the store for {} (longer than a claim)",
        units[l3].name,
        humantime::format_duration(outage)
    ));
    store.pin_leadership(app, "operator").await?;
    let term3 = units[l3].tracker.current_term();
    units[l3].link.fail(Fault::Unavailable);
    let outage_start = Instant::now();
    let mut held_throughout = true;
    let mut takeovers = 0;
    let mut loss_seen: Option<Instant> = None;
    while outage_start.elapsed() < outage {
        sleep(Duration::from_millis(50)).await;
        let held = store.leaders().await?.get(app) == Some(&units[l3].name);
        held_throughout &= held;
        takeovers = units
            .iter()
            .enumerate()
            .filter(|(i, unit)| *i != l3 && unit.tracker.current_term().is_some())
            .count()
            .max(takeovers);
        if loss_seen.is_none() && term3.as_ref().is_some_and(|t| t.lost.is_cancelled()) {
            loss_seen = Some(Instant::now());
        }
    }
    let rival = &units[(l3 + 1) % units.len()].name;
    let rival_denied = matches!(
        store.claim_leadership(app, rival, claim).await,
        Err(Error::ClaimDenied)
    );
    if let Some(lost) = loss_seen {
        say.say(format!(
            "   {}'s tracker could not renew: its loss signal fired {} into the outage, so its \
             leader-only work stopped in time",
            units[l3].name,
            ms(lost - outage_start)
        ));
    }
    say.say(format!(
        "   the store kept {} as leader throughout: {held_throughout}; other units that took \
         over: {takeovers}; a rival's claim denied: {rival_denied}",
        units[l3].name
    ));
    units[l3].link.heal();
    let back = timeout(limit, units[l3].tracker.wait_leader().wait()).await;
    let f3_again = units[l3].tracker.current_term().map(|t| t.fence);
    store.unpin_leadership(app, "operator").await?;
    if matches!(back, Ok(true)) {
        say.say(format!(
            "   the outage ends and {} renews with fence {} (the same term); the pin is removed",
            units[l3].name,
            f3_again.map_or_else(|| "?".into(), |f| f.to_string())
        ));
    } else {
        say.say(format!(
            "   the outage ends but {} did not lead again in time",
            units[l3].name
        ));
    }

    say.say(format!(
        "5. Fencing: the crashed {} (fence {f1}) was only paused; it wakes believing it leads and writes",
        crashed.name
    ));
    let current = f3_again.unwrap_or(f3);
    let resource = FencedResource::default();
    let leader_write = resource.write(current).is_ok();
    let stale_write = resource.write(f1);
    say.say(format!(
        "   a fenced resource: the leader's write with fence {current} {}, the stale write with fence {f1} {}",
        if leader_write { "accepted" } else { "REFUSED" },
        match stale_write {
            Ok(()) => "ACCEPTED".to_owned(),
            Err(highest) => format!("refused (it has seen fence {highest})"),
        },
    ));
    let mut stale_refused = stale_write.is_err();
    if let Some(guard) = &guard {
        let leader = &units[l3].name;
        let stale = guard.guarded(app, &crashed.name, f1, || ());
        let fresh = guard.guarded(app, leader, current, || ());
        say.say(format!(
            "   the store's guarded write: {leader} with fence {current} {}; fence {f1} {}",
            if fresh.is_ok() { "applied" } else { "REFUSED" },
            match &stale {
                Ok(()) => "APPLIED".to_owned(),
                Err(err) => format!("refused ({err})"),
            }
        ));
        stale_refused &= stale.is_err();
    }

    // Stop everything, releasing leases.
    for unit in fleets.iter().flatten() {
        unit.tracker.kill();
    }
    for unit in fleets.iter().flatten() {
        unit.tracker.wait().await?;
    }
    drop(crashed);

    let summary = [
        (
            "failover after a crash (no release)",
            ms(failover),
            past_expiry
                .map(|p| format!("{p} lease end"))
                .unwrap_or_default(),
        ),
        (
            "handover on a graceful stop (release)",
            ms(handover),
            String::new(),
        ),
        (
            "pinned leader through an outage",
            humantime::format_duration(outage).to_string(),
            format!("held: {held_throughout}, takeovers: {takeovers}"),
        ),
        (
            "watcher saw failover / handover",
            format!("{} / {}", yes(saw_failover), yes(saw_handover)),
            format!("fences {f2} / {f3}"),
        ),
        (
            "stale leader's write (fence)",
            if stale_refused {
                "refused".into()
            } else {
                "ACCEPTED".into()
            },
            format!("fence {f1} < {current}"),
        ),
    ];
    if json {
        println!(
            "{}",
            json!({
                "failover_ms": failover.as_secs_f64() * 1000.0,
                "handover_ms": handover.as_secs_f64() * 1000.0,
                "pin_outage_ms": outage.as_secs_f64() * 1000.0,
                "pin_held": held_throughout,
                "pin_takeovers": takeovers,
                "stale_write_refused": stale_refused,
                "watcher_saw_failover": saw_failover,
                "watcher_saw_handover": saw_handover,
                "guarantee_ms": g.as_secs_f64() * 1000.0,
            })
        );
    } else {
        println!("\nSummary");
        for (what, value, note) in summary {
            println!("  {what:<40} {value:>12}  {note}");
        }
    }
    Ok(())
}
