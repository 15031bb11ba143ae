//! `leadership track`: one unit's tracker, its transitions printed as they happen.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use leadership::tracker::LeaderTracker;
use leadership::{Leadership, Tracker, TrackerWorker};
use serde_json::json;

use crate::cli::ctrl_c_token;

/// Prints one transition line (or JSON document) with the wall-clock time.
fn event(json: bool, what: &str, unit: &str, application: &str, fence: Option<u64>) {
    let time = humantime::format_rfc3339_millis(SystemTime::now());
    if json {
        println!(
            "{}",
            json!({ "time": time.to_string(), "event": what, "unit": unit, "application": application, "fence": fence })
        );
    } else {
        let fence = fence.map(|f| format!(" (fence {f})")).unwrap_or_default();
        println!("{time}  {unit}  {what}{fence}");
    }
}

/// Runs a tracker until Ctrl-C or a fatal error.
///
/// # Errors
/// The tracker's fatal error (T9), e.g. an invalid unit name.
pub async fn track(
    store: Arc<dyn Leadership>,
    unit: &str,
    guarantee: Duration,
    release_on_exit: bool,
    json: bool,
) -> leadership::Result<()> {
    let mut builder = LeaderTracker::builder(unit, guarantee, store.clone());
    if release_on_exit {
        builder = builder.release_on_stop(store);
    }
    let tracker = builder.spawn();
    let application = tracker.application_name();
    let stop = ctrl_c_token();
    event(json, "started as minion", unit, &application, None);
    loop {
        let ticket = tracker.wait_leader();
        let became_leader = tokio::select! {
            () = stop.cancelled() => break,
            leader = ticket.wait() => leader,
        };
        // False: the tracker stopped on its own, with a fatal error.
        if !became_leader {
            break;
        }
        let Some(term) = tracker.current_term() else {
            continue;
        };
        event(
            json,
            "promoted to leader",
            unit,
            &application,
            Some(term.fence.get()),
        );
        tokio::select! {
            () = stop.cancelled() => break,
            () = term.lost.cancelled() => {
                event(json, "demoted to minion", unit, &application, Some(term.fence.get()));
            }
        }
    }
    tracker.kill();
    tracker.wait().await?;
    let what = if release_on_exit {
        "stopped, lease released"
    } else {
        "stopped"
    };
    event(json, what, unit, &application, None);
    Ok(())
}
