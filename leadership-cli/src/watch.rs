//! `leadership watch [APP]`: who leads, as it changes (O1–O4).

use std::sync::Arc;
use std::time::SystemTime;

use futures::StreamExt;
use leadership::{LeaderEvent, Leadership};
use serde_json::json;

use crate::cli::ctrl_c_token;

/// One line (or JSON document) per state: the snapshot's applications first, then each change.
fn print_state(json: bool, application: &str, leader: Option<(&str, u64)>) {
    let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    match (json, leader) {
        (true, Some((unit, fence))) => println!(
            "{}",
            json!({ "time": time, "event": "elected", "application": application, "unit": unit, "fence": fence })
        ),
        (true, None) => println!(
            "{}",
            json!({ "time": time, "event": "vacated", "application": application })
        ),
        (false, Some((unit, fence))) => {
            println!("{time}  {application}  led by {unit} (fence {fence})");
        }
        (false, None) => println!("{time}  {application}  no leader"),
    }
}

/// Follows `application` (or every application) until Ctrl-C, which returns 130.
///
/// # Errors
/// The store's error opening the watch (e.g. `Unavailable`, an invalid application name).
pub async fn watch(
    store: Arc<dyn Leadership>,
    application: Option<&str>,
    json: bool,
) -> leadership::Result<u8> {
    let stop = ctrl_c_token();
    let mut stream = match application {
        Some(app) => store.watch_leader(app).await?,
        None => store.watch_leaders().await?,
    };
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return Ok(130),
            event = stream.next() => event,
        };
        match event {
            None => return Ok(0),
            Some(LeaderEvent::Snapshot { leaders }) => {
                if leaders.is_empty()
                    && let Some(app) = application
                {
                    print_state(json, app, None);
                }
                for (app, leader) in &leaders {
                    print_state(json, app, Some((&leader.unit, leader.fence.get())));
                }
            }
            Some(LeaderEvent::Elected {
                application,
                unit,
                fence,
            }) => print_state(json, &application, Some((&unit, fence.get()))),
            Some(LeaderEvent::Vacated { application }) => print_state(json, &application, None),
            Some(_) => {}
        }
    }
}
