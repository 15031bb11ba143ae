//! Arguments and the operator commands.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use leadership::{CancellationToken, Leadership};
use serde_json::json;

use crate::output::{exit_code, print, print_error};

/// Application leadership: claim, check, revoke, pin, watch and track leases.
#[derive(Debug, Parser)]
#[command(name = "leadership", version, about, long_about = None)]
pub struct Args {
    /// The store: memory://[NAME], redis://[user:pass@]host:port[/db], rediss://…,
    /// redis+cluster://host:port[,host:port…], redis+sentinel://host:port[,host:port…]/MASTER
    /// (rediss+cluster://, rediss+sentinel:// for TLS), etcd://host:port[,host:port…], etcds://…; `?namespace=NAME` selects a namespace.
    #[arg(
        long,
        env = "LEADERSHIP_STORE",
        default_value = "memory://",
        global = true
    )]
    pub store: String,

    /// The namespace (overrides the URL's `?namespace=`).
    #[arg(long, global = true)]
    pub namespace: Option<String>,

    /// Print results as JSON, one document per line.
    #[arg(long, global = true)]
    pub json: bool,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every application's leader.
    Leaders,
    /// Claim (or extend) leadership of APP for UNIT; prints the fence.
    Claim {
        /// The application, e.g. `wordpress`.
        app: String,
        /// The unit, e.g. `wordpress/0`.
        unit: String,
        /// How long the lease lasts, e.g. `30s`, `2m`.
        #[arg(long = "for", value_parser = parse_duration, default_value = "30s")]
        duration: Duration,
    },
    /// Check that UNIT leads APP; prints the fence.
    Check {
        /// The application.
        app: String,
        /// The unit.
        unit: String,
    },
    /// Revoke UNIT's leadership of APP.
    Revoke {
        /// The application.
        app: String,
        /// The unit that holds the lease.
        unit: String,
    },
    /// Pin APP's leadership on behalf of ENTITY so it cannot expire.
    Pin {
        /// The application.
        app: String,
        /// Who pins it, e.g. `machine-0`.
        entity: String,
    },
    /// Remove ENTITY's pin on APP.
    Unpin {
        /// The application.
        app: String,
        /// Who pinned it.
        entity: String,
    },
    /// List pinned applications and who pins them.
    Pinned,
    /// Wait until APP has no leader (Ctrl-C cancels).
    WaitReleased {
        /// The application.
        app: String,
    },
    /// Follow who leads APP (or every application): the current state, then each change,
    /// until Ctrl-C (exit 130).
    Watch {
        /// The application; all of the namespace's without it.
        app: Option<String>,
    },
    /// Run a tracker for UNIT: contend forever, print each transition until Ctrl-C.
    Track {
        /// The unit, e.g. `wordpress/0`; the application is the part before `/`.
        unit: String,
        /// How long a leader is guaranteed to stay leader (the tracker's claim_duration());
        /// claims last twice as long.
        #[arg(long, value_parser = parse_duration, default_value = "30s")]
        guarantee: Duration,
        /// Revoke the lease on exit, so a waiting unit takes over at once.
        #[arg(long)]
        release_on_exit: bool,
        /// Serve the tracker's metrics as Prometheus text on ADDR (e.g. 127.0.0.1:9464;
        /// any path), for scraping.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// Answer HTTP GET on ADDR with 200 while the tracker is healthy and 503 when it is not
        /// (a leader that cannot renew, or a tracker stopped by an error), for liveness probes.
        #[arg(long, value_name = "ADDR")]
        health: Option<std::net::SocketAddr>,
    },
    /// Watch several units compete, crash, hand over and fence a stale leader (the README's tour).
    Demo(crate::demo::DemoArgs),
}

/// Parses humane durations: `30s`, `2m`, `1h 30m`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|err| format!("{err}: use a duration like 30s, 2m or 500ms"))
}

/// The store URL with `--namespace` applied.
fn store_url(args: &Args) -> String {
    let Some(namespace) = &args.namespace else {
        return args.store.clone();
    };
    let (base, query) = match args.store.split_once('?') {
        Some((base, query)) => (base, query),
        None => (args.store.as_str(), ""),
    };
    let mut pairs: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("namespace="))
        .collect();
    let ns = format!("namespace={namespace}");
    pairs.push(&ns);
    format!("{base}?{}", pairs.join("&"))
}

/// Runs the command and returns the exit code.
pub async fn run(args: Args) -> u8 {
    let url = store_url(&args);
    // The demo works in a namespace of its own unless one is given.
    let url = match (&args.command, &args.namespace) {
        (Command::Demo(_), None) if !args.store.contains("namespace=") => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}namespace=demo-{}", std::process::id())
        }
        _ => url,
    };
    if let Command::Demo(demo) = &args.command {
        let outcome = match crate::demo::open(&url).await {
            Ok(opened) => crate::demo::run(opened, &url, demo, args.json).await,
            Err(err) => Err(err),
        };
        return match outcome {
            Ok(()) => 0,
            Err(err) => {
                print_error(&err, &url, args.json);
                exit_code(&err)
            }
        };
    }
    // The recorder goes first: the store `connect` opens registers its operation metrics
    // there, and a tracker its own when it is spawned (M1).
    if let Command::Track {
        metrics: Some(addr),
        ..
    } = &args.command
    {
        crate::track::serve_metrics(*addr);
    }
    let store = match leadership::connect(&url).await {
        Ok(store) => store,
        Err(err) => {
            print_error(&err, &url, args.json);
            return exit_code(&err);
        }
    };
    if let Command::Watch { app } = &args.command {
        return match crate::watch::watch(store, app.as_deref(), args.json).await {
            Ok(code) => code,
            Err(err) => {
                print_error(&err, &url, args.json);
                exit_code(&err)
            }
        };
    }
    match execute(&args, store).await {
        Ok(()) => 0,
        Err(err) => {
            print_error(&err, &url, args.json);
            exit_code(&err)
        }
    }
}

async fn execute(args: &Args, store: Arc<dyn Leadership>) -> leadership::Result<()> {
    let json = args.json;
    match &args.command {
        Command::Track {
            unit,
            guarantee,
            release_on_exit,
            health,
            ..
        } => {
            // `--metrics` is served from before the store was opened (`run`).
            let serve = crate::track::Serve { health: *health };
            crate::track::track(store, unit, *guarantee, *release_on_exit, json, serve).await?;
        }
        // Handled in `run`: the demo opens the store its own way, a watch has its own exit.
        Command::Demo(_) | Command::Watch { .. } => {}
        Command::Leaders => {
            let leaders = store.leaders().await?;
            print(json, || table(&leaders), || json!(leaders));
        }
        Command::Claim {
            app,
            unit,
            duration,
        } => {
            let fence = store.claim_leadership(app, unit, *duration).await?;
            print(
                json,
                || {
                    format!(
                        "{unit} leads {app} for {} (fence {fence})",
                        humantime::format_duration(*duration)
                    )
                },
                || json!({ "application": app, "unit": unit, "fence": fence.get(), "duration_ms": duration.as_millis() }),
            );
        }
        Command::Check { app, unit } => {
            let fence = store.leadership_check(app, unit).check().await?;
            print(
                json,
                || format!("{unit} leads {app} (fence {fence})"),
                || json!({ "application": app, "unit": unit, "leader": true, "fence": fence.get() }),
            );
        }
        Command::Revoke { app, unit } => {
            store.revoke_leadership(app, unit).await?;
            print(
                json,
                || format!("{app} is no longer led by {unit}"),
                || json!({ "application": app, "unit": unit, "revoked": true }),
            );
        }
        Command::Pin { app, entity } => {
            store.pin_leadership(app, entity).await?;
            print(
                json,
                || format!("{app} pinned by {entity}"),
                || json!({ "application": app, "entity": entity, "pinned": true }),
            );
        }
        Command::Unpin { app, entity } => {
            store.unpin_leadership(app, entity).await?;
            print(
                json,
                || format!("{app} no longer pinned by {entity}"),
                || json!({ "application": app, "entity": entity, "pinned": false }),
            );
        }
        Command::Pinned => {
            let pinned = store.pinned_leadership().await?;
            let lines: BTreeMap<String, String> = pinned
                .iter()
                .map(|(app, entities)| (app.clone(), entities.join(", ")))
                .collect();
            print(json, || table(&lines), || json!(pinned));
        }
        Command::WaitReleased { app } => {
            let cancel = ctrl_c_token();
            store.block_until_leadership_released(app, cancel).await?;
            print(
                json,
                || format!("{app} has no leader"),
                || json!({ "application": app, "released": true }),
            );
        }
    }
    Ok(())
}

/// Two aligned columns; empty output for an empty map.
fn table(rows: &BTreeMap<String, String>) -> String {
    let width = rows.keys().map(String::len).max().unwrap_or(0);
    rows.iter()
        .map(|(key, value)| format!("{key:<width$}  {value}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A token cancelled on Ctrl-C.
///
/// The listener is registered before this returns, so a Ctrl-C that comes after anything the
/// caller prints next is never lost. Registered inside the spawned task instead (as
/// `tokio::signal::ctrl_c()` does on its first poll), a SIGINT that came before the task first
/// ran was missed, and `track` ran on (seen in CI: the test's SIGINT after "promoted to
/// leader" went unanswered).
pub fn ctrl_c_token() -> CancellationToken {
    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut interrupt) = signal(SignalKind::interrupt()) {
            tokio::spawn(async move {
                if interrupt.recv().await.is_some() {
                    on_ctrl_c.cancel();
                }
            });
        }
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    cancel
}
