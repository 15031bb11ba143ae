//! `leadership track`: one unit's tracker, its transitions printed as they happen, with its
//! metrics served as Prometheus text (`--metrics ADDR`) and its health over HTTP
//! (`--health ADDR`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use leadership::tracker::LeaderTracker;
use leadership::{Leadership, Tracker, TrackerWorker};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

/// The endpoints `track` serves besides its output.
#[derive(Debug, Clone, Copy, Default)]
pub struct Serve {
    /// `--health ADDR`: 200 or 503.
    pub health: Option<SocketAddr>,
}

/// Prints why an endpoint cannot be served and exits 3 (the store-unavailable code: the
/// process cannot do what it was asked), before any tracker runs.
fn cannot_serve(flag: &str, addr: SocketAddr, err: &dyn std::fmt::Display) -> ! {
    eprintln!("leadership: cannot serve {flag} on {addr}: {err}");
    std::process::exit(3)
}

/// Serves Prometheus text on `addr` (`--metrics`), or exits 3 if it cannot. Call it before
/// connecting: the store and the tracker register their metrics with the recorder installed
/// at that moment (M1).
pub fn serve_metrics(addr: SocketAddr) {
    // Latencies as histograms with fixed buckets: the exporter's default, a quantile summary
    // per series, costs far more per renewal once every tracker has its own series (M1).
    let installed = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Suffix("_duration_seconds".into()),
            leadership::metered::DURATION_BUCKETS,
        )
        .and_then(PrometheusBuilder::install);
    if let Err(err) = installed {
        cannot_serve("--metrics", addr, &err);
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
    serve: Serve,
) -> leadership::Result<()> {
    let health = match serve.health {
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(listener) => Some(listener),
            Err(err) => cannot_serve("--health", addr, &err),
        },
        None => None,
    };
    let mut builder = LeaderTracker::builder(unit, guarantee, store.clone());
    if release_on_exit {
        builder = builder.release_on_stop(store);
    }
    let tracker = Arc::new(builder.spawn());
    if let Some(listener) = health {
        tokio::spawn(serve_health(listener, Arc::downgrade(&tracker)));
    }
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

/// Answers every HTTP request on `listener` with the tracker's health (H1): 200 and `healthy`,
/// or 503 and the reason. One request per connection; the request itself is not parsed
/// beyond its method, so any path works (as client-go's healthz handler does for its check).
async fn serve_health(listener: TcpListener, tracker: std::sync::Weak<LeaderTracker>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tracker = tracker.clone();
        tokio::spawn(async move {
            let health = match tracker.upgrade() {
                Some(tracker) => tracker.health(),
                None => return,
            };
            let _ = answer_health(stream, &health).await;
        });
    }
}

async fn answer_health(mut stream: TcpStream, health: &leadership::Health) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    // Up to the end of the headers, within a bound: nothing else of the request matters.
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => request.extend_from_slice(&buf[..n]),
            Ok(Err(err)) => return Err(err),
        }
    }
    let (status, body) = if !(request.starts_with(b"GET ") || request.starts_with(b"HEAD ")) {
        ("405 Method Not Allowed", "use GET\n".to_owned())
    } else if health.is_healthy() {
        ("200 OK", format!("{health}\n"))
    } else {
        ("503 Service Unavailable", format!("{health}\n"))
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
