//! A client that is a real process, frozen with SIGSTOP past its lease (issue 16.3).
//!
//! The in-process pauses of [`super::Run`] stall a leader's store calls and its work; this
//! row freezes a whole process, timers, runtime and all, as the kernel does. The test binary
//! runs itself as the child (the store's `child_process_leader` test, a no-op unless the
//! environment names a child): a tracker over its own connection whose leader-only work
//! makes a guarded write every 10 ms, printing each claim, each write and each loss with
//! `CLOCK_MONOTONIC` times, which are the same clock in both processes.
//!
//! Each round: the child leads and writes; the parent SIGSTOPs it (and proves it stopped:
//! `/proc/PID/stat` says `T`) until a rival in the parent has been granted the application
//! and has written; then SIGCONT. A careful child looks at its term before each write, so on
//! waking it must print its loss before any write (T7: acting after waking is counted); a
//! zombie child writes with its old fence regardless, and every such write must be refused
//! (F2). C4: the rival's grant must return no earlier than the child's last granted claim's
//! call start plus its duration. F1: the rival's fence is above the child's. The store's own
//! log (the witness) must never go back and never share a fence between units.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use leadership_core::{Fence, LeaderTracker, Tracker};
use leadership_testkit::FaultyStore;
use tokio::time::sleep;

use super::Target;

/// The child's environment: which store, namespace, application and mode.
const CHILD_ENV: &str = "LEADERSHIP_CHILD_LEADER";

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process of the machine.
pub fn monotonic_ns() -> u128 {
    let now =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    u128::try_from(now.tv_sec()).unwrap_or(0) * 1_000_000_000
        + u128::try_from(now.tv_nsec()).unwrap_or(0)
}

/// What the parent tells its child.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The store's URL (the child connects through the store's own [`Target`]).
    pub url: String,
    /// The run's namespace.
    pub namespace: String,
    /// The application the child leads.
    pub application: String,
    /// Its tracker's guarantee.
    pub guarantee: Duration,
    /// `true`: writes with its fence whatever its tracker says (a zombie).
    pub zombie: bool,
}

impl ChildSpec {
    fn encode(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}",
            self.url,
            self.namespace,
            self.application,
            self.guarantee.as_millis(),
            self.zombie
        )
    }

    /// The spec of this process if it is a child; `None` in a normal test run.
    pub fn from_env() -> Option<ChildSpec> {
        let raw = std::env::var(CHILD_ENV).ok()?;
        let parts: Vec<&str> = raw.split('\t').collect();
        let [url, namespace, application, guarantee, zombie] = parts.as_slice() else {
            panic!("bad {CHILD_ENV}: {raw:?}");
        };
        Some(ChildSpec {
            url: (*url).to_owned(),
            namespace: (*namespace).to_owned(),
            application: (*application).to_owned(),
            guarantee: Duration::from_millis(guarantee.parse().expect("guarantee ms")),
            zombie: *zombie == "true",
        })
    }
}

/// The child: leads `spec.application` and writes, printing what it does; runs until killed.
pub async fn run_child(target: Arc<dyn Target>, spec: ChildSpec) {
    let participant = target.participant().await;
    let unit = format!("{}/0", spec.application);
    let faulty = FaultyStore::new(participant.store.clone());
    let tracker = LeaderTracker::builder(&unit, spec.guarantee, faulty.clone()).spawn();
    // Instants are private to a process; CLOCK_MONOTONIC is not. One reading of both maps
    // the claims' instants onto the shared clock.
    let (base, base_ns) = (std::time::Instant::now(), monotonic_ns());
    let ns = |at: tokio::time::Instant| {
        base_ns + at.into_std().saturating_duration_since(base).as_nanos()
    };
    let mut printed = 0;
    // The term the child leads, as it last saw it; a zombie keeps writing with its fence.
    let mut leading: Option<Fence> = None;
    let mut zombie_fence: Option<Fence> = None;
    loop {
        let claims = faulty.claims();
        for call in &claims[printed..] {
            if let Ok(fence) = call.result {
                println!(
                    "CLAIM {} {} {} {}",
                    ns(call.started),
                    ns(call.returned),
                    call.duration.as_nanos(),
                    fence.get()
                );
            }
        }
        printed = claims.len();
        let term = tracker.current_term();
        match (leading, &term) {
            (None, Some(term)) => {
                leading = Some(term.fence);
                zombie_fence = Some(term.fence);
                println!("LEADING {} {}", monotonic_ns(), term.fence.get());
            }
            (Some(fence), None) => {
                println!("LOST {} {}", monotonic_ns(), fence.get());
                leading = None;
            }
            // Lost and led again between two looks (a new term has a new fence).
            (Some(fence), Some(term)) if term.fence != fence => {
                println!("LOST {} {}", monotonic_ns(), fence.get());
                leading = Some(term.fence);
                println!("LEADING {} {}", monotonic_ns(), term.fence.get());
            }
            _ => {}
        }
        // A careful child writes only while its tracker says the term is current; a zombie
        // keeps writing with the fence it led with.
        let write_with = if spec.zombie {
            zombie_fence
        } else {
            term.map(|t| t.fence)
        };
        if let Some(fence) = write_with {
            let at = monotonic_ns();
            let outcome =
                match (participant.write)(spec.application.clone(), unit.clone(), fence).await {
                    Ok(()) => "ok".to_owned(),
                    Err(leadership_core::Error::NotLeader { .. }) => "refused".to_owned(),
                    Err(err) if err.is_retryable() => "unavailable".to_owned(),
                    Err(err) => format!("error:{}", err.one_line().replace(' ', "_")),
                };
            println!("WRITE {at} {} {outcome}", fence.get());
        }
        sleep(Duration::from_millis(10)).await;
    }
}

/// One line the child printed.
#[derive(Debug, Clone)]
enum Line {
    Claim {
        started: u128,
        duration: u128,
        fence: u64,
    },
    Leading {
        fence: u64,
    },
    Lost {
        at: u128,
        fence: u64,
    },
    Write {
        at: u128,
        fence: u64,
        outcome: String,
    },
}

fn parse(line: &str) -> Option<Line> {
    // The test harness prints `test NAME ... ` before the test's first line, unended.
    let line = ["CLAIM ", "LEADING ", "LOST ", "WRITE "]
        .iter()
        .filter_map(|kind| line.find(kind))
        .min()
        .map(|at| &line[at..])?;
    let mut words = line.split_whitespace();
    let kind = words.next()?;
    let mut num = || words.next()?.parse::<u128>().ok();
    Some(match kind {
        "CLAIM" => {
            let started = num()?;
            let _returned = num()?;
            let duration = num()?;
            let fence = u64::try_from(num()?).ok()?;
            Line::Claim {
                started,
                duration,
                fence,
            }
        }
        "LEADING" => {
            let _at = num()?;
            Line::Leading {
                fence: u64::try_from(num()?).ok()?,
            }
        }
        "LOST" => {
            let at = num()?;
            Line::Lost {
                at,
                fence: u64::try_from(num()?).ok()?,
            }
        }
        "WRITE" => {
            let at = num()?;
            let fence = u64::try_from(num()?).ok()?;
            let outcome = line.split_whitespace().nth(3)?.to_owned();
            Line::Write { at, fence, outcome }
        }
        _ => return None,
    })
}

/// A running child with its output read on a thread.
struct Running {
    child: Child,
    lines: mpsc::Receiver<Line>,
    seen: Vec<Line>,
}

impl Running {
    fn spawn(test_name: &str, spec: &ChildSpec) -> Running {
        let mut child = Command::new(std::env::current_exe().expect("this test binary"))
            .args([test_name, "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, spec.encode())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child process");
        let stdout = child.stdout.take().expect("piped stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if let Some(line) = parse(&line)
                    && send.send(line).is_err()
                {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("a pid"))
    }

    /// Reads lines until `done` says so, for at most `within`.
    fn until(&mut self, within: Duration, what: &str, mut done: impl FnMut(&[Line]) -> bool) {
        let give_up = std::time::Instant::now() + within;
        while !done(&self.seen) {
            let left = give_up.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "the child did not {what} within {within:?}: {:#?}",
                    self.seen
                ),
            }
        }
    }

    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), signal).expect("signal the child");
    }

    /// Whether the kernel reports the child stopped (`T` in `/proc/PID/stat`).
    fn stopped(&self) -> bool {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // The state follows the parenthesised command name.
        stat.rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state == 'T' || state == 't')
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the rounds saw.
#[derive(Debug, Default)]
pub struct ProcessPauses {
    /// Rounds run (each one SIGSTOP of a leading process).
    pub rounds: usize,
    /// New terms granted: the child's and the rival's.
    pub new_terms: usize,
    /// The rival granted before the child's last promise ended.
    pub c4: usize,
    /// A careful child that wrote after waking before printing its loss.
    pub acted_after_wake: usize,
    /// A rival fence not above the child's, or a fence of two units in the witness.
    pub f1: usize,
    /// A zombie's write after waking that was accepted, or the witness going back.
    pub f2: usize,
    /// Zombie writes after waking (each made with the old fence, after the rival's term
    /// began).
    pub stale_attempts: usize,
    /// Of those, refused.
    pub stale_refused: usize,
    /// Writes that failed with an error other than `NotLeader` or `Unavailable`.
    pub unexpected: Vec<String>,
}

/// Runs `rounds` rounds (alternately careful and zombie) against `target`; `test_name` is
/// the store's child entry test.
pub async fn sigstop_rounds(
    target: Arc<dyn Target>,
    url: &str,
    namespace: &str,
    test_name: &str,
    guarantee: Duration,
    rounds: usize,
) -> ProcessPauses {
    let rival = target.participant().await;
    let mut seen = ProcessPauses::default();
    for round in 0..rounds {
        let spec = ChildSpec {
            url: url.to_owned(),
            namespace: namespace.to_owned(),
            application: format!("process{round}"),
            guarantee,
            zombie: round % 2 == 1,
        };
        let claim = guarantee * 2;
        let mut child = tokio::task::block_in_place(|| {
            let mut child = Running::spawn(test_name, &spec);
            child.until(Duration::from_secs(20), "lead and write", |seen| {
                seen.iter().any(|l| matches!(l, Line::Leading { .. }))
                    && seen
                        .iter()
                        .any(|l| matches!(l, Line::Write { outcome, .. } if outcome == "ok"))
            });
            child
        });
        child.signal(nix::sys::signal::Signal::SIGSTOP);
        let stopped_at = monotonic_ns();
        let froze = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(2));
            child.stopped()
        });
        assert!(froze, "the child process never stopped (round {round})");
        child.drain();
        // The term the child led when it stopped: its last lead (on a loaded machine it
        // may have lost one and led again before the stop).
        let child_fence = child
            .seen
            .iter()
            .rev()
            .find_map(|l| match l {
                Line::Leading { fence } => Some(*fence),
                _ => None,
            })
            .expect("leading");
        seen.new_terms += child
            .seen
            .iter()
            .filter(|l| matches!(l, Line::Leading { .. }))
            .count();

        // A rival in this process claims until it is granted (the child's lease must run
        // out first), then writes with its fence. Its lease outlasts the child's waking, so
        // the child wakes to a term held by another unit.
        let rival_unit = format!("{}/1", spec.application);
        let give_up = tokio::time::Instant::now() + claim * 10;
        let (rival_fence, granted_at) = loop {
            match rival
                .store
                .claim_leadership(&spec.application, &rival_unit, claim * 20)
                .await
            {
                Ok(fence) => break (fence, monotonic_ns()),
                Err(err) => {
                    assert!(
                        tokio::time::Instant::now() < give_up,
                        "the rival was never granted: {err:?}"
                    );
                    sleep(Duration::from_millis(20)).await;
                }
            }
        };
        seen.new_terms += 1;
        (rival.write)(spec.application.clone(), rival_unit.clone(), rival_fence)
            .await
            .expect("the rival's write");
        if rival_fence.get() <= child_fence {
            seen.f1 += 1;
        }
        // C4: the child's last granted claim (all printed before the stop) promised it the
        // lease from its call start for its duration.
        let promised_until = child
            .seen
            .iter()
            .filter_map(|l| match l {
                Line::Claim {
                    started,
                    duration,
                    fence,
                } if *fence == child_fence => Some(started + duration),
                _ => None,
            })
            .max()
            .expect("the child printed its granted claims");
        if granted_at < promised_until {
            seen.c4 += 1;
        }
        assert!(stopped_at < granted_at);

        child.signal(nix::sys::signal::Signal::SIGCONT);
        let woke_at = monotonic_ns();
        tokio::task::block_in_place(|| {
            child.until(Duration::from_secs(10), "report its loss", |seen| {
                seen.iter()
                    .any(|l| matches!(l, Line::Lost { fence, .. } if *fence == child_fence))
            });
            if spec.zombie {
                child.until(Duration::from_secs(10), "write as a zombie", |seen| {
                    seen.iter()
                        .any(|l| matches!(l, Line::Write { at, .. } if *at >= woke_at))
                });
            }
            std::thread::sleep(Duration::from_millis(100));
            child.drain();
        });
        let lost_at = child
            .seen
            .iter()
            .find_map(|l| match l {
                Line::Lost { at, fence } if *fence == child_fence => Some(*at),
                _ => None,
            })
            .expect("the loss of the term it was stopped in");
        for line in &child.seen {
            let Line::Write { at, fence, outcome } = line else {
                continue;
            };
            if *at < woke_at {
                continue;
            }
            if outcome.starts_with("error:") {
                seen.unexpected.push(format!("round {round}: {outcome}"));
            }
            if spec.zombie {
                seen.stale_attempts += 1;
                match outcome.as_str() {
                    "refused" => seen.stale_refused += 1,
                    "ok" => seen.f2 += 1,
                    // Unknown: the witness below shows whether it applied.
                    _ => seen.stale_attempts -= 1,
                }
            } else if *at < lost_at || *fence == child_fence {
                seen.acted_after_wake += 1;
            }
        }
        drop(child);
        seen.rounds += 1;

        // The witness: the child's writes, then the rival's, never going back.
        let log = target.downstream(&spec.application).await;
        let mut highest = 0;
        let mut owner = std::collections::BTreeMap::new();
        for (unit, fence) in &log {
            if *fence < highest {
                seen.f2 += 1;
            }
            highest = highest.max(*fence);
            if owner.entry(*fence).or_insert_with(|| unit.clone()) != unit {
                seen.f1 += 1;
            }
        }
        assert!(
            log.iter()
                .any(|(u, f)| *u == rival_unit && *f == rival_fence.get()),
            "the rival's write is in the store's log"
        );
        let _ = rival
            .store
            .revoke_leadership(&spec.application, &rival_unit)
            .await;
    }
    seen
}

/// Prints the row's `RELIABILITY` summary and `SAFETY` line (the matrix's format) and fails
/// on any violation, an unexpected write error, or a fault that did not happen.
pub fn finish(store: &str, configuration: &str, seen: &ProcessPauses) {
    let zombie_rounds = seen.rounds / 2;
    println!("RELIABILITY {store} ({configuration}) client process SIGSTOPped: {seen:?}");
    println!(
        "SAFETY | {store} | {configuration} | client process SIGSTOPped past its lease (careful and zombie wake) | {} | {} | {} | {} | {} | {} | {}/{} |",
        seen.new_terms,
        seen.rounds,
        seen.c4,
        seen.acted_after_wake,
        seen.f1,
        seen.f2,
        seen.stale_refused,
        seen.stale_attempts,
    );
    assert!(seen.rounds >= 2, "{seen:?}");
    assert_eq!(
        (seen.c4, seen.acted_after_wake, seen.f1, seen.f2),
        (0, 0, 0, 0),
        "C4, acting after waking (T7), F1, F2: {seen:?}"
    );
    assert!(seen.unexpected.is_empty(), "{seen:?}");
    assert!(
        seen.stale_attempts >= zombie_rounds && seen.stale_refused == seen.stale_attempts,
        "every zombie wrote after waking, and every such write was refused: {seen:?}"
    );
}

/// Rounds of this row: 2 in the short schedule; in an extended run, enough for the wanted
/// terms (each round grants two).
pub fn rounds() -> usize {
    super::terms_wanted().div_ceil(2).max(2)
}
